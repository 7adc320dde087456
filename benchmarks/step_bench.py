"""Train-step benchmark: Quiet-STaR (stream attention) vs a dense-mask variant vs the plain-LM floor.

    python benchmarks/step_bench.py            # the reference's CPU config + L/N scaling rows
    python benchmarks/step_bench.py --quick    # only the L=64 rows
    python benchmarks/step_bench.py --max-len=256    # skip the slow L=1024 row (--min-len=1024: only it)

Each row runs in its own process (so peak RSS is that row's), jits loss + grad + AdamW update, and
reports the median step time over timed steps after one warm-up (this VM's timings vary by ~15%
between runs), peak RSS, the step's matmul FLOPs (counted from the jaxpr, scan bodies times their
length), FLOP utilisation against this machine's measured float32 matmul peak, and the floor: the
time the matmuls that any exact implementation must do would take at that peak (see floor_flops).
Model: hidden 256, 4 layers, vocab 32000 (the authors' CPU toy config); batch 2, P thoughts each.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

ROWS = [  # name, L, N, M, P, attention
    ("plain LM (floor)", 64, 1, 1, 1, "stream"),
    ("quietstar stream", 64, 8, 4, 2, "stream"),
    ("quietstar dense mask", 64, 8, 4, 2, "dense"),
    ("quietstar stream", 256, 8, 4, 2, "stream"),
    ("quietstar dense mask", 256, 8, 4, 2, "dense"),
    ("quietstar stream N=16", 256, 16, 4, 2, "stream"),
    ("quietstar stream", 1024, 8, 4, 2, "stream"),
]


def matmul_peak_gflops():
    import jax
    import jax.numpy as jnp

    a = jnp.ones((2048, 2048), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    t = time.perf_counter()
    for _ in range(5):
        f(a).block_until_ready()
    return 5 * 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9


def floor_flops(L, N, M, P, B=2, H=256, I=688, n_layers=4, V=32000):
    """Matmul FLOPs that any exact implementation of one Quiet-STaR train step must do (a lower bound).

    Counts only the linear layers and the vocabulary head (no attention scores), forward = 2 * params
    per token, backward = 2x forward, and assumes the best case everywhere: the base stream once per
    example (not per thought), the thought streams' forward shared between sampling and training
    (the sampling logits reused for the policy log-probs), and the policy backward only for the
    better thought of each pair (P = 2, clamped advantages: the other has zero gradient).
    """
    body = 2 * n_layers * (4 * H * H + 3 * H * I)  # per token: q, k, v, o + gate, up, down
    head = 2 * H * V
    if (N, M, P) == (1, 1, 1):
        return 3 * (body + head) * B * L
    T, K, R = N - 3, N + M - 1, B * P
    policy_rows = T * B * L if P == 2 else T * R * L
    return (3 * body * (B * L + (K - 1) * R * L)
            + head * (T * R * L + 3 * M * R * L + 3 * B * L + 2 * policy_rows))


def build_step(L, N, M, P, attention):
    """The benchmarked step, jitted (params and AdamW state donated), and its (params, opt, batch)."""
    import jax
    import jax.numpy as jnp
    import optax

    from quietstar_jax.model import ModelConfig, init_params
    from quietstar_jax.quietstar import QuietStarConfig, init_quietstar_params, quietstar_loss

    V = 32000
    cfg = ModelConfig(vocab_size=V, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, head_dim=64, attention_impl=attention,
                      remat_policy="dots" if L >= 1024 else "none")
    qs = QuietStarConfig(n_ahead=N, n_ahead_talk=M, n_passes=P, start_id=V, end_id=V + 1)
    params = init_params(cfg, jax.random.key(0))
    params["quietstar"] = init_quietstar_params(params, cfg, qs, jax.random.key(1), [100])
    tx = optax.adamw(1e-6, weight_decay=1e-3)
    opt = tx.init(params)
    B = 2
    batch = {"tokens": jax.random.randint(jax.random.key(2), (B, L), 0, V),
             "positions": jnp.broadcast_to(jnp.arange(L), (B, L)), "segment_ids": jnp.ones((B, L), jnp.int32)}

    def step(params, opt, batch, key):
        (loss, m), g = jax.value_and_grad(lambda p: quietstar_loss(p, cfg, qs, batch, key), has_aux=True)(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, loss

    return jax.jit(step, donate_argnums=(0, 1)), (params, opt, batch)


def time_step(jstep, state, steps: int):
    """Traces jstep once, compiles it, runs a warm-up step and `steps` timed ones. Returns (median step
    seconds, the step's jaxpr, the last loss)."""
    import jax

    params, opt, batch = state
    traced = jstep.trace(params, opt, batch, jax.random.key(3))
    compiled = traced.lower().compile()
    params, opt, loss = compiled(params, opt, batch, jax.random.key(3))
    loss.block_until_ready()
    times = []
    for i in range(steps):
        t = time.perf_counter()
        params, opt, loss = compiled(params, opt, batch, jax.random.key(4 + i))
        loss.block_until_ready()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), traced.jaxpr, float(loss)


