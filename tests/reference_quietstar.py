"""Straightforward references for the tests: dense masks over flattened streams, per-position loops.

Nothing here is used by the package. The dense formulation is the reference's own: all K streams of
a row flattened to K*L tokens, one (KL x KL) boolean mask, ordinary softmax attention.
"""

import jax
import jax.numpy as jnp
import numpy as np

from quietstar_jax.model.rope import apply_rope, rope_cos_sin
from quietstar_jax.model.transformer import rms_norm


def dense_stream_mask(segment_ids, K, window=1 << 30):
    """(B, K*L, K*L) bool, index k*L + p. Base keys: causal, same segment, window; stream keys:
    same position, stream 1..k."""
    seg = np.asarray(segment_ids)
    B, L = seg.shape
    m = np.zeros((B, K * L, K * L), bool)
    for b in range(B):
        for k in range(K):
            for p in range(L):
                q = k * L + p
                for j in range(L):
                    m[b, q, j] = j <= p and p - j < window and seg[b, j] == seg[b, p]
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


def dense_forward(params, cfg, x, positions, mask):
    """x (B, S, H) embeddings, positions (B, S), dense mask (B, S, S) -> final hidden (B, S, H).
    A Python loop over layers, no scan, no streams."""
    lay = params["model"]["layers"]
    cos, sin = rope_cos_sin(cfg, positions)
    B, S, _ = x.shape
    D = cfg.head_dim
    lin = lambda h, p: h @ p["weight"].T + (p["bias"] if "bias" in p else 0.0)  # noqa: E731
    for i in range(cfg.num_hidden_layers):
        lp = jax.tree.map(lambda a: a[i], lay)
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


def reference_loss(params, cfg, qs, batch, thoughts):
    """The Quiet-STaR loss, written out position by position from the spec with a dense mask."""
    P, N, M = qs.n_passes, qs.n_ahead, qs.n_ahead_talk
    T = N - 3
    tok = np.repeat(np.asarray(batch["tokens"]), P, 0)
    pos = np.repeat(np.asarray(batch["positions"]), P, 0)
    seg = np.repeat(np.asarray(batch["segment_ids"]), P, 0)
    thoughts = np.asarray(thoughts)
    R, L = tok.shape
    K = N + M - 1
    streams = np.zeros((R, K, L), np.int64)
    for r in range(R):
        for p in range(L):
            col = [tok[r, p], qs.start_id] + list(thoughts[r, p]) + [qs.end_id]
            col += [tok[r, p + s] if p + s < L else 0 for s in range(1, M)]
            streams[r, :, p] = col
    flat = streams.reshape(R, K * L)
    fpos = (pos[:, None, :] + np.arange(K)[None, :, None]).reshape(R, K * L)
    h = dense_forward(params, cfg, embed_ref(params, qs, flat), jnp.asarray(fpos),
                      jnp.asarray(dense_stream_mask(seg, K))).reshape(R, K, L, -1)
    logp = lambda z: jax.nn.log_softmax(z, axis=-1)  # noqa: E731
    base_logp = logp(logits_ref(params, cfg, h[:, 0]))  # (R, L, V)
    head = params["quietstar"]["talk_head"]

    def weight(hb, ht):
        z = jnp.concatenate([hb, ht])
        z = jax.nn.relu(head["0"]["weight"] @ z + head["0"]["bias"])
        z = jax.nn.relu(head["2"]["weight"] @ z + head["2"]["bias"])
        z = head["4"]["weight"] @ z + head["4"]["bias"]
        return jax.nn.sigmoid(z[0]) if qs.mixer_bounded else z[0]

    def ok(r, p, s):  # target x_{p+s+1} exists in the same segment as x_p
        return p + s + 1 < L and seg[r, p] > 0 and seg[r, p + s + 1] == seg[r, p]

    base_terms = [-base_logp[r, p, tok[r, p + 1]] for r in range(R) for p in range(L) if ok(r, p, 0)]
    nll_base = sum(base_terms) / len(base_terms)
    nll_mix = 0.0
    reward = {}
    for s in range(M):
        terms = []
        for r in range(R):
            for p in range(L):
                if not ok(r, p, s):
                    continue
                hb, ht = h[r, 0, p + s], h[r, N - 1 + s, p]
                w = weight(hb, ht)
                mix_lp = logp(logits_ref(params, cfg, (1 - w) * hb + w * ht))[tok[r, p + s + 1]]
                terms.append(-mix_lp)
                reward[r, p] = reward.get((r, p), 0.0) + jax.lax.stop_gradient(
                    mix_lp - base_logp[r, p + s, tok[r, p + s + 1]])
        nll_mix = nll_mix + sum(terms) / len(terms) / M
    rewarded = [(r, p) for r in range(R) for p in range(L)
                if ok(r, p, M - 1) and (not qs.drop_last_reward_position or ok(r, p, M))]
    pg_terms = []
    for r, p in rewarded:
        group = [reward[(r // P) * P + i, p] for i in range(P)]
        a = reward[r, p] - sum(group) / P
        if qs.clamp_advantage:
            a = jnp.maximum(a, 0.0)
        lp = 0.0
        for j in range(T):
            lp = lp + logp(logits_ref(params, cfg, h[r, 1 + j, p]) / qs.policy_temperature)[thoughts[r, p, j]]
        pg_terms.append(-a * lp)
    pg = sum(pg_terms) / max(len(pg_terms), 1)
    return qs.base_loss_weight * nll_base + qs.mix_loss_weight * nll_mix + qs.policy_weight * pg


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
    for r in range(R):
        for p in range(L):
            seq = list(tokens[r, : p + 1]) + [qs.start_id]
            for i in range(T):
                S = len(seq)
                ids = np.asarray(seq)[None]
                pos = np.asarray(positions)[r, 0] + np.arange(S)[None]
                mask = np.tril(np.ones((1, S, S), bool))
                h = dense_forward(params, cfg, embed_ref(params, qs, ids), jnp.asarray(pos), jnp.asarray(mask))
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
