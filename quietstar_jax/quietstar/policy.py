"""The thought side of the objective: advantages, the REINFORCE log-likelihood of the sampled thoughts,
and the opt-in regularisers of the thought distribution (entropy bonus, KL to the initial model).

Shapes: R = B * P rows (the P copies of an example adjacent), L positions, T thought tokens, V vocab,
H hidden; hidden (R, K, L, H) are the training pass's streams, thought token j (stream j + 2) was
sampled from the hidden state of stream j + 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from quietstar_jax.model.config import ModelConfig
from quietstar_jax.model.head import head_token_logprobs, token_logprobs
from quietstar_jax.model.transformer import lm_logits
from quietstar_jax.quietstar import layout
from quietstar_jax.quietstar.config import QuietStarConfig
from quietstar_jax.quietstar.tokens import mask_thought_logits, thought_ids_in_vocab

# Advantage normalisation: std + this, so that identical rewards (std 0) give advantage 0, not 0/0.
NORM_EPS = 1e-8


def masked_mean(x, mask):
    """sum(x over mask) / number of mask entries (1 if none)."""
    mask = mask.astype(x.dtype)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def head_logprobs(params, cfg: ModelConfig, qs: QuietStarConfig, hidden, targets, temperature: float = 1.0,
                  mask_thoughts: bool = True):
    """log softmax(lm_head(hidden) / temperature)[targets]: hidden (..., H) -> (...) float32, with the
    thought ids' logits at -inf when mask_thoughts (sampling and the policy always; the NLL only with
    qs.mask_thought_logits_in_nll)."""
    masked = thought_ids_in_vocab(qs, cfg.vocab_size) if mask_thoughts else ()
    return head_token_logprobs(params, cfg, hidden, targets, temperature, masked)


def advantages(qs: QuietStarConfig, rewards, valid=None):
    """rewards (R, L) -> (baselined, advantages), each (R, L).

    baselined = R - the mean over the P thoughts of the same position when P > 1 (the authors use no
    baseline at all when P = 1), then divided by a standard deviation with advantage_norm ("batch":
    of the baselined rewards at the `valid` (R, L) positions of the whole batch; "group": over the P
    thoughts of each position); advantages = clamp(baselined, 0) if clamp_advantage."""
    if qs.n_passes > 1:
        r = rewards.reshape(-1, qs.n_passes, rewards.shape[-1])
        rewards = (r - r.mean(axis=1, keepdims=True)).reshape(rewards.shape)
    if qs.advantage_norm == "batch":
        mean = masked_mean(rewards, valid)
        std = jnp.sqrt(masked_mean((rewards - mean) ** 2, valid))
        rewards = jnp.where(valid, rewards / (std + NORM_EPS), 0.0)
    elif qs.advantage_norm == "group":
        r = rewards.reshape(-1, qs.n_passes, rewards.shape[-1])  # already centred per position
        std = jnp.sqrt(jnp.mean(r * r, axis=1, keepdims=True))
        rewards = (r / (std + NORM_EPS)).reshape(rewards.shape)
    return rewards, (jnp.maximum(rewards, 0.0) if qs.clamp_advantage else rewards)


def policy_denominator(qs: QuietStarConfig, segment_ids):
    """The number each thought token's summed policy loss is divided by (a float scalar)."""
    if qs.policy_denominator == "all":
        R, L = segment_ids.shape
        return jnp.float32(R) * jnp.sum(layout.reward_slice(qs, L)).astype(jnp.float32)
    return jnp.maximum(jnp.sum(layout.reward_valid(qs, segment_ids)), 1).astype(jnp.float32)


