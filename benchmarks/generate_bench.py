"""Generation benchmark: time per generated token with thinking vs plain decoding vs the naive loop.

    python benchmarks/generate_bench.py            # every row (a few minutes)
    python benchmarks/generate_bench.py --quick    # the tiny model only
    python benchmarks/generate_bench.py --vs=DIR   # each row also with the package of another checkout
    python benchmarks/generate_bench.py --help     # (e.g. git worktree add DIR <commit>), in turn

Rows: the authors' CPU toy config (hidden 256, 4 layers, vocab 32000; random weights) and
SmolLM2-135M-Instruct (materialised offline), batch 1 and 8, N in {8, 12} (T = N - 3 thought tokens),
a 256-token prompt. Each row runs in its own process. Per generated token (the median over the timed
tokens, after a warm-up token; prefill excluded):
  plain      KV-cached decoding without thoughts: 1 decode step
  thinking   KV-cached with a thought per token: <start>, T tokens, <end> in branch slots, then the
             text token; the text token shares its step with the next <start>, the last thought
             token with <end>: N - 2 decode steps (of 1 or 2 tokens) and T + 1 vocabulary heads
  naive      the loop that recomputes everything for every token (tests/reference_generate.py; no
             cache: the prefix forward, and one forward per thought token over prefix + thought; one
             row at a time, so batch 8 costs 8x batch 1)
Targets: thinking <= (N + 2) x plain; thinking >= 10x faster than naive at the 256-token prompt.
With --vs the two codes run row by row in turn (this checkout first), so a before / after comparison
shares the machine's state; the `code` column says which is which.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS = [  # model, batch, N
    ("toy", 1, 8), ("toy", 8, 8), ("toy", 1, 12), ("toy", 8, 12),
    ("smollm2", 1, 8), ("smollm2", 8, 8), ("smollm2", 1, 12), ("smollm2", 8, 12),
]
PROMPT = 256


def build(model: str, N: int):
    import jax

    from quietstar_jax.model import ModelConfig, init_params
    from quietstar_jax.quietstar import QuietStarConfig, init_quietstar_params

    if model == "toy":
        V = 32000
        cfg = ModelConfig(vocab_size=V, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=4, head_dim=64)
        params = init_params(cfg, jax.random.key(0))
    else:
        from quietstar_jax.assets.smollm2 import materialize_smollm2
        from quietstar_jax.hf import load_hf_folder

        cfg, params, _ = load_hf_folder(materialize_smollm2())
        params = jax.tree.map(jax.numpy.asarray, params)
    qs = QuietStarConfig(n_ahead=N, start_id=cfg.vocab_size, end_id=cfg.vocab_size + 1)
    params["quietstar"] = init_quietstar_params(params, cfg, qs, jax.random.key(1), [100])
    last = params["quietstar"]["talk_head"]["4"]
    last["weight"] = 0.01 * jax.random.normal(jax.random.key(2), last["weight"].shape)  # w != 0
    return cfg, qs, params


def time_decoding(params, cfg, qs, batch: int, think: bool, tokens: int) -> float:
    """Median seconds per generated token of the jitted `advance` (prefill excluded)."""
    import jax

    from quietstar_jax.inference.generate import GenerateConfig, advance, start
    from quietstar_jax.model.decode import cpu_decode_params

    params = cpu_decode_params(params)  # what Generator does on CPU
    gen = GenerateConfig(max_new_tokens=tokens + 1, think=think)
    prompts = np.random.RandomState(0).randint(0, cfg.vocab_size, (batch, PROMPT)).astype(np.int32)
    lengths = np.full((batch,), PROMPT, np.int32)
    state = jax.jit(lambda p, x, n: start(p, cfg, qs, gen, x, n))(params, prompts, lengths)
    step = jax.jit(lambda p, s, k: advance(p, cfg, qs, gen, s, k), donate_argnums=(1,))
    key = jax.random.key(0)
    state = step(params, state, key)  # compile + warm-up
    jax.block_until_ready(state.tokens)
    times = []
    for _ in range(tokens):
        t = time.perf_counter()
        state = step(params, state, key)
        jax.block_until_ready(state.tokens)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def time_naive(params, cfg, qs, tokens: int) -> float:
    """Seconds per generated token of the naive loop for ONE row (after a warm-up token)."""
    import jax

    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
    import reference_generate as ref

    from quietstar_jax.inference.generate import GenerateConfig

    prompt = list(np.random.RandomState(0).randint(0, cfg.vocab_size, PROMPT))
    key = jax.random.key(0)
    ref.naive_generate(params, cfg, qs, GenerateConfig(max_new_tokens=1), prompt, key, 0)  # compile
    t = time.perf_counter()
    ref.naive_generate(params, cfg, qs, GenerateConfig(max_new_tokens=tokens), prompt, key, 0)
    return (time.perf_counter() - t) / tokens


def run_row(model: str, batch: int, N: int) -> dict:
    cfg, qs, params = build(model, N)
    out = {"plain": time_decoding(params, cfg, qs, batch, False, 8),
           "thinking": time_decoding(params, cfg, qs, batch, True, 6)}
    out["naive"] = time_naive(params, cfg, qs, 2) * batch  # one row at a time
    return out


def run_in_process(code_dir: str, model: str, batch: int, N: int, env: dict) -> dict | str:
    """One row in a fresh process with the package and this script of `code_dir` (a checkout)."""
    script = os.path.join(code_dir, "benchmarks", "generate_bench.py")
    env = dict(env, PYTHONPATH=code_dir)
    res = subprocess.run([sys.executable, script, "--row", json.dumps([model, batch, N])], env=env,
                         capture_output=True, text=True)
    if res.returncode != 0:
        return (res.stderr.strip().splitlines() or ["no output"])[-1][:100]
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    if "--help" in sys.argv or "-h" in sys.argv:
        print(__doc__)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--row":
        print(json.dumps(run_row(*json.loads(sys.argv[2]))))
        return
    rows = [r for r in ROWS if r[0] == "toy"] if "--quick" in sys.argv else ROWS
    codes = [("this", os.path.dirname(HERE))]
    for arg in sys.argv[1:]:
        if arg.startswith("--vs="):
            other = os.path.abspath(arg[len("--vs="):])
            if not os.path.isfile(os.path.join(other, "benchmarks", "generate_bench.py")):
                print(f"error: --vs={other} is not a checkout of this repository (no benchmarks/generate_bench.py)")
                sys.exit(2)
            codes.append(("vs", other))
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    print(f"prompt {PROMPT} tokens; seconds per generated token (median; naive: one row at a time)")
    if len(codes) > 1:
        print(f"code: this = {codes[0][1]}, vs = {codes[1][1]}")
    print(f"{'model':8s} {'B':>2s} {'N':>3s} {'code':>4s} {'plain s':>9s} {'thinking s':>10s} {'naive s':>9s} "
          f"{'think/plain':>11s} {'target':>7s} {'naive/think':>11s} {'think tok/s':>11s}")
    for model, batch, N in rows:
        for name, code_dir in codes:
            r = run_in_process(code_dir, model, batch, N, env)
            head = f"{model:8s} {batch:2d} {N:3d} {name:>4s}"
            if isinstance(r, str):
                print(f"{head}  FAILED: {r}", flush=True)
                continue
            print(f"{head} {r['plain']:9.4f} {r['thinking']:10.4f} {r['naive']:9.3f} "
                  f"{r['thinking'] / r['plain']:11.2f} {'<= ' + str(N + 2):>7s} {r['naive'] / r['thinking']:11.1f} "
                  f"{batch / r['thinking']:11.1f}", flush=True)


if __name__ == "__main__":
    main()
