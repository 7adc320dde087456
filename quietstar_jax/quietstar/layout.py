"""Stream layout of one training row and the targets/validity of every prediction.

For a row of L text tokens x (and N, M from the config) the K = N + M - 1 streams are

    stream 0          x_p                      (the text)
    stream 1          <start>
    streams 2..N-2    thought token t_{p,j}    (N - 3 sampled tokens)
    stream N-1        <end>
    streams N..K-1    x_{p+s} for s = 1..M-1   (extended teacher forcing)

at position id pos_p + k. Talk step s (0..M-1) reads stream N-1+s, mixes with the base hidden state at
p+s and predicts x_{p+s+1}.

Targets and rewards (the authors' rule, exact within each packed document):
  * the prediction at p for x_{p+s+1} has a target iff x_{p+s+1} is in the same (non-padding) segment
    as x_p (the authors: iff the label is not padding);
  * the reward at p sums the terms of the talk steps that have a target, for p <= L - 2 - M (the
    authors' slice of the row); a position near the end of a document thus gets a partial sum.
"""

from __future__ import annotations

import jax.numpy as jnp

from quietstar_jax.quietstar.config import QuietStarConfig


def shift_left(x, s: int, fill=0):
    """x (R, L, ...) -> y with y[:, p] = x[:, p + s], `fill` past the end."""
    if s == 0:
        return x
    pad = jnp.full((x.shape[0], s) + x.shape[2:], fill, x.dtype)
    return jnp.concatenate([x[:, s:], pad], axis=1)


def stream_tokens(qs: QuietStarConfig, tokens, thoughts):
    """tokens (R, L), thoughts (R, L, N-3) -> (R, K, L) token ids of every stream."""
    R, L = tokens.shape
    full = lambda i: jnp.full((R, 1, L), i, tokens.dtype)  # noqa: E731
    parts = [tokens[:, None], full(qs.start_id), jnp.moveaxis(thoughts, -1, 1).astype(tokens.dtype),
             full(qs.end_id)]
    # Past the end of the row the authors feed their pad id; those predictions have no target.
    parts += [shift_left(tokens, s, fill=qs.pad_id)[:, None] for s in range(1, qs.n_ahead_talk)]
    return jnp.concatenate(parts, axis=1)


def stream_positions(qs: QuietStarConfig, positions, num_streams: int | None = None):
    """positions (R, L) -> (R, K, L): stream k at text position p has position id pos_p + k."""
    K = qs.num_streams if num_streams is None else num_streams
    return positions[:, None, :] + jnp.arange(K, dtype=positions.dtype)[None, :, None]


def next_token_valid(segment_ids, s: int):
    """(R, L) bool: x_{p+s+1} exists and belongs to the same (non-padding) segment as x_p."""
    nxt = shift_left(segment_ids, s + 1, fill=0)
    return (segment_ids > 0) & (nxt == segment_ids)


def reward_slice(qs: QuietStarConfig, length: int):
    """(L,) bool: the positions of a row that can get a reward: p <= L - 2 - M (the authors' slice),
    or p <= L - 1 - M without drop_last_reward_position."""
    n = length - qs.n_ahead_talk - (1 if qs.drop_last_reward_position else 0)
    return jnp.arange(length) < n


def reward_valid(qs: QuietStarConfig, segment_ids):
    """(R, L) bool: positions whose thought gets a reward: in the slice and with at least the first
    target (a partial sum near a document's end), or all M targets with reward_needs_all_targets
    (then drop_last_reward_position also drops the last one of every document)."""
    M = qs.n_ahead_talk
    if qs.reward_needs_all_targets:
        ok = next_token_valid(segment_ids, M - 1)
        if qs.drop_last_reward_position:
            ok = ok & next_token_valid(segment_ids, M)
        return ok
    return next_token_valid(segment_ids, 0) & reward_slice(qs, segment_ids.shape[-1])[None]
