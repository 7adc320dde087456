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

The opt-in stabilisers (QuietStarConfig; off by default, so the above is what runs by default) add to
the thought side: L = lm_term + thought_term with lm_term = the two NLL terms and
    thought_term = policy_weight * L_policy - entropy_bonus * H + kl_coef * KL
(H, KL: mean entropy of / KL to the initial params' thought-token sampling distributions,
quietstar.policy), normalise the advantages, warm the mixing weight up, run thought adapters, or
replace the thoughts by pause tokens; quietstar.routing routes thought_term's gradient.

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
from quietstar_jax.model.head import head_logits, head_token_logprobs, mix_gain, mixed_head_logprobs, token_logprobs
from quietstar_jax.model.transformer import embed, forward, lm_logits
from quietstar_jax.quietstar import layout
from quietstar_jax.quietstar.adapters import thought_adapters
from quietstar_jax.quietstar.config import QuietStarConfig
from quietstar_jax.quietstar.mixing import mixing_weight, thought_delta
from quietstar_jax.quietstar.policy import (advantages, entropy_and_kl, head_logprobs, masked_mean,  # noqa: F401
                                            policy_denominator, policy_from_logits, policy_logp_pairs,
                                            policy_logprobs, thought_logits, warm_mixing_weight)
from quietstar_jax.quietstar.sampling import sample_thoughts
from quietstar_jax.quietstar.tokens import embed_with_thoughts, mask_thought_logits, thought_ids_in_vocab


def plain_lm_loss(params, cfg: ModelConfig, batch):
    """Ordinary next-token NLL (the N = M = P = 1 baseline). batch: tokens/positions/segment_ids (B, L)."""
    tokens, seg = batch["tokens"], batch["segment_ids"]
    h = forward(params, cfg, embed(params, cfg, tokens)[:, None],
                batch["positions"][:, None], StreamMask.causal(seg))[:, 0]
    lp = head_token_logprobs(params, cfg, h, layout.shift_left(tokens, 1))
    nll = masked_mean(-lp, layout.next_token_valid(seg, 0))
    return nll, {"loss": nll, "nll_base": nll}


def pause_thoughts(qs: QuietStarConfig, shape) -> jax.Array:
    """thought_mode "pause": every thought token is <start> (R, L, T): extra positions, no content."""
    return jnp.full(tuple(shape) + (qs.num_thought_tokens,), qs.start_id, jnp.int32)


def _reference_thought_logits(ref_params, cfg: ModelConfig, qs: QuietStarConfig, streams, positions, seg, T):
    """The initial params' thought logits (R, L, T, V) for the same sampled thoughts: streams 0..T (the
    text, <start>, the first T - 1 thought tokens) are all a thought token's distribution depends on."""
    ref_params = jax.lax.stop_gradient(ref_params)
    hidden = forward(ref_params, cfg, embed_with_thoughts(ref_params, cfg, qs, streams[:, :T + 1]),
                     layout.stream_positions(qs, positions, T + 1), StreamMask.streams(seg, T + 1),
                     adapters=thought_adapters(ref_params, qs))
    return thought_logits(ref_params, cfg, qs, hidden, T)


def quietstar_loss(params, cfg: ModelConfig, qs: QuietStarConfig, batch, key, thoughts=None,
                   details: bool = False, step=None, ref_params=None):
    """Total loss and metrics for one batch.

    batch: {"tokens", "positions", "segment_ids"}: (B, L) int32 (segment 0 = padding).
    thoughts: optional (B * P, L, T) pre-sampled thought tokens (tests); sampled from `key` otherwise
        (thought_mode "pause": always <start> tokens).
    details: also return metrics["details"], the per-position pieces (tests, debugging): hidden
        (R, K, L, H), base_logp / reward / baselined / advantage / reward_valid (R, L), and per talk step
        (M, R, L) mix_logp, mixing_weight, target_valid; policy_logp (R, L, T) for every row.
    step: the optimizer step (a traced int), for the mixing-weight warm-up; None = no warm-up.
    ref_params: the initial params, for the KL term (needed when qs.kl_coef > 0).
    Returns (loss, metrics dict of float32 scalars). metrics["lm_term"] + metrics["thought_term"] =
    loss: the two parts whose gradients qs.policy_params / policy_grad_max_share route apart
    (quietstar.routing).
    """
    if not qs.enabled:
        return plain_lm_loss(params, cfg, batch)
    P, M, N, T = qs.n_passes, qs.n_ahead_talk, qs.n_ahead, qs.num_thought_tokens
    rep = lambda a: jnp.repeat(a, P, axis=0)  # noqa: E731
    tokens, pos, seg = rep(batch["tokens"]), rep(batch["positions"]), rep(batch["segment_ids"])
    chex.assert_equal_shape([batch["tokens"], batch["positions"], batch["segment_ids"]])
    entropy = jnp.float32(jnp.nan)
    if qs.thought_mode == "pause":  # fixed thoughts, whatever was passed
        thoughts, entropy = pause_thoughts(qs, tokens.shape), jnp.float32(0)
    elif thoughts is None:
        thoughts, entropy = sample_thoughts(params, cfg, qs, tokens, pos, seg, key)
    chex.assert_shape(thoughts, tokens.shape + (T,))
    thoughts = jax.lax.stop_gradient(thoughts)
    K = qs.num_streams
    streams = layout.stream_tokens(qs, tokens, thoughts)
    hidden = forward(params, cfg, embed_with_thoughts(params, cfg, qs, streams),
                     layout.stream_positions(qs, pos), StreamMask.streams(seg, K),
                     adapters=thought_adapters(params, qs))  # (R, K, L, H)
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
        w = warm_mixing_weight(qs, mixing_weight(head, qs, hb, ht), step)  # (R, L, 1)
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
    baselined, adv = advantages(qs, reward, r_valid)

    extra = {}
    zero = jnp.zeros((), reward.dtype)
    pg = ent_term = kl_term = zero
    if qs.samples_thoughts:
        if qs.entropy_bonus or qs.kl_coef:
            # The regularisers need every row's thought logits; the policy reuses them.
            z = thought_logits(params, cfg, qs, hidden, T)  # (R, L, T, V)
            ref_z = None
            if qs.kl_coef:
                if ref_params is None:
                    raise ValueError("quietstar.kl_coef > 0 needs ref_params (the initial params)")
                ref_z = _reference_thought_logits(ref_params, cfg, qs, streams, pos, seg, T)
            ent, kl = entropy_and_kl(qs, z, ref_z)
            real = (seg > 0)[..., None] & jnp.ones((T,), bool)
            entropy = masked_mean(ent, real)
            ent_term = entropy
            extra["thought_entropy_train"] = entropy
            if kl is not None:
                kl_term = masked_mean(kl, real)
                extra["kl"] = kl_term
            total = policy_from_logits(qs, z, thoughts, adv)
        elif qs.clamp_advantage and P == 2:
            total = policy_logp_pairs(params, cfg, qs, hidden, thoughts, adv)
        else:
            logp = policy_logprobs(params, cfg, qs, hidden, thoughts).sum(-1)  # (R, L)
            total = jnp.sum(jax.lax.stop_gradient(adv) * logp)
        # A = 0 outside reward_valid, so the sums above run over the rewarded positions only.
        pg = -total / policy_denominator(qs, seg) / (T if qs.policy_reduction == "mean" else 1)
    lm_term = qs.base_loss_weight * nll_base + qs.mix_loss_weight * nll_mix
    thought_term = qs.policy_weight * pg
    if qs.entropy_bonus:
        thought_term = thought_term - qs.entropy_bonus * ent_term
    if qs.kl_coef:
        thought_term = thought_term + qs.kl_coef * kl_term
    loss = lm_term + thought_term
    metrics = {
        "loss": loss, "nll": lm_term, "nll_base": nll_base, "nll_mix": nll_mix, "policy_loss": pg,
        "policy_term": qs.policy_weight * pg, "lm_term": lm_term, "thought_term": thought_term,
        "reward_mean": masked_mean(reward, r_valid),
        "reward_std": jnp.sqrt(masked_mean((reward - masked_mean(reward, r_valid)) ** 2, r_valid)),
        "advantage_pos_frac": masked_mean((adv > 0).astype(reward.dtype), r_valid),
        "mixing_weight": w_sum, "thought_entropy": entropy, **extra,
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
