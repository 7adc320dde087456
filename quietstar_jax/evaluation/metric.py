"""The authors' evaluation metric (ezelikman/quiet-star eval_helpers.py: compute_metrics), batched and
jitted. For every example:

  1. text = tasks.scoring_text(example), encoded with the tokenizer's default encode (Mistral adds BOS);
     longer than max_len (256): the LAST max_len tokens are kept (the authors take a random 256-token
     crop, which can cut the answer off; ours always keeps it).
  2. The next-token distribution at every position: with thinking, think_logprobs' mixed distribution
     (a thought after every position, M = P = 1); without, the plain model.
  3. i = the index of the last token of the final "\\nA:": the largest i such that decode(ids[:i]) holds
     fewer "\\nA:" than decode(ids) (their scan, decoding prefixes from the end).
  4. numeric = the character after "\\nA:" + space is a digit. Then the valid set is digits + newline,
     else letters A-E + newline (vocab.ValidTokens, derived from the tokenizer); the authors choose it this
     way too, so a negative GSM8K answer (" -3") is scored over the letter set.
  5. For j = first, first + 1, ... while token j + 1 is a real token (not padding): if ids[j + 1] is in the
     valid set, multiply the score by p_j(ids[j + 1]) / sum over the valid set of p_j (the distribution
     at j renormalised over the valid set); tokens outside it (the comma of "1,000") are skipped.
     first = i, or i + 1 when the answer is numeric and token i + 1 holds no digit (Mistral's "▁" before
     the digits: their "+1 if numeric"; a tokenizer that writes " 7" as one token skips nothing).
  6. accuracy = the mean score over the examples.

    metric = AuthorsMetric(cfg, qs, tokenizer, Placement(mesh), batch_size=8)
    plans = metric.plan([scoring_text(ex) for ex in examples])
    rows = metric.score(params, plans, think=True, key=jax.random.key(0))   # [{"score": ..., ...}, ...]
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from quietstar_jax.errors import DataError
from quietstar_jax.evaluation.placement import Placement, bucket
from quietstar_jax.evaluation.tasks import MARKER
from quietstar_jax.evaluation.vocab import ValidTokens, encode_default
from quietstar_jax.inference.think import think_logprobs
from quietstar_jax.model.config import ModelConfig
from quietstar_jax.model.transformer import causal_lm_logits
from quietstar_jax.quietstar.config import QuietStarConfig

LENGTH_STEP = 64  # batches are padded to a multiple of this (at most max_len): few compiled shapes


@dataclasses.dataclass(frozen=True)
class Plan:
    """What gets scored in one example's tokens (host side, from the tokenizer alone)."""

    ids: np.ndarray  # (n,) int32 token ids, n <= max_len
    marker_end: int  # i: index of the last token of the final "\nA:"
    numeric: bool  # digits + newline (True) or letters + newline (False) is the valid set
    first: int  # the first scored position (i, or i + 1 past a leading token without a digit)
    positions: np.ndarray  # (k,) int positions j whose prediction of ids[j + 1] is a factor of the score
    cropped: bool  # the text had more than max_len tokens (the last max_len were kept)


def answer_marker_end(tok, ids, marker: str = MARKER) -> int:
    """The largest i such that decode(ids[:i]) holds fewer `marker`s than decode(ids) (1 if none does,
    as the authors' loop leaves it)."""
    total = tok.decode(ids).count(marker)
    i = 1
    for i in range(len(ids), 0, -1):
        if tok.decode(ids[:i]).count(marker) < total:
            break
    return i


def plan_example(tok, text: str, valid: ValidTokens, max_len: int = 256) -> Plan:
    ids = encode_default(tok, text)
    cropped = len(ids) > max_len
    ids = np.asarray(ids[-max_len:], np.int32)
    n = len(ids)
    full = tok.decode(ids)
    if MARKER not in full:
        raise DataError(f"no {MARKER!r} answer marker in the scored text {text[:80]!r}...")
    i = answer_marker_end(tok, ids)
    after = full.split(MARKER)[-1]
    numeric = len(after) > 1 and after[1].isdigit()
    allowed = set(valid.numeric if numeric else valid.choice)
    first = i
    if numeric and i + 1 < n and not any(c.isdigit() for c in tok.decode([int(ids[i + 1])])):
        first = i + 1
    positions = np.asarray([j for j in range(first, n - 1) if int(ids[j + 1]) in allowed], np.int32)
    return Plan(ids, i, numeric, first, positions, cropped)


def renormalised_log_score(logp, union: tuple, member, slots, scored):
    """logp (B, L, V) log-probs of the next token at every position; member (B, U) bool: which of the U ids
    `union` are in each row's valid set; slots (B, L) int32: the index in `union` of token j + 1; scored
    (B, L) bool. Returns (B,) float32: sum over scored j of log [p_j(token j+1) / sum over the valid set of
    p_j] (the log of the authors' product; 0 when nothing is scored, their empty product 1)."""
    sub = jnp.take(logp, jnp.asarray(union, jnp.int32), axis=-1)  # (B, L, U)
    norm = jax.nn.logsumexp(jnp.where(member[:, None, :], sub, -jnp.inf), axis=-1)  # (B, L)
    target = jnp.take_along_axis(sub, slots[..., None], axis=-1)[..., 0] - norm
    return jnp.sum(jnp.where(scored, target, 0.0), axis=-1)


