"""Thought adapters: the Quiet-STaR side of model.lora.

With `adapter_rank` r > 0, params["quietstar"]["adapters"] holds rank-r adapters on the
`adapter_targets` projections of every layer. Every pass of a thought and of what follows it (the
training pass's streams >= 1, the sampler's decode passes, inference's thoughts and <end>) runs them;
the text's own stream never does. With `policy_params` = "quietstar/.*" REINFORCE then moves only the
adapters, the thought embeddings and the mixing head, while the weights that predict text learn from the
NLL alone.
"""

from __future__ import annotations

import jax

from quietstar_jax.model.config import ModelConfig
from quietstar_jax.model.lora import StreamAdapters, adapter_axes, init_adapters
from quietstar_jax.quietstar.config import QuietStarConfig


def init_thought_adapters(cfg: ModelConfig, qs: QuietStarConfig, key: jax.Array) -> dict:
    return init_adapters(cfg, qs.adapter_rank, qs.adapter_target_names, key)


def thought_adapter_axes(cfg: ModelConfig, qs: QuietStarConfig) -> dict:
    return adapter_axes(cfg, qs.adapter_rank, qs.adapter_target_names)


def thought_adapters(params: dict, qs: QuietStarConfig) -> StreamAdapters | None:
    """What forward / decode_step apply in the thought streams, or None without adapters."""
    if not qs.adapter_rank:
        return None
    return StreamAdapters(params["quietstar"]["adapters"], qs.adapter_scale)
