"""Mixing head ("talk head"): how much of the post-thought hidden state to use for each prediction.

    w = MLP([h_base ; h_thought])            2H -> H -> ReLU -> H -> ReLU -> 1 (last layer zero-init)
    h_mix = (1 - w) * h_base + w * h_thought   (then lm_head)

Unbounded by default (authors), so w = 0 and every reward is exactly 0 at initialisation;
`mixer_bounded` applies a sigmoid. Parameter names follow the authors' talk_head.0.{0,2,4}
(nn.Sequential indices), torch (out, in) layout. The authors' last layer has no bias
(`mixing_head_last_bias` adds one).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from quietstar_jax.model.numerics import acc_dtype
from quietstar_jax.model.transformer import lm_logits
from quietstar_jax.quietstar.config import QuietStarConfig


def init_mixing_head(key: jax.Array, hidden_size: int, qs: QuietStarConfig, std: float = 0.02) -> dict:
    """Hidden layers: N(0, std) weights and zero biases (qs.mixing_head_init "normal": the authors'
    HF _init_weights with std = the model's initializer_range) or torch nn.Linear's default
    U(+-1/sqrt(fan_in)) ("uniform"). Last layer: zeros (the authors zero it before training)."""
    H = hidden_size
    k0, k1, k2, k3 = jax.random.split(key, 4)

    def hidden_layer(kw, kb, shape):
        if qs.mixing_head_init == "normal":
            return {"weight": std * jax.random.normal(kw, shape, jnp.float32), "bias": jnp.zeros(shape[:1], jnp.float32)}
        b = 1.0 / (shape[1] ** 0.5)
        return {"weight": jax.random.uniform(kw, shape, jnp.float32, -b, b),
                "bias": jax.random.uniform(kb, shape[:1], jnp.float32, -b, b)}

    last = {"weight": jnp.zeros((1, H), jnp.float32)}
    if qs.mixing_head_last_bias:
        last["bias"] = jnp.zeros((1,), jnp.float32)
    return {"0": hidden_layer(k0, k1, (H, 2 * H)), "2": hidden_layer(k2, k3, (H, H)), "4": last}


def mixing_head_axes(qs: QuietStarConfig) -> dict:
    last = {"weight": ("norm", "embed")}
    if qs.mixing_head_last_bias:
        last["bias"] = ("norm",)
    return {"0": {"weight": ("embed", "embed2"), "bias": ("embed",)},
            "2": {"weight": ("embed", "embed2"), "bias": ("embed",)},
            "4": last}


def mixing_weight(head: dict, qs: QuietStarConfig, h_base: jax.Array, h_thought: jax.Array) -> jax.Array:
    """h_base, h_thought (..., H) -> w (..., 1) in float32 (float64 for float64 inputs)."""
    x = jnp.concatenate([h_base, h_thought], axis=-1).astype(acc_dtype(h_base.dtype))
    for name, act in (("0", True), ("2", True), ("4", False)):
        x = x @ head[name]["weight"].T.astype(x.dtype)
        if "bias" in head[name]:
            x = x + head[name]["bias"].astype(x.dtype)
        if act:
            x = jax.nn.relu(x)
    return jax.nn.sigmoid(x) if qs.mixer_bounded else x


def mixed_logits(params: dict, cfg, qs: QuietStarConfig, h_base: jax.Array, h_thought: jax.Array, w: jax.Array,
                 base_logits: jax.Array | None = None) -> jax.Array:
    """The next-token logits (..., V) after thinking, for inference: the head on the mixed hidden state
    (qs.mixer "hidden"), or the mix of the base and post-thought logits ("logit"). h_base, h_thought
    (..., H); w (..., 1); base_logits: lm_logits(h_base) when the caller has it already (otherwise both
    rows go through the head in one matmul: one read of the head). The training objective computes the
    same mix as log-probabilities of its targets (objective.py), without the (..., V) logits."""
    if qs.mixer == "hidden":
        return lm_logits(params, cfg, ((1.0 - w) * h_base + w * h_thought).astype(h_base.dtype))
    if base_logits is None:
        n = h_base.shape[0]
        both = lm_logits(params, cfg, jnp.concatenate([h_base, h_thought]))
        base_logits, thought_logits = both[:n], both[n:]
    else:
        thought_logits = lm_logits(params, cfg, h_thought)
    return (1.0 - w) * base_logits + w * thought_logits
