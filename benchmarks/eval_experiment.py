"""The first experiment: does Quiet-STaR training change SmolLM2-135M-Instruct, on this CPU?

Three arms on the same data and steps (the CPU default's setup: the offline math corpus packed into rows of
L = 48, batch 2, AdamW, the same lr schedule and seed, so the same tokens in the same order):

  untrained   SmolLM2-135M-Instruct as it starts (Quiet-STaR params fresh: mixing weight exactly 0, so
              thinking cannot change a prediction; evaluated without thinking)
  quietstar   trained with thoughts: N = 6 (3 thought tokens), M = 2, P = 2, the paper's other settings
  baseline    trained identically with N = M = P = 1 (plain continued pretraining: the paper's baseline)

Each arm is evaluated on: held-out next-token NLL (rows of the training stream the runs never reach),
without and with thinking; the authors' metric on CommonsenseQA (the offline dev set) and GSM8K (the
official test jsonl, --gsm8k, or tfds), with and without thinking; greedy zero-shot accuracy on both, with
and without thinking; and the wall time of training and evaluation.

    python benchmarks/eval_experiment.py --gsm8k=/path/to/gsm8k/test.jsonl          # the real run (~1 h here)
    python benchmarks/eval_experiment.py --smoke                                      # everything tiny (minutes)
    python benchmarks/eval_experiment.py --arms=quietstar --lr=1e-6 --gsm8k=...      # one arm, another lr

Writes <out>/results.json (every number, the settings, the per-step training curves of w and the reward),
<out>/<arm>/<task>.<mode>.jsonl (per-example records) and prints the table.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# A CPU experiment: with libtpu installed (the test extra) JAX would first probe for a TPU and print warnings.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "/tmp/quietstar_jax/eval_experiment", "output folder (must not hold results yet)")
flags.DEFINE_string("gsm8k", "", "GSM8K test jsonl (default: tfds gsm8k, needs internet once; --smoke: the "
                                "test fixture)")
flags.DEFINE_string("csqa", "", "CommonsenseQA jsonl (default: the offline dev set)")
flags.DEFINE_integer("steps", 100, "optimizer steps per trained arm")
flags.DEFINE_float("lr", 1e-5, "peak learning rate (both trained arms)")
flags.DEFINE_integer("warmup", 10, "warmup steps")
flags.DEFINE_integer("n_csqa", 300, "CommonsenseQA examples (the first N of the dev set)")
flags.DEFINE_integer("n_gsm8k", 200, "GSM8K examples (the first N)")
flags.DEFINE_integer("heldout_rows", 32, "held-out rows of 48 tokens")
flags.DEFINE_integer("batch_size", 4, "evaluation batch")
flags.DEFINE_integer("greedy_tokens", 16, "greedy: new tokens at most (stops at a newline)")
flags.DEFINE_list("arms", ["untrained", "quietstar", "baseline"], "which arms to run (e.g. quietstar alone, "
                                                                   "to try another --lr)")
flags.DEFINE_bool("smoke", False, "tiny everything: 3 steps, 8 examples per task, 8 held-out rows")


def base_config(quietstar: bool):
    from quietstar_jax.training import config as config_lib

    # configs/default.py: SmolLM2, the offline math corpus, L 48, batch 2, N 6 / M 2 / P 2.
    c = config_lib.config_from_file(os.path.join(REPO, "configs", "default.py"))
    c.steps = FLAGS.steps
    c.optimizer.learning_rate = FLAGS.lr
    c.optimizer.warmup_steps = FLAGS.warmup
    c.checkpoint.enabled = False  # one uninterrupted run per arm; no 1.4 GB checkpoints
    c.export_hf = False
    c.eval.heldout_rows = 0  # the experiment measures held-out NLL itself (more rows, every arm)
    c.sample_every = 0
    c.model.fallback_to_tiny = False
    if not quietstar:
        c.quietstar.n_ahead = c.quietstar.n_ahead_talk = c.quietstar.n_passes = 1
    config_lib.validate(c)
    return c


def evaluate(arm: str, trainer, params, tasks: dict, modes: tuple, heldout: dict, out_dir: str) -> dict:
    import jax

    from quietstar_jax.evaluation.heldout import HeldoutNLL
    from quietstar_jax.evaluation.outputs import write_records
    from quietstar_jax.evaluation.placement import Placement
    from quietstar_jax.evaluation.runner import EvalSettings, Evaluator

    setup = trainer.setup
    t = time.time()
    nll = HeldoutNLL(setup.cfg, setup.qs, Placement(setup.mesh))(params, heldout, jax.random.key(7))
    if "think" not in modes:
        nll["nll_mix"] = None
    t_nll = time.time() - t
    settings = EvalSettings(metrics=("authors", "greedy"), modes=modes, batch_size=FLAGS.batch_size,
                            greedy_tokens=FLAGS.greedy_tokens, seed=0)
    res = Evaluator(setup.cfg, setup.qs, trainer.loaded.tokenizer, settings, mesh=setup.mesh).run(params, tasks)
    write_records(os.path.join(out_dir, arm), res)
    print(f"[{arm}] held-out NLL {nll}; {json.dumps(res.summary)}", flush=True)
    return {"heldout": nll, "results": res.summary, "seconds": {"heldout": round(t_nll, 1), **res.seconds},
            "eval_seconds": round(time.time() - t, 1)}


def train(arm: str, quietstar: bool, out_dir: str, heldout_n: int, before=None, run: bool = True) -> tuple:
    """Builds the arm's trainer (calling before(trainer, held-out rows) on its step-0 params first, if
    given) and trains it (if run). Returns (trainer, per-step curves, training seconds, held-out rows)."""
    from quietstar_jax.evaluation.heldout import heldout_rows
    from quietstar_jax.training.trainer import Trainer

    c = base_config(quietstar)
    tr = Trainer(c, os.path.join(out_dir, arm, "workdir"))
    held, unseen = heldout_rows(tr.data.rows, heldout_n, c.steps * c.global_batch_size)
    assert unseen, "held-out rows overlap the training rows: fewer steps or rows"
    if before:
        before(tr, held)
    curves = []
    tr.add_hook(lambda info: curves.append({"step": info.step, **info.host_metrics()}), every=1)
    t = time.time()
    if run:
        tr.run()
    return tr, curves, round(time.time() - t, 1), held


def table(results: dict) -> str:
    arms = [a for a in ("untrained", "quietstar", "baseline") if a in results]
    rows = [("training seconds", lambda r: r.get("train_seconds")),
            ("evaluation seconds", lambda r: r["eval"]["eval_seconds"]),
            ("final mixing weight w", lambda r: (r.get("curves") or [{}])[-1].get("mixing_weight")),
            ("mean reward, last 10 steps",
             lambda r: _mean([c.get("reward_mean") for c in (r.get("curves") or [])[-10:]])),
            ("thought entropy, first 10 steps",
             lambda r: _mean([c.get("thought_entropy") for c in (r.get("curves") or [])[:10]])),
            ("thought entropy, last 10 steps",
             lambda r: _mean([c.get("thought_entropy") for c in (r.get("curves") or [])[-10:]])),
            ("train nll_base, last 10 steps", lambda r: _mean([c.get("nll_base") for c in (r.get("curves") or [])[-10:]])),
            ("held-out NLL, no thinking", lambda r: r["eval"]["heldout"]["nll_base"]),
            ("held-out NLL, thinking", lambda r: r["eval"]["heldout"]["nll_mix"])]
    for task in ("csqa", "gsm8k"):
        for metric, name in (("authors", "authors' metric"), ("greedy", "greedy accuracy")):
            for mode, m in (("no_think", "no thinking"), ("think", "thinking")):
                rows.append((f"{task} {name}, {m}",
                             lambda r, t=task, me=metric, mo=mode: r["eval"]["results"][t].get(mo, {}).get(me)))
    out = [f"{'':34s}" + "".join(f"{a:>14s}" for a in arms)]
    for name, get in rows:
        cells = []
        for a in arms:
            v = get(results[a])
            cells.append(f"{'-':>14s}" if v is None else f"{v:14.4g}" if isinstance(v, float) else f"{v!s:>14s}")
        out.append(f"{name:34s}" + "".join(cells))
    return "\n".join(out)


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def main(argv):
    del argv
    if FLAGS.smoke:
        FLAGS.steps, FLAGS.warmup, FLAGS.n_csqa, FLAGS.n_gsm8k, FLAGS.heldout_rows = 3, 1, 8, 8, 8
        FLAGS.greedy_tokens = min(FLAGS.greedy_tokens, 8)
        if not FLAGS.gsm8k:
            FLAGS.gsm8k = os.path.join(REPO, "tests", "fixtures", "gsm8k", "test_slice.jsonl")
    out_dir = os.path.abspath(FLAGS.out)
    if os.path.exists(os.path.join(out_dir, "results.json")):
        sys.exit(f"error: {out_dir} already holds results.json: use a new --out")
    os.makedirs(out_dir, exist_ok=True)
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    from quietstar_jax.evaluation.datasets import load_task

    t0 = time.time()
    tasks = {"csqa": load_task("csqa", FLAGS.csqa, FLAGS.n_csqa)[0], "gsm8k": load_task("gsm8k", FLAGS.gsm8k,
                                                                                       FLAGS.n_gsm8k)[0]}
    print(f"data: {len(tasks['csqa'])} csqa, {len(tasks['gsm8k'])} gsm8k examples", flush=True)
    results = {}

    def untrained(tr, held):
        results["untrained"] = {"eval": evaluate("untrained", tr, tr.state["params"], tasks, ("no_think",), held,
                                                 out_dir)}

    arms = set(FLAGS.arms)
    unknown = arms - {"untrained", "quietstar", "baseline"}
    if unknown:
        sys.exit(f"error: --arms: unknown arm(s) {sorted(unknown)}; the arms are untrained, quietstar, baseline")
    if "quietstar" in arms or "untrained" in arms:
        # The untrained arm is the Quiet-STaR trainer's step-0 params (evaluated before it trains).
        tr, curves, secs, held = train("quietstar", True, out_dir, FLAGS.heldout_rows,
                                       before=untrained if "untrained" in arms else None, run="quietstar" in arms)
        if "quietstar" in arms:
            results["quietstar"] = {"train_seconds": secs, "curves": curves,
                                    "eval": evaluate("quietstar", tr, tr.state["params"], tasks, ("think", "no_think"),
                                                     held, out_dir)}
        del tr
    if "baseline" in arms:
        tr, curves, secs, held = train("baseline", False, out_dir, FLAGS.heldout_rows)
        results["baseline"] = {"train_seconds": secs, "curves": curves,
                               "eval": evaluate("baseline", tr, tr.state["params"], tasks, ("no_think",), held,
                                                out_dir)}
    doc = {"settings": {k: getattr(FLAGS, k) for k in ("arms", "steps", "lr", "warmup", "n_csqa", "n_gsm8k", "heldout_rows",
                                                        "batch_size", "greedy_tokens", "smoke", "gsm8k", "csqa")},
           "wall_seconds": round(time.time() - t0, 1), **results}
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(doc, f, indent=2)
    print(table(results))
    print(f"total wall time {(time.time() - t0) / 60:.1f} min; results in {out_dir}/results.json")


if __name__ == "__main__":
    app.run(main)
