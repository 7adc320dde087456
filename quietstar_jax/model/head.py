"""Log-probabilities of given tokens under the LM head, with a hand-written backward pass.

    head_token_logprobs(params, cfg, hidden, targets) = log softmax(lm_head(hidden) / T)[targets]

Quiet-STaR evaluates the vocabulary head far more often than the body (base, every talk step, every
policy token): on the reference CPU config it is ~2/3 of the step's FLOPs. Autodiff of
`logits[target] - logsumexp(logits)` builds the logits cotangent in several vocabulary-sized passes
(a scatter of the picked-logit cotangent into zeros, the softmax term, the temperature) and XLA then
transposes that (rows, V) array for the weight gradient, fusing the elementwise work into a strided
transpose. Here the cotangent is one elementwise pass, dz = g (onehot - softmax) / T, and the weight
gradient is computed as hidden^T @ dz, which reads dz in its natural row-major layout. Same values
and gradients as autodiff (tests/test_head.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from quietstar_jax.model.config import ModelConfig
from quietstar_jax.model.numerics import acc_dtype
from quietstar_jax.model.transformer import head_weight
from quietstar_jax.sharding.rules import constrain_batch


def _logprobs_and_lse(z, targets):
    """z (..., V) float32, targets (...) -> (z[t] - logsumexp(z), logsumexp(z)), each (...)."""
    lse = jax.nn.logsumexp(z, axis=-1)
    return jnp.take_along_axis(z, targets[..., None], axis=-1)[..., 0] - lse, lse


def _dlogits(z, lse, targets, g):
    """Cotangent of z for log-probs z[t] - logsumexp(z) with cotangent g: g (onehot(t) - softmax(z)).

    One elementwise pass; -inf (masked) ids have softmax 0 and are never targets, so their gradient
    is 0, as with the -inf scatter's own derivative."""
    onehot = jnp.arange(z.shape[-1], dtype=targets.dtype) == targets[..., None]
    return g[..., None] * (onehot.astype(z.dtype) - jnp.exp(z - lse[..., None]))


@jax.custom_vjp
def _token_logprobs(z, targets):
    return _logprobs_and_lse(z, targets)[0]


def _token_fwd(z, targets):
    out, lse = _logprobs_and_lse(z, targets)
    return out, (z, lse, targets)


def _token_bwd(res, g):
    z, lse, targets = res
    return _dlogits(z, lse, targets, g), None


_token_logprobs.defvjp(_token_fwd, _token_bwd)


def token_logprobs(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """log softmax(logits)[targets]: logits (..., V) float32, targets (...) -> (...).

    Never materialises the (..., V) log-softmax; one-pass backward (_dlogits). From hidden states use
    head_token_logprobs, which also fuses the head matmul's backward."""
    return _token_logprobs(logits, targets.astype(jnp.int32))


def _logits(h, w, masked_ids, inv_temp):
    """h (N, H), w (V, H) -> float32 (N, V): masked ids at -inf, divided by the temperature."""
    z = constrain_batch(jnp.einsum("nh,vh->nv", h, w, preferred_element_type=acc_dtype(h.dtype)))
    if masked_ids:
        z = z.at[:, jnp.asarray(masked_ids, jnp.int32)].set(-jnp.inf)
    return z * inv_temp if inv_temp != 1.0 else z


def _head_fwd(h, w, targets, masked_ids, inv_temp):
    z = _logits(h, w, masked_ids, inv_temp)
    out, lse = _logprobs_and_lse(z, targets)
    return out, (h, w, z, lse, targets)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _head_logprobs(h, w, targets, masked_ids, inv_temp):
    return _head_fwd(h, w, targets, masked_ids, inv_temp)[0]


def _head_bwd(masked_ids, inv_temp, res, g):
    h, w, z, lse, targets = res
    dz = constrain_batch(_dlogits(z, lse, targets, g * inv_temp)).astype(h.dtype)
    dh = jnp.einsum("nv,vh->nh", dz, w, preferred_element_type=acc_dtype(h.dtype)).astype(h.dtype)
    # hidden^T @ dz reads dz row-major (no transpose of the (N, V) array), then a (H, V) transpose.
    dw = jnp.einsum("nh,nv->hv", h, dz, preferred_element_type=acc_dtype(h.dtype)).T.astype(w.dtype)
    return dh, dw, None


_head_logprobs.defvjp(_head_fwd, _head_bwd)


def head_token_logprobs(params: dict, cfg: ModelConfig, hidden: jax.Array, targets: jax.Array,
                        temperature: float = 1.0, masked_ids: tuple[int, ...] = ()) -> jax.Array:
    """log softmax(lm_head(hidden) / temperature)[targets], float32.

    hidden (..., H) final hidden states in the compute dtype; targets (...) int ids.
    masked_ids: vocabulary ids whose logits are -inf (never predicted, e.g. thought tokens).
    Returns (...) float32. Never materialises a (..., V) log-softmax; keeps the float32 logits for the
    backward pass (as autodiff would).
    """
    lead = hidden.shape[:-1]
    h = constrain_batch(hidden.reshape(-1, hidden.shape[-1]))
    w = head_weight(params, cfg).astype(hidden.dtype)
    out = _head_logprobs(h, w, targets.reshape(-1).astype(jnp.int32), tuple(int(i) for i in masked_ids),
                         float(1.0 / temperature))
    return out.reshape(lead)
