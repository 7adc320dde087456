"""Pure-functional Llama-family decoder (Llama, Mistral, Qwen2) with stream attention."""

from quietstar_jax.model.config import ConfigError, ModelConfig
from quietstar_jax.model.params import init_params, param_axes, param_shapes
from quietstar_jax.model.transformer import KVCache, embed, forward, lm_logits

__all__ = ["ConfigError", "ModelConfig", "init_params", "param_axes", "param_shapes", "KVCache", "embed",
           "forward", "lm_logits"]
