"""Quiet-STaR: parallel thoughts at every token, mixing head, REINFORCE (pure jit-able functions)."""


from quietstar_jax.model.config import ModelConfig
from quietstar_jax.quietstar.config import QuietStarConfig
from quietstar_jax.quietstar.mixing import init_mixing_head, mixing_head_axes
from quietstar_jax.quietstar.objective import quietstar_loss
from quietstar_jax.quietstar.sampling import sample_thoughts
from quietstar_jax.quietstar.tokens import add_thought_tokens, init_thought_embeddings


def init_quietstar_params(params: dict, cfg: ModelConfig, qs: QuietStarConfig, key, init_ids) -> dict:
    """params["quietstar"] = {"thought_embeddings": (2, H), "talk_head": mixing head}."""
    return {"thought_embeddings": init_thought_embeddings(params, qs, init_ids),
            "talk_head": init_mixing_head(key, cfg.hidden_size, qs, cfg.initializer_range)}


def quietstar_param_axes(qs: QuietStarConfig) -> dict:
    return {"thought_embeddings": ("norm", "embed"), "talk_head": mixing_head_axes(qs)}


__all__ = ["QuietStarConfig", "quietstar_loss", "sample_thoughts", "add_thought_tokens",
           "init_quietstar_params", "quietstar_param_axes"]
