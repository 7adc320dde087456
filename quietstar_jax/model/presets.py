"""config.json contents of well-known checkpoints, for compiling / planning without the weights
(e.g. AOT-compiling the Mistral-7B step for a TPU slice on a CPU host)."""

from __future__ import annotations

from quietstar_jax.errors import ConfigError

PRESETS = {
    # mistralai/Mistral-7B-v0.1 config.json (the paper's model).
    "mistral-7b": {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 32000,
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "hidden_act": "silu",
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "sliding_window": 4096, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
        "initializer_range": 0.02,
    },
    # HuggingFaceTB/SmolLM2-135M(-Instruct) config.json.
    "smollm2-135m": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152,
        "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "hidden_act": "silu", "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": True, "bos_token_id": 1,
        "eos_token_id": 2, "initializer_range": 0.041666666666666664,
    },
}


def preset_config(name: str) -> dict:
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return dict(PRESETS[name])
