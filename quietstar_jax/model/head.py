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


# ---------------------------------------------------------------------------------------------------
# Logits with the same row-major backward, and the mixed prediction of Quiet-STaR's talk steps.


@jax.custom_vjp
def _plain_logits(h, w):
    return _logits(h, w, (), 1.0)


def _plain_logits_fwd(h, w):
    return _logits(h, w, (), 1.0), (h, w)


def _plain_logits_bwd(res, dz):
    h, w = res
    dz = constrain_batch(dz).astype(h.dtype)
    dh = jnp.einsum("nv,vh->nh", dz, w, preferred_element_type=acc_dtype(h.dtype)).astype(h.dtype)
    dw = jnp.einsum("nh,nv->hv", h, dz, preferred_element_type=acc_dtype(h.dtype)).T.astype(w.dtype)
    return dh, dw


_plain_logits.defvjp(_plain_logits_fwd, _plain_logits_bwd)


def head_logits(params: dict, cfg: ModelConfig, hidden: jax.Array) -> jax.Array:
    """lm_head(hidden): hidden (..., H) in the compute dtype -> (..., V) float32 (float64 for float64
    compute), with head_token_logprobs' row-major weight gradient. For logits that several
    predictions share (the base logits every talk step mixes with)."""
    lead = hidden.shape[:-1]
    h = constrain_batch(hidden.reshape(-1, hidden.shape[-1]))
    return _plain_logits(h, head_weight(params, cfg).astype(hidden.dtype)).reshape(*lead, -1)


def mix_gain(zb: jax.Array, zd: jax.Array, wmix: jax.Array, targets: jax.Array,
             masked_ids: tuple[int, ...] = ()) -> jax.Array:
    """log softmax(zb + w zd)[t] - log softmax(zb)[t] without the cancellation of the two log-probs.

    zb (N, V), zd (N, V) float32, wmix (N, 1), targets (N,) -> (N,). Written as
    w zd[t] - log sum_v p_v exp(w zd_v), p = softmax(zb), with log1p / expm1 while |w zd| < 1/2: while w
    is small (early training) the gain is ~1e-5 and the difference of two log-probs of ~5 computed
    in float32 would carry ~10% rounding error (measured against float64 on the tiny test model at
    |w| 3e-5). No gradient: Quiet-STaR's rewards are detached."""
    zb, zd, wmix = (jax.lax.stop_gradient(a) for a in (zb, zd, wmix))
    if masked_ids:
        ids = jnp.asarray(masked_ids, jnp.int32)
        zb, zd = zb.at[:, ids].set(-jnp.inf), zd.at[:, ids].set(0.0)
    a = wmix.astype(zd.dtype) * zd
    logp = zb - jax.nn.logsumexp(zb, axis=-1, keepdims=True)
    small = jnp.log1p(jnp.sum(jnp.exp(logp) * jnp.expm1(jnp.minimum(a, 0.5)), axis=-1))
    large = jax.nn.logsumexp(logp + a, axis=-1)
    shift = jnp.where(jnp.max(jnp.abs(a), axis=-1) < 0.5, small, large)
    return jnp.take_along_axis(a, targets[:, None], axis=-1)[:, 0] - shift


def _mixed_fwd(zb, d, wmix, w, targets, masked_ids):
    zd = _logits(d, w, (), 1.0)
    z = zb + wmix * zd
    if masked_ids:
        z = z.at[:, jnp.asarray(masked_ids, jnp.int32)].set(-jnp.inf)
    out, lse = _logprobs_and_lse(z, targets)
    gain = mix_gain(zb, zd, wmix, targets, masked_ids)
    return (out, gain), (d, w, wmix, zd.astype(d.dtype), z, lse, targets)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _mixed_logprobs(zb, d, wmix, w, targets, masked_ids):
    return _mixed_fwd(zb, d, wmix, w, targets, masked_ids)[0]


def _mixed_bwd(masked_ids, res, cotangents):
    g, _ = cotangents  # the gain is detached (a reward): its cotangent is ignored
    d, w, wmix, zd, z, lse, targets = res
    gz = constrain_batch(_dlogits(z, lse, targets, g))  # (N, V) float32; 0 at masked ids
    gw = jnp.sum(gz * zd.astype(gz.dtype), axis=-1, keepdims=True).astype(wmix.dtype)
    gd_z = (wmix.astype(gz.dtype) * gz).astype(d.dtype)
    gd = jnp.einsum("nv,vh->nh", gd_z, w, preferred_element_type=acc_dtype(d.dtype)).astype(d.dtype)
    gW = jnp.einsum("nh,nv->hv", d, gd_z, preferred_element_type=acc_dtype(d.dtype)).T.astype(w.dtype)
    return gz, gd, gw, gW, None


_mixed_logprobs.defvjp(lambda *a: _mixed_fwd(*a), _mixed_bwd)


def mixed_head_logprobs(params: dict, cfg: ModelConfig, base_logits: jax.Array, delta: jax.Array, w: jax.Array,
                        targets: jax.Array, masked_ids: tuple[int, ...] = ()) -> tuple[jax.Array, jax.Array]:
    """(log p_mix[targets], gain): log softmax(base_logits + w * lm_head(delta))[targets] and its gain
    over log softmax(base_logits)[targets] (mix_gain: no cancellation, no gradient), float32 (float64
    for float64 compute).

    Quiet-STaR's hidden-state mix, lm_head((1 - w) h_base + w h_thought), written as
    lm_head(h_base) + w * lm_head(h_thought - h_base): the same function (lm_head is linear), but the
    mix happens in float32 on the logits. Mixing the hidden states in a bf16 compute dtype first would
    round h_base + w (h_thought - h_base) back to h_base while |w| is small (all of early training:
    w starts at exactly 0), and every reward would be exactly 0 or rounding noise.

    base_logits (..., V) float32 (head_logits of h_base: the logits the base log-probs come from);
    delta (..., H) = h_thought - h_base in the compute dtype; w (..., 1) float32; targets (...).
    masked_ids: ids at -inf in both distributions. One vocabulary matmul forward and two backward, like
    head_token_logprobs; keeps the mixed logits and lm_head(delta) for the backward."""
    lead = delta.shape[:-1]
    V = base_logits.shape[-1]
    out, gain = _mixed_logprobs(constrain_batch(base_logits.reshape(-1, V)),
                                constrain_batch(delta.reshape(-1, delta.shape[-1])),
                                w.reshape(-1, 1), head_weight(params, cfg).astype(delta.dtype),
                                targets.reshape(-1).astype(jnp.int32), tuple(int(i) for i in masked_ids))
    return out.reshape(lead), gain.reshape(lead)