def answer_log_scores(params, cfg: ModelConfig, qs: QuietStarConfig, tokens, segment_ids, member, slots, scored,
                      key, union: tuple, think: bool, thought_tokens: int | None):
    """Device side. tokens, segment_ids (B, L) int32 (segment 1 = text, 0 = padding); member, slots, scored:
    see renormalised_log_score. Returns (log score (B,) float32, thoughts (B, L, T) int32, mixing weights
    (B, L) float32); T = 0 and w = 0 without thinking."""
    B, L = tokens.shape
    if think:
        out = think_logprobs(params, cfg, qs, tokens, key, segment_ids=segment_ids, num_thought_tokens=thought_tokens)
        logp, thoughts, w = out.mixed_logprobs, out.thoughts, out.mixing_weight
    else:
        logp = jax.nn.log_softmax(causal_lm_logits(params, cfg, tokens, segment_ids).astype(jnp.float32), axis=-1)
        thoughts, w = jnp.zeros((B, L, 0), jnp.int32), jnp.zeros((B, L), jnp.float32)
    return renormalised_log_score(logp, union, member, slots, scored), thoughts, w.astype(jnp.float32)


class AuthorsMetric:
    """The metric for one model architecture and tokenizer; params are an argument, so one instance
    serves every evaluation of a training run (compiled once per (thinking on/off, padded length))."""

    def __init__(self, cfg: ModelConfig, qs: QuietStarConfig, tokenizer, placement: Placement | None = None,
                 batch_size: int = 8, max_len: int = 256, thought_tokens: int | None = None):
        self.cfg, self.qs, self.tok = cfg, qs, tokenizer
        self.place = placement or Placement()
        self.batch_size = self.place.check_batch_size(batch_size)
        self.max_len, self.thought_tokens = max_len, thought_tokens
        self.valid = ValidTokens.derive(tokenizer)
        self.union = tuple(sorted(set(self.valid.numeric) | set(self.valid.choice)))
        self._fns = {}

    def plan(self, texts: list[str]) -> list[Plan]:
        return [plan_example(self.tok, t, self.valid, self.max_len) for t in texts]

    def _fn(self, think: bool):
        if think not in self._fns:
            cfg, qs, union, T = self.cfg, self.qs, self.union, self.thought_tokens
            self._fns[think] = self.place.jit(
                lambda p, x, s, m, sl, sc, k: answer_log_scores(p, cfg, qs, x, s, m, sl, sc, k, union, think, T))
        return self._fns[think]

    def _arrays(self, plans: list[Plan], L: int) -> dict:
        B, U = len(plans), len(self.union)
        index = {t: u for u, t in enumerate(self.union)}
        num = np.asarray([t in self.valid.numeric for t in self.union])
        cho = np.asarray([t in self.valid.choice for t in self.union])
        x = np.zeros((B, L), np.int32)
        seg = np.zeros((B, L), np.int32)
        member = np.zeros((B, U), bool)
        slots = np.zeros((B, L), np.int32)
        scored = np.zeros((B, L), bool)
        for b, p in enumerate(plans):
            n = len(p.ids)
            x[b, :n], seg[b, :n] = p.ids, 1
            member[b] = num if p.numeric else cho
            for j in p.positions:
                slots[b, j], scored[b, j] = index[int(p.ids[j + 1])], True
        return {"x": x, "seg": seg, "member": member, "slots": slots, "scored": scored}

    def score(self, params, plans: list[Plan], think: bool, key, progress=None,
              with_thoughts: bool = False) -> list[dict]:
        """Per example, in the order of `plans`: {"score", "log_score", "scored_tokens", "cropped",
        "numeric"} (+ "thoughts": [{"position", "target", "thought" ids, "weight"}] at the scored positions
        when with_thoughts). Batches hold examples of similar length (sorted), padded to a multiple of
        64 tokens; a short last batch is filled with copies of its first example."""
        order = sorted(range(len(plans)), key=lambda k: -len(plans[k].ids))
        fn = self._fn(think)
        results: list = [None] * len(plans)
        for bi, start in enumerate(range(0, len(order), self.batch_size)):
            idx = order[start:start + self.batch_size]
            batch = [plans[k] for k in idx] + [plans[idx[0]]] * (self.batch_size - len(idx))
            L = bucket(max(len(p.ids) for p in batch), LENGTH_STEP, self.max_len)
            a = self._arrays(batch, L)
            out = fn(params, *(self.place.put(a[k]) for k in ("x", "seg", "member", "slots", "scored")),
                     jax.random.fold_in(key, bi))
            log_score, thoughts, w = (np.asarray(v) for v in jax.device_get(out))
            for b, k in enumerate(idx):
                p = plans[k]
                r = {"score": float(np.exp(log_score[b])), "log_score": float(log_score[b]),
                     "scored_tokens": int(len(p.positions)), "cropped": p.cropped, "numeric": p.numeric}
                if with_thoughts and think:
                    r["thoughts"] = [{"position": int(j), "target": int(p.ids[j + 1]),
                                      "thought": thoughts[b, j].tolist(), "weight": float(w[b, j])}
                                     for j in p.positions]
                results[k] = r
            if progress is not None:
                progress.update(len(idx))
        return results
