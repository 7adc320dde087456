"""Quiet-STaR: parallel thoughts at every token, mixing head, REINFORCE (pure jit-able functions)."""


import jax

from quietstar_jax.model.config import ModelConfig
from quietstar_jax.quietstar.adapters import init_thought_adapters, thought_adapter_axes
from quietstar_jax.quietstar.config import QuietStarConfig
from quietstar_jax.quietstar.mixing import init_mixing_head, mixing_head_axes
from quietstar_jax.quietstar.objective import quietstar_loss
from quietstar_jax.quietstar.sampling import sample_thoughts
from quietstar_jax.quietstar.tokens import add_thought_tokens, init_thought_embeddings


def init_quietstar_params(params: dict, cfg: ModelConfig, qs: QuietStarConfig, key, init_ids) -> dict:
    """params["quietstar"] = {"thought_embeddings": (2, H), "talk_head": mixing head} (+ "adapters",
    the thought adapters, when qs.adapter_rank > 0: their own key, fold_in(key, 1), so the head's init
    does not depend on them)."""
    out = {"thought_embeddings": init_thought_embeddings(params, qs, init_ids),
           "talk_head": init_mixing_head(key, cfg.hidden_size, qs, cfg.initializer_range)}
    if qs.adapter_rank:
        out["adapters"] = init_thought_adapters(cfg, qs, jax.random.fold_in(key, 1))
    return out


def quietstar_param_axes(qs: QuietStarConfig, cfg: ModelConfig | None = None) -> dict:
    """Logical axes of params["quietstar"] (cfg is needed only with thought adapters)."""
    out = {"thought_embeddings": ("norm", "embed"), "talk_head": mixing_head_axes(qs)}
    if qs.adapter_rank:
        out["adapters"] = thought_adapter_axes(cfg, qs)
    return out


__all__ = ["QuietStarConfig", "quietstar_loss", "sample_thoughts", "add_thought_tokens",
           "init_quietstar_params", "quietstar_param_axes"]
