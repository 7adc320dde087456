"""FLOPs of a step (counted on its jaxpr) and the peak they are measured against (MFU).

    flops = step_flops(jitted.trace(*args).jaxpr)     # matmul FLOPs per device per step
    peak = device_peak(config.peak_flops_per_device)  # Peak(flops_per_s, label)
    utilisation = flops / step_seconds / peak.flops_per_s

On TPU the peak is the chip's dense bf16 spec (quietstar_jax.hardware, what MaxText's MFU uses); on
CPU there is no spec sheet, so it is the float32 matmul throughput measured at start-up: the best of
several large matmuls, so that no step (which is made of such matmuls plus slower work) can beat it.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax

from quietstar_jax.hardware import GENERATIONS, for_device_kind

# bf16 dense peak FLOP/s per chip by jax device_kind, from quietstar_jax.hardware; "TPU v4" counts a
# megacore chip.
PEAK_FLOPS = {kind: g.peak_bf16_flops for g in GENERATIONS.values() for kind in g.device_kinds}


@dataclasses.dataclass(frozen=True)
class Peak:
    flops_per_s: float  # per device
    label: str  # what it is, for the console ("TPU v4 bf16 spec", "measured CPU fp32 matmul peak")
    measured: bool  # True: a measurement on this host (CPU), False: a spec sheet or the config

    @property
    def short(self) -> str:
        """The column name for the progress line: MFU against a spec, util against a measurement."""
        return "util" if self.measured else "MFU"


def measured_cpu_peak(repeats: int = 5) -> float:
    """float32 matmul FLOP/s of this host per local (simulated) device: the best throughput over
    `repeats` timed runs (after a warm-up) of each of a few shapes (square 1024 and 2048, and the
    wide (rows x hidden) @ (hidden x vocab) shape of an LM head), each a chain of three matmuls in one
    program so dispatch is amortised. Best-of, so background noise can only lower a run, never the
    reported peak below what a step (made of such matmuls and slower work) could reach."""
    import jax.numpy as jnp

    shapes = [(1024, 1024, 1024), (2048, 2048, 2048), (512, 1024, 8192)]  # (m, k, n): (m, k) @ (k, n)
    best = 0.0
    for m, k, n in shapes:
        a, b, c = jnp.ones((m, k), jnp.float32), jnp.ones((k, n), jnp.float32), jnp.ones((n, k), jnp.float32)
        f = jax.jit(lambda a, b, c: ((a @ b) @ c) @ b)  # (m, k)(k, n) -> (m, n)(n, k) -> (m, k)(k, n)
        flops = 2 * m * k * n * 3
        f(a, b, c).block_until_ready()
        for _ in range(repeats):
            t = time.perf_counter()
            f(a, b, c).block_until_ready()
            best = max(best, flops / (time.perf_counter() - t))
    return best / max(1, jax.local_device_count())


def device_peak(configured: float = 0.0) -> Peak:
    """The peak FLOP/s per device utilisation is reported against."""
    if configured:
        return Peak(float(configured), f"configured peak {configured / 1e12:.1f} TFLOP/s", False)
    kind = jax.devices()[0].device_kind
    gen = for_device_kind(kind)
    if gen is not None:
        return Peak(gen.peak_bf16_flops, f"{kind} bf16 spec peak {gen.peak_bf16_flops / 1e12:.0f} TFLOP/s", False)
    flops = measured_cpu_peak()
    total = flops * max(1, jax.local_device_count())
    return Peak(flops, f"CPU fp32 matmul peak measured at start-up: {total / 1e9:.0f} GFLOP/s", True)


def peak_flops_per_device(configured: float = 0.0) -> float:
    return device_peak(configured).flops_per_s


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
