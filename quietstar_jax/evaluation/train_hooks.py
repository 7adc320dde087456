"""Evaluation inside a training run, as trainer hooks (the Trainer adds them from `config.eval`):

* PeriodicEval: every `eval.every_steps` steps (and after the last), the tasks' metrics on the current
  params, laid out as training lays them out (the same mesh, no copy): one console line, TensorBoard
  scalars eval/<task>/<metric>_<mode> beside the training curves, a line in <workdir>/eval_history.jsonl.
* HeldoutBeforeAfter: after the last step, the held-out NLL (with and without thinking) of the initial
  and the final params on `eval.heldout_rows` rows of the training stream the run never reached:
  a small table (console), TensorBoard heldout/*, <workdir>/heldout_nll.json.

Both run on every process (the collectives need it); only process 0 prints and writes.
`add_config_hooks(trainer)` adds what `config.eval` asks for (quietstar_jax.train.run_training calls it).
"""

from __future__ import annotations

import json
import os
import time

import jax


def _main() -> bool:
    return jax.process_index() == 0


def add_config_hooks(trainer) -> None:
    """The evaluation hooks `trainer.config.eval` asks for (none for a run that is already complete)."""
    c = trainer.config
    if trainer.complete_at is not None or "eval" not in c:
        return
    if c.eval.tasks.strip():
        trainer.add_hook(PeriodicEval(trainer), every=c.eval.every_steps)
    if c.eval.heldout_rows:
        trainer.add_hook(HeldoutBeforeAfter(trainer), every=0)


def eval_settings(ec, qs):
    """config.eval -> EvalSettings (modes that need thinking are dropped for a model trained without)."""
    from quietstar_jax.evaluation.runner import EvalSettings

    modes = {"on": ("think",), "off": ("no_think",), "both": ("think", "no_think")}[ec.think]
    if not qs.enabled:
        modes = ("no_think",)
    return EvalSettings(metrics=tuple(m.strip() for m in ec.metrics.split(",") if m.strip()), modes=modes,
                        batch_size=ec.batch_size, max_len=ec.max_len, seed=ec.seed)


class PeriodicEval:
    def __init__(self, trainer):
        from quietstar_jax.evaluation.datasets import load_task
        from quietstar_jax.evaluation.runner import Evaluator
        from quietstar_jax.training import multihost

        ec, setup = trainer.config.eval, trainer.setup
        self.trainer = trainer
        self.settings = eval_settings(ec, setup.qs)
        self.evaluator = Evaluator(setup.cfg, setup.qs, trainer.loaded.tokenizer, self.settings, mesh=setup.mesh,
                                   progress=False)
        self.tasks, self.sources = {}, {}
        for task in [t.strip() for t in ec.tasks.split(",") if t.strip()]:
            path = {"gsm8k": ec.gsm8k_path, "csqa": ec.csqa_path}.get(task, "")
            # The defaults build shared caches (the CSQA dev set from its wheel, tfds' gsm8k): process 0 first.
            self.tasks[task], self.sources[task] = multihost.main_first(
                lambda: load_task(task, path, ec.limit), f"loading the {task} evaluation data")
        trainer.log("eval: " + "; ".join(f"{len(v)} {k} examples from {self.sources[k]}" for k, v in self.tasks.items())
                    + f"; every {ec.every_steps} steps, metrics {','.join(self.settings.metrics)}, "
                    f"modes {','.join(self.settings.modes)}")

    def __call__(self, info) -> None:
        from quietstar_jax.evaluation.runner import flat_scalars

        t = time.time()
        res = self.evaluator.run(info.state["params"], self.tasks)
        dt = time.time() - t
        self.trainer.logger.exclude(dt)
        self.trainer.logger.scalars("eval", flat_scalars(res.summary), info.step)
        parts = []
        for task, per in res.summary.items():
            vals = []
            for metric in self.settings.metrics:
                v = " / ".join(f"{per[m][metric]:.4f}" for m in self.settings.modes)
                vals.append(f"{metric} {v}")
            parts.append(f"{task} " + ", ".join(vals))
        modes = " / ".join({"think": "thinking", "no_think": "no thinking"}[m] for m in self.settings.modes)
        self.trainer.log(f"eval step {info.step} ({modes}): " + " | ".join(parts) + f" ({dt:.0f}s)")
        if _main() and not self.trainer.workdir.startswith("gs://"):
            with open(os.path.join(self.trainer.workdir, "eval_history.jsonl"), "a") as f:
                f.write(json.dumps({"step": info.step, "results": res.summary, "seconds": round(dt, 1)}) + "\n")


class HeldoutBeforeAfter:
    def __init__(self, trainer):
        from quietstar_jax.evaluation.heldout import HeldoutNLL, heldout_rows
        from quietstar_jax.evaluation.placement import Placement

        c, setup = trainer.config, trainer.setup
        self.trainer, self.n = trainer, c.eval.heldout_rows
        place = Placement(setup.mesh)
        place.check_batch_size(self.n, "config.eval.heldout_rows")
        rows = trainer.data.rows
        self.batch, self.unseen = heldout_rows(rows, self.n, c.steps * c.global_batch_size)
        self.L = rows.seq_len
        self.fn = HeldoutNLL(setup.cfg, setup.qs, place)

    def __call__(self, info) -> None:
        from quietstar_jax.evaluation.heldout import before_after_table
        from quietstar_jax.training.setup import initial_params

        tr = self.trainer
        t = time.time()
        key = jax.random.key(tr.config.seed + 4)
        final = self.fn(info.state["params"], self.batch, key)
        initial = self.fn(initial_params(tr.config, tr.setup, tr.loaded), self.batch, key)
        seen = "never trained on" if self.unseen else "NOTE: the run went through them (more steps than one epoch)"
        what = f"{self.n} rows x {self.L} tokens from the end of the data's first epoch, {seen}; {final['tokens']} " \
               f"targets; {time.time() - t:.0f}s"
        tr.log(before_after_table(initial, final, what))
        scalars = {f"{k}_{when}": v[k] for when, v in (("initial", initial), ("final", final))
                   for k in ("nll_base", "nll_mix") if v[k] is not None}
        tr.logger.scalars("heldout", scalars, info.step)
        if _main() and not tr.workdir.startswith("gs://"):
            with open(os.path.join(tr.workdir, "heldout_nll.json"), "w") as f:
                json.dump({"step": info.step, "initial": initial, "final": final, "rows": self.n,
                           "seq_len": self.L, "unseen": self.unseen}, f, indent=2)
