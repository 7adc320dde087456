"""The decoder forward pass over streams, pure functions of (params, config, inputs).

Shapes: B batch, K streams, L positions, H hidden, V vocab, nL layers. A plain language model call is
K = 1 with `StreamMask.causal`. Layers run under `lax.scan` over the stacked layer params (one compiled
layer body regardless of depth), optionally rematerialised with a named policy.

KV cache (sampling without gradients): `forward(..., return_base_kv=True)` on the base stream returns
its per-layer keys/values; `KVCache.create` adds empty diagonal slots; each decode call then runs one
new stream against the cache and writes its keys/values into its slot.

Layouts (quietstar_jax.sharding.layout): `forward(..., layout=)` says where activations live on a mesh;
the default is training's (batch-sharded activations, weights gathered where used). The sampler's
decode passes use a DecodeLayout with `resident_weights`, a compute-dtype copy of the weights split over
small device groups: the same function, with different communication.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
from flax import struct

from quietstar_jax.model.attention import StreamMask, dense_stream_attention, stream_attention
from quietstar_jax.model.config import ModelConfig
from quietstar_jax.model.lora import StreamAdapters, low_rank_update, with_layer_adapters
from quietstar_jax.model.numerics import acc_dtype
from quietstar_jax.model.params import param_axes
from quietstar_jax.model.rope import apply_rope, rope_cos_sin
from quietstar_jax.sharding.layout import TRAINING, TrainingLayout
from quietstar_jax.sharding.rules import constrain_batch

_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@struct.dataclass
class KVCache:
    """Keys/values of the base stream and of generated streams, stacked over layers.

    base_k, base_v: (nL, B, L, Hkv, D); diag_k, diag_v: (nL, B, S, L, Hkv, D) for S stream slots.
    Slot i holds stream i + 1.
    """

    base_k: jax.Array
    base_v: jax.Array
    diag_k: jax.Array
    diag_v: jax.Array

    @classmethod
    def create(cls, base_kv: tuple[jax.Array, jax.Array], num_slots: int,
               layout: TrainingLayout = TRAINING) -> "KVCache":
        k, v = base_kv
        nL, B, L, Hkv, D = k.shape
        k, v = layout.heads(k, batch_axis=1), layout.heads(v, batch_axis=1)
        zeros = layout.heads(jnp.zeros((nL, B, num_slots, L, Hkv, D), k.dtype), batch_axis=1)
        return cls(k, v, zeros, zeros)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """HF LlamaRMSNorm: normalise in float32 (float64 for float64 inputs), cast back, then scale in the
    input dtype."""
    xf = x.astype(acc_dtype(x.dtype))
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return weight.astype(x.dtype) * xf.astype(x.dtype)


def linear(x: jax.Array, p: dict, gate: jax.Array | None = None) -> jax.Array:
    """x (..., in) @ weight (out, in)^T + bias, in x's dtype. A decoding copy may hold the weight
    transposed as Flax's kernel (in, out) instead (model.decode.cpu_decode_params). With adapters
    (lora_A / lora_B beside the weight, model.lora) and a gate, adds gate * B (A x)."""
    if "kernel" in p:
        y = jnp.einsum("...i,io->...o", x, p["kernel"].astype(x.dtype))
    else:
        y = jnp.einsum("...i,oi->...o", x, p["weight"].astype(x.dtype))
    if "bias" in p:
        y = y + p["bias"].astype(x.dtype)
    if gate is not None and "lora_A" in p:
        y = y + low_rank_update(x, p, gate)
    return y


def _row_linear(x: jax.Array, p: dict, layout: TrainingLayout, gate: jax.Array | None = None) -> jax.Array:
    """linear for o_proj / down_proj, whose input features a decode layout splits over devices: there
    the partial products are summed across devices in the accumulation dtype (a float32
    reduce-scatter into the residual's layout) and rounded to x's dtype once, as the unsplit matmul
    rounds its float32 accumulator: the same numbers up to float32 summation order."""
    if not layout.row_parallel:
        return linear(x, p, gate)
    y = jnp.einsum("...i,oi->...o", x, p["weight"].astype(x.dtype), preferred_element_type=acc_dtype(x.dtype))
    y = layout.residual(y).astype(x.dtype)
    if "bias" in p:
        y = y + p["bias"].astype(x.dtype)
    if gate is not None and "lora_A" in p:
        y = y + low_rank_update(x, p, gate)
    return y


def resident_weights(params: dict, cfg: ModelConfig, layout: TrainingLayout) -> dict:
    """The params for `forward(..., layout=layout)`: with a DecodeLayout, the decoder's weights (model +
    lm_head) as one compute-dtype copy in that layout, made once for many passes (other entries, e.g.
    Quiet-STaR's, as they are); with the training layout the same params (no copy). Casting first
    changes no value: every use casts its weight to the compute dtype anyway."""
    axes = param_axes(cfg)
    copy = layout.place_weights({k: params[k] for k in axes}, axes, jnp.dtype(cfg.dtype))
    return {**params, **copy}


def embed(params: dict, cfg: ModelConfig, tokens: jax.Array) -> jax.Array:
    """tokens (...) int -> embeddings (..., H) in the compute dtype."""
    table = params["model"]["embed_tokens"]["weight"]
    return jnp.take(table, tokens, axis=0).astype(jnp.dtype(cfg.dtype))


def head_weight(params: dict, cfg: ModelConfig) -> jax.Array:
    """The (V, H) output projection: lm_head, or the embedding table when tied."""
    head = params["model"]["embed_tokens"] if cfg.tie_word_embeddings else params["lm_head"]
    return head["weight"]


def lm_logits(params: dict, cfg: ModelConfig, hidden: jax.Array) -> jax.Array:
    """Final hidden states (..., H) -> logits (..., V) in float32 (lm_head or tied embeddings; float64
    for float64 hidden states)."""
    w = head_weight(params, cfg).astype(hidden.dtype)
    return constrain_batch(jnp.einsum("...h,vh->...v", constrain_batch(hidden), w,
                                      preferred_element_type=acc_dtype(hidden.dtype)))


def qkv(cfg: ModelConfig, lp: dict, x: jax.Array, cos, sin, layout: TrainingLayout = TRAINING,
        gate: jax.Array | None = None):
    """A layer's input norm and q, k, v projections with RoPE: x (..., H) -> q (..., Hq, D), k, v
    (..., Hkv, D); cos / sin broadcast against (..., D). layout: where the activations live. gate: where
    the layer's adapters act (model.lora; broadcasts against (..., out))."""
    D = cfg.head_dim
    attn = lp["self_attn"]
    h = layout.group_rows(rms_norm(x, lp["input_layernorm"]["weight"], cfg.rms_norm_eps))
    q = layout.heads(linear(h, attn["q_proj"], gate).reshape(*x.shape[:-1], cfg.num_attention_heads, D))
    k = layout.heads(linear(h, attn["k_proj"], gate).reshape(*x.shape[:-1], cfg.num_key_value_heads, D))
    v = layout.heads(linear(h, attn["v_proj"], gate).reshape(*x.shape[:-1], cfg.num_key_value_heads, D))
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def attention_out_and_mlp(cfg: ModelConfig, lp: dict, x: jax.Array, o: jax.Array,
                          layout: TrainingLayout = TRAINING, gate: jax.Array | None = None) -> jax.Array:
    """The rest of a layer after attention: x (..., H) residual, o (..., Hq, D) attention output ->
    x + o_proj(o), then the post-attention norm and the SwiGLU MLP with its residual. gate: as in qkv."""
    x = layout.residual(x + _row_linear(o.reshape(*o.shape[:-2], -1), lp["self_attn"]["o_proj"], layout, gate))
    h = layout.group_rows(rms_norm(x, lp["post_attention_layernorm"]["weight"], cfg.rms_norm_eps))
    mlp = lp["mlp"]
    act = (jax.nn.silu(layout.features(linear(h, mlp["gate_proj"], gate)))
           * layout.features(linear(h, mlp["up_proj"], gate)))
    return x + _row_linear(act, mlp["down_proj"], layout, gate)


def _layer(cfg: ModelConfig, mask: StreamMask, cos, sin, x, lp, window, cache_layer, slot,
           layout: TrainingLayout = TRAINING, gate=None):
    """One decoder layer. x: (B, Kq, L, H). Returns (x, base_kv or updated cache layer)."""
    D = cfg.head_dim
    q, k, v = qkv(cfg, lp, x, cos, sin, layout, gate)
    if cache_layer is None:
        # All streams present: stream 0 is the base text, the rest are the diagonal keys.
        kb, vb, kd, vd = k[:, 0], v[:, 0], k[:, 1:], v[:, 1:]
        out_state = (kb, vb)
    else:
        kb, vb, kd, vd = cache_layer
        kd = jax.lax.dynamic_update_slice_in_dim(kd, k.astype(kd.dtype), slot, axis=1)
        vd = jax.lax.dynamic_update_slice_in_dim(vd, v.astype(vd.dtype), slot, axis=1)
        out_state = (kb, vb, kd, vd)
    attend = dense_stream_attention if cfg.attention_impl == "dense" else stream_attention
    o = attend(q, kb.astype(q.dtype), vb.astype(q.dtype), kd.astype(q.dtype), vd.astype(q.dtype), mask, window,
               D ** -0.5)
    return attention_out_and_mlp(cfg, lp, x, o, layout, gate), out_state


def forward(params: dict, cfg: ModelConfig, x: jax.Array, positions: jax.Array, mask: StreamMask,
            cache: KVCache | None = None, slot=None, return_base_kv: bool = False,
            layout: TrainingLayout = TRAINING, adapters: StreamAdapters | None = None):
    """Runs the decoder over streams of input embeddings.

    x: (B, Kq, L, H) input embeddings (see `embed`; Quiet-STaR substitutes thought embeddings).
    positions: (B, Kq, L) int position ids. mask: StreamMask for the Kq query streams.
    cache/slot: decode mode. The Kq = 1 new stream attends to the cached base stream and to the cached
        slots; its keys/values are written into `slot` (int, may be traced) first.
    layout: where activations live on the mesh (quietstar_jax.sharding.layout); a DecodeLayout expects
        `resident_weights` params. params["model"]["layers"]: stacked over layers, or a tuple of per-layer
        trees (model.decode.cpu_decode_params).
    adapters: low-rank adapters (model.lora) applied in the query streams with index >= 1 (thoughts and
        what follows them), never in stream 0 (the text).
    Returns hidden (B, Kq, L, H) after the final norm, plus the base (k, v) stacked over layers
    (nL, B, L, Hkv, D) if return_base_kv, or the updated KVCache in decode mode.
    """
    chex.assert_rank(x, 4)
    chex.assert_shape(positions, x.shape[:3])
    dtype = jnp.dtype(cfg.dtype)
    x = x.astype(dtype)
    # What every layer's attention reads, placed once (not gathered again in every layer's loop body).
    cos, sin = (layout.group_rows(t) for t in rope_cos_sin(cfg, positions))
    mask = mask.replace(segment_ids=layout.group_rows(mask.segment_ids))
    windows = jnp.asarray(cfg.layer_windows, jnp.int32)
    layers = params["model"]["layers"]
    decode = cache is not None
    gate = None
    if adapters is not None:  # (1, Kq, 1, 1): scale in the thought / talk streams, 0 in the text's
        gate = (adapters.scale * (mask.q_streams > 0)).astype(dtype)[None, :, None, None]
    ad_weights = None if adapters is None else adapters.weights

    def body(carry, xs):
        lp, window, cache_layer, ap = xs
        y, state = _layer(cfg, mask, cos, sin, layout.residual(carry), with_layer_adapters(lp, ap), window,
                          cache_layer, slot, layout, gate)
        return layout.residual(y), (state if (decode or return_base_kv) else None)

    # Per-layer trees (model.decode.cpu_decode_params, a prompt's prefill) run unrolled, as without scan.
    per_layer = isinstance(layers, (tuple, list))
    scan = cfg.scan_layers and not per_layer
    if cfg.remat_policy != "none":
        body = jax.checkpoint(body, policy=_POLICIES[cfg.remat_policy], prevent_cse=not scan)
    cache_xs = (cache.base_k, cache.base_v, cache.diag_k, cache.diag_v) if decode else None
    if scan:
        x, states = jax.lax.scan(body, x, (layers, windows, cache_xs, ad_weights))
    else:
        outs = []
        for i in range(cfg.num_hidden_layers):
            sl = functools.partial(lambda t, i: t[i], i=i)
            lp = layers[i] if per_layer else jax.tree.map(sl, layers)
            x, s = body(x, (lp, windows[i], jax.tree.map(sl, cache_xs), jax.tree.map(sl, ad_weights)))
            outs.append(s)
        states = None if outs[0] is None else jax.tree.map(lambda *a: jnp.stack(a), *outs)
    hidden = rms_norm(x, params["model"]["norm"]["weight"], cfg.rms_norm_eps)
    if decode:
        return hidden, KVCache(*states)
    if return_base_kv:
        return hidden, states
    return hidden


def causal_lm_logits(params: dict, cfg: ModelConfig, tokens: jax.Array,
                     segment_ids: jax.Array | None = None, positions: jax.Array | None = None):
    """Plain LM convenience: tokens (B, L) -> logits (B, L, V) float32.

    segment_ids default to all ones (one document, no padding); positions default to arange(L).
    """
    B, L = tokens.shape
    if segment_ids is None:
        segment_ids = jnp.ones((B, L), jnp.int32)
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
    h = forward(params, cfg, embed(params, cfg, tokens)[:, None], positions[:, None],
                StreamMask.causal(segment_ids))
    return lm_logits(params, cfg, h[:, 0])
