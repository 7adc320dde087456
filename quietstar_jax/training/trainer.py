"""The training loop: setup, then steps, with everything else as hooks.

    trainer = Trainer(config, workdir)        # validates, loads the model and data, restores or inits
    trainer.add_hook(my_eval, every=10)       # fn(StepInfo), called on every process
    result = trainer.run()                    # {"final_step", "metrics", "workdir", "params", "export", ...}

`config.eval`'s hooks (periodic GSM8K / CSQA evaluation, the held-out before/after table) live above
training, in quietstar_jax.evaluation: `quietstar_jax.train.run_training` adds them (what the CLI runs).

Everything a step computes is a function of (state, step): data rows [s*B, (s+1)*B) of the seeded
stream, RNG fold_in(seed key, s). So a run killed at any point and restarted with the same command
ends with bit-identical params. A finished run re-run with the same command only says so.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from quietstar_jax.errors import QuietStarError
from quietstar_jax.training import config as config_lib
from quietstar_jax.training import multihost
from quietstar_jax.training import setup as setup_lib
from quietstar_jax.training import workdir as workdir_lib
from quietstar_jax.training.hooks import Hooks, StepInfo, thoughts_text
from quietstar_jax.training.preemption import Preemption


class NonFiniteError(QuietStarError, FloatingPointError):
    """nan_policy=stop and a step produced a non-finite loss or gradient."""


def _main_process() -> bool:
    return jax.process_index() == 0


class Trainer:
    def __init__(self, config, workdir: str, log=None):
        config_lib.validate(config)
        multihost.initialize(config.distributed)  # first: JAX refuses to join after any device use
        self.config = config
        self.log = log or (lambda s: print(s, flush=True) if _main_process() else None)
        if not workdir.startswith("gs://"):
            workdir = os.path.abspath(workdir)
            os.makedirs(workdir, exist_ok=True)
        self.workdir = workdir
        self.hooks = Hooks()
        self.config_changes = workdir_lib.check_config(workdir, config)
        final = workdir_lib.final_metrics(workdir)
        self.complete_at = final.get("step") if final and final.get("step", -1) >= config.steps else None
        if self.complete_at is not None:
            return  # nothing to load: run() only reports
        self._build()

    # ------------------------------------------------------------------ setup
    def _build(self) -> None:
        c, log = self.config, self.log
        mesh = setup_lib.make_mesh(dict(c.mesh))
        setup_lib.check_batch_layout(c, mesh)
        self.loaded = setup_lib.load_model(c, log=log)
        tok = self.loaded.tokenizer
        qs = setup_lib.quietstar_config(c, tok)
        self.setup = setup_lib.build_setup(c, self.loaded.cfg, qs, setup_lib.thought_init_ids(tok, qs), mesh=mesh)
        from quietstar_jax.data import make_batch_source

        t = time.time()
        # The token cache (keyed by corpus + tokenizer) is shared: process 0 prepares it, the others read it.
        self.data = multihost.main_first(
            lambda: make_batch_source(c.data, tok, seq_len=c.seq_len, global_batch_size=c.global_batch_size,
                                      process_index=jax.process_index(), process_count=jax.process_count(),
                                      cache_dir=None), "preparing the token cache")
        log(f"data: {c.data.source} ({c.data.mode}) ready in {time.time() - t:.0f}s")
        log(f"model: {self.loaded.label}\nmesh: {dict(mesh.shape)} over {jax.device_count()} "
            f"{jax.devices()[0].platform} devices, {jax.process_count()} processes\nquietstar: N={qs.n_ahead} "
            f"M={qs.n_ahead_talk} P={qs.n_passes} (enabled={qs.enabled}); batch {c.global_batch_size} x L "
            f"{c.seq_len}, accum {c.grad_accum_steps}, steps {c.steps}")

        from quietstar_jax.training.checkpoint import Checkpointer

        self.ckpt = Checkpointer(os.path.join(self.workdir, "checkpoints"), c.checkpoint,
                                 setup_lib.checkpoint_meta(self.setup.cfg, qs, tok)) if c.checkpoint.enabled else None
        state, start = None, None
        if self.ckpt and c.checkpoint.resume:
            state, start = self.ckpt.restore_latest(self.setup.abstract_state(), warn=log)
        if state is not None:
            log(f"resumed from {self.ckpt.directory}/{start}")
        else:
            state = setup_lib.initial_state(c, self.setup, self.loaded)
        self.state, self.start = state, int(start or 0)
        workdir_lib.record_config(self.workdir, c, self.config_changes, self.start, is_writer=_main_process())
        self._add_default_hooks()

    def _add_default_hooks(self) -> None:
        c = self.config
        if c.log_every:
            self.hooks.add(self._log_hook, every=c.log_every, at_first=True)
        if c.nan_policy == "stop":
            self.hooks.add(self._nan_hook, every=1)
        if c.sample_every:
            self.hooks.add(self._thoughts_hook, every=c.sample_every, at_last=False)

    def add_hook(self, fn, every: int = 1, *, at_last: bool = True, at_first: bool = False) -> None:
        """fn(StepInfo) after every `every`-th step (and after the final one unless at_last=False)."""
        self.hooks.add(fn, every, at_last=at_last, at_first=at_first)

    # ------------------------------------------------------------------ hooks
    def _log_hook(self, info: StepInfo) -> None:
        self.logger.log(info.step, info.host_metrics())

    def _nan_hook(self, info: StepInfo) -> None:
        if float(jax.device_get(info.metrics["finite"])) < 1.0:
            # The state kept the last good params, but we do not save: the latest checkpoint stays the
            # last one written from finite steps.
            if self.ckpt:
                self.ckpt.close()
            raise NonFiniteError(f"non-finite loss or gradients at step {info.step} (nan_policy=stop); latest "
                                 f"checkpoint left intact ({self.workdir}/checkpoints): lower the learning rate "
                                 "or resume with nan_policy=skip")

    def _thoughts_hook(self, info: StepInfo) -> None:
        text = thoughts_text(info.state["params"], self.setup, self.loaded.tokenizer, self._first_row(info.step),
                             jax.random.key(info.step))
        if text:
            self.logger.text("thoughts", text, info.step)

    def _first_row(self, step: int) -> dict:
        """The first row of the global batch at `step`: the same on every process (sampling it is a
        replicated computation; each process's own first row would differ)."""
        row = self.data.rows[step * self.config.global_batch_size]
        return {k: np.asarray(row[k])[None] for k in setup_lib.BATCH_KEYS}

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        c = self.config
        if self.complete_at is not None:
            self.log(f"run already complete at step {self.complete_at} (workdir {self.workdir}); nothing to do. "
                     "Use a new --workdir for a new run, or more --config.steps to continue this one.")
            return {"final_step": self.complete_at, "workdir": self.workdir, "already_complete": True,
                    "metrics": workdir_lib.final_metrics(self.workdir), "stopped_early": False}
        from quietstar_jax.training.flops import device_peak, step_flops
        from quietstar_jax.training.logger import Logger

        setup = self.setup
        # Made by a jitted function: device_put cannot reach the devices of other processes.
        base_key = jax.jit(lambda: jax.random.key(c.seed + 2), out_shardings=NamedSharding(setup.mesh, P()))()
        t0 = time.time()
        abstract_args = (setup.abstract_state(), setup_lib.abstract_batch(c, setup), base_key)
        traced = setup.step_fn.trace(*abstract_args)  # one trace: lowered here, FLOP-counted for MFU below
        compiled = traced.lower().compile()
        self.log(f"compiled the train step in {time.time() - t0:.1f}s")
        peak = device_peak(c.peak_flops_per_device)
        self.log(f"utilisation is against the {peak.label}")
        self.logger = Logger(self.workdir, c.steps, c.global_batch_size * c.seq_len, step_flops(traced.jaxpr),
                             peak, setup.qs.policy_weight, echo=self.log)
        state, info = self.state, None
        stopped_early = False
        with Preemption() as pre:
            for step in range(self.start, c.steps):
                batch = setup_lib.global_batch(self.data.batch_at(step), setup, c)
                state, metrics = compiled(state, batch, base_key)
                done = step + 1
                info = StepInfo(done, state, metrics, last=done == c.steps)
                self.hooks.run(info, first=step == self.start)
                saved = bool(self.ckpt) and self.ckpt.save(done, state, force=info.last)
                if pre.should_stop(done) and not info.last:
                    if self.ckpt:
                        if not saved:
                            self.ckpt.save(done, state, force=True)
                        self.ckpt.wait()
                    self.log(f"preemption signal: saved step {done}, exiting")
                    stopped_early = True
                    break
        if self.ckpt:
            self.ckpt.close()
        self.state = state
        host_m = info.host_metrics() if info is not None else {}
        result = {"final_step": int(jax.device_get(state["step"])), "metrics": host_m, "workdir": self.workdir,
                  "stopped_early": stopped_early, "already_complete": False}
        if stopped_early:
            self.logger.close()
            return result
        result.update(self._finish(state, host_m))
        return result

    def _finish(self, state, host_m: dict) -> dict:
        """After the last step: sampled thoughts, the exports, final metrics, and where everything is."""
        from quietstar_jax.training.export import export_hf_folder, export_params

        c, setup, out = self.config, self.setup, {}
        text = thoughts_text(state["params"], setup, self.loaded.tokenizer, self._first_row(0),
                             jax.random.key(c.seed + 3))
        if text:
            self.logger.text("thoughts", text, c.steps)
        out["params"] = export_params(self.workdir, setup, state["params"], self.loaded.raw)
        if c.export_hf:
            out["export"] = export_hf_folder(self.workdir, c.run_name, setup, state["params"], self.loaded.tokenizer,
                                             self.loaded.raw, c.export_dtype)
        self.logger.close()
        if _main_process():
            out["final_metrics"] = workdir_lib.write_final_metrics(self.workdir, dict(host_m, step=c.steps))
        self.log(summary(self.workdir, self.logger.tensorboard_dir, self.ckpt, out))
        return out


def summary(workdir: str, tensorboard_dir: str | None, ckpt, out: dict) -> str:
    """Where a finished run put everything."""
    lines = [f"done: {workdir}"]
    if tensorboard_dir:
        lines.append(f"  TensorBoard events   {tensorboard_dir}   (tensorboard --logdir {tensorboard_dir})")
    if ckpt:
        lines.append(f"  checkpoints          {ckpt.directory}")
    if "final_metrics" in out:
        lines.append(f"  final metrics        {out['final_metrics']}")
    lines.append(f"  params export        {out['params']}   (orbax params + config.json; convert / generate / eval)")
    if "export" in out:
        lines.append(f"  HF export            {out['export']}   (transformers loads it; Quiet-STaR extras in "
                     "quietstar.safetensors)")
    return "\n".join(lines)
