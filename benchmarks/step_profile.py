"""Where a Quiet-STaR train step's time goes on this CPU: its matmuls, each timed alone at its own shape.

    python benchmarks/step_profile.py                 # L = 64 (the step_bench toy config: N 8, M 4, P 2)
    python benchmarks/step_profile.py --len=256 --top=15

The step is step_bench's (hidden 256, 4 layers, vocab 32000, batch 2; loss + grad + AdamW, jitted). Every
dot_general in its jaxpr (scan bodies times their length) is grouped by its shapes and dimension numbers;
each distinct matmul is then compiled alone and timed over many distinct inputs (so neither dispatch nor
loop-invariant hoisting hides its cost), and its time is multiplied by how often the step runs it. The
table reads:

* step            the measured step time (median);
* matmuls alone   the sum of those per-shape times: what the step's own matmuls take on this machine when
                  each runs alone at full speed (the step cannot beat it without doing fewer or larger
                  matmuls);
* rest            step - matmuls alone: softmax / elementwise / gathers / scatters / copies, fusion and
                  scheduling losses;
* floor           step_bench's exact-work floor (the matmul FLOPs any exact implementation must do) at the
                  measured 2048^3 float32 matmul peak;

then the top matmul shapes by time with their FLOP/s against that peak (small matmuls run far below it).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def collect_dots(jaxpr, mult: int = 1, out: Counter | None = None) -> Counter:
    """Counter over (lhs shape, rhs shape, dimension_numbers, dtype) of how often the step runs each
    dot_general: scan bodies times their length, both branches of a cond counted (an upper bound)."""
    from quietstar_jax.training.flops import _subjaxprs

    out = Counter() if out is None else out
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            lhs, rhs = eqn.invars[0].aval, eqn.invars[1].aval
            dn = eqn.params["dimension_numbers"]
            key = (tuple(lhs.shape), tuple(rhs.shape), tuple(tuple(map(tuple, x)) for x in dn), str(lhs.dtype),
                   str(rhs.dtype))
            out[key] += mult
        elif name == "scan":
            collect_dots(eqn.params["jaxpr"], mult * eqn.params["length"], out)
        else:
            for v in eqn.params.values():
                for sub in _subjaxprs(v):
                    collect_dots(sub, mult, out)
    return out


def dot_flops(key) -> float:
    lhs, rhs, ((lc, rc), (lb, rb)), _, _ = key
    free_l = math.prod(d for i, d in enumerate(lhs) if i not in lc and i not in lb)
    free_r = math.prod(d for i, d in enumerate(rhs) if i not in rc and i not in rb)
    return 2.0 * math.prod(lhs[i] for i in lb) * free_l * free_r * math.prod(lhs[i] for i in lc)


def time_dot(key, budget_bytes: float = 2.5e8, min_reps: int = 4, max_reps: int = 256) -> float:
    """Seconds for one run of this dot_general alone: a jitted scan over R distinct input pairs (R from a
    memory budget), median of 5 timings, divided by R."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    lhs, rhs, dn, dl, dr = key
    per = (math.prod(lhs) * jnp.dtype(dl).itemsize + math.prod(rhs) * jnp.dtype(dr).itemsize)
    reps = int(max(min_reps, min(max_reps, budget_bytes // max(per, 1))))
    k1, k2 = jax.random.split(jax.random.key(0))
    xs = jax.random.normal(k1, (reps, *lhs), jnp.float32).astype(dl)
    ys = jax.random.normal(k2, (reps, *rhs), jnp.float32).astype(dr)

    def body(c, xy):
        r = lax.dot_general(xy[0], xy[1], dn)
        return c + r.ravel()[:1].sum().astype(jnp.float32), None  # keep every product live, move one scalar

    f = jax.jit(lambda xs, ys: lax.scan(body, jnp.float32(0), (xs, ys))[0])
    f(xs, ys).block_until_ready()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        f(xs, ys).block_until_ready()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) / reps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--len", type=int, default=64, help="sequence length L (step_bench's rows: 64, 256, 1024)")
    ap.add_argument("--n_ahead", type=int, default=8, help="N")
    ap.add_argument("--n_ahead_talk", type=int, default=4, help="M")
    ap.add_argument("--n_passes", type=int, default=2, help="P")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    ap.add_argument("--top", type=int, default=12, help="matmul shapes listed")
    args = ap.parse_args()
    import step_bench

    L, N, M, P = args.len, args.n_ahead, args.n_ahead_talk, args.n_passes
    jstep, state = step_bench.build_step(L, N, M, P, "stream")
    step_s, jaxpr, _ = step_bench.time_step(jstep, state, args.steps)
    dots = collect_dots(jaxpr)
    del state

    peak = step_bench.matmul_peak_gflops() * 1e9
    rows = []
    for key, count in dots.items():
        t = time_dot(key) if dot_flops(key) > 0 else 0.0  # (empty operands: nothing to time)
        rows.append((t * count, count, t, dot_flops(key), key))
    rows.sort(key=lambda r: -r[0])
    mm_s = sum(r[0] for r in rows)
    mm_flops = sum(r[1] * r[3] for r in rows)
    floor_s = step_bench.floor_flops(L, N, M, P) / peak
    print(f"L={L} N={N} M={M} P={P} (hidden 256, 4 layers, vocab 32000, batch 2); float32 matmul peak "
          f"{peak / 1e9:.1f} GFLOP/s (2048^3)")
    print(f"{'':34s} {'seconds':>9s} {'x floor':>8s}")
    for name, s in (("step (measured, median)", step_s), ("matmuls alone, at their shapes", mm_s),
                    ("rest (step - matmuls alone)", step_s - mm_s), ("matmul FLOPs at the 2048^3 peak", mm_flops / peak),
                    ("floor (exact work at that peak)", floor_s)):
        print(f"{name:34s} {s:9.3f} {s / floor_s:8.2f}")
    print(f"{len(rows)} distinct matmuls, {sum(r[1] for r in rows)} runs, {mm_flops / 1e9:.1f} GFLOP; "
          f"the step's matmuls alone run at {100 * mm_flops / mm_s / peak:.0f}% of the peak")
    print(f"\n{'lhs':>22s} {'rhs':>22s} {'runs':>6s} {'ms each':>8s} {'s total':>8s} {'% peak':>7s}")
    for total, count, t, fl, key in rows[:args.top]:
        print(f"{str(key[0]):>22s} {str(key[1]):>22s} {count:6d} {t * 1e3:8.3f} {total:8.3f} "
              f"{100 * fl / t / peak:7.1f}")


if __name__ == "__main__":
    main()
