"""Stream attention: causal attention generalised to Quiet-STaR's K parallel streams.

Layout. A batch row holds K streams of L tokens, (B, K, L). Stream 0 is the text itself (the "base"
stream); stream k >= 1 holds, at every position p, the k-th token generated after x_p (start-of-thought,
thought tokens, end-of-thought, teacher-forced continuation). A query of stream k at position p sees

    * base keys j <= p (causal; also within the same segment and sliding window), and
    * the keys of streams 1..k at the *same* position p (the "diagonal").

Plain causal attention is the special case K = 1. Instead of building the L x KL mask of the
reference implementation, the scores are computed in two parts that share one softmax:

    base part  (B, Kq, Hkv, G, L, L):  one batched matmul of every query stream against the base keys
    diag part  (B, Kq, Hkv, G, L, Kd): each query against the Kd stream keys at its own position

so the work is O(K L^2 + L K^2) instead of O(K^2 L^2), and nothing of size L x KL is materialised.
The same function serves the KV-cached sampler (Kq = 1 new stream, Kd = cache slots) and the full
teacher-forced training pass (Kq = K, Kd = K - 1).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

# Finite "minus infinity": a fully masked row can never occur (the base diagonal j = p is always
# visible), but a finite value keeps gradients NaN-free under any masking.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class StreamMask:
    """Structured attention mask: who sees whom, without materialising a dense mask.

    segment_ids: (B, L) int32. A base key is visible only to queries of the same segment. Use 1 for
        every real token of a single document, distinct ids for packed documents, 0 for padding
        (padding sees padding only, so its rows stay finite; its outputs are masked in the losses).
    q_streams: (Kq,) int32 stream index of each query stream (0 = base text).
    kv_streams: (Kd,) int32 stream index of each diagonal key slot. A slot is visible to a query of
        stream k iff 1 <= slot stream <= k, so unused cache slots can be parked at a large index.
    """

    segment_ids: jax.Array
    q_streams: jax.Array
    kv_streams: jax.Array

    @classmethod
    def causal(cls, segment_ids: jax.Array) -> "StreamMask":
        """Ordinary causal attention over one stream (K = 1)."""
        return cls(segment_ids, jnp.zeros((1,), jnp.int32), jnp.zeros((0,), jnp.int32))

    @classmethod
    def streams(cls, segment_ids: jax.Array, num_streams: int) -> "StreamMask":
        """All K streams at once: queries 0..K-1, diagonal keys are streams 1..K-1."""
        ids = jnp.arange(num_streams, dtype=jnp.int32)
        return cls(segment_ids, ids, ids[1:])

    def base_visible(self, window) -> jax.Array:
        """(B, L, L) bool: query position p may see base key j (causal, same segment, in window)."""
        L = self.segment_ids.shape[-1]
        p = jnp.arange(L)[:, None]
        j = jnp.arange(L)[None, :]
        ok = (j <= p) & (p - j < window)
        same = self.segment_ids[:, :, None] == self.segment_ids[:, None, :]
        return ok[None] & same

    def diag_visible(self) -> jax.Array:
        """(Kq, Kd) bool: query stream k may see diagonal slot s."""
        s = self.kv_streams[None, :]
        return (s >= 1) & (s <= self.q_streams[:, None])


def stream_attention(q, k_base, v_base, k_diag, v_diag, mask: StreamMask, window, scale: float):
    """Attention of query streams over base keys and same-position stream keys.

    q: (B, Kq, L, Hq, D); k_base, v_base: (B, L, Hkv, D); k_diag, v_diag: (B, Kd, L, Hkv, D).
    window: scalar int (sliding window; a huge value for full attention), may be traced.
    Returns (B, Kq, L, Hq, D) in q's dtype. Softmax in float32, as HF does.
    """
    B, Kq, L, Hq, D = q.shape
    Hkv = k_base.shape[2]
    G = Hq // Hkv
    qg = q.reshape(B, Kq, L, Hkv, G, D)
    s_base = jnp.einsum("bklhgd,bmhd->bkhglm", qg, k_base, preferred_element_type=jnp.float32)
    s_diag = jnp.einsum("bklhgd,bjlhd->bkhglj", qg, k_diag, preferred_element_type=jnp.float32)
    base_ok = mask.base_visible(window)[:, None, None, None]  # (B, 1, 1, 1, L, L)
    diag_ok = mask.diag_visible()[None, :, None, None, None, :]  # (1, Kq, 1, 1, 1, Kd)
    s_base = jnp.where(base_ok, s_base * scale, MASK_VALUE)
    s_diag = jnp.where(diag_ok, s_diag * scale, MASK_VALUE)
    probs = jax.nn.softmax(jnp.concatenate([s_base, s_diag], axis=-1), axis=-1).astype(q.dtype)
    p_base, p_diag = probs[..., :L], probs[..., L:]
    out = jnp.einsum("bkhglm,bmhd->bklhgd", p_base, v_base)
    out = out + jnp.einsum("bkhglj,bjlhd->bklhgd", p_diag, v_diag)
    return out.reshape(B, Kq, L, Hq, D)


def dense_stream_attention(q, k_base, v_base, k_diag, v_diag, mask: StreamMask, window, scale: float):
    """The reference's formulation of the same attention: every stream flattened into one sequence of
    L + Kd*L keys with an explicit (Kq*L) x (L + Kd*L) mask. O(K^2 L^2); kept selectable
    (ModelConfig.attention_impl = "dense") for benchmarks only. Same signature as stream_attention.
    """
    B, Kq, L, Hq, D = q.shape
    Kd, Hkv = k_diag.shape[1], k_base.shape[2]
    G = Hq // Hkv
    keys = jnp.concatenate([k_base, k_diag.reshape(B, Kd * L, Hkv, D)], axis=1)
    vals = jnp.concatenate([v_base, v_diag.reshape(B, Kd * L, Hkv, D)], axis=1)
    base = jnp.broadcast_to(mask.base_visible(window)[:, None], (B, Kq, L, L))
    same_pos = jnp.eye(L, dtype=bool)[:, None, :]  # (L, 1, L)
    diag = mask.diag_visible()[:, None, :, None] & same_pos[None]  # (Kq, L, Kd, L)
    full = jnp.concatenate([base, jnp.broadcast_to(diag.reshape(1, Kq, L, Kd * L), (B, Kq, L, Kd * L))], -1)
    full = full.reshape(B, 1, 1, Kq * L, L + Kd * L)
    qg = q.reshape(B, Kq * L, Hkv, G, D)
    s = jnp.einsum("bqhgd,bkhd->bhgqk", qg, keys, preferred_element_type=jnp.float32) * scale
    probs = jax.nn.softmax(jnp.where(full, s, MASK_VALUE), axis=-1).astype(q.dtype)
    out = jnp.einsum("bhgqk,bkhd->bqhgd", probs, vals)
    return out.reshape(B, Kq, L, Hq, D)
