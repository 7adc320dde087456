"""Parallel thought sampling at every position, KV-cached, without gradients.

One base pass caches the keys/values of the text; then each decode step runs one new stream of L
tokens (one per position) against the cache and samples the next thought token at every position at
once. Sampling is hard Gumbel-max on logits / temperature (optionally top-k), with the start/end ids
masked: exactly what feeding each prefix + thought so far to the plain model one by one would give.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from quietstar_jax.model.attention import StreamMask
from quietstar_jax.model.config import ModelConfig
from quietstar_jax.model.transformer import KVCache, forward, lm_logits
from quietstar_jax.quietstar.config import QuietStarConfig
from quietstar_jax.quietstar.tokens import embed_with_thoughts, mask_thought_logits


def sampling_logits(logits, qs: QuietStarConfig):
    """Raw logits (..., V) -> the logits thoughts are sampled from (mask, top-k, temperature)."""
    logits = mask_thought_logits(logits.astype(jnp.float32), qs)
    if qs.top_k:
        kth = jax.lax.top_k(logits, qs.top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return logits / qs.sample_temperature


def gumbel_noise(key, step: int, shape):
    """The Gumbel noise of sampling step `step` (shared with the naive reference in the tests)."""
    return jax.random.gumbel(jax.random.fold_in(key, step), shape, jnp.float32)


def sample_thoughts(params, cfg: ModelConfig, qs: QuietStarConfig, tokens, positions, segment_ids, key,
                    return_logits: bool = False):
    """Samples N-3 thought tokens after every position.

    tokens, positions, segment_ids: (R, L). Returns thoughts (R, L, T) int32 (T = N - 3), the mean
    entropy of the sampling distributions, and with return_logits the raw logits (R, L, T, V).
    """
    params = jax.lax.stop_gradient(params)
    R, L = tokens.shape
    T = qs.num_thought_tokens
    if T == 0:
        empty = jnp.zeros((R, L, 0), jnp.int32)
        return (empty, jnp.float32(0), jnp.zeros((R, L, 0, cfg.vocab_size))) if return_logits else (
            empty, jnp.float32(0))
    x = embed_with_thoughts(params, cfg, qs, tokens)[:, None]
    _, base_kv = forward(params, cfg, x, positions[:, None], StreamMask.causal(segment_ids),
                         return_base_kv=True)
    cache = KVCache.create(base_kv, T)
    mask = StreamMask(segment_ids, jnp.zeros((1,), jnp.int32), jnp.arange(1, T + 1, dtype=jnp.int32))

    def step(carry, i):
        cache, prev = carry
        # Stream i + 1 holds <start> (i = 0) or the previous thought token.
        inp = jnp.where(i == 0, qs.start_id, prev)
        h, cache = forward(params, cfg, embed_with_thoughts(params, cfg, qs, inp)[:, None],
                           (positions + i + 1)[:, None],
                           StreamMask(mask.segment_ids, jnp.full((1,), i + 1, jnp.int32), mask.kv_streams),
                           cache=cache, slot=i)
        raw = lm_logits(params, cfg, h[:, 0])  # (R, L, V)
        logits = sampling_logits(raw, qs)
        tok = jnp.argmax(logits + gumbel_noise(key, i, logits.shape), axis=-1).astype(jnp.int32)
        logp = jax.nn.log_softmax(logits, axis=-1)
        ent = -jnp.sum(jnp.where(jnp.isfinite(logp), jnp.exp(logp) * logp, 0.0), axis=-1)
        return (cache, tok), (tok, jnp.mean(ent), raw if return_logits else None)

    init = (cache, jnp.zeros((R, L), jnp.int32))
    _, (toks, ents, raws) = jax.lax.scan(step, init, jnp.arange(T))
    thoughts = jnp.moveaxis(toks, 0, -1)
    if return_logits:
        return thoughts, jnp.mean(ents), jnp.moveaxis(raws, 0, 2)
    return thoughts, jnp.mean(ents)
