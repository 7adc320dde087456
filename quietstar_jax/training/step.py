"""The train step: micro-batch scan (gradient accumulation), optax update, non-finite guard.

State is a plain dict {"step": int32 scalar, "params": tree, "opt_state": optax state}, plus
"ref_params" (the initial params, never updated) when the KL stabiliser needs them. The RNG of a
step is fold_in(base_key, step) and micro-batch i uses fold_in(that, i), so a step's result depends
only on (state, batch) and resume is exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from quietstar_jax.model.config import ModelConfig
from quietstar_jax.quietstar.config import QuietStarConfig
from quietstar_jax.quietstar.objective import quietstar_loss
from quietstar_jax.quietstar.routing import routed_value_and_grad


def split_microbatches(batch: dict, n: int) -> dict:
    """(B, ...) -> (n, B / n, ...), micro-batch i = rows i, i + n, i + 2n, ...

    Strided rather than contiguous so that, with the batch sharded over devices in contiguous blocks,
    every micro-batch keeps the same per-device share (no data movement)."""
    def f(x):
        B = x.shape[0]
        return jnp.swapaxes(x.reshape(B // n, n, *x.shape[1:]), 0, 1)
    return jax.tree.map(f, batch)


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.stack(leaves).all() if leaves else jnp.bool_(True)


def make_train_step(cfg: ModelConfig, qs: QuietStarConfig, tx: optax.GradientTransformation, schedule,
                    grad_accum_steps: int = 1):
    """Returns step(state, batch, base_key) -> (new_state, metrics). batch: (B, L) int32 arrays."""

    def step(state, batch, base_key):
        params = state["params"]
        key = jax.random.fold_in(base_key, state["step"])
        ref = state.get("ref_params")  # the initial params, kept for the KL stabiliser

        def loss_and_grad(params, batch, key):
            return routed_value_and_grad(
                lambda p: quietstar_loss(p, cfg, qs, batch, key, step=state["step"], ref_params=ref), qs, params)

        if grad_accum_steps == 1:
            (_, metrics), grads = loss_and_grad(params, batch, key)
        else:
            micro = split_microbatches(batch, grad_accum_steps)
            zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)

            def body(acc, xs):
                mb, i = xs
                (_, m), g = loss_and_grad(params, mb, jax.random.fold_in(key, i))
                acc_g, acc_m = acc
                acc_g = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), acc_g, g)
                acc_m = jax.tree.map(lambda a, b: a + b, acc_m, m)
                return (acc_g, acc_m), None

            m0 = jax.eval_shape(lambda: loss_and_grad(params, jax.tree.map(lambda x: x[0], micro), key)[0][1])
            m0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), m0)
            (grads, metrics), _ = jax.lax.scan(body, (zeros, m0), (micro, jnp.arange(grad_accum_steps)))
            inv = 1.0 / grad_accum_steps
            grads = jax.tree.map(lambda g, p: (g * inv).astype(p.dtype), grads, params)
            metrics = jax.tree.map(lambda m: m * inv, metrics)
        finite = jnp.isfinite(metrics["loss"]) & _all_finite(grads)
        # The scope names the update in the compiled program's op metadata (quietstar_jax.tpu.hlo_stats).
        with jax.named_scope("optimizer"):
            updates, new_opt = tx.update(grads, state["opt_state"], params)
            new_params = optax.apply_updates(params, updates)
            # Non-finite step: keep params and optimizer state exactly as they were (the step counter still
            # advances, so the data stream moves past the bad batch).
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
            new_state = {**state, "step": state["step"] + 1, "params": keep(new_params, params),
                         "opt_state": keep(new_opt, state["opt_state"])}
        metrics = dict(metrics, grad_norm=optax.global_norm(grads), learning_rate=schedule(state["step"]),
                       finite=finite.astype(jnp.float32))
        return new_state, metrics

    return step
