"""Mixing head ("talk head"): how much of the post-thought hidden state to use for each prediction.

    w = MLP([h_base ; h_thought])            2H -> H -> ReLU -> H -> ReLU -> 1 (last layer zero-init)
    h_mix = (1 - w) * h_base + w * h_thought   (then lm_head)

Unbounded by default (authors), so w = 0 and every reward is exactly 0 at initialisation;
`mixer_bounded` applies a sigmoid.

Precision. The mix is taken in float32 (float64 for float64 compute) on the logits, whatever the
compute dtype: lm_head((1 - w) h_base + w h_thought) = lm_head(h_base) + w lm_head(h_thought - h_base)
for the hidden mixer. Mixing the bf16 hidden states first, as the authors' code does, rounds
h_base + w (h_thought - h_base) back to h_base while |w| is below bf16's resolution (2^-8 relative), which
is the whole start of training since w starts at 0: measured on a tiny model at mean |w| 3e-5, 69% of
the rewards were exactly 0 and their correlation with the float32 rewards 0.065
(tests/test_quietstar.py::test_bf16_rewards_follow_float32_rewards). Parameter names follow the authors' talk_head.0.{0,2,4}
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


def thought_delta(h_thought: jax.Array, h_base: jax.Array) -> jax.Array:
    """h_thought - h_base, subtracted in float32 (float64 for float64 inputs) and returned in the compute
    dtype: the hidden mixer's lm_head((1 - w) h_base + w h_thought) = lm_head(h_base) + w lm_head(delta)."""
    acc = acc_dtype(h_base.dtype)
    return (h_thought.astype(acc) - h_base.astype(acc)).astype(h_base.dtype)


def mixed_logits(params: dict, cfg, qs: QuietStarConfig, h_base: jax.Array, h_thought: jax.Array, w: jax.Array,
                 base_logits: jax.Array | None = None) -> jax.Array:
    """The next-token logits (..., V) after thinking, for inference, float32: lm_head(h_base) +
    w lm_head(h_thought - h_base) (qs.mixer "hidden": the head on the mixed hidden state, mixed on the
    logits for precision, see the module docstring), or (1 - w) lm_head(h_base) + w lm_head(h_thought)
    ("logit"). h_base, h_thought (..., H); w (..., 1); base_logits: lm_head(h_base) when the caller has it
    already (otherwise both rows go through the head in one matmul: one read of the head). The training
    objective computes the same mix as log-probabilities of its targets (objective.py)."""
    other = thought_delta(h_thought, h_base) if qs.mixer == "hidden" else h_thought
    if base_logits is None:
        n = h_base.shape[0]
        both = lm_logits(params, cfg, jnp.concatenate([h_base, other]))
        base_logits, other_logits = both[:n], both[n:]
    else:
        other_logits = lm_logits(params, cfg, other)
    if qs.mixer == "hidden":
        return base_logits + w * other_logits
    return (1.0 - w) * base_logits + w * other_logits
