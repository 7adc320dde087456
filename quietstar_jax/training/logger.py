"""Run logging: one console progress line per logged step and TensorBoard events (process 0 only).

The console line holds what a researcher reads: the two NLLs, the policy loss (and its weight, since
the weighted term dwarfs the NLLs: 1e6 x 8.5e-4 = 852), the reward, the mixing weight in scientific
notation (it starts at exactly 0 and moves by ~1e-4), the thought entropy, |g|, lr, throughput,
utilisation and ETA. TensorBoard gets every metric, including the combined loss.
"""

from __future__ import annotations

import math
import os
import sys
import time

import jax
import numpy as np

from quietstar_jax.training.flops import Peak


class Logger:
    def __init__(self, workdir: str, total_steps: int, tokens_per_step: int, flops_per_device: float, peak: Peak,
                 policy_weight: float = 0.0, echo=None):
        self.total, self.tokens_per_step = total_steps, tokens_per_step
        self.flops, self.peak = flops_per_device, peak
        self.policy_weight = policy_weight
        # Where console lines go (process 0 only): print by default, the trainer's log function in runs.
        self.echo = echo or (lambda line: print(line, flush=True))
        self.writer = None
        self.tensorboard_dir = None
        if jax.process_index() == 0 and not workdir.startswith("gs://"):
            SummaryWriter = summary_writer_class()
            self.tensorboard_dir = os.path.join(workdir, "tensorboard")
            self.writer = SummaryWriter(self.tensorboard_dir)
        self.t_last, self.step_last = None, None

    def format(self, step: int, m: dict, dt: float) -> str:
        """The progress line for host metrics `m` after `step` steps, dt seconds per step (nan: unknown)."""
        tps = self.tokens_per_step / dt if dt == dt else math.nan
        util = self.flops / dt / self.peak.flops_per_s if dt == dt else math.nan
        eta = dt * (self.total - step) if dt == dt else math.nan
        parts = [f"step {step:5d}/{self.total}", f"nll_base {m['nll_base']:.4f}"]
        if "nll_mix" in m:
            parts += [f"nll_mix {m['nll_mix']:.4f}",
                      f"policy {m['policy_loss']:.3e} (x{self.policy_weight:.0e})",
                      f"reward {m['reward_mean']:+.2e}", f"adv>0 {m['advantage_pos_frac']:.2f}",
                      f"w {m['mixing_weight']:+.2e}", f"H {m['thought_entropy']:.2f}"]
        parts += [f"|g| {m.get('grad_norm', math.nan):.3g}", f"lr {m.get('learning_rate', math.nan):.2e}",
                  f"{_fmt_rate(tps)} tok/s", f"{self.peak.short} {100 * util:.1f}%", f"ETA {_fmt_secs(eta)}"]
        if m.get("finite", 1.0) < 1.0:
            parts.append("NON-FINITE (update skipped)")
        return " | ".join(parts)

    def log(self, step: int, metrics: dict) -> str:
        """step: steps completed. Prints and writes `metrics` (host values); returns the line."""
        now = time.time()
        if self.t_last is None:
            dt = math.nan
        else:
            dt = (now - self.t_last) / max(1, step - self.step_last)
        self.t_last, self.step_last = now, step
        m = {k: float(np.asarray(v)) + 0.0 for k, v in metrics.items()}  # + 0.0: no "-0.000" on the console
        line = self.format(step, m, dt)
        if jax.process_index() == 0:
            self.echo(line)
        if self.writer is not None:
            for k, v in m.items():
                self.writer.add_scalar(f"train/{k}", v, step)
            if dt == dt:
                self.writer.add_scalar("perf/step_seconds", dt, step)
                self.writer.add_scalar("perf/tokens_per_second", self.tokens_per_step / dt, step)
                self.writer.add_scalar("perf/utilisation", self.flops / dt / self.peak.flops_per_s, step)
        return line

    def exclude(self, seconds: float) -> None:
        """Time spent between steps on something else (an evaluation): left out of the next step's time,
        throughput and ETA."""
        if self.t_last is not None:
            self.t_last += seconds

    def scalars(self, prefix: str, values: dict, step: int) -> None:
        """Extra scalars (e.g. evaluation results) next to the training curves."""
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{prefix}/{k}", float(v), step)

    def text(self, tag: str, text: str, step: int) -> None:
        if jax.process_index() == 0:
            self.echo(text)
        if self.writer is not None:
            self.writer.add_text(tag, text.replace("\n", "  \n"), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def summary_writer_class():
    """tensorboardX.SummaryWriter, imported without torch when torch is not loaded yet: tensorboardX
    imports torch (if installed, as with the hf extra) only for a type hint, which costs ~1.5 s at every
    run's start here. Modules importing torch later get it as usual."""
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # `import torch` raises ImportError; tensorboardX falls back to numpy
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


def _fmt_rate(x: float) -> str:
    if x != x:
        return "?"
    return f"{x:,.0f}" if x >= 10 else f"{x:.2f}"


def _fmt_secs(s: float) -> str:
    if s != s:
        return "?"
    s = int(s)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
