"""Stream-gated low-rank adapters: LoRA on a layer's projections, active only in chosen streams.

Quiet-STaR's "thought adapters": an adapter on projection W (out, in) adds scale * B (A x) to W x, with
A (r, in) and B (out, r), but only for the tokens of streams whose gate is 1 (the thought and talk
streams); the text's own stream (stream 0) runs the plain weights. So adapters can change how the
model thinks and talks after a thought without changing how it predicts text, and REINFORCE can be
confined to them (QuietStarConfig.policy_params).

    params["quietstar"]["adapters"] = {
      "self_attn": {"q_proj": {"lora_A": (nL, r, H), "lora_B": (nL, Hq*D, r)}, ...},
      "mlp": {"gate_proj": {"lora_A": (nL, r, H), "lora_B": (nL, I, r)}, ...}}

(PEFT's names, stacked over layers like the decoder's params.) A starts as PEFT's default
(Kaiming-uniform, U(+-1/sqrt(in))) and B at zero, so an adapted model starts equal to the base model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from quietstar_jax.model.config import ModelConfig
from quietstar_jax.model.params import layer_spec

_MODULE = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
           "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


@struct.dataclass
class StreamAdapters:
    """The adapters a forward pass applies: weights (the tree above) times `scale`, in the streams
    whose gate is on (forward: query streams with index >= 1; decode: branch tokens)."""

    weights: dict
    scale: float = struct.field(pytree_node=False, default=1.0)


def adapter_spec(cfg: ModelConfig, rank: int, targets: tuple[str, ...]) -> dict:
    """{(module, target, "lora_A"|"lora_B"): (shape incl. the layer axis, logical axes)}."""
    layer = layer_spec(cfg)
    nL = cfg.num_hidden_layers
    spec = {}
    for t in targets:
        mod = _MODULE[t]
        (out_dim, in_dim), (out_ax, in_ax), _ = layer[(mod, t, "weight")]
        spec[(mod, t, "lora_A")] = ((nL, rank, in_dim), ("layers", "lora_rank", in_ax))
        spec[(mod, t, "lora_B")] = ((nL, out_dim, rank), ("layers", out_ax, "lora_rank"))
    return spec


def _unflatten(flat: dict) -> dict:
    out: dict = {}
    for (mod, t, name), v in flat.items():
        out.setdefault(mod, {}).setdefault(t, {})[name] = v
    return out


def init_adapters(cfg: ModelConfig, rank: int, targets: tuple[str, ...], key: jax.Array) -> dict:
    """A ~ U(+-1/sqrt(in)) (PEFT's Kaiming-uniform default), B = 0: the adapted model equals the base."""
    spec = adapter_spec(cfg, rank, targets)
    keys = jax.random.split(key, max(len(spec), 1))
    flat = {}
    for k, (path, (shape, _)) in zip(keys, sorted(spec.items())):
        if path[-1] == "lora_A":
            bound = shape[-1] ** -0.5
            flat[path] = jax.random.uniform(k, shape, jnp.float32, -bound, bound)
        else:
            flat[path] = jnp.zeros(shape, jnp.float32)
    return _unflatten(flat)


def adapter_axes(cfg: ModelConfig, rank: int, targets: tuple[str, ...]) -> dict:
    return _unflatten({p: axes for p, (_, axes) in adapter_spec(cfg, rank, targets).items()})


def with_layer_adapters(lp: dict, ap: dict | None) -> dict:
    """A layer's params with its adapters' lora_A / lora_B placed beside each adapted weight (where
    transformer.linear finds them). ap: one layer's slice of the adapter tree, or None."""
    if not ap:
        return lp
    out = dict(lp)
    for mod, targets in ap.items():
        out[mod] = dict(lp[mod])
        for t, ab in targets.items():
            out[mod][t] = {**lp[mod][t], **ab}
    return out


def low_rank_update(x: jax.Array, p: dict, gate: jax.Array) -> jax.Array:
    """gate * B (A x) for x (..., in): the adapter's addition to linear(x, p), in x's dtype. gate
    broadcasts against (..., out) (scale * 0/1 per stream or token)."""
    a = jnp.einsum("...i,ri->...r", x, p["lora_A"].astype(x.dtype))
    return jnp.einsum("...r,or->...o", a, p["lora_B"].astype(x.dtype)) * gate.astype(x.dtype)
