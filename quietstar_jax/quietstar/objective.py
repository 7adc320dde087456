"""The Quiet-STaR objective: teacher-forced NLL of the mixed predictions plus REINFORCE on thoughts.

With the authors' reductions (every one checked against their float64 numbers, tests/test_golden.py):

    L        = base_w * NLL_base + mix_w * (1/M) sum_s NLL_mix(s) + policy_weight * L_policy
    NLL_*    = sum of -log p over the predictions that have a target / their number, all R rows
    R(p)     = sum_{s<M, target exists} [log p_mix(x_{p+s+1}) - log p_base(x_{p+s+1})]  (detached),
               for the positions of layout.reward_valid, 0 elsewhere
    A        = R - mean of R over the P thoughts of that position (P > 1; P = 1: A = R), then
               clamp(A, 0) (clamp_advantage)
    L_i      = sum_{r,p} -A * log softmax(lm_head(h_i) / policy_temperature)[t_i] / denominator
               denominator = R rows x the positions of the reward slice (policy_denominator "all")
    L_policy = mean over the T thought tokens of L_i (policy_reduction "mean")

Log-probs, softmaxes and losses are float32 (float64 for float64 compute). Shapes: B examples, P
thoughts each, R = B * P rows (the P copies of an example are adjacent), L positions, V vocab, K
streams, T = N - 3 thought tokens.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from quietstar_jax.model.attention import StreamMask
from quietstar_jax.model.config import ModelConfig
from quietstar_jax.model.head import (head_logits, head_token_logprobs, mix_gain, mixed_head_logprobs,
                                     token_logprobs)
from quietstar_jax.model.transformer import embed, forward, lm_logits
from quietstar_jax.quietstar import layout
from quietstar_jax.quietstar.config import QuietStarConfig
from quietstar_jax.quietstar.mixing import mixing_weight, thought_delta
from quietstar_jax.quietstar.sampling import sample_thoughts
from quietstar_jax.quietstar.tokens import embed_with_thoughts, mask_thought_logits, thought_ids_in_vocab


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


def advantages(qs: QuietStarConfig, rewards):
    """rewards (R, L) -> (baselined, advantages), each (R, L).

    baselined = R - the mean over the P thoughts of the same position when P > 1 (the authors use no
    baseline at all when P = 1); advantages = clamp(baselined, 0) if clamp_advantage."""
    if qs.n_passes > 1:
        r = rewards.reshape(-1, qs.n_passes, rewards.shape[-1])
        rewards = (r - r.mean(axis=1, keepdims=True)).reshape(rewards.shape)
    return rewards, (jnp.maximum(rewards, 0.0) if qs.clamp_advantage else rewards)


def policy_denominator(qs: QuietStarConfig, segment_ids):
    """The number each thought token's summed policy loss is divided by (a float scalar)."""
    if qs.policy_denominator == "all":
        R, L = segment_ids.shape
        return jnp.float32(R) * jnp.sum(layout.reward_slice(qs, L)).astype(jnp.float32)
    return jnp.maximum(jnp.sum(layout.reward_valid(qs, segment_ids)), 1).astype(jnp.float32)


def plain_lm_loss(params, cfg: ModelConfig, batch):
    """Ordinary next-token NLL (the N = M = P = 1 baseline). batch: tokens/positions/segment_ids (B, L)."""
    tokens, seg = batch["tokens"], batch["segment_ids"]
    h = forward(params, cfg, embed(params, cfg, tokens)[:, None],
                batch["positions"][:, None], StreamMask.causal(seg))[:, 0]
    lp = head_token_logprobs(params, cfg, h, layout.shift_left(tokens, 1))
    nll = masked_mean(-lp, layout.next_token_valid(seg, 0))
    return nll, {"loss": nll, "nll_base": nll}


