"""The run of tests/test_multihost.py: the tiny random model, 8 rows of 8 tokens (one per device of
8), float32, and an optimizer under which the params after a few steps check every gradient.

AdamW with b1 = b2 = 0 and eps (1e3) far above every gradient entry updates by -lr g / (|g| + eps)
~ -(lr / eps) g: SGD at rate lr / eps = 1 on the gradient clipped to norm 1 (tests/test_training.py
checks meshes with optax.sgd(1.0); the clip keeps 8 steps of this from diverging). The mixing head's
last layer starts at zero, so rewards start at zero and the fraction of positive advantages would
count signs of float noise; x100 on that layer's rate makes rewards real from step 2. policy_weight 1
keeps the loss at a scale where 1e-5 is above float32 rounding.
"""

from quietstar_jax.training.config import base_config


def get_config():
    c = base_config()
    c.run_name = "multihost"
    c.model.source = "tiny"
    c.model.dtype = "float32"
    c.model.remat_policy = "none"
    c.steps = 8
    c.seq_len = 8
    c.global_batch_size = 8
    c.quietstar.n_ahead = 4
    c.quietstar.n_ahead_talk = 2
    c.quietstar.n_passes = 2
    c.quietstar.policy_weight = 1.0
    c.optimizer.update(learning_rate=1e3, eps=1e3, b1=0.0, b2=0.0, weight_decay=0.0, clip_norm=1.0,
                       warmup_steps=0, schedule="constant", lr_multipliers={"quietstar/talk_head/4/weight": 100.0})
    c.checkpoint.every_steps = 2
    c.checkpoint.keep = 10
    c.data.prefetch = 0
    c.export_dtype = "float32"
    c.peak_flops_per_device = 1e11  # no start-up matmul benchmark: the run is about numbers, not speed
    return c