def run_row(L, N, M, P, attention, steps):
    # Matmul FLOPs from the jaxpr (scan bodies x length); XLA's cost_analysis counts loop bodies once.
    from quietstar_jax.training.flops import jaxpr_matmul_flops

    jstep, state = build_step(L, N, M, P, attention)
    step_s, jaxpr, loss = time_step(jstep, state, steps)
    flops, _ = jaxpr_matmul_flops(jaxpr)
    return {"step_s": step_s, "flops": float(flops),
            "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "loss": loss}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="Train-step benchmark on this CPU: Quiet-STaR (stream attention) vs a dense-mask variant vs "
                    "the plain-LM floor (hidden 256, 4 layers, vocab 32000, batch 2). Prints one table row per "
                    "config; each row runs in its own process.")
    ap.add_argument("--quick", action="store_true", help="only the L=64 rows (about 1 minute)")
    ap.add_argument("--max-len", type=int, default=None, help="skip rows with L above this (e.g. 256: no L=1024)")
    ap.add_argument("--min-len", type=int, default=None, help="skip rows with L below this (e.g. 1024: only it)")
    ap.add_argument("--row", default=None, help=argparse.SUPPRESS)  # internal: one row, JSON [L, N, M, P, attn, steps]
    return ap.parse_args(argv)


def main():
    args = parse_args()
    if args.row is not None:
        L, N, M, P, attention, steps = json.loads(args.row)
        print(json.dumps(run_row(L, N, M, P, attention, steps)))
        return
    rows = ROWS[:3] if args.quick else ROWS
    if args.max_len is not None:
        rows = [r for r in rows if r[1] <= args.max_len]
    if args.min_len is not None:
        rows = [r for r in rows if r[1] >= args.min_len]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    peak = float(subprocess.run([sys.executable, "-c", "import step_bench as b; print(b.matmul_peak_gflops())"],
                                cwd=os.path.dirname(os.path.abspath(__file__)), env=env, capture_output=True,
                                text=True, check=True).stdout.strip().splitlines()[-1])
    print(f"measured float32 matmul peak: {peak:.1f} GFLOP/s (2048^3 matmul, jit, this machine)")
    print(f"{'row':24s} {'L':>5s} {'N':>3s} {'M':>2s} {'P':>2s} {'step s':>8s} {'peak RSS GB':>11s} "
          f"{'GFLOP/step':>10s} {'util %':>7s} {'floor GFLOP':>11s} {'floor s':>8s} {'x floor':>7s}")
    for name, L, N, M, P, attention in rows:
        steps = 7 if L <= 64 else 3 if L <= 256 else 2
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--row",
                              json.dumps([L, N, M, P, attention, steps])], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{name:24s} {L:5d} {N:3d} {M:2d} {P:2d}  FAILED: {out.stderr.strip().splitlines()[-1][:80]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        util = 100 * r["flops"] / r["step_s"] / 1e9 / peak
        floor = floor_flops(L, N, M, P)
        print(f"{name:24s} {L:5d} {N:3d} {M:2d} {P:2d} {r['step_s']:8.3f} {r['rss_gb']:11.2f} "
              f"{r['flops'] / 1e9:10.1f} {util:7.1f} {floor / 1e9:11.1f} {floor / 1e9 / peak:8.3f} "
              f"{r['step_s'] / (floor / 1e9 / peak):7.2f}", flush=True)


if __name__ == "__main__":
    main()
