"""Which dtype the numerically sensitive parts (norms, RoPE tables, attention scores, softmaxes,
log-probs, losses) compute in: float32 for bf16 / fp16 / fp32 compute, float64 for float64 compute
(golden-fixture tests run the whole model in float64). One rule, used everywhere."""

from __future__ import annotations

import jax.numpy as jnp


def acc_dtype(dtype) -> jnp.dtype:
    """The compute dtype, but at least float32."""
    return jnp.promote_types(jnp.dtype(dtype), jnp.float32)
