"""Gradient routing between the objective's two parts: lm_term (the NLLs) and thought_term (REINFORCE
and the thought regularisers; objective.quietstar_loss returns both in its metrics, loss = their sum).

By default (the authors) the gradient is that of the loss. With either field below, the two gradients
are computed apart (one forward, two backward passes through the same residuals) and recombined:

  policy_params          thought_term's gradient is zeroed outside the params whose path matches this
                         regex (e.g. "quietstar/.*": the thought adapters, thought embeddings and mixing
                         head), so the weights that predict text learn from lm_term alone;
  policy_grad_max_share  thought_term's gradient is scaled by c = min(1, s / (1 - s) * |g_lm| / |g_thought|)
                         so that it is at most that share of the two norms' sum: a bound on how much of
                         the update the policy may own, instead of trusting a fixed policy_weight.

The gradient applied is g_lm + c * mask(g_thought). Metrics: grad_norm_lm, grad_norm_thought (after the
mask, before c), thought_grad_scale (c).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from quietstar_jax.model.params import paths_matching
from quietstar_jax.quietstar.config import QuietStarConfig


def thought_gradient_scale(qs: QuietStarConfig, norm_lm, norm_thought):
    """c: 1, or less so that norm_thought * c <= share / (1 - share) * norm_lm."""
    s = qs.policy_grad_max_share
    if not s:
        return jnp.ones((), norm_lm.dtype)
    limit = s / (1.0 - s) * norm_lm
    return jnp.where(norm_thought > limit, limit / jnp.maximum(norm_thought, 1e-30), 1.0).astype(norm_lm.dtype)


def routed_value_and_grad(loss_fn: Callable, qs: QuietStarConfig, params):
    """((loss, metrics), grads) of loss_fn(params) -> (loss, metrics), with thought_term's gradient
    routed as the module docstring says (plain jax.value_and_grad when qs routes nothing)."""
    if not qs.enabled or not qs.routes_thought_gradient:
        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    def terms(p):
        loss, m = loss_fn(p)
        return (m["lm_term"], m["thought_term"]), (loss, m)

    (lm, th), vjp, (loss, metrics) = jax.vjp(terms, params, has_aux=True)
    one, zero = jnp.ones_like(lm), jnp.zeros_like(th)
    (g_lm,) = vjp((one, zero))
    (g_th,) = vjp((zero, one))
    if qs.policy_params:
        keep = paths_matching(g_th, qs.policy_params)
        g_th = jax.tree.map(lambda g, k: g if k else jnp.zeros_like(g), g_th, keep)
    n_lm, n_th = optax.global_norm(g_lm), optax.global_norm(g_th)
    c = thought_gradient_scale(qs, n_lm, n_th)
    grads = jax.tree.map(lambda a, b: a + c.astype(b.dtype) * b, g_lm, g_th)
    metrics = dict(metrics, grad_norm_lm=n_lm, grad_norm_thought=n_th, thought_grad_scale=c)
    return (loss, metrics), grads
