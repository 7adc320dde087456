"""Rotary position embedding, HF `rotate_half` layout, with explicit (arbitrary) position ids.

Quiet-STaR gives a token of stream k at text position p the position id p + k, so positions are never
assumed to be arange(L).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from quietstar_jax.model.config import ModelConfig
from quietstar_jax.model.numerics import acc_dtype


def inverse_frequencies(cfg: ModelConfig, dtype=np.float32) -> np.ndarray:
    """(D/2,) inverse frequencies, including HF's 'linear' and 'llama3' scaling.

    dtype float32 reproduces HF's float32 table bit for bit; float64 evaluates the same formulas in
    float64 (float64 compute)."""
    D = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (np.arange(0, D, 2, dtype=np.int64).astype(dtype) / D))
    rope = dict(cfg.rope_scaling)
    rtype = rope.get("rope_type", "default")
    if rtype == "linear":
        inv = inv / rope["factor"]
    elif rtype == "llama3":
        factor, lo, hi = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
        old_len = rope["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old_len / lo, inv / factor, inv)
        smooth = (old_len / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_len / hi) & ~(wavelen > old_len / lo)
        inv = np.where(medium, smoothed, scaled)
    return inv.astype(dtype)


def rope_cos_sin(cfg: ModelConfig, positions: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """positions (...,) int -> cos, sin (..., D) in float32 (float64 for float64 compute), like HF's
    float32 tables."""
    dt = acc_dtype(cfg.dtype)
    freqs = positions.astype(dt)[..., None] * jnp.asarray(inverse_frequencies(cfg, np.dtype(dt)))
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    """x (..., heads, D); cos/sin (..., D) broadcast over heads. Computed in x's dtype like HF."""
    cos = cos[..., None, :].astype(x.dtype)
    sin = sin[..., None, :].astype(x.dtype)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin
