"""Straightforward references for the tests: dense masks over flattened streams, per-position loops.

Nothing here is used by the package. The dense formulation is the authors' own: all K streams of a
row flattened to K*L tokens, one (KL x KL) boolean mask, ordinary softmax attention. The loss follows
the authors' reductions as their code computes them (tests/fixtures/reference_golden/README.md, "Loss
composition"), written position by position, plus our config alternatives.
"""

import jax
import jax.numpy as jnp
import numpy as np

from quietstar_jax.model.rope import apply_rope, rope_cos_sin
from quietstar_jax.model.transformer import rms_norm


def dense_stream_mask(segment_ids, K, window=1 << 30):
    """(B, K*L, K*L) bool, index k*L + p. Base keys: causal, window, key not padding, same segment
    (a padding query sees every real key before it, as with HF's attention_mask); stream keys: same
    position, streams 1..k, none for a padding position."""
    seg = np.asarray(segment_ids)
    B, L = seg.shape
    m = np.zeros((B, K * L, K * L), bool)
    for b in range(B):
        for k in range(K):
            for p in range(L):
                q = k * L + p
                for j in range(L):
                    m[b, q, j] = (j <= p and p - j < window and seg[b, j] > 0
                                  and (seg[b, j] == seg[b, p] or seg[b, p] == 0))
                if seg[b, p] > 0:
                    for k2 in range(1, k + 1):
                        m[b, q, k2 * L + p] = True
    return m


def dense_attention(q, k, v, mask, scale):
    """q (B, S, Hq, D), k/v (B, S, Hkv, D), mask (B, S, S) -> (B, S, Hq, D)."""
    G = q.shape[2] // k.shape[2]
    k = jnp.repeat(k, G, axis=2)
    v = jnp.repeat(v, G, axis=2)
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
    s = jnp.where(mask[:, None], s, -1e30)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)


def dense_forward(params, cfg, x, positions, mask, adapters=None, adapter_gate=None):
    """x (B, S, H) embeddings, positions (B, S), dense mask (B, S, S) -> final hidden (B, S, H).
    A Python loop over layers, no scan, no streams. adapters: params["quietstar"]["adapters"] (LoRA
    lora_A (nL, r, in) / lora_B (nL, out, r)), added as adapter_gate (B, S) * B (A h) to each adapted
    projection's output, token by token."""
    lay = params["model"]["layers"]
    cos, sin = rope_cos_sin(cfg, positions)
    B, S, _ = x.shape
    D = cfg.head_dim

    def lin(h, p):
        y = h @ p["weight"].T + (p["bias"] if "bias" in p else 0.0)
        if "lora_A" in p:
            y = y + adapter_gate[..., None] * ((h @ p["lora_A"].T) @ p["lora_B"].T)
        return y

    for i in range(cfg.num_hidden_layers):
        lp = jax.tree.map(lambda a: a[i], lay)
        if adapters is not None:
            for mod, targets in adapters.items():
                for t, ab in targets.items():
                    lp[mod][t] = dict(lp[mod][t], lora_A=ab["lora_A"][i], lora_B=ab["lora_B"][i])
        h = rms_norm(x, lp["input_layernorm"]["weight"], cfg.rms_norm_eps)
        a = lp["self_attn"]
        q = apply_rope(lin(h, a["q_proj"]).reshape(B, S, -1, D), cos, sin)
        k = apply_rope(lin(h, a["k_proj"]).reshape(B, S, -1, D), cos, sin)
        v = lin(h, a["v_proj"]).reshape(B, S, -1, D)
        x = x + lin(dense_attention(q, k, v, mask, D ** -0.5).reshape(B, S, -1), a["o_proj"])
        h = rms_norm(x, lp["post_attention_layernorm"]["weight"], cfg.rms_norm_eps)
        m = lp["mlp"]
        x = x + lin(jax.nn.silu(lin(h, m["gate_proj"])) * lin(h, m["up_proj"]), m["down_proj"])
    return rms_norm(x, params["model"]["norm"]["weight"], cfg.rms_norm_eps)


