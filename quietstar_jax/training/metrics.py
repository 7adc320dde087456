"""Logging: console progress line, TensorBoard events (process 0), FLOP utilisation."""

from __future__ import annotations

import math
import os
import time

import jax
import numpy as np

from quietstar_jax.hardware import GENERATIONS

# bf16 dense peak FLOP/s per chip by jax device_kind (what MaxText's MFU uses), from quietstar_jax.hardware;
# "TPU v4" counts a megacore chip. "TPU v5 lite" precedes "TPU v5" (peak_flops_per_device matches prefixes).
PEAK_FLOPS = {kind: g.peak_bf16_flops for g in GENERATIONS.values() for kind in g.device_kinds}


def measured_cpu_peak(n: int = 1024) -> float:
    """float32 matmul FLOP/s of this host, split over the local (simulated) devices."""
    import jax.numpy as jnp

    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    t = time.perf_counter()
    for _ in range(3):
        f(a).block_until_ready()
    return 3 * 2 * n ** 3 / (time.perf_counter() - t) / max(1, jax.local_device_count())


def peak_flops_per_device(configured: float = 0.0) -> float:
    if configured:
        return float(configured)
    kind = jax.devices()[0].device_kind
    for name, v in PEAK_FLOPS.items():
        if kind.startswith(name) and (name != "TPU v5" or kind in ("TPU v5", "TPU v5p")):
            return v
    return measured_cpu_peak()


def _subjaxprs(value):
    from jax.extend.core import ClosedJaxpr, Jaxpr

    if isinstance(value, ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, Jaxpr):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _subjaxprs(v)


def jaxpr_matmul_flops(jaxpr) -> tuple[float, bool]:
    """2 * MACs of every dot_general in a (closed) jaxpr, scan bodies times their length, cond the max
    branch. Returns (flops, saw_while): while loops of unknown trip count are counted once."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total, saw_while = 0.0, False
    for eqn in jaxpr.eqns:
        prim = eqn.primitive.name
        if prim == "dot_general":
            (lc, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in lc)
        elif prim == "scan":
            f, w = jaxpr_matmul_flops(eqn.params["jaxpr"])
            total += eqn.params["length"] * f
            saw_while |= w
        elif prim == "cond":
            counts = [jaxpr_matmul_flops(b) for b in eqn.params["branches"]]
            total += max(c[0] for c in counts)
            saw_while |= any(c[1] for c in counts)
        else:
            saw_while |= prim == "while"
            for v in eqn.params.values():
                for sub in _subjaxprs(v):
                    f, w = jaxpr_matmul_flops(sub)
                    total += f
                    saw_while |= w
    return total, saw_while


def step_flops(jaxpr) -> float:
    """Matmul FLOPs of one step per device, counted on its jaxpr (scan bodies x their length), e.g.
    jitted.trace(*args).jaxpr, the same trace that is lowered and compiled.

    Not XLA's cost_analysis(): it counts a while-loop body once, which for a scanned 32-layer model
    under-counts the step ~20x."""
    flops, _ = jaxpr_matmul_flops(jaxpr)
    return flops / jax.device_count()


class Logger:
    def __init__(self, workdir: str, total_steps: int, tokens_per_step: int, flops_per_device: float,
                 peak_per_device: float):
        self.total, self.tokens_per_step = total_steps, tokens_per_step
        self.flops, self.peak = flops_per_device, peak_per_device
        self.writer = None
        if jax.process_index() == 0 and not workdir.startswith("gs://"):
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(os.path.join(workdir, "tensorboard"))
        self.t_last, self.step_last = None, None

    def log(self, step: int, metrics: dict) -> str:
        """step: steps completed. Prints and writes `metrics` (host floats); returns the line."""
        now = time.time()
        if self.t_last is None:
            self.t_last, self.step_last = now, step
            dt = float("nan")
        else:
            dt = (now - self.t_last) / max(1, step - self.step_last)
            self.t_last, self.step_last = now, step
        tps = self.tokens_per_step / dt if dt == dt else float("nan")
        mfu = self.flops / dt / self.peak if dt == dt else float("nan")
        eta = dt * (self.total - step) if dt == dt else float("nan")
        m = {k: float(np.asarray(v)) for k, v in metrics.items()}
        parts = [f"step {step:5d}/{self.total}", f"loss {m['loss']:.4f}", f"nll_base {m['nll_base']:.4f}"]
        if "nll_mix" in m:
            parts += [f"nll_mix {m['nll_mix']:.4f}", f"reward {m['reward_mean']:+.2e}",
                      f"adv>0 {m['advantage_pos_frac']:.2f}", f"w {m['mixing_weight']:+.3f}",
                      f"H {m['thought_entropy']:.2f}"]
        parts += [f"|g| {m.get('grad_norm', math.nan):.3f}", f"lr {m.get('learning_rate', math.nan):.2e}",
                  f"tok/s {tps:,.0f}", f"MFU {100 * mfu:.1f}%", f"ETA {_fmt_secs(eta)}"]
        if m.get("finite", 1.0) < 1.0:
            parts.append("NON-FINITE (update skipped)")
        line = " | ".join(parts)
        if jax.process_index() == 0:
            print(line, flush=True)
        if self.writer is not None:
            for k, v in m.items():
                self.writer.add_scalar(f"train/{k}", v, step)
            if dt == dt:
                self.writer.add_scalar("perf/step_seconds", dt, step)
                self.writer.add_scalar("perf/tokens_per_second", tps, step)
                self.writer.add_scalar("perf/mfu", mfu, step)
        return line

    def text(self, tag: str, text: str, step: int) -> None:
        if jax.process_index() == 0:
            print(text, flush=True)
        if self.writer is not None:
            self.writer.add_text(tag, text.replace("\n", "  \n"), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _fmt_secs(s: float) -> str:
    if s != s:
        return "?"
    s = int(s)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
