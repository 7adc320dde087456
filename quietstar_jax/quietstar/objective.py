"""The Quiet-STaR objective: teacher-forced NLL of the mixed predictions plus REINFORCE on thoughts.

    L = base_w * NLL_base + mix_w * (1/M) sum_s NLL_mix(s) + policy_weight * L_policy
    R(p, thought)  = sum_{s<M} [log p_mix(x_{p+s+1}) - log p_base(x_{p+s+1})]          (detached)
    A              = R - mean over the P thoughts of the same position; clamp(A, 0) by default
    L_policy       = -mean_p A * sum_j log softmax(logits_j / policy_temperature)[t_j]

All log-probs, softmaxes and losses are float32. Shapes: B examples, P thoughts each, R = B * P rows
(the P copies of an example are adjacent), L positions, V vocab, T = N - 3 thought tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from quietstar_jax.model.attention import StreamMask
from quietstar_jax.model.config import ModelConfig
from quietstar_jax.model.head import head_token_logprobs, token_logprobs
from quietstar_jax.model.transformer import embed, forward, lm_logits
from quietstar_jax.quietstar import layout
from quietstar_jax.quietstar.config import QuietStarConfig
from quietstar_jax.quietstar.mixing import mixing_weight
from quietstar_jax.quietstar.sampling import sample_thoughts
from quietstar_jax.quietstar.tokens import embed_with_thoughts, mask_thought_logits, thought_ids_in_vocab


def masked_mean(x, mask):
    mask = mask.astype(jnp.float32)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def head_logprobs(params, cfg: ModelConfig, qs: QuietStarConfig, hidden, targets, temperature: float = 1.0):
    """log softmax(mask(lm_head(hidden)) / temperature)[targets]: hidden (..., H) -> (...) float32."""
    return head_token_logprobs(params, cfg, hidden, targets, temperature,
                               thought_ids_in_vocab(qs, cfg.vocab_size))


def policy_loss(logits, thoughts, advantages, temperature: float, valid):
    """REINFORCE surrogate: -mean_p A_p * sum_j log softmax(logits / temperature)[t_j].

    logits (R, L, T, V) that produced thoughts (R, L, T); advantages, valid (R, L). The gradient with
    respect to the logits is -A (onehot(t) - softmax(logits / temperature)) / temperature.
    """
    logp = token_logprobs(logits / temperature, thoughts).sum(-1)
    return masked_mean(-jax.lax.stop_gradient(advantages) * logp, valid)


def advantages(qs: QuietStarConfig, rewards):
    """rewards (R, L) -> advantages (R, L): minus the mean over the P thoughts of each position."""
    r = rewards.reshape(-1, qs.n_passes, rewards.shape[-1])
    a = (r - r.mean(axis=1, keepdims=True)).reshape(rewards.shape)
    return jnp.maximum(a, 0.0) if qs.clamp_advantage else a


def plain_lm_loss(params, cfg: ModelConfig, batch):
    """Ordinary next-token NLL (the N = M = P = 1 baseline). batch: tokens/positions/segment_ids (B, L)."""
    tokens, seg = batch["tokens"], batch["segment_ids"]
    h = forward(params, cfg, embed(params, cfg, tokens)[:, None],
                batch["positions"][:, None], StreamMask.causal(seg))[:, 0]
    lp = head_token_logprobs(params, cfg, h, layout.shift_left(tokens, 1))
    nll = masked_mean(-lp, layout.next_token_valid(seg, 0))
    return nll, {"loss": nll, "nll_base": nll}


def _policy_loss_pairs(params, cfg: ModelConfig, qs: QuietStarConfig, hidden, thoughts, adv, valid):
    """policy_loss for P = 2 with clamped advantages, computing vocabulary logits for half the rows.

    With two thoughts per position the advantages are +-(R1 - R2) / 2, so after clamping at most one
    thought per position (the better one) has A > 0 and the other contributes exactly zero loss and
    zero gradient. Only the better thought's policy logits are computed: (B, T, L, V) instead of
    (2B, T, L, V), which halves the largest vocabulary-sized work of the step. Same value and gradient
    as policy_loss over all rows.
    hidden (R, K, L, H), thoughts (R, L, T), adv / valid (R, L); R = 2B, copies adjacent.
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
    v = valid.reshape(R // 2, 2, L)[:, 0].astype(jnp.float32)  # both copies share segment ids
    total = -jnp.sum(jax.lax.stop_gradient(a_w) * logp * v)
    return total / jnp.maximum(jnp.sum(valid.astype(jnp.float32)), 1.0)


def quietstar_loss(params, cfg: ModelConfig, qs: QuietStarConfig, batch, key, thoughts=None):
    """Total loss and metrics for one batch.

    batch: {"tokens", "positions", "segment_ids"}: (B, L) int32 (segment 0 = padding).
    thoughts: optional (B * P, L, T) pre-sampled thought tokens (tests); sampled from `key` otherwise.
    Returns (loss, metrics dict of float32 scalars).
    """
    if not qs.enabled:
        return plain_lm_loss(params, cfg, batch)
    P, M, N = qs.n_passes, qs.n_ahead_talk, qs.n_ahead
    rep = lambda a: jnp.repeat(a, P, axis=0)  # noqa: E731
    tokens, pos, seg = rep(batch["tokens"]), rep(batch["positions"]), rep(batch["segment_ids"])
    entropy = jnp.float32(jnp.nan)
    if thoughts is None:
        thoughts, entropy = sample_thoughts(params, cfg, qs, tokens, pos, seg, key)
    thoughts = jax.lax.stop_gradient(thoughts)
    K = qs.num_streams
    streams = layout.stream_tokens(qs, tokens, thoughts)
    hidden = forward(params, cfg, embed_with_thoughts(params, cfg, qs, streams),
                     layout.stream_positions(qs, pos), StreamMask.streams(seg, K))  # (R, K, L, H)

    # Base predictions: log p_base(x_{p+1}) at every position. The base stream of the P copies of an
    # example is identical, so its (L, V) logits are computed once per example, not once per copy.
    h_base = hidden[:, 0]
    base_lp = rep(head_logprobs(params, cfg, qs, h_base[::P], layout.shift_left(batch["tokens"], 1)))
    nll_base = masked_mean(-base_lp, layout.next_token_valid(seg, 0))

    head = params["quietstar"]["talk_head"]
    reward = jnp.zeros(tokens.shape, jnp.float32)
    nll_mix, w_sum = 0.0, 0.0
    for s in range(M):
        hb = layout.shift_left(h_base, s)  # h_base at p + s
        ht = hidden[:, N - 1 + s]
        w = mixing_weight(head, qs, hb, ht)  # (R, L, 1)
        target = layout.shift_left(tokens, s + 1)
        if qs.mixer == "hidden":
            mix_lp = head_logprobs(params, cfg, qs, ((1.0 - w) * hb + w * ht).astype(hb.dtype), target)
        else:
            mixed = (1.0 - w) * lm_logits(params, cfg, hb) + w * lm_logits(params, cfg, ht)
            mix_lp = token_logprobs(mask_thought_logits(mixed, qs), target)
        valid_s = layout.next_token_valid(seg, s)
        nll_mix = nll_mix + masked_mean(-mix_lp, valid_s) / M
        reward = reward + jnp.where(valid_s, mix_lp - layout.shift_left(base_lp, s), 0.0)
        w_sum = w_sum + masked_mean(w[..., 0], valid_s) / M
    reward = jax.lax.stop_gradient(reward)
    r_valid = layout.reward_valid(qs, seg)
    adv = advantages(qs, jnp.where(r_valid, reward, 0.0))

    T = qs.num_thought_tokens
    if T > 0 and qs.clamp_advantage and P == 2:
        pg = _policy_loss_pairs(params, cfg, qs, hidden, thoughts, adv, r_valid)
    elif T > 0:
        # Thought token j (stream j + 2) was sampled from the logits of stream j + 1. Same surrogate as
        # policy_loss, with the log-probs from the head op (one-pass backward, see model/head.py).
        logp = head_logprobs(params, cfg, qs, jnp.moveaxis(hidden[:, 1:T + 1], 1, 2), thoughts,
                             qs.policy_temperature).sum(-1)  # (R, L)
        pg = masked_mean(-jax.lax.stop_gradient(adv) * logp, r_valid)
    else:
        pg = jnp.float32(0.0)
    nll = qs.base_loss_weight * nll_base + qs.mix_loss_weight * nll_mix
    loss = nll + qs.policy_weight * pg
    metrics = {
        "loss": loss, "nll_base": nll_base, "nll_mix": nll_mix, "policy_loss": pg,
        "reward_mean": masked_mean(reward, r_valid),
        "reward_std": jnp.sqrt(masked_mean((reward - masked_mean(reward, r_valid)) ** 2, r_valid)),
        "advantage_pos_frac": masked_mean((adv > 0).astype(jnp.float32), r_valid),
        "mixing_weight": w_sum, "thought_entropy": entropy,
    }
    return loss, metrics