def embed_ref(params, qs, tokens):
    table = params["model"]["embed_tokens"]["weight"]
    te = params["quietstar"]["thought_embeddings"] * qs.embedding_scale
    x = table[np.clip(np.asarray(tokens), 0, table.shape[0] - 1)]
    x = jnp.where((tokens == qs.start_id)[..., None], te[0], x)
    return jnp.where((tokens == qs.end_id)[..., None], te[1], x)


def logits_ref(params, cfg, h):
    w = params["model"]["embed_tokens"]["weight"] if cfg.tie_word_embeddings else params["lm_head"]["weight"]
    return h @ w.T


def reference_loss(params, cfg, qs, batch, thoughts, step=None, ref_params=None, terms=False):
    """The Quiet-STaR loss written out position by position with a dense mask.

    The authors' reductions: NLL = sum over the predictions with a target / their number, over all
    B*P rows; reward at p (p <= L-2-M) = sum over the talk steps with a target of mix - base log-prob;
    baseline = mean over the P copies when P > 1; policy: per thought token, sum of -A log p over the
    rewarded positions / (rows x slice positions), then the mean over the T tokens. The config's
    alternatives (policy_reduction, policy_denominator, reward_needs_all_targets,
    mask_thought_logits_in_nll, drop_last_reward_position) are written out the same way, and so are
    the stabilisers: pause thoughts, the advantage normalisations, the mixing-weight warm-up at `step`,
    thought adapters (a per-token gate: every token of streams >= 1), the entropy bonus and the KL to
    `ref_params`' thought distributions (per real position and thought token).
    terms: return (lm_term, thought_term) instead of their sum."""
    P, N, M = qs.n_passes, qs.n_ahead, qs.n_ahead_talk
    T = N - 3
    tok = np.repeat(np.asarray(batch["tokens"]), P, 0)
    pos = np.repeat(np.asarray(batch["positions"]), P, 0)
    seg = np.repeat(np.asarray(batch["segment_ids"]), P, 0)
    thoughts = np.asarray(thoughts)
    if qs.thought_mode == "pause":
        thoughts = np.full_like(thoughts, qs.start_id)
    R, L = tok.shape
    K = N + M - 1
    streams = np.zeros((R, K, L), np.int64)
    for r in range(R):
        for p in range(L):
            col = [tok[r, p], qs.start_id] + list(thoughts[r, p]) + [qs.end_id]
            col += [tok[r, p + s] if p + s < L else qs.pad_id for s in range(1, M)]
            streams[r, :, p] = col
    flat = streams.reshape(R, K * L)
    fpos = (pos[:, None, :] + np.arange(K)[None, :, None]).reshape(R, K * L)
    # Adapters act on every token of streams 1..K-1 (thoughts and what follows them), never on the text.
    gate = np.repeat((np.arange(K) >= 1)[None, :, None], L, axis=2).repeat(R, axis=0).reshape(R, K * L)

    def hidden_of(prm):
        adapters = prm["quietstar"].get("adapters") if qs.adapter_rank else None
        g = jnp.asarray(gate, jnp.float64 if cfg.dtype == "float64" else jnp.float32) * qs.adapter_scale
        return dense_forward(prm, cfg, embed_ref(prm, qs, flat), jnp.asarray(fpos),
                             jnp.asarray(dense_stream_mask(seg, K)), adapters, g).reshape(R, K, L, -1)

    h = hidden_of(params)
    thought_ids = [i for i in (qs.start_id, qs.end_id) if 0 <= i < cfg.vocab_size]

    def logp(z, mask):
        if mask and thought_ids:
            z = z.at[..., jnp.asarray(thought_ids)].set(-jnp.inf)
        return jax.nn.log_softmax(z, axis=-1)

    nll_masked = qs.mask_thought_logits_in_nll
    base_logp = logp(logits_ref(params, cfg, h[:, 0]), nll_masked)  # (R, L, V)
    head = params["quietstar"]["talk_head"]

    def weight(hb, ht):
        z = jnp.concatenate([hb, ht])
        z = jax.nn.relu(head["0"]["weight"] @ z + head["0"]["bias"])
        z = jax.nn.relu(head["2"]["weight"] @ z + head["2"]["bias"])
        z = head["4"]["weight"] @ z + (head["4"]["bias"] if "bias" in head["4"] else 0.0)
        w = jax.nn.sigmoid(z[0]) if qs.mixer_bounded else z[0]
        if qs.mixing_warmup_steps and step is not None and step < qs.mixing_warmup_steps:
            v = qs.mixing_warmup_value
            w = v if qs.mixing_warmup_mode == "fixed" else jnp.maximum(w, v * (1 - step / qs.mixing_warmup_steps))
        return w

    def ok(r, p, s):  # target x_{p+s+1} exists in the same segment as x_p
        return p + s + 1 < L and seg[r, p] > 0 and seg[r, p + s + 1] == seg[r, p]

    # Every sum below runs over an explicit list of (row, position) pairs chosen by the rules above,
    # gathered into arrays so that each term is still computed per position, but in one batch.
    def pairs(cond):
        rp = np.array([(r, p) for r in range(R) for p in range(L) if cond(r, p)], np.int64).reshape(-1, 2)
        return rp[:, 0], rp[:, 1]

    ri, pi = pairs(lambda r, p: ok(r, p, 0))
    nll_base = -jnp.mean(base_logp[ri, pi, tok[ri, pi + 1]])
    nll_mix = 0.0
    reward = jnp.zeros((R, L), h.dtype)
    for s in range(M):
        ri, pi = pairs(lambda r, p: ok(r, p, s))
        hb, ht = h[ri, 0, pi + s], h[ri, N - 1 + s, pi]  # (n, H)
        w = jnp.broadcast_to(jax.vmap(weight)(hb, ht), (len(ri),))[:, None]
        tgt = tok[ri, pi + s + 1]
        if qs.mixer == "hidden":
            z = logits_ref(params, cfg, (1 - w) * hb + w * ht)
        else:
            z = (1 - w) * logits_ref(params, cfg, hb) + w * logits_ref(params, cfg, ht)
        mix_lp = logp(z, nll_masked)[jnp.arange(len(ri)), tgt]
        nll_mix = nll_mix - jnp.mean(mix_lp) / M
        reward = reward.at[ri, pi].add(jax.lax.stop_gradient(mix_lp - base_logp[ri, pi + s, tgt]))
    n_slice = L - M - (1 if qs.drop_last_reward_position else 0)

    def rewarded(r, p):
        if qs.reward_needs_all_targets:
            return ok(r, p, M - 1) and (not qs.drop_last_reward_position or ok(r, p, M))
        return p < n_slice and ok(r, p, 0)

    keep = np.array([[rewarded(r, p) for p in range(L)] for r in range(R)])
    reward = jnp.where(keep, reward, 0.0)
    adv = reward
    if P > 1:  # minus the mean over the P thoughts of the same example and position
        adv = reward - jnp.repeat(reward.reshape(R // P, P, L).mean(axis=1), P, axis=0)
    if qs.advantage_norm == "batch":  # by the std over the rewarded positions of the batch
        vals = adv[keep]
        adv = jnp.where(keep, adv / (jnp.sqrt(jnp.mean((vals - vals.mean()) ** 2)) + 1e-8), 0.0)
    elif qs.advantage_norm == "group":  # by the std over the P thoughts of each position
        sd = jnp.sqrt(jnp.mean(adv.reshape(R // P, P, L) ** 2, axis=1))
        adv = adv / (jnp.repeat(sd, P, axis=0) + 1e-8)
    if qs.clamp_advantage:
        adv = jnp.maximum(adv, 0.0)
    ri, pi = pairs(rewarded)
    denom = R * n_slice if qs.policy_denominator == "all" else max(len(ri), 1)
    token_losses = []
    sampled = qs.thought_mode == "sample"
    for j in range(T if sampled else 0):  # thought token j was sampled from the hidden state of stream j + 1
        z = logits_ref(params, cfg, h[ri, 1 + j, pi]) / qs.policy_temperature
        lp = logp(z, True)[jnp.arange(len(ri)), thoughts[ri, pi, j]]
        token_losses.append(jnp.sum(-adv[ri, pi] * lp) / denom)
    pg = sum(token_losses) / (T if qs.policy_reduction == "mean" else 1) if token_losses else 0.0
    thought_term = qs.policy_weight * pg
    if sampled and T and (qs.entropy_bonus or qs.kl_coef):
        ri, pi = pairs(lambda r, p: seg[r, p] > 0)  # every real position's thought
        h_ref = hidden_of(ref_params) if qs.kl_coef else None
        ents, kls = [], []
        for j in range(T):
            z = logits_ref(params, cfg, h[ri, 1 + j, pi]) / qs.sample_temperature
            keep = [v for v in range(z.shape[-1]) if v not in thought_ids]  # the sampling support
            ls = jax.nn.log_softmax(z[:, keep], axis=-1)
            ents.append(-jnp.sum(jnp.exp(ls) * ls, axis=-1))
            if qs.kl_coef:
                zr = logits_ref(ref_params, cfg, h_ref[ri, 1 + j, pi]) / qs.sample_temperature
                lr = jax.lax.stop_gradient(jax.nn.log_softmax(zr[:, keep], axis=-1))
                kls.append(jnp.sum(jnp.exp(ls) * (ls - lr), axis=-1))
        thought_term = thought_term - qs.entropy_bonus * jnp.mean(jnp.stack(ents))
        if qs.kl_coef:
            thought_term = thought_term + qs.kl_coef * jnp.mean(jnp.stack(kls))
    lm_term = qs.base_loss_weight * nll_base + qs.mix_loss_weight * nll_mix
    return (lm_term, thought_term) if terms else lm_term + thought_term


def naive_thoughts(params, cfg, qs, tokens, positions, key, step_uniforms):
    """For every row r and position p separately: feed x_0..x_p, <start>, thought so far to the plain
    model (dense causal), take the last logits, and draw with the same uniform by a sequential float64
    inverse CDF (numpy). Returns thoughts (R, L, T) and the raw logits (R, L, T, V)."""
    from quietstar_jax.quietstar.sampling import sampling_logits

    tokens = np.asarray(tokens)
    R, L = tokens.shape
    T = qs.n_ahead - 3
    out = np.zeros((R, L, T), np.int64)
    raws = np.zeros((R, L, T, logits_ref(params, cfg, jnp.zeros(cfg.hidden_size)).shape[-1]), np.float32)
    unif = [np.asarray(step_uniforms(key, i, (R, L))) for i in range(T)]
    # One compiled forward per prefix length (the loop below is the reference: no caches, no streams).
    fwd = jax.jit(lambda p, x, pos, m: dense_forward(p, cfg, x, pos, m))
    for r in range(R):
        for p in range(L):
            seq = list(tokens[r, : p + 1]) + [qs.start_id]
            for i in range(T):
                S = len(seq)
                ids = np.asarray(seq)[None]
                pos = np.asarray(positions)[r, 0] + np.arange(S)[None]
                mask = np.tril(np.ones((1, S, S), bool))
                h = fwd(params, embed_ref(params, qs, ids), jnp.asarray(pos), jnp.asarray(mask))
                raw = logits_ref(params, cfg, h[0, -1])
                raws[r, p, i] = raw
                z = np.asarray(sampling_logits(raw, qs), np.float64)
                prob = np.exp(z - z.max())
                cdf = np.cumsum(prob / prob.sum())
                tok = int(np.searchsorted(cdf, unif[i][r, p], side="left"))
                assert prob[tok] > 0
                out[r, p, i] = tok
                seq.append(tok)
    return out, raws
