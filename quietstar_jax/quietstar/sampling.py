"""Parallel thought sampling at every position, KV-cached, without gradients.

One base pass caches the keys/values of the text; then each decode step runs one new stream of L
tokens (one per position) against the cache and samples the next thought token at every position at
once. Sampling draws from softmax(logits / temperature) (optionally top-k), with the start/end ids
masked: exactly what feeding each prefix + thought so far to the plain model one by one would give.

Communication on a mesh: with ModelConfig.decode_shards > 0 the T + 1 passes run in the decode layout
(quietstar_jax.sharding.layout): one compute-dtype copy of the weights, split over groups of
decode_shards devices, made once per call and kept for all passes; each pass then moves activations,
not weights. decode_shards = 0 gathers the fsdp-sharded weights layer by layer in every pass, like the
training forward. Same numbers either way (up to float32 summation order on a mesh).

The reference samples with hard Gumbel-max, which is the same categorical distribution; we use the
inverse CDF with one uniform per position instead, because Gumbel-max needs V random numbers per
position: on the reference CPU config (4 x 64 positions, V = 32000) that is 0.24 s of RNG per decode
step vs ~0.03 s for the whole two-level inverse-CDF draw (see sample_inverse_cdf).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from quietstar_jax.model.attention import StreamMask
from quietstar_jax.model.config import ModelConfig
from quietstar_jax.model.transformer import KVCache, forward, lm_logits, resident_weights
from quietstar_jax.quietstar.adapters import thought_adapters
from quietstar_jax.quietstar.config import QuietStarConfig
from quietstar_jax.quietstar.tokens import embed_with_thoughts, mask_thought_logits
from quietstar_jax.sharding.layout import decode_layout


def keep_top_k(logits, k: int):
    """logits (..., V) with every id below the k-th largest at -inf (k = 0: all kept)."""
    if not k:
        return logits
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth, -jnp.inf, logits)


def sampling_logits(logits, qs: QuietStarConfig):
    """Raw logits (..., V) -> the logits thoughts are sampled from (mask, top-k, temperature)."""
    return keep_top_k(mask_thought_logits(logits.astype(jnp.float32), qs), qs.top_k) / qs.sample_temperature


def sampling_uniforms(key, step: int, shape):
    """The uniforms (one per position) of decode step `step`, in (0, 1). Shared with the tests' naive
    reference so both draw the same thoughts."""
    tiny = jnp.finfo(jnp.float32).tiny
    return jax.random.uniform(jax.random.fold_in(key, step), shape, jnp.float32, minval=tiny, maxval=1.0)


def cdf_block_size(vocab: int) -> int:
    """Block size of the two-level inverse CDF: a power of two near sqrt(V) (128 for V = 32000), so
    both levels are short scans."""
    c = 16
    while c * c < vocab:
        c *= 2
    return c


def sample_inverse_cdf(logits, u, block: int | None = None):
    """logits (..., V) float32 (-inf = excluded), u (...) in (0, 1) -> (token ids (...), entropy (...)).

    Token = the smallest j with cumsum(p)[j] >= u * sum(p): an exact draw from softmax(logits) for
    uniform u. Computed in two levels, because a full-vocabulary cumsum is a log-depth scan over V
    that cost more than the decode step's matmuls on CPU (31 ms of 43 per step on the reference CPU
    config): the vocabulary is cut into blocks of `block` ids, a scan over the block sums picks the
    block, a scan inside that one block picks the id. Excluded ids have p = 0 and are never returned:
    should rounding land on a zero-probability id, the next (else the previous) positive id of the
    same block is taken, which is where an exact CDF puts that mass.
    """
    V = logits.shape[-1]
    C = block or cdf_block_size(V)
    nb = -(-V // C)
    # Unnormalised p = exp(z - max) (excluded ids: exp(-inf) = 0); the search scales u by the total.
    zm = logits - jnp.max(logits, axis=-1, keepdims=True)
    p = jnp.exp(zm)
    total = jnp.sum(p, axis=-1)
    ent = jnp.log(total) - jnp.sum(jnp.where(p > 0, p * zm, 0.0), axis=-1) / total
    if nb * C != V:
        p = jnp.pad(p, [(0, 0)] * (p.ndim - 1) + [(0, nb * C - V)])
    pb = p.reshape(p.shape[:-1] + (nb, C))
    bsum = jnp.sum(pb, axis=-1)  # (..., nb)
    bcdf = jnp.cumsum(bsum, axis=-1)
    target = u * bcdf[..., -1]  # <= the total, since u < 1
    # First block whose cumulative mass reaches the target; it has positive mass (the block before
    # it stays below the target), so it holds the draw.
    b = jnp.minimum(jnp.sum(bcdf < target[..., None], axis=-1), nb - 1)
    # Mass before block b, read from the same scan (not bcdf[b] - bsum[b]) so it stays < target.
    prev = jnp.where(b > 0, jnp.take_along_axis(bcdf, jnp.maximum(b - 1, 0)[..., None], -1)[..., 0], 0.0)
    inner = jnp.take_along_axis(pb, b[..., None, None], axis=-2)[..., 0, :]  # (..., C)
    icdf = prev[..., None] + jnp.cumsum(inner, axis=-1)
    j = jnp.sum(icdf < target[..., None], axis=-1)
    idx = jnp.arange(C)
    pos = inner > 0
    first_after = jnp.min(jnp.where(pos & (idx >= j[..., None]), idx, C), axis=-1)
    last_pos = jnp.max(jnp.where(pos, idx, -1), axis=-1)
    j = jnp.where(first_after < C, first_after, last_pos)
    return (b * C + j).astype(jnp.int32), ent


# The scope names this phase in the compiled program's op metadata (quietstar_jax.tpu.hlo_stats attributes
# the decode passes' communication to it).
@jax.named_scope("sample_thoughts")
def sample_thoughts(params, cfg: ModelConfig, qs: QuietStarConfig, tokens, positions, segment_ids, key,
                    return_logits: bool = False):
    """Samples N-3 thought tokens after every position.

    tokens, positions, segment_ids: (R, L). Returns thoughts (R, L, T) int32 (T = N - 3), the mean
    entropy of the sampling distributions, and with return_logits the raw logits (R, L, T, V).
    """
    params = jax.lax.stop_gradient(params)
    R, L = tokens.shape
    T = qs.num_thought_tokens
    if qs.thought_mode == "pause":  # fixed thoughts: every token is <start>, nothing is drawn
        fixed = jnp.full((R, L, T), qs.start_id, jnp.int32)
        return (fixed, jnp.float32(0), jnp.zeros((R, L, T, cfg.vocab_size))) if return_logits else (
            fixed, jnp.float32(0))
    if T == 0:
        empty = jnp.zeros((R, L, 0), jnp.int32)
        return (empty, jnp.float32(0), jnp.zeros((R, L, 0, cfg.vocab_size))) if return_logits else (
            empty, jnp.float32(0))
    layout = decode_layout(cfg.decode_shards)
    params = resident_weights(params, cfg, layout)
    x = embed_with_thoughts(params, cfg, qs, tokens)[:, None]
    _, base_kv = forward(params, cfg, x, positions[:, None], StreamMask.causal(segment_ids),
                         return_base_kv=True, layout=layout)
    cache = KVCache.create(base_kv, T, layout)
    adapters = thought_adapters(params, qs)  # the thought streams run the thought adapters, if any
    mask = StreamMask(segment_ids, jnp.zeros((1,), jnp.int32), jnp.arange(1, T + 1, dtype=jnp.int32))

    def step(carry, i):
        cache, prev = carry
        # Stream i + 1 holds <start> (i = 0) or the previous thought token.
        inp = jnp.where(i == 0, qs.start_id, prev)
        h, cache = forward(params, cfg, embed_with_thoughts(params, cfg, qs, inp)[:, None],
                           (positions + i + 1)[:, None],
                           StreamMask(mask.segment_ids, jnp.full((1,), i + 1, jnp.int32), mask.kv_streams),
                           cache=cache, slot=i, layout=layout, adapters=adapters)
        raw = lm_logits(params, cfg, h[:, 0])  # (R, L, V)
        tok, ent = sample_inverse_cdf(sampling_logits(raw, qs), sampling_uniforms(key, i, (R, L)))
        return (cache, tok), (tok, jnp.mean(ent), raw if return_logits else None)

    init = (cache, jnp.zeros((R, L), jnp.int32))
    _, (toks, ents, raws) = jax.lax.scan(step, init, jnp.arange(T))
    thoughts = jnp.moveaxis(toks, 0, -1)
    if return_logits:
        return thoughts, jnp.mean(ents), jnp.moveaxis(raws, 0, 2)
    return thoughts, jnp.mean(ents)
