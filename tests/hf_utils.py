"""Builders for tiny random HF PyTorch models (the independent reference in parity tests)."""

import os


def tiny_hf_config(model_type: str, **overrides):
    import transformers

    common = dict(vocab_size=211, hidden_size=64, intermediate_size=112, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    if model_type == "llama":
        common["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}
        cls = transformers.LlamaConfig
    elif model_type == "mistral":
        common["sliding_window"] = 5  # shorter than the test sequences, so the window is active
        common["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6}
        cls = transformers.MistralConfig
    elif model_type == "qwen2":
        common["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6}
        cls = transformers.Qwen2Config
    else:
        raise ValueError(model_type)
    common.update(overrides)
    return cls(**common)


def build_hf_model(model_type: str, seed: int = 0, **overrides):
    """A randomly initialised fp32 HF model (non-trivial norms and biases so every path is tested)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = tiny_hf_config(model_type, **overrides)
    cfg._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "norm" in name else 0.0))
    return model


def save_hf_model(model, path: str, max_shard_size="100KB"):
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path, max_shard_size=max_shard_size)
    return path
