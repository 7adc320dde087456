"""The decoder forward pass over streams, pure functions of (params, config, inputs).

Shapes: B batch, K streams, L positions, H hidden, V vocab, nL layers. A plain language model call is
K = 1 with `StreamMask.causal`. Layers run under `lax.scan` over the stacked layer params (one compiled
layer body regardless of depth), optionally rematerialised with a named policy.

KV cache (sampling without gradients): `forward(..., return_base_kv=True)` on the base stream returns
its per-layer keys/values; `KVCache.create` adds empty diagonal slots; each decode call then runs one
new stream against the cache and writes its keys/values into its slot.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
from flax import struct

from quietstar_jax.model.attention import StreamMask, dense_stream_attention, stream_attention
from quietstar_jax.model.config import ModelConfig
from quietstar_jax.model.numerics import acc_dtype
from quietstar_jax.model.rope import apply_rope, rope_cos_sin
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
    def create(cls, base_kv: tuple[jax.Array, jax.Array], num_slots: int) -> "KVCache":
        k, v = base_kv
        nL, B, L, Hkv, D = k.shape
        zeros = jnp.zeros((nL, B, num_slots, L, Hkv, D), k.dtype)
        return cls(k, v, zeros, zeros)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """HF LlamaRMSNorm: normalise in float32 (float64 for float64 inputs), cast back, then scale in the
    input dtype."""
    xf = x.astype(acc_dtype(x.dtype))
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return weight.astype(x.dtype) * xf.astype(x.dtype)


def linear(x: jax.Array, p: dict) -> jax.Array:
    """x (..., in) @ weight (out, in)^T + bias, in x's dtype."""
    y = jnp.einsum("...i,oi->...o", x, p["weight"].astype(x.dtype))
    if "bias" in p:
        y = y + p["bias"].astype(x.dtype)
    return y


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


def qkv(cfg: ModelConfig, lp: dict, x: jax.Array, cos, sin):
    """A layer's input norm and q, k, v projections with RoPE: x (..., H) -> q (..., Hq, D), k, v
    (..., Hkv, D); cos / sin broadcast against (..., D)."""
    D = cfg.head_dim
    attn = lp["self_attn"]
    h = rms_norm(x, lp["input_layernorm"]["weight"], cfg.rms_norm_eps)
    q = linear(h, attn["q_proj"]).reshape(*x.shape[:-1], cfg.num_attention_heads, D)
    k = linear(h, attn["k_proj"]).reshape(*x.shape[:-1], cfg.num_key_value_heads, D)
    v = linear(h, attn["v_proj"]).reshape(*x.shape[:-1], cfg.num_key_value_heads, D)
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def attention_out_and_mlp(cfg: ModelConfig, lp: dict, x: jax.Array, o: jax.Array) -> jax.Array:
    """The rest of a layer after attention: x (..., H) residual, o (..., Hq, D) attention output ->
    x + o_proj(o), then the post-attention norm and the SwiGLU MLP with its residual."""
    x = constrain_batch(x + linear(o.reshape(*o.shape[:-2], -1), lp["self_attn"]["o_proj"]))
    h = rms_norm(x, lp["post_attention_layernorm"]["weight"], cfg.rms_norm_eps)
    mlp = lp["mlp"]
    return x + linear(jax.nn.silu(linear(h, mlp["gate_proj"])) * linear(h, mlp["up_proj"]), mlp["down_proj"])


def _layer(cfg: ModelConfig, mask: StreamMask, cos, sin, x, lp, window, cache_layer, slot):
    """One decoder layer. x: (B, Kq, L, H). Returns (x, base_kv or updated cache layer)."""
    D = cfg.head_dim
    q, k, v = qkv(cfg, lp, x, cos, sin)
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
    return attention_out_and_mlp(cfg, lp, x, o), out_state


def forward(params: dict, cfg: ModelConfig, x: jax.Array, positions: jax.Array, mask: StreamMask,
            cache: KVCache | None = None, slot=None, return_base_kv: bool = False):
    """Runs the decoder over streams of input embeddings.

    x: (B, Kq, L, H) input embeddings (see `embed`; Quiet-STaR substitutes thought embeddings).
    positions: (B, Kq, L) int position ids. mask: StreamMask for the Kq query streams.
    cache/slot: decode mode. The Kq = 1 new stream attends to the cached base stream and to the cached
        slots; its keys/values are written into `slot` (int, may be traced) first.
    Returns hidden (B, Kq, L, H) after the final norm, plus the base (k, v) stacked over layers
    (nL, B, L, Hkv, D) if return_base_kv, or the updated KVCache in decode mode.
    """
    chex.assert_rank(x, 4)
    chex.assert_shape(positions, x.shape[:3])
    dtype = jnp.dtype(cfg.dtype)
    x = x.astype(dtype)
    cos, sin = rope_cos_sin(cfg, positions)
    windows = jnp.asarray(cfg.layer_windows, jnp.int32)
    layers = params["model"]["layers"]
    decode = cache is not None

    def body(carry, xs):
        lp, window, cache_layer = xs
        y, state = _layer(cfg, mask, cos, sin, constrain_batch(carry), lp, window, cache_layer, slot)
        return constrain_batch(y), (state if (decode or return_base_kv) else None)

    if cfg.remat_policy != "none":
        body = jax.checkpoint(body, policy=_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers)
    cache_xs = (cache.base_k, cache.base_v, cache.diag_k, cache.diag_v) if decode else None
    if cfg.scan_layers:
        x, states = jax.lax.scan(body, x, (layers, windows, cache_xs))
    else:
        outs = []
        for i in range(cfg.num_hidden_layers):
            sl = functools.partial(lambda t, i: t[i], i=i)
            x, s = body(x, jax.tree.map(sl, (layers, windows, cache_xs)))
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
