"""Held-out next-token NLL with and without thinking: what a training run changed, in one small table.

    batch = heldout_rows(row_source, n=8)            # rows the run never reaches (the end of epoch 0)
    fn = HeldoutNLL(cfg, qs, Placement(mesh), n)
    fn(params, batch, key)  ->  {"nll_base": 3.49, "nll_mix": 3.44, "tokens": 376}

nll_base: the model without thoughts; nll_mix: after a thought at every position, mixed by the mixing
head (think_logprobs, M = P = 1: the training objective's talk step 0). Targets: the next token inside
the same document (segment), as in training. A model trained with thinking off (N = M = P = 1) has
nll_mix = None.

Held-out rows: the training stream visits rows 0, 1, 2, ... (step s takes rows [s*B, (s+1)*B)), and one
epoch holds every document once, so the last full rows of epoch 0 are text the run has not trained on as
long as steps x B stays below them (`heldout_rows` says whether it does).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from quietstar_jax.evaluation.placement import Placement
from quietstar_jax.inference.think import think_logprobs
from quietstar_jax.model.config import ModelConfig
from quietstar_jax.model.head import token_logprobs
from quietstar_jax.model.transformer import causal_lm_logits
from quietstar_jax.quietstar import layout
from quietstar_jax.quietstar.config import QuietStarConfig

KEYS = ("tokens", "positions", "segment_ids")


def heldout_rows(rows, n: int, rows_trained: int = 0) -> tuple[dict, bool]:
    """The last n full rows of epoch 0 of a row source (data.PackedRows / CroppedRows): {"tokens",
    "positions", "segment_ids"} int32 (n, L), and whether they are unseen by a run that trained on rows
    [0, rows_trained)."""
    end = rows.rows_per_epoch - 1  # the epoch's last row may be a padded remainder: skip it
    start = max(0, end - n)
    picked = [rows[g] for g in range(start, end)]
    while len(picked) < n:  # a corpus of fewer rows: repeat (tiny corpora only)
        picked.append(picked[len(picked) % max(1, end - start)])
    batch = {k: np.stack([r[k] for r in picked]).astype(np.int32) for k in KEYS}
    return batch, rows_trained <= start


def next_token_nll(params, cfg: ModelConfig, qs: QuietStarConfig, tokens, positions, segment_ids, key,
                   think: bool):
    """(sum of -log p over targets without thinking, the same after thinking (0 if not think), number of
    targets). Arrays (B, L)."""
    seg = segment_ids
    valid = layout.next_token_valid(seg, 0)  # (B, L): x_{p+1} exists in x_p's segment
    target = layout.shift_left(tokens, 1)

    def nll(picked):
        return -jnp.sum(jnp.where(valid, picked, 0.0))

    def pick(logp):
        return jnp.take_along_axis(logp, target[..., None], axis=-1)[..., 0]

    if think:
        out = think_logprobs(params, cfg, qs, tokens, key, segment_ids=seg, positions=positions)
        base, mix = nll(pick(out.base_logprobs)), nll(pick(out.mixed_logprobs))
    else:
        logits = causal_lm_logits(params, cfg, tokens, seg, positions).astype(jnp.float32)
        base, mix = nll(token_logprobs(logits, target)), jnp.float32(0)
    return base, mix, jnp.sum(valid)


class HeldoutNLL:
    def __init__(self, cfg: ModelConfig, qs: QuietStarConfig, placement: Placement | None = None):
        self.place = placement or Placement()
        self.think = qs.enabled
        self._fn = self.place.jit(lambda p, t, pos, s, k: next_token_nll(p, cfg, qs, t, pos, s, k, self.think))

    def __call__(self, params, batch: dict, key) -> dict:
        base, mix, n = jax.device_get(self._fn(params, *(self.place.put(batch[k]) for k in KEYS), key))
        n = max(int(n), 1)
        return {"nll_base": float(base) / n, "nll_mix": float(mix) / n if self.think else None, "tokens": n}


def before_after_table(initial: dict, final: dict, what: str) -> str:
    """The end-of-run table: NLL of the initial and final params, without and with thinking."""
    lines = [f"held-out NLL ({what}):", f"  {'':18s} {'initial':>9s} {'final':>9s} {'change':>9s}"]
    for name, key in (("without thinking", "nll_base"), ("with thinking", "nll_mix")):
        if initial.get(key) is None:
            continue
        a, b = initial[key], final[key]
        lines.append(f"  {name:18s} {a:9.4f} {b:9.4f} {b - a:+9.4f}")
    return "\n".join(lines)
