"""The naive generation loop, the reference for KV-cached generation with thinking (and the slow
baseline of benchmarks/generate_bench.py): for every new token, everything is recomputed from
scratch. One row at a time, no cache, no streams, no branch slots:

    h_base   = the model on x_0..x_p (plain causal attention)            -> hidden at x_p
    thought  = the model on x_0..x_p <start> t_1 .. t_j, one token at a time (sampling t_{j+1})
    h_end    = the model on x_0..x_p <start> t_1..t_T <end>             -> hidden at <end>
    next     = choose(lm_head((1 - w) h_base + w h_end)), w = mixing_head(h_base, h_end)

Only the draws (quietstar_jax.inference.sampler.draw / choose) are shared with the implementation, so
that both pick the same tokens from the same distributions. Thought adapters (the thought's tokens
run them, the text's do not) go through the dense reference forward of reference_quietstar.
"""

import jax
import jax.numpy as jnp
import numpy as np

from reference_quietstar import dense_forward

from quietstar_jax.inference.sampler import choose, draw
from quietstar_jax.model.attention import StreamMask
from quietstar_jax.model.transformer import forward, lm_logits
from quietstar_jax.quietstar.mixing import mixing_weight
from quietstar_jax.quietstar.tokens import embed_with_thoughts, mask_thought_logits


def _last_hidden(params, cfg, qs, ids, n_text=None):
    """Final hidden state of the last token of `ids` (a list) under plain causal attention. Run on the
    sequence right-padded to a multiple of 64 (causal: padding after the last token changes nothing
    before it), so one compiled program serves many lengths. With thought adapters, the tokens from
    index n_text on (the thought) run them: the tests' dense reference forward with a per-token gate."""
    n = len(ids)
    L = -(-n // 64) * 64
    n_text = n if n_text is None else n_text
    return _fwd(params, cfg, qs, jnp.asarray([list(ids) + [0] * (L - n)], jnp.int32), n - 1, n_text)


_CACHE = {}


def _fwd(params, cfg, qs, ids, last, n_text):
    key = (cfg, qs)
    if key not in _CACHE:
        def f(p, ids, last, n_text):
            L = ids.shape[1]
            pos = jnp.arange(L, dtype=jnp.int32)[None]
            x = embed_with_thoughts(p, cfg, qs, ids)
            if qs.adapter_rank:
                gate = (jnp.arange(L) >= n_text)[None].astype(x.dtype) * qs.adapter_scale
                h = dense_forward(p, cfg, x, pos, jnp.tril(jnp.ones((1, L, L), bool)), p["quietstar"]["adapters"], gate)
                return h[0, last]
            h = forward(p, cfg, x[:, None], pos[:, None], StreamMask.causal(jnp.ones((1, L), jnp.int32)))
            return h[0, 0, last]
        _CACHE[key] = jax.jit(f)
    return _CACHE[key](params, ids, last, n_text)


def naive_generate(params, cfg, qs, gen, prompt, key, row: int):
    """One row: prompt (list of ids) -> (tokens, thoughts (list of lists), weights), with the draws of
    row id `row`. Stops after an EOS id or max_new_tokens."""
    T = gen.num_thought_tokens(qs)
    rows = jnp.asarray([row], jnp.int32)
    ids = list(prompt)
    tokens, thoughts, weights = [], [], []
    for t in range(gen.max_new_tokens):
        h_base = _last_hidden(params, cfg, qs, ids)
        if gen.think:
            seq = ids + [qs.start_id]
            thought = []
            for j in range(T):
                if qs.thought_mode == "pause":  # fixed thoughts: <start> tokens
                    tok = qs.start_id
                else:
                    h = _last_hidden(params, cfg, qs, seq, len(ids))
                    logits = mask_thought_logits(lm_logits(params, cfg, h), qs)[None]
                    tok = int(choose(logits, draw(key, t, 1 + j, rows), gen.thought_sampler(qs))[0])
                thought.append(tok)
                seq.append(tok)
            h_end = _last_hidden(params, cfg, qs, seq + [qs.end_id], len(ids))
            w = mixing_weight(params["quietstar"]["talk_head"], qs, h_base, h_end)
            logits = lm_logits(params, cfg, (1.0 - w) * h_base + w * h_end)
            w = float(w[0])
        else:
            thought, w = [0] * T, 0.0
            logits = lm_logits(params, cfg, h_base)
        logits = mask_thought_logits(logits.astype(jnp.float32), qs)[None]
        tok = int(choose(logits, draw(key, t, 0, rows), gen.output)[0])
        tokens.append(tok)
        thoughts.append(thought)
        weights.append(w)
        ids.append(tok)
        if tok in gen.eos_ids:
            break
    return tokens, thoughts, np.asarray(weights, np.float32)
