"""The next-token distribution after thinking, at every position of a batch at once.

    out = think_logprobs(params, cfg, qs, tokens, key)
    out.mixed_logprobs   (B, L, V)  log p(x_{p+1} | x_0..x_p, thought at p): what the trained model predicts
    out.base_logprobs    (B, L, V)  log p(x_{p+1} | x_0..x_p): the same model without thinking
    out.mixing_weight    (B, L)     the mixing head's w at every position
    out.thoughts         (B, L, T)  the thought sampled after every position

A thought is sampled after every position in parallel (the training sampler), then the N streams
[text, <start>, T thought tokens, <end>] run teacher-forced in one pass and the hidden state at <end>
is mixed with the text's hidden state by the mixing head: the training objective's talk step 0 (equal
to it for the same thoughts: tests/test_inference.py). The thought length T may differ from
training's (num_thought_tokens).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import struct

from quietstar_jax.model.attention import StreamMask
from quietstar_jax.model.config import ModelConfig
from quietstar_jax.model.transformer import forward, lm_logits
from quietstar_jax.quietstar import layout
from quietstar_jax.quietstar.adapters import thought_adapters
from quietstar_jax.quietstar.config import QuietStarConfig
from quietstar_jax.quietstar.mixing import mixed_logits, mixing_weight
from quietstar_jax.quietstar.sampling import sample_thoughts
from quietstar_jax.quietstar.tokens import embed_with_thoughts, mask_thought_logits


@struct.dataclass
class ThinkOutput:
    mixed_logprobs: jax.Array
    base_logprobs: jax.Array
    mixing_weight: jax.Array
    thoughts: jax.Array


def thinking_config(qs: QuietStarConfig, num_thought_tokens: int | None = None) -> QuietStarConfig:
    """The config of one thought per position predicting the next token: N = T + 3 streams, M = P = 1."""
    T = qs.num_thought_tokens if num_thought_tokens is None else int(num_thought_tokens)
    return qs.replace(n_ahead=T + 3, n_ahead_talk=1, n_passes=1)


def think_logprobs(params: dict, cfg: ModelConfig, qs: QuietStarConfig, tokens: jax.Array, key: jax.Array | None,
                   segment_ids: jax.Array | None = None, positions: jax.Array | None = None,
                   thoughts: jax.Array | None = None, num_thought_tokens: int | None = None,
                   mask_thoughts: bool | None = None) -> ThinkOutput:
    """tokens (B, L) int; segment_ids (B, L) (default all 1; 0 = padding); positions (B, L) (default
    arange). thoughts (B, L, T): given instead of sampled from `key`. mask_thoughts: exclude the two
    thought ids from both distributions (default: as the training NLL, qs.mask_thought_logits_in_nll).
    Log-probs are float32."""
    B, L = tokens.shape
    segment_ids = jnp.ones((B, L), jnp.int32) if segment_ids is None else segment_ids
    positions = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L)) if positions is None else positions
    tq = thinking_config(qs, num_thought_tokens if thoughts is None else thoughts.shape[-1])
    if thoughts is None:
        thoughts, _ = sample_thoughts(params, cfg, tq, tokens, positions, segment_ids, key)
    chex.assert_shape(thoughts, (B, L, tq.num_thought_tokens))
    N = tq.num_streams
    streams = layout.stream_tokens(tq, tokens, jax.lax.stop_gradient(thoughts))
    hidden = forward(params, cfg, embed_with_thoughts(params, cfg, tq, streams), layout.stream_positions(tq, positions),
                     StreamMask.streams(segment_ids, N), adapters=thought_adapters(params, qs))
    h_base, h_end = hidden[:, 0], hidden[:, N - 1]
    w = mixing_weight(params["quietstar"]["talk_head"], qs, h_base, h_end)  # (B, L, 1)
    base = lm_logits(params, cfg, h_base)
    mixed = mixed_logits(params, cfg, qs, h_base, h_end, w, base_logits=base)
    mask = qs.mask_thought_logits_in_nll if mask_thoughts is None else mask_thoughts
    if mask:
        base, mixed = mask_thought_logits(base, qs), mask_thought_logits(mixed, qs)
    return ThinkOutput(jax.nn.log_softmax(mixed, axis=-1), jax.nn.log_softmax(base, axis=-1), w[..., 0], thoughts)
