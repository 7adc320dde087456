"""Choosing tokens from logits: greedy, or temperature / top-k / top-p sampling, with one uniform per
row so that a reference implementation can replay exactly the same draws.

    token = choose(logits, u, Sampler(temperature=0.7, top_p=0.9))     # logits (B, V), u (B,)
    u = draw(key, step, slot, rows)                                     # rows (B,): each row's own draws

Draws go through the thought sampler's exact inverse CDF (quietstar_jax.quietstar.sampling), so a
token is a draw from softmax(filtered logits / temperature).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from quietstar_jax.errors import ConfigError
from quietstar_jax.quietstar.sampling import keep_top_k, sample_inverse_cdf, sampling_uniforms


@dataclasses.dataclass(frozen=True)
class Sampler:
    temperature: float = 0.0  # 0: greedy (argmax)
    top_k: int = 0  # keep the k most likely ids (0: all)
    top_p: float = 1.0  # keep the smallest set of ids whose probability reaches top_p (1: all)

    def __post_init__(self):
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def filtered_logits(logits: jax.Array, s: Sampler) -> jax.Array:
    """logits (..., V) float32, -inf = excluded -> the logits sampled from: top-k, top-p, / temperature."""
    z = keep_top_k(logits.astype(jnp.float32), s.top_k) / s.temperature
    if s.top_p < 1.0:
        order = jnp.argsort(-z, axis=-1)
        sorted_z = jnp.take_along_axis(z, order, axis=-1)
        probs = jax.nn.softmax(sorted_z, axis=-1)
        # Keep an id if the mass of the more likely ids is still below top_p (the first id always).
        keep_sorted = (jnp.cumsum(probs, axis=-1) - probs) < s.top_p
        keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)  # back to id order
        z = jnp.where(keep, z, -jnp.inf)
    return z


def choose(logits: jax.Array, u: jax.Array, s: Sampler) -> jax.Array:
    """logits (B, V) (-inf = never), u (B,) in (0, 1) -> ids (B,) int32."""
    if s.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return sample_inverse_cdf(filtered_logits(logits, s), u)[0]


def draw(key: jax.Array, step, slot, rows: jax.Array) -> jax.Array:
    """The uniforms (B,) in (0, 1) of generated token `step` for rows with ids `rows` (B,): slot 0 chooses
    the output token, slot 1 + j the j-th thought token. Keyed by row id, not by batch shape, so a row
    draws the same numbers alone or in any batch."""
    k = jax.random.fold_in(jax.random.fold_in(key, step), slot)
    return jax.vmap(lambda r: sampling_uniforms(k, r, ()))(rows)
