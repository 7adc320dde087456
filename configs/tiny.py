"""A tiny random model on the offline math corpus: smoke tests and CI (seconds per step on CPU)."""

from quietstar_jax.training.config import base_config


def get_config():
    c = base_config()
    c.run_name = "tiny"
    c.model.source = "tiny"
    c.model.dtype = "float32"
    c.model.remat_policy = "none"
    c.steps = 20
    c.seq_len = 32
    c.global_batch_size = 2
    c.quietstar.n_ahead = 6
    c.quietstar.n_ahead_talk = 3
    c.quietstar.n_passes = 2
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 2
    c.optimizer.schedule = "cosine"
    c.checkpoint.every_steps = 10
    c.export_dtype = "float32"
    return c