def policy_logp_pairs(params, cfg: ModelConfig, qs: QuietStarConfig, hidden, thoughts, adv):
    """sum_{r,p} A * sum_i log p_i for P = 2 with clamped advantages, computing vocabulary logits for
    half the rows.

    With two thoughts per position the advantages are +-(R1 - R2) / 2 (divided by the same positive
    number under advantage_norm), so after clamping at most one thought per position (the better one)
    has A > 0 and the other contributes exactly zero loss and zero gradient. Only the better thought's
    policy logits are computed: (B, T, L, V) instead of (2B, T, L, V), which halves the largest
    vocabulary-sized work of the step. Same value and gradient as the sum over all rows.
    hidden (R, K, L, H), thoughts (R, L, T), adv (R, L); R = 2B, copies adjacent.
    """
    R, _, L, H = hidden.shape
    T = thoughts.shape[-1]
    h = hidden[:, 1:T + 1].reshape(R // 2, 2, T, L, H)
    a = adv.reshape(R // 2, 2, L)
    th = thoughts.reshape(R // 2, 2, L, T)
    first = a[:, 0] >= a[:, 1]  # (B, L): the better thought of each pair
    h_w = jnp.where(first[:, None, :, None], h[:, 0], h[:, 1])  # (B, T, L, H)
    t_w = jnp.where(first[..., None], th[:, 0], th[:, 1])  # (B, L, T)
    a_w = jnp.maximum(a[:, 0], a[:, 1])  # (B, L); the other thought's clamped advantage is 0
    logp = head_logprobs(params, cfg, qs, jnp.moveaxis(h_w, 1, 2), t_w, qs.policy_temperature).sum(-1)  # (B, L)
    return jnp.sum(jax.lax.stop_gradient(a_w) * logp)


def policy_logprobs(params, cfg: ModelConfig, qs: QuietStarConfig, hidden, thoughts):
    """(R, L, T): log softmax(lm_head(h) / policy_temperature)[t_j] of every thought token, where token
    j (stream j + 2) was sampled from the hidden state of stream j + 1. hidden (R, K, L, H)."""
    T = thoughts.shape[-1]
    return head_logprobs(params, cfg, qs, jnp.moveaxis(hidden[:, 1:T + 1], 1, 2), thoughts,
                         qs.policy_temperature)


def thought_logits(params, cfg: ModelConfig, qs: QuietStarConfig, hidden, T: int):
    """(R, L, T, V) float32: the logits thought token j was sampled from (stream j + 1's hidden state
    through lm_head), thought ids at -inf, before any temperature. hidden (R, K, L, H)."""
    return mask_thought_logits(lm_logits(params, cfg, jnp.moveaxis(hidden[:, 1:T + 1], 1, 2)), qs)


def entropy_and_kl(qs: QuietStarConfig, logits, ref_logits=None):
    """Per thought token (R, L, T): the entropy of softmax(logits / sample_temperature), the sampling
    distribution, and KL(that || the same of ref_logits) (None without ref_logits). Full vocabulary
    (top_k is not applied); the thought ids have probability 0 in both."""
    ls = jax.nn.log_softmax(logits / qs.sample_temperature, axis=-1)
    p = jnp.exp(ls)
    # Masked ids have log p = -inf and p = 0: their terms are 0, written so that no -inf (hence no NaN)
    # enters a product, in the value or in the gradient.
    finite = jnp.isfinite(ls)
    ls = jnp.where(finite, ls, 0.0)
    ent = -jnp.sum(p * ls, axis=-1)
    if ref_logits is None:
        return ent, None
    lr = jax.nn.log_softmax(jax.lax.stop_gradient(ref_logits) / qs.sample_temperature, axis=-1)
    kl = jnp.sum(p * (ls - jnp.where(finite, lr, 0.0)), axis=-1)
    return ent, kl


def policy_from_logits(qs: QuietStarConfig, logits, thoughts, adv):
    """sum_{r,p} A * sum_i log softmax(logits_i / policy_temperature)[t_i] from the thought logits
    (R, L, T, V) that the regularisers computed anyway (every row, no pair shortcut)."""
    logp = token_logprobs(logits / qs.policy_temperature, thoughts).sum(-1)  # (R, L)
    return jnp.sum(jax.lax.stop_gradient(adv) * logp)


def warm_mixing_weight(qs: QuietStarConfig, w, step):
    """The mixing weight used during the warm-up (mixing_warmup_steps optimizer steps): "fixed" ->
    mixing_warmup_value (the head gets no gradient meanwhile), "floor" -> max(w, value * (1 - step /
    steps)). step: the optimizer step (a traced int), or None (no warm-up: tests, inference)."""
    if not qs.mixing_warmup_steps or step is None:
        return w
    S, v = qs.mixing_warmup_steps, qs.mixing_warmup_value
    if qs.mixing_warmup_mode == "fixed":
        return jnp.where(step < S, jnp.full_like(w, v), w)
    floor = v * jnp.maximum(0.0, 1.0 - jnp.asarray(step).astype(w.dtype) / S)  # in w's dtype, not int / int
    return jnp.maximum(w, floor)
