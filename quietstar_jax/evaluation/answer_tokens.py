"""Accuracy and NLL on chosen answer tokens, with and without thinking: the synthetic task's measure.

    m = AnswerTokens(cfg, qs, seq_len=64)(params, token_rows, answer_positions, key)
    m -> {"base_acc", "base_nll", "think_acc", "think_nll", "n"}

For every answer token x_q of every row: base = the model's next-token distribution at q - 1 without
thinking; think = after a thought at q - 1 (think_logprobs: the training sampler's thought at the
sample temperature, mixed by the mixing head: training's talk step 0, what inference does). Accuracy
is argmax = x_q; NLL is -log p(x_q). A model trained without thinking (N = M = P = 1) has only base.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from quietstar_jax.inference.think import think_logprobs
from quietstar_jax.model.config import ModelConfig
from quietstar_jax.model.transformer import causal_lm_logits
from quietstar_jax.quietstar.config import QuietStarConfig


def rows_from_texts(texts, encode, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Texts -> (tokens, segment_ids) (n, seq_len) int32, right-padded (segment 0); a text longer than
    seq_len is an error (answer positions would be cut)."""
    toks = np.zeros((len(texts), seq_len), np.int32)
    seg = np.zeros((len(texts), seq_len), np.int32)
    for i, t in enumerate(texts):
        ids = list(encode(t))
        if len(ids) > seq_len:
            raise ValueError(f"text {i} has {len(ids)} tokens > seq_len {seq_len}")
        toks[i, :len(ids)], seg[i, :len(ids)] = ids, 1
    return toks, seg


class AnswerTokens:
    def __init__(self, cfg: ModelConfig, qs: QuietStarConfig, batch_size: int = 64):
        self.think = qs.enabled
        self.batch_size = batch_size

        def fn(params, tokens, seg, key):
            pos = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
            if self.think:
                out = think_logprobs(params, cfg, qs, tokens, key, segment_ids=seg, positions=pos)
                return out.base_logprobs, out.mixed_logprobs
            logp = jax.nn.log_softmax(causal_lm_logits(params, cfg, tokens, seg, pos).astype(jnp.float32), -1)
            return logp, logp

        self._fn = jax.jit(fn)

    def __call__(self, params, tokens: np.ndarray, segment_ids: np.ndarray, answers: list[list[int]], key) -> dict:
        """tokens / segment_ids (n, L); answers[i]: the answer token indices of row i (each >= 1)."""
        hits = {"base": [], "think": []}
        nll = {"base": [], "think": []}
        n = len(tokens)
        B = self.batch_size
        for start in range(0, n, B):
            t, s = tokens[start:start + B], segment_ids[start:start + B]
            pad = B - len(t)
            if pad:  # one compiled shape: fill the last batch with copies of its first row
                t, s = np.concatenate([t, np.repeat(t[:1], pad, 0)]), np.concatenate([s, np.repeat(s[:1], pad, 0)])
            base, think = jax.device_get(self._fn(params, jnp.asarray(t), jnp.asarray(s),
                                                  jax.random.fold_in(key, start)))
            for i in range(min(B, n - start)):
                for q in answers[start + i]:
                    target = int(t[i, q])
                    for name, lp in (("base", base), ("think", think)):
                        hits[name].append(int(np.argmax(lp[i, q - 1])) == target)
                        nll[name].append(-float(lp[i, q - 1, target]))
        out = {"base_acc": float(np.mean(hits["base"])), "base_nll": float(np.mean(nll["base"])),
               "n": len(hits["base"])}
        if self.think:
            out.update(think_acc=float(np.mean(hits["think"])), think_nll=float(np.mean(nll["think"])))
        return out
