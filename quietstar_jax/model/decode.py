"""Autoregressive decoding with a KV cache, plus "branch" slots for side computations (a thought).

    hidden, cache = prefill(params, cfg, x, positions, valid, max_len, num_slots)  # the prompt
    h, cache = decode_step(params, cfg, x_t, pos_t, cache, text_index=i)          # append a real token
    h, cache = decode_step(params, cfg, x_t, pos_t, cache, slot=j, anchor=pos_p)  # thought tokens: see the
                                                                                  # text and slots 0..j
    h, cache = decode_step(params, cfg, x2, pos2, cache, text_index=i, slot=0)    # a real token and the
                                                                                  # next thought's <start>
    (x_t: (B, C, H) embeddings of C tokens per row, pos_t (B, C); one read of the weights per call.)

Layout (B rows, S cache entries, Ts slots, nL layers, Hkv KV heads of D):
    k, v    (nL, B, Hkv, S, D)   the text; entry i holds the token written at index i
    valid   (B, S) bool          which entries hold a real token (padding never does)
    pos     (B, S) int32         their position ids (rows may be left-padded: positions restart per row)
    sk, sv  (nL, B, Hkv, Ts, D)  branch slots; a branch token at slot j sees valid text entries and
                                 slots 0..j, and is never seen by text tokens. Slots are overwritten by
                                 the next branch, so a thought never leaves a trace in the text's cache.

This is exactly the visibility of Quiet-STaR's streams (quietstar_jax.model.attention): a thought token
of text position p sees x_0..x_p and its own thought, never another position's thought.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from quietstar_jax.model.attention import MASK_VALUE, StreamMask
from quietstar_jax.model.config import ModelConfig
from quietstar_jax.model.lora import StreamAdapters, with_layer_adapters
from quietstar_jax.model.numerics import acc_dtype
from quietstar_jax.model.rope import rope_cos_sin
from quietstar_jax.model.transformer import attention_out_and_mlp, forward, qkv, rms_norm
from quietstar_jax.sharding.rules import constrain_batch


@struct.dataclass
class DecodeCache:
    k: jax.Array
    v: jax.Array
    valid: jax.Array
    pos: jax.Array
    sk: jax.Array
    sv: jax.Array

    @property
    def max_len(self) -> int:
        return self.valid.shape[1]

    def unstacked(self) -> "DecodeCache":
        """k, v, sk, sv as tuples of per-layer arrays (the layout for unstacked params)."""
        if isinstance(self.k, tuple):
            return self
        split = lambda a: tuple(a[i] for i in range(a.shape[0]))  # noqa: E731
        return self.replace(k=split(self.k), v=split(self.v), sk=split(self.sk), sv=split(self.sv))


def prefill(params: dict, cfg: ModelConfig, x: jax.Array, positions: jax.Array, valid: jax.Array, max_len: int,
            num_slots: int) -> tuple[jax.Array, DecodeCache]:
    """Runs the prompt and returns its final hidden states and a cache with room for max_len entries.

    x: (B, P, H) input embeddings; positions: (B, P) position ids; valid: (B, P) bool (False = padding,
    whose keys nobody sees). Returns hidden (B, P, H) and the cache with entries 0..P-1 filled."""
    B, P, _ = x.shape
    if max_len < P:
        raise ValueError(f"max_len {max_len} < prompt length {P}")
    unstacked = isinstance(params["model"]["layers"], (tuple, list))  # forward loops over per-layer trees
    hidden, (k, v) = forward(params, cfg, x[:, None], positions[:, None], StreamMask.causal(valid.astype(jnp.int32)),
                             return_base_kv=True)
    # (nL, B, P, Hkv, D) -> (nL, B, Hkv, P, D): per (row, head) the keys are one contiguous (S, D) matrix,
    # so q.k and p.v are plain batched matmuls. Measured against (nL, B, S, Hkv, D), the same runs in turn
    # (benchmarks/generate_bench.py rows): thinking per token toy batch 8 N 12 0.071-0.080 vs 0.105-0.107 s,
    # N 8 0.044-0.051 vs 0.066-0.069 s; SmolLM2 batch 8 N 8 0.54-0.57 vs 0.60-0.62 s, batch 1 3-4% less.
    k, v = (jnp.swapaxes(a, 2, 3) for a in (k, v))
    nL, _, Hkv, _, D = k.shape
    pad = [(0, 0), (0, 0), (0, 0), (0, max_len - P), (0, 0)]
    slots = jnp.zeros((nL, B, Hkv, num_slots, D), k.dtype)
    cache = DecodeCache(jnp.pad(k, pad), jnp.pad(v, pad), jnp.pad(valid, [(0, 0), (0, max_len - P)]),
                        jnp.pad(positions.astype(jnp.int32), [(0, 0), (0, max_len - P)]), slots, slots)
    return hidden[:, 0], (cache.unstacked() if unstacked else cache)


def _attend(q, k, v, key_ok, sk, sv, slot_ok, scale):
    """q (B, C, Hq, D) against text keys (B, Hkv, S, D) where key_ok (B, S) (the same for every query of
    the chunk) and slot keys (B, Hkv, Ts, D) where slot_ok (C, Ts); one softmax over both (float32,
    float64 for float64 compute). Returns (B, C, Hq, D)."""
    B, C, Hq, D = q.shape
    Hkv = k.shape[1]
    qg = q.reshape(B, C, Hkv, Hq // Hkv, D)
    acc = acc_dtype(q.dtype)
    s_text = jnp.einsum("bchgd,bhsd->bchgs", qg, k, preferred_element_type=acc) * scale
    s_slot = jnp.einsum("bchgd,bhsd->bchgs", qg, sk, preferred_element_type=acc) * scale
    s_text = jnp.where(key_ok[:, None, None, None, :], s_text, MASK_VALUE)
    s_slot = jnp.where(slot_ok[None, :, None, None, :], s_slot, MASK_VALUE)
    p = jax.nn.softmax(jnp.concatenate([s_text, s_slot], axis=-1), axis=-1).astype(q.dtype)
    S = k.shape[2]
    o = jnp.einsum("bchgs,bhsd->bchgd", p[..., :S], v) + jnp.einsum("bchgs,bhsd->bchgd", p[..., S:], sv)
    return o.reshape(B, C, Hq, D)


def decode_step(params: dict, cfg: ModelConfig, x: jax.Array, position: jax.Array, cache: DecodeCache, *,
                text_index=None, slot=None, anchor: jax.Array | None = None,
                adapters: StreamAdapters | None = None) -> tuple[jax.Array, DecodeCache]:
    """A chunk of C new tokens per row through every layer, reading the weights once for all of them.

    x: (B, C, H) input embeddings; position: (B, C) position ids. With text_index (a scalar, the same for
    every row) token 0 is a text token: written at that cache entry, marked valid, it attends to the
    valid entries up to and including itself. The other tokens (all C without text_index) are branch
    tokens written at slots slot, slot + 1, ...; the one at slot j attends to the valid text entries
    (including a text token of the same chunk) and slots 0..j. anchor (B,) is the position of the text
    token the branch belongs to (sliding windows are measured from it, as in training); with a text
    token it is that token's position. Returns hidden (B, C, H) after the final norm and the cache.

    adapters: thought adapters (model.lora), applied to the branch tokens only.

    Chunks exist because on a weight-bandwidth-bound device (one row on a CPU, small batches on a TPU) a
    decode step costs one read of the weights however few tokens it carries: generation feeds a chosen
    token together with the next thought's <start>, and a thought's last token together with <end>."""
    B, C = x.shape[:2]
    n_text = 0 if text_index is None else 1
    if C > n_text and slot is None:
        raise ValueError("branch tokens need a slot")
    if n_text == 0 and anchor is None:
        raise ValueError("a chunk without a text token needs the anchor of its branch")
    dtype = jnp.dtype(cfg.dtype)
    x = constrain_batch(x.astype(dtype))
    position = position.astype(jnp.int32)
    cos, sin = rope_cos_sin(cfg, position)  # (B, C, D)
    Ts = cache.sk[0].shape[2] if isinstance(cache.sk, tuple) else cache.sk.shape[3]
    valid, pos = cache.valid, cache.pos
    if n_text:
        valid = jax.lax.dynamic_update_slice_in_dim(valid, jnp.ones((B, 1), bool), text_index, axis=1)
        pos = jax.lax.dynamic_update_slice_in_dim(pos, position[:, :1], text_index, axis=1)
        anchor = position[:, 0]
    anchor = anchor.astype(jnp.int32)
    # Query c's own slot (-1: a text token, which sees no slot); it sees slots up to its own.
    own = jnp.arange(C) - n_text + (0 if slot is None else slot)
    slot_ok = (jnp.arange(Ts)[None, :] <= own[:, None]) & (jnp.arange(C) >= n_text)[:, None]  # (C, Ts)
    windows = jnp.asarray(cfg.layer_windows, jnp.int32)
    # Adapters (model.lora) act on the branch tokens only, as in training's thought streams.
    gate = None if adapters is None else (
        adapters.scale * (jnp.arange(C) >= n_text)).astype(dtype)[None, :, None]
    ad = None if adapters is None else adapters.weights

    def body(h, xs):
        lp, window, k_c, v_c, sk_c, sv_c, ap = xs
        lp = with_layer_adapters(lp, ap)
        q, k, v = qkv(cfg, lp, h, cos, sin, gate=gate)  # (B, C, H*, D)
        k, v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)  # (B, Hkv, C, D): the cache's layout
        if n_text:
            k_c = jax.lax.dynamic_update_slice_in_dim(k_c, k[:, :, :1].astype(k_c.dtype), text_index, axis=2)
            v_c = jax.lax.dynamic_update_slice_in_dim(v_c, v[:, :, :1].astype(v_c.dtype), text_index, axis=2)
        if C > n_text:
            sk_c = jax.lax.dynamic_update_slice_in_dim(sk_c, k[:, :, n_text:].astype(sk_c.dtype), slot, axis=2)
            sv_c = jax.lax.dynamic_update_slice_in_dim(sv_c, v[:, :, n_text:].astype(sv_c.dtype), slot, axis=2)
        key_ok = valid & (pos <= anchor[:, None]) & (anchor[:, None] - pos < window)
        o = _attend(q, k_c.astype(q.dtype), v_c.astype(q.dtype), key_ok, sk_c.astype(q.dtype),
                    sv_c.astype(q.dtype), slot_ok, cfg.head_dim ** -0.5)
        h = attention_out_and_mlp(cfg, lp, h, o, gate=gate)
        return constrain_batch(h), (k_c, v_c, sk_c, sv_c)

    layers = params["model"]["layers"]
    if isinstance(layers, (tuple, list)):  # per-layer trees (cpu_decode_params): one static body per layer
        h, outs = x, []
        for i, lp in enumerate(layers):
            ap = None if ad is None else jax.tree.map(lambda a, i=i: a[i], ad)
            h, out = body(h, (lp, windows[i], cache.k[i], cache.v[i], cache.sk[i], cache.sv[i], ap))
            outs.append(out)
        k, v, sk, sv = (tuple(a) for a in zip(*outs))
    else:
        h, (k, v, sk, sv) = jax.lax.scan(body, x, (layers, windows, cache.k, cache.v, cache.sk, cache.sv, ad))
    hidden = rms_norm(h, params["model"]["norm"]["weight"], cfg.rms_norm_eps)
    return hidden, DecodeCache(k, v, valid, pos, sk, sv)


def params_for_decoding(params: dict, mesh=None) -> dict:
    """The params decoding reads: on one CPU device (mesh None) a copy in cpu_decode_params' layout,
    otherwise (TPU, or a mesh: training's layout) the params as they are."""
    if mesh is None and jax.default_backend() == "cpu":
        return cpu_decode_params(params)
    return params


def cpu_decode_params(params: dict) -> dict:
    """params in the layout XLA:CPU decodes fastest: the stacked layers split into a tuple of per-layer
    trees, each projection's weight (out, in) stored transposed as Flax's kernel (in, out)
    (transformer.linear reads either). A copy for decoding on CPU; training and TPUs keep HF's layout.

    Why, measured on this 2-core CPU (SmolLM2-135M, batch 1): a decode step multiplies a few tokens by
    every weight once, so reading the weights is most of its cost. Under lax.scan XLA:CPU first copies
    each layer's slice of the stacked weights (toy config: 1.1-1.5 ms of matmuls per step stacked vs
    0.5 ms per-layer). With (out, in) weights a 2-token chunk (model.decode.decode_step) takes 1.5x a
    1-token step (44 vs 29 ms), with (in, out) 1.2x (36 ms): thinking generation 7% faster per token
    (benchmarks/generate_bench.py); 1-token steps are unchanged. The cache follows the params
    (prefill returns per-layer tuples for unstacked params), so no step copies it either. Params
    already in this layout are returned as they are."""
    layers = params["model"]["layers"]
    if isinstance(layers, (tuple, list)):
        return params
    n = jax.tree.leaves(layers)[0].shape[0]

    def kernels(tree):
        if "weight" in tree and tree["weight"].ndim == 2:
            return {**{k: v for k, v in tree.items() if k != "weight"}, "kernel": tree["weight"].T}
        return {k: kernels(v) if isinstance(v, dict) else v for k, v in tree.items()}

    split = tuple(kernels(jax.tree.map(lambda a, i=i: a[i], layers)) for i in range(n))
    return {**params, "model": {**params["model"], "layers": split}}
