"""Trainer hooks: everything the loop does besides the step itself (logging, sampled thoughts,
checkpoints, evaluation) is a function called every N steps, in the style of Levanter's
`trainer.add_hook(fn, every=N)`.

    trainer.add_hook(lambda info: print(info.step), every=10)

A hook gets a StepInfo after the step it was scheduled for (and after the last step of the run,
`info.last`); it must be called by every process (collectives inside, e.g. saving), and only
process 0 prints or writes files.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from quietstar_jax.quietstar.sampling import sample_thoughts
from quietstar_jax.quietstar.tokens import END_TOKEN, START_TOKEN
from quietstar_jax.sharding import under_mesh
from quietstar_jax.training.state import put_global


@dataclasses.dataclass
class StepInfo:
    step: int  # optimizer steps completed
    state: dict  # the train state after that step (device arrays)
    metrics: dict  # the step's metrics (device arrays)
    last: bool  # the run's final step
    _host: dict | None = None

    def host_metrics(self) -> dict:
        """The metrics as host floats (fetched once, shared by every hook)."""
        if self._host is None:
            self._host = {k: float(np.asarray(v)) for k, v in jax.device_get(self.metrics).items()}
        return self._host


@dataclasses.dataclass
class Hook:
    fn: Callable[[StepInfo], None]
    every: int  # call after every `every`-th step (0: never on a schedule)
    at_last: bool  # also after the run's final step
    at_first: bool  # also after the first step of this process (e.g. the first progress line)

    def due(self, step: int, first: bool, last: bool) -> bool:
        return bool((self.every and step % self.every == 0) or (last and self.at_last) or (first and self.at_first))


class Hooks:
    def __init__(self):
        self.hooks: list[Hook] = []

    def add(self, fn: Callable[[StepInfo], None], every: int = 1, at_last: bool = True,
            at_first: bool = False) -> None:
        self.hooks.append(Hook(fn, int(every), at_last, at_first))

    def run(self, info: StepInfo, first: bool) -> None:
        for h in self.hooks:
            if h.due(info.step, first, info.last):
                h.fn(info)


@functools.cache
def _thought_sampler(cfg, qs, mesh):
    """sample_thoughts jitted under the training mesh (so the sampler uses its decode layout as it does
    inside the step); made once per run, not at every sampling hook."""
    return jax.jit(under_mesh(lambda p, t, pos, s, k: sample_thoughts(p, cfg, qs, t, pos, s, k)[0], mesh))


def thoughts_text(params, setup, tokenizer, batch_row: dict, key, positions=(8, 24, 40), context=16) -> str:
    """A few sampled thoughts in context, as text. batch_row: one row, (1, L) numpy arrays."""
    cfg, qs = setup.cfg, setup.qs
    toks, seg = np.asarray(batch_row["tokens"][0]), np.asarray(batch_row["segment_ids"][0])
    shown = [p for p in positions if p < len(toks) and seg[p] != 0]
    if not qs.enabled or qs.num_thought_tokens == 0 or not shown:
        return ""  # (rows shorter than the first position: nothing to show, so nothing to compile)
    fn = _thought_sampler(cfg, qs, setup.mesh)
    rep = NamedSharding(setup.mesh, P())
    arrs = [put_global(batch_row[k], rep) for k in ("tokens", "positions", "segment_ids")]
    th = np.asarray(jax.device_get(fn(params, *arrs, key)))[0]
    lines = []
    for p in shown:
        lo = max(0, p + 1 - context)
        lines.append(f"  ...{tokenizer.decode(toks[lo:p + 1])!r} {START_TOKEN}{tokenizer.decode(th[p])!r}"
                     f"{END_TOKEN} -> {tokenizer.decode(toks[p + 1:p + 4])!r}")
    return "sampled thoughts:\n" + "\n".join(lines)
