"""The tests' tiny configurations, in one place. Each test module states only what it changes.

    run_config(**{"seq_len": 32, "model.dtype": "bfloat16"})   # a tiny training run (ml_collections)
    model_config(hidden_size=16, tie_word_embeddings=True)     # a tiny ModelConfig
"""

import os

import jax

from quietstar_jax.model import ModelConfig, init_params
from quietstar_jax.quietstar import init_quietstar_params
from quietstar_jax.training import config as config_lib

# The GSM8K test slice (tests/fixtures/gsm8k, MIT): an absolute path, whatever the working directory.
GSM8K_FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "gsm8k", "test_slice.jsonl")


def run_config(**overrides):
    """A training run of a tiny random Llama (byte vocabulary), small enough that tests are dominated
    by XLA compile time: L 8, 8 examples, N 4 / M 2 / P 2, float32, no remat. `overrides` are dotted
    config paths (unknown paths raise KeyError)."""
    c = config_lib.base_config()
    c.model.source = "tiny"
    c.model.dtype = "float32"
    c.model.remat_policy = "none"
    c.seq_len = 8
    c.global_batch_size = 8
    c.steps = 10
    c.quietstar.n_ahead = 4
    c.quietstar.n_ahead_talk = 2
    c.quietstar.n_passes = 2
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 0
    return config_lib.override(c, **overrides)


def model_config(**overrides) -> ModelConfig:
    """A tiny Llama: vocab 97, hidden 32, 2 layers, 4 query / 2 KV heads of 8 (GQA), float32."""
    kw = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-5)
    kw.update(overrides)
    return ModelConfig(**kw)


def live_params(cfg: ModelConfig, qs, seed: int, init_ids: list, scale: float | None) -> dict:
    """Random model params (key seed) + Quiet-STaR params (seed + 1, thought embeddings initialised from
    init_ids) whose mixing head's last layer is scale * N(0, 1) (seed + 2) instead of zero, so w != 0 and
    thinking changes predictions (scale None: the zero init)."""
    p = init_params(cfg, jax.random.key(seed))
    p["quietstar"] = init_quietstar_params(p, cfg, qs, jax.random.key(seed + 1), init_ids)
    if scale is not None:
        last = p["quietstar"]["talk_head"]["4"]
        last["weight"] = scale * jax.random.normal(jax.random.key(seed + 2), last["weight"].shape)
    return p
