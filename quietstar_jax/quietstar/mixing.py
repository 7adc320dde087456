"""Mixing head ("talk head"): how much of the post-thought hidden state to use for each prediction.

    w = MLP([h_base ; h_thought])            2H -> H -> ReLU -> H -> ReLU -> 1 (last layer zero-init)
    h_mix = (1 - w) * h_base + w * h_thought   (then lm_head)

Unbounded by default (reference), so w = 0 and every reward is exactly 0 at initialisation;
`mixer_bounded` applies a sigmoid. Parameter names follow the reference's talk_head.0.{0,2,4}
(nn.Sequential indices), torch (out, in) layout.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from quietstar_jax.quietstar.config import QuietStarConfig


def init_mixing_head(key: jax.Array, hidden_size: int) -> dict:
    """torch nn.Linear default init (U(+-1/sqrt(fan_in))) for the hidden layers, zeros for the last."""
    H = hidden_size
    k0, k1, k2, k3 = jax.random.split(key, 4)

    def uniform(k, shape, fan_in):
        b = 1.0 / (fan_in ** 0.5)
        return jax.random.uniform(k, shape, jnp.float32, -b, b)

    return {
        "0": {"weight": uniform(k0, (H, 2 * H), 2 * H), "bias": uniform(k1, (H,), 2 * H)},
        "2": {"weight": uniform(k2, (H, H), H), "bias": uniform(k3, (H,), H)},
        "4": {"weight": jnp.zeros((1, H), jnp.float32), "bias": jnp.zeros((1,), jnp.float32)},
    }


def mixing_head_axes() -> dict:
    return {"0": {"weight": ("embed", "embed2"), "bias": ("embed",)},
            "2": {"weight": ("embed", "embed2"), "bias": ("embed",)},
            "4": {"weight": ("norm", "embed"), "bias": ("norm",)}}


def mixing_weight(head: dict, qs: QuietStarConfig, h_base: jax.Array, h_thought: jax.Array) -> jax.Array:
    """h_base, h_thought (..., H) -> w (..., 1) in float32."""
    x = jnp.concatenate([h_base, h_thought], axis=-1).astype(jnp.float32)
    for name, act in (("0", True), ("2", True), ("4", False)):
        x = x @ head[name]["weight"].T + head[name]["bias"]
        if act:
            x = jax.nn.relu(x)
    return jax.nn.sigmoid(x) if qs.mixer_bounded else x
