"""Autoregressive decoding with a KV cache, plus "branch" slots for side computations (a thought).

    hidden, cache = prefill(params, cfg, x, positions, valid, max_len, num_slots)   # the prompt
    h, cache = decode_step(params, cfg, x_t, pos_t, cache, index=i)                # append a real token
    h, cache = decode_step(params, cfg, x_t, pos_t, cache, index=j, branch=True,   # a thought token: sees
                           anchor=pos_p)                                           # the text and slots 0..j

Layout (B rows, S cache entries, Ts slots, nL layers, Hkv KV heads of D):
    k, v    (nL, B, S, Hkv, D)   the text; entry i holds the token written at index i
    valid   (B, S) bool          which entries hold a real token (padding never does)
    pos     (B, S) int32         their position ids (rows may be left-padded: positions restart per row)
    sk, sv  (nL, B, Ts, Hkv, D)  branch slots; a branch token at slot j sees valid text entries and
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
    layers = params["model"]["layers"]
    unstacked = isinstance(layers, (tuple, list))
    if unstacked:  # the prompt runs once: restack for the scanned forward, split its cache after
        params = {**params, "model": {**params["model"], "layers": jax.tree.map(lambda *a: jnp.stack(a), *layers)}}
    hidden, (k, v) = forward(params, cfg, x[:, None], positions[:, None], StreamMask.causal(valid.astype(jnp.int32)),
                             return_base_kv=True)
    nL, _, _, Hkv, D = k.shape
    pad = [(0, 0), (0, 0), (0, max_len - P), (0, 0), (0, 0)]
    slots = jnp.zeros((nL, B, num_slots, Hkv, D), k.dtype)
    cache = DecodeCache(jnp.pad(k, pad), jnp.pad(v, pad), jnp.pad(valid, [(0, 0), (0, max_len - P)]),
                        jnp.pad(positions.astype(jnp.int32), [(0, 0), (0, max_len - P)]), slots, slots)
    return hidden[:, 0], (cache.unstacked() if unstacked else cache)


def _attend(q, k, v, key_ok, sk, sv, slot_ok, scale):
    """q (B, Hq, D) against text keys (B, S, Hkv, D) where key_ok (B, S) and slot keys (B, Ts, Hkv, D)
    where slot_ok (B, Ts); one softmax over both (float32, float64 for float64 compute)."""
    B, Hq, D = q.shape
    Hkv = k.shape[2]
    qg = q.reshape(B, Hkv, Hq // Hkv, D)
    acc = acc_dtype(q.dtype)
    s_text = jnp.einsum("bhgd,bshd->bhgs", qg, k, preferred_element_type=acc) * scale
    s_slot = jnp.einsum("bhgd,bshd->bhgs", qg, sk, preferred_element_type=acc) * scale
    s_text = jnp.where(key_ok[:, None, None, :], s_text, MASK_VALUE)
    s_slot = jnp.where(slot_ok[:, None, None, :], s_slot, MASK_VALUE)
    p = jax.nn.softmax(jnp.concatenate([s_text, s_slot], axis=-1), axis=-1).astype(q.dtype)
    S = k.shape[1]
    o = jnp.einsum("bhgs,bshd->bhgd", p[..., :S], v) + jnp.einsum("bhgs,bshd->bhgd", p[..., S:], sv)
    return o.reshape(B, Hq, D)


def decode_step(params: dict, cfg: ModelConfig, x: jax.Array, position: jax.Array, cache: DecodeCache, index,
                branch: bool = False, anchor: jax.Array | None = None) -> tuple[jax.Array, DecodeCache]:
    """One new token per row through every layer.

    x: (B, H) input embeddings; position: (B,) position ids. Text token (branch=False): written at cache
    entry `index` (a scalar, the same for every row), marked valid, attends to the valid entries up to
    and including itself. Branch token (branch=True): written at slot `index`, attends to the valid text
    entries and slots 0..index; anchor (B,) is the position of the text token the branch belongs to
    (sliding windows are measured from it, as in training). Returns hidden (B, H) after the final norm
    and the updated cache."""
    B = x.shape[0]
    dtype = jnp.dtype(cfg.dtype)
    x = constrain_batch(x.astype(dtype)[:, None])  # (B, 1, H)
    position = position.astype(jnp.int32)
    cos, sin = rope_cos_sin(cfg, position[:, None])  # (B, 1, D)
    Ts = cache.sk[0].shape[1] if isinstance(cache.sk, tuple) else cache.sk.shape[2]
    if branch:
        valid, pos = cache.valid, cache.pos
        slot_ok = jnp.broadcast_to(jnp.arange(Ts) <= index, (B, Ts))
        anchor = position if anchor is None else anchor.astype(jnp.int32)
    else:
        valid = jax.lax.dynamic_update_slice_in_dim(cache.valid, jnp.ones((B, 1), bool), index, axis=1)
        pos = jax.lax.dynamic_update_slice_in_dim(cache.pos, position[:, None], index, axis=1)
        slot_ok = jnp.zeros((B, Ts), bool)
        anchor = position
    windows = jnp.asarray(cfg.layer_windows, jnp.int32)

    def body(h, xs):
        lp, window, k_c, v_c, sk_c, sv_c = xs
        q, k, v = qkv(cfg, lp, h, cos, sin)  # (B, 1, H*, D)
        if branch:
            sk_c = jax.lax.dynamic_update_slice_in_dim(sk_c, k.astype(sk_c.dtype), index, axis=1)
            sv_c = jax.lax.dynamic_update_slice_in_dim(sv_c, v.astype(sv_c.dtype), index, axis=1)
        else:
            k_c = jax.lax.dynamic_update_slice_in_dim(k_c, k.astype(k_c.dtype), index, axis=1)
            v_c = jax.lax.dynamic_update_slice_in_dim(v_c, v.astype(v_c.dtype), index, axis=1)
        key_ok = valid & (pos <= anchor[:, None]) & (anchor[:, None] - pos < window)
        o = _attend(q[:, 0], k_c.astype(q.dtype), v_c.astype(q.dtype), key_ok, sk_c.astype(q.dtype),
                    sv_c.astype(q.dtype), slot_ok, cfg.head_dim ** -0.5)
        h = attention_out_and_mlp(cfg, lp, h, o[:, None])
        return constrain_batch(h), (k_c, v_c, sk_c, sv_c)

    layers = params["model"]["layers"]
    if isinstance(layers, (tuple, list)):  # unstacked (unstack_layers): one static body per layer
        h, outs = x, []
        for i, lp in enumerate(layers):
            h, out = body(h, (lp, windows[i], cache.k[i], cache.v[i], cache.sk[i], cache.sv[i]))
            outs.append(out)
        k, v, sk, sv = (tuple(a) for a in zip(*outs))
    else:
        h, (k, v, sk, sv) = jax.lax.scan(body, x, (layers, windows, cache.k, cache.v, cache.sk, cache.sv))
    hidden = rms_norm(h, params["model"]["norm"]["weight"], cfg.rms_norm_eps)[:, 0]
    return hidden, DecodeCache(k, v, valid, pos, sk, sv)


def unstack_layers(params: dict) -> dict:
    """params with the stacked layers split into a tuple of per-layer trees, for decoding on CPU.

    A decode step multiplies one token by every weight once, so reading the weights is its whole cost;
    under lax.scan, XLA:CPU first copies each layer's slice of the stacked weights (measured on the toy
    config: 1.1-1.5 ms of matmuls per step with stacked weights vs 0.5 ms with per-layer arrays). The
    cache follows (prefill returns per-layer tuples for unstacked params), so no step copies it either.
    TPUs read the slices in place, so keep the stacked layout there (and one copy of the weights)."""
    layers = params["model"]["layers"]
    if isinstance(layers, (tuple, list)):
        return params
    n = jax.tree.leaves(layers)[0].shape[0]
    split = tuple(jax.tree.map(lambda a, i=i: a[i], layers) for i in range(n))
    return {**params, "model": {**params["model"], "layers": split}}
