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

import jax
import jax.numpy as jnp
from flax import struct

from quietstar_jax.model.numerics import acc_dtype

# Finite "minus infinity": keeps rows finite (and gradients NaN-free) even when a query sees no key at
# all (a padding query before the first real token).
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


@struct.dataclass
class StreamMask:
    """Structured attention mask: who sees whom, without materialising a dense mask.

    segment_ids: (B, L) int32. A base key is visible only to queries of the same segment. Use 1 for
        every real token of a single document, distinct ids for packed documents, 0 for padding.
        Padding follows HF's attention_mask (and the authors' Quiet-STaR code): a padding key is seen by
        nobody; a padding query sees the real keys up to its position and no stream keys. Padding
        outputs never enter a loss; the rule only makes them equal the authors' hidden states.
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
        """(B, L, L) bool: query position p may see base key j (causal, in window, key not padding,
        same segment unless the query is padding)."""
        L = self.segment_ids.shape[-1]
        p = jnp.arange(L)[:, None]
        j = jnp.arange(L)[None, :]
        ok = (j <= p) & (p - j < window)
        sq, sk = self.segment_ids[:, :, None], self.segment_ids[:, None, :]
        return ok[None] & (sk > 0) & ((sq == sk) | (sq == 0))

    def diag_visible(self) -> jax.Array:
        """(B, Kq, L, Kd) bool: the query of stream k at position p may see diagonal slot s (its own
        position's streams 1..k; none for a padding position)."""
        s = self.kv_streams[None, :]
        streams = (s >= 1) & (s <= self.q_streams[:, None])  # (Kq, Kd)
        real = self.segment_ids > 0  # (B, L)
        return streams[None, :, None, :] & real[:, None, :, None]


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
    s_base = jnp.einsum("bklhgd,bmhd->bkhglm", qg, k_base, preferred_element_type=acc_dtype(q.dtype))
    s_diag = jnp.einsum("bklhgd,bjlhd->bkhglj", qg, k_diag, preferred_element_type=acc_dtype(q.dtype))
    base_ok = mask.base_visible(window)[:, None, None, None]  # (B, 1, 1, 1, L, L)
    diag_ok = mask.diag_visible()[:, :, None, None]  # (B, Kq, 1, 1, L, Kd)
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
    diag = mask.diag_visible()[..., None] & same_pos[None, None]  # (B, Kq, L, Kd, L)
    full = jnp.concatenate([base, diag.reshape(B, Kq, L, Kd * L)], -1)
    full = full.reshape(B, 1, 1, Kq * L, L + Kd * L)
    qg = q.reshape(B, Kq * L, Hkv, G, D)
    s = jnp.einsum("bqhgd,bkhd->bhgqk", qg, keys, preferred_element_type=acc_dtype(q.dtype)) * scale
    probs = jax.nn.softmax(jnp.where(full, s, MASK_VALUE), axis=-1).astype(q.dtype)
    out = jnp.einsum("bhgqk,bkhd->bqhgd", probs, vals)
    return out.reshape(B, Kq, L, Hq, D)