def policy_logp_pairs(params, cfg: ModelConfig, qs: QuietStarConfig, hidden, thoughts, adv):
    """sum_{r,p} A * sum_i log p_i for P = 2 with clamped advantages, computing vocabulary logits for
    half the rows.

    With two thoughts per position the advantages are +-(R1 - R2) / 2, so after clamping at most one
    thought per position (the better one) has A > 0 and the other contributes exactly zero loss and
    zero gradient. Only the better thought's policy logits are computed: (B, T, L, V) instead of
    (2B, T, L, V), which halves the largest vocabulary-sized work of the step. Same value and gradient
    as the sum over all rows.
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


def quietstar_loss(params, cfg: ModelConfig, qs: QuietStarConfig, batch, key, thoughts=None,
                   details: bool = False):
    """Total loss and metrics for one batch.

    batch: {"tokens", "positions", "segment_ids"}: (B, L) int32 (segment 0 = padding).
    thoughts: optional (B * P, L, T) pre-sampled thought tokens (tests); sampled from `key` otherwise.
    details: also return metrics["details"], the per-position pieces (tests, debugging): hidden
        (R, K, L, H), base_logp / reward / baselined / advantage / reward_valid (R, L), and per talk step
        (M, R, L) mix_logp, mixing_weight, target_valid; policy_logp (R, L, T) for every row.
    Returns (loss, metrics dict of float32 scalars).
    """
    if not qs.enabled:
        return plain_lm_loss(params, cfg, batch)
    P, M, N = qs.n_passes, qs.n_ahead_talk, qs.n_ahead
    rep = lambda a: jnp.repeat(a, P, axis=0)  # noqa: E731
    tokens, pos, seg = rep(batch["tokens"]), rep(batch["positions"]), rep(batch["segment_ids"])
    chex.assert_equal_shape([batch["tokens"], batch["positions"], batch["segment_ids"]])
    entropy = jnp.float32(jnp.nan)
    if thoughts is None:
        thoughts, entropy = sample_thoughts(params, cfg, qs, tokens, pos, seg, key)
    chex.assert_shape(thoughts, tokens.shape + (qs.num_thought_tokens,))
    thoughts = jax.lax.stop_gradient(thoughts)
    K = qs.num_streams
    streams = layout.stream_tokens(qs, tokens, thoughts)
    hidden = forward(params, cfg, embed_with_thoughts(params, cfg, qs, streams),
                     layout.stream_positions(qs, pos), StreamMask.streams(seg, K))  # (R, K, L, H)
    nll_mask = qs.mask_thought_logits_in_nll

    # Base predictions: log p_base(x_{p+1}) at every position. The base stream of the P copies of an
    # example is identical, so its (L, V) logits are computed once per example, not once per copy;
    # the NLL still counts all R rows, as the authors' mean over the repeated batch does. The talk
    # steps mix with these same logits (float32), so a reward is exactly 0 where w is.
    h_base = hidden[:, 0]
    masked = thought_ids_in_vocab(qs, cfg.vocab_size) if nll_mask else ()
    base_logits = head_logits(params, cfg, h_base[::P])  # (B, L, V) float32
    base_lp = rep(token_logprobs(mask_thought_logits(base_logits, qs) if masked else base_logits,
                                 layout.shift_left(batch["tokens"], 1)))
    nll_base = masked_mean(-base_lp, layout.next_token_valid(seg, 0))

    head = params["quietstar"]["talk_head"]
    reward = jnp.zeros(tokens.shape, base_lp.dtype)
    nll_mix, w_sum = 0.0, 0.0
    steps = []
    for s in range(M):
        hb = layout.shift_left(h_base, s)  # h_base at p + s
        ht = hidden[:, N - 1 + s]
        w = mixing_weight(head, qs, hb, ht)  # (R, L, 1)
        target = layout.shift_left(tokens, s + 1)
        zb = rep(layout.shift_left(base_logits, s))  # lm_head(h_base at p + s), float32
        # The mix is taken in float32 on the logits, whatever the compute dtype (mixing.py, "Precision").
        # The reward term log p_mix - log p_base is taken from the logits (mix_gain), not as the
        # difference of two log-probs, whose float32 rounding swamps it while w is small.
        if qs.mixer == "hidden":
            mix_lp, gain = mixed_head_logprobs(params, cfg, zb, thought_delta(ht, hb), w, target, masked)
        else:
            zt = lm_logits(params, cfg, ht)
            mixed = (1.0 - w) * zb + w * zt
            mix_lp = token_logprobs(mask_thought_logits(mixed, qs) if masked else mixed, target)
            gain = mix_gain(zb.reshape(-1, zb.shape[-1]), (zt - zb).reshape(-1, zb.shape[-1]), w.reshape(-1, 1),
                            target.reshape(-1), masked).reshape(target.shape)
        valid_s = layout.next_token_valid(seg, s)
        nll_mix = nll_mix + masked_mean(-mix_lp, valid_s) / M
        reward = reward + jnp.where(valid_s, gain, 0.0)
        w_sum = w_sum + masked_mean(w[..., 0], valid_s) / M
        if details:
            steps.append((mix_lp, w[..., 0], valid_s))
    r_valid = layout.reward_valid(qs, seg)
    reward = jax.lax.stop_gradient(jnp.where(r_valid, reward, 0.0))
    baselined, adv = advantages(qs, reward)

    T = qs.num_thought_tokens
    if T == 0:
        pg = jnp.zeros((), reward.dtype)
    else:
        if qs.clamp_advantage and P == 2:
            total = policy_logp_pairs(params, cfg, qs, hidden, thoughts, adv)
        else:
            logp = policy_logprobs(params, cfg, qs, hidden, thoughts).sum(-1)  # (R, L)
            total = jnp.sum(jax.lax.stop_gradient(adv) * logp)
        # A = 0 outside reward_valid, so the sums above run over the rewarded positions only.
        pg = -total / policy_denominator(qs, seg) / (T if qs.policy_reduction == "mean" else 1)
    nll = qs.base_loss_weight * nll_base + qs.mix_loss_weight * nll_mix
    loss = nll + qs.policy_weight * pg
    metrics = {
        "loss": loss, "nll": nll, "nll_base": nll_base, "nll_mix": nll_mix, "policy_loss": pg,
        "policy_term": qs.policy_weight * pg,
        "reward_mean": masked_mean(reward, r_valid),
        "reward_std": jnp.sqrt(masked_mean((reward - masked_mean(reward, r_valid)) ** 2, r_valid)),
        "advantage_pos_frac": masked_mean((adv > 0).astype(reward.dtype), r_valid),
        "mixing_weight": w_sum, "thought_entropy": entropy,
    }
    if details:
        metrics["details"] = {
            "hidden": hidden, "thoughts": thoughts, "base_logp": base_lp, "reward": reward,
            "baselined": baselined, "advantage": adv, "reward_valid": r_valid,
            "mix_logp": jnp.stack([m for m, _, _ in steps]), "mixing_weight": jnp.stack([w for _, w, _ in steps]),
            "target_valid": jnp.stack([v for _, _, v in steps]),
            "policy_logp": policy_logprobs(params, cfg, qs, hidden, thoughts) if T else None,
        }
    return loss, metrics
