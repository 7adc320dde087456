"""optax optimizer: clipping -> AdamW with a warmup + decay schedule -> per-parameter lr multipliers.

Gradient accumulation is not an optax wrapper here: the train step scans over micro-batches and feeds
the mean gradient to this optimizer once per step (so every optimizer step sees the same global batch
whatever the accumulation factor).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import optax

from quietstar_jax.errors import ConfigError
from quietstar_jax.model.params import path_string

SCHEDULES = ("cosine", "linear", "constant")


def make_schedule(opt_cfg, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `learning_rate` over warmup_steps, then cosine/linear decay to
    learning_rate * end_lr_ratio at total_steps (or constant)."""
    lr, warm = float(opt_cfg.learning_rate), int(opt_cfg.warmup_steps)
    end = lr * float(opt_cfg.end_lr_ratio)
    decay_steps = max(1, total_steps - warm)
    if opt_cfg.schedule == "cosine":
        decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=float(opt_cfg.end_lr_ratio))
    elif opt_cfg.schedule == "linear":
        decay = optax.linear_schedule(lr, end, decay_steps)
    elif opt_cfg.schedule == "constant":
        decay = optax.constant_schedule(lr)
    else:
        raise ConfigError(f"optimizer.schedule {opt_cfg.schedule!r} not in {SCHEDULES}")
    if warm == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), decay], [warm])


def lr_multiplier_tree(params, multipliers: dict):
    """{regex on "a/b/c" param paths: factor} -> a tree of float factors (first full match wins; 1.0)."""
    pats = [(re.compile(p), float(f)) for p, f in dict(multipliers).items()]

    def factor(path, _):
        s = path_string(path)
        for pat, f in pats:
            if pat.fullmatch(s):
                return f
        return 1.0

    return jax.tree_util.tree_map_with_path(factor, params)


def scale_by_tree(factors) -> optax.GradientTransformation:
    """Multiplies each update by a fixed per-parameter factor (a learning-rate multiplier)."""

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, f: u if f == 1.0 else u * jnp.asarray(f, u.dtype), updates, factors), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def make_optimizer(opt_cfg, params_shape, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The full transformation and its schedule. params_shape: the params tree (arrays or shapes).

    opt_cfg.trainable (a regex over param paths, "" = all): only the matching params are trained
    (clipping, AdamW, multipliers over them alone); the others are frozen and hold no optimizer state
    (optax.multi_transform with set_to_zero)."""
    trainable = str(opt_cfg.get("trainable", "") or "")
    if trainable:
        from quietstar_jax.model.params import paths_matching

        train = paths_matching(params_shape, trainable)
        if not any(jax.tree.leaves(train)):
            raise ConfigError(f"optimizer.trainable: {trainable!r} matches no parameter")
        inner, sched = _make_optimizer(opt_cfg, params_shape, total_steps)
        labels = jax.tree.map(lambda t: "train" if t else "frozen", train)
        return optax.multi_transform({"train": inner, "frozen": optax.set_to_zero()}, labels), sched
    return _make_optimizer(opt_cfg, params_shape, total_steps)


def _make_optimizer(opt_cfg, params_shape, total_steps: int):
    sched = make_schedule(opt_cfg, total_steps)
    parts = []
    if opt_cfg.clip_norm and opt_cfg.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(float(opt_cfg.clip_norm)))
    parts.append(optax.adamw(sched, b1=float(opt_cfg.b1), b2=float(opt_cfg.b2), eps=float(opt_cfg.eps),
                             weight_decay=float(opt_cfg.weight_decay)))
    mult = dict(opt_cfg.lr_multipliers or {})
    if mult:
        paths = [path_string(p) for p, _ in jax.tree_util.tree_flatten_with_path(params_shape)[0]]
        missing = [p for p in mult if not any(re.fullmatch(p, s) for s in paths)]
        if missing:
            raise ConfigError(f"optimizer.lr_multipliers: patterns {missing} match no parameter (paths look like "
                             f"{paths[:3]})")
        parts.append(scale_by_tree(lr_multiplier_tree(params_shape, mult)))
    return optax.chain(*parts), sched
