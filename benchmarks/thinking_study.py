"""Does thinking pay? Quiet-STaR against its controls, on a task built so that it can, and on SmolLM2.

    python benchmarks/thinking_study.py                       # everything (resumes where it stopped)
    python benchmarks/thinking_study.py --tasks=multihop      # the synthetic task only (~2 h here)
    python benchmarks/thinking_study.py --tasks=smollm2 --gsm8k=/path/to/gsm8k/test.jsonl
    python benchmarks/thinking_study.py --report              # tables and plots from finished jobs only

Task "multihop" (quietstar_jax.data.multihop): random 8-letter cycles per document, queries "?x"
followed by sigma^2(x). A small transformer (2 layers) is first pretrained from scratch as a plain LM
(once, PRETRAIN_SEED); it learns one-hop lookups from the chain documents but cannot compose two
lookups in one forward pass. Every arm then continues from that model on the same data for the same
number of steps (for a given seed, the same batches in the same order):

    baseline        N = M = P = 1: plain continued pretraining
    baseline_flops  the same with as many more steps as a Quiet-STaR step costs in FLOPs (jaxpr count)
    pause           thought_mode "pause": <start>, a pause token, <end> (positions without content)
    authors         Quiet-STaR with the authors' settings (policy weight 1e6, clamp, temperature 3,
                    mixing head from 0, no stabiliser)
    recipe          the stabilised recipe (RECIPE below: what the search in the README found)

Task "smollm2": SmolLM2-135M-Instruct on the offline math corpus (the CPU default's setup), 200 steps:
authors, recipe, baseline; held-out NLL with and without thinking, thought entropy, w, and CSQA /
GSM8K (the authors' metric and greedy accuracy), with and without thinking.

Each (task, arm, seed) is a job run in its own process; its result lands in <work>/<task>/<arm>/
seed<k>/result.json, and a finished job is never run again, so the study resumes where it stopped.
The report (--report, and at the end of a run) writes benchmarks/results/thinking_study.json (per task,
arm and seed: the final metrics and the curves; per arm: mean, standard deviation, min, max over seeds)
and PNG plots (thought entropy, w, reward, held-out base / mixed NLL against step, per arm).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("work", "/tmp/quietstar_jax/thinking_study", "where jobs keep their workdirs and results")
flags.DEFINE_string("results", os.path.join(REPO, "benchmarks", "results"), "where the JSON and the plots go")
flags.DEFINE_list("tasks", ["multihop", "smollm2"], "multihop, smollm2")
flags.DEFINE_list("arms", [], "only these arms (default: every arm of each task)")
flags.DEFINE_integer("seeds", 0, "seeds per arm (default: 3 for multihop, 2 for smollm2; authors: 1 on smollm2)")
flags.DEFINE_string("gsm8k", "", "GSM8K test jsonl for the smollm2 task (default: the tests' fixture slice)")
flags.DEFINE_bool("report", False, "only write the JSON and plots from the finished jobs")
flags.DEFINE_string("job", "", "internal: run one job task/arm/seed in this process")
flags.DEFINE_bool("smoke", False, "tiny everything (a few steps per job): checks the pipeline in minutes")
flags.DEFINE_integer("multihop_steps", 0, "multihop: steps per arm (default MH['steps'])")
flags.DEFINE_integer("multihop_heldout_docs", 0, "multihop: held-out documents per seed (default MH['heldout_docs'])")
# Forwarded from the driver to every job it starts.
_JOB_FLAGS = ("gsm8k", "smoke", "multihop_steps", "multihop_heldout_docs")

# ----------------------------------------------------------------------------- the synthetic task

MH = dict(hidden=128, layers=2, heads=4, seq_len=64, batch=32, train_docs=20000, heldout_docs=1000,
          pretrain_steps=6000, pretrain_lr=3e-3, pretrain_warmup=200, steps=150, lr=1e-4, warmup=20, eval_every=25,
          eval_docs=256, n_ahead=4, n_ahead_talk=2)
# The thought tokens' initial embeddings on this task, for every arm that thinks (the authors' arm
# included, so that arms differ only in the algorithm): <start> from " " (a neutral separator: after it
# the model writes any table letter) and <end> from ">" (the task's "one hop" operator: after "t>" the
# model writes sigma(t)). So a written step can be read from the first step on, but what to write must
# be learned: the thought after "?x" starts as a random table letter (sigma(x) about 1 time in 8).
MH_INIT = {"quietstar.start_init_text": " ", "quietstar.end_init_text": ">"}
# The stabilised recipe: every field a config.quietstar field, chosen by the search that the README
# reports (on the synthetic task only), used unchanged on SmolLM2.
RECIPE = {
    "quietstar.n_passes": 4,
    "quietstar.policy_weight": 1.0,
    "quietstar.advantage_norm": "batch",
    "quietstar.entropy_bonus": 0.01,
}
# One-seed ablations of the recipe on the synthetic task: what each part is worth.
ABLATIONS = {
    "recipe_no_reinforce": {"quietstar.policy_weight": 0.0},  # advantage zeroed: REINFORCE off, all else equal
    "recipe_default_init": {"quietstar.start_init_text": "---", "quietstar.end_init_text": "---"},
    "recipe_no_entropy": {"quietstar.entropy_bonus": 0.0},
    "recipe_p2": {"quietstar.n_passes": 2},
    # REINFORCE confined to how the model thinks (thought embeddings, mixing head, rank-8 thought
    # adapters); the weights that predict text learn from the NLL alone (the SmolLM2 candidate).
    "recipe_adapters": {"quietstar.policy_params": "quietstar/.*", "quietstar.adapter_rank": 8},
}
MH_ARMS = ("baseline", "baseline_flops", "pause", "authors", "recipe")
# One base model for the whole task: pretraining it takes ~18 min here, and a seed of an arm is then a
# seed of what the arm does (sampling, batch order), not of the pretraining.
PRETRAIN_SEED = 0
# The order jobs run in: one seed of every arm before the next seed, the arms that decide the question
# first, so that a study stopped early still compares like with like.
MH_PRIORITY = ("recipe", "baseline", "pause", "authors", "baseline_flops")
SM = dict(steps=200, lr=1e-5, warmup=10, heldout_rows=32, eval_every=50, n_csqa=300, n_gsm8k=200)
SM_ARMS = ("baseline", "authors", "recipe")


def _off(c):
    c.quietstar.n_ahead = c.quietstar.n_ahead_talk = c.quietstar.n_passes = 1
    return c


def multihop_config(arm: str, seed: int, work: str, steps: int | None = None):
    """The run config of a multihop job (arm "pretrain" trains the shared base model from scratch)."""
    from quietstar_jax.training import config as config_lib

    m = MH
    c = config_lib.base_config()
    c.run_name = f"multihop_{arm}_{seed}"
    c.seed = seed
    c.model.source = "tiny"
    c.model.dtype = "float32"
    c.model.remat_policy = "none"
    t = c.model.tiny
    t.hidden_size, t.intermediate_size, t.num_hidden_layers = m["hidden"], 2 * m["hidden"], m["layers"]
    t.num_attention_heads = t.num_key_value_heads = m["heads"]
    t.head_dim = m["hidden"] // m["heads"]
    c.seq_len, c.global_batch_size = m["seq_len"], m["batch"]
    c.data.source, c.data.path, c.data.mode = "jsonl", os.path.join(work, "multihop", "train.jsonl"), "crop"
    c.data.add_eos, c.data.seed, c.data.prefetch = False, 0, 2
    c.checkpoint.enabled = False
    c.export_hf = False
    c.log_every = 50
    c.optimizer.weight_decay = 0.0
    if arm == "pretrain":
        _off(c)
        c.steps = steps or m["pretrain_steps"]
        c.optimizer.learning_rate, c.optimizer.warmup_steps = m["pretrain_lr"], m["pretrain_warmup"]
        c.optimizer.schedule = "cosine"
        return c
    # Every arm and seed continues from the one pretrained model (PRETRAIN_SEED); an arm's seed sets its
    # thought sampling and the order of its batches (the same order for every arm of that seed).
    c.model.init_from = os.path.join(work, "multihop", "pretrain", f"seed{PRETRAIN_SEED}", "workdir", "params_export")
    c.data.seed = seed
    c.steps = steps or m["steps"]
    c.optimizer.learning_rate, c.optimizer.warmup_steps = m["lr"], m["warmup"]
    c.quietstar.n_ahead, c.quietstar.n_ahead_talk = m["n_ahead"], m["n_ahead_talk"]
    if arm in ("baseline", "baseline_flops"):
        return _off(c)
    config_lib.override(c, **MH_INIT)
    if arm == "pause":
        c.quietstar.thought_mode = "pause"
        c.quietstar.n_passes = 1
    elif arm == "recipe" or arm in ABLATIONS:
        config_lib.override(c, **{**RECIPE, **ABLATIONS.get(arm, {})})
    elif arm != "authors":
        raise ValueError(f"unknown multihop arm {arm!r}")
    return c


def smollm2_config(arm: str, seed: int, steps: int | None = None):
    from quietstar_jax.training import config as config_lib

    c = config_lib.config_from_file(os.path.join(REPO, "configs", "default.py"))
    c.run_name = f"smollm2_{arm}_{seed}"
    c.seed = seed
    c.steps = steps or SM["steps"]
    c.optimizer.learning_rate, c.optimizer.warmup_steps = SM["lr"], SM["warmup"]
    c.checkpoint.enabled = False
    c.export_hf = False
    c.eval.heldout_rows = 0
    c.model.fallback_to_tiny = False
    c.log_every = 10
    if arm == "baseline":
        _off(c)
    elif arm == "recipe":
        config_lib.override(c, **RECIPE)
    elif arm != "authors":
        raise ValueError(f"unknown smollm2 arm {arm!r}")
    return c


# ----------------------------------------------------------------------------- one job


def _curve_hook(curves: list, keys=("loss", "nll_base", "nll_mix", "reward_mean", "mixing_weight", "thought_entropy",
                                    "thought_entropy_train", "kl", "advantage_pos_frac", "grad_norm",
                                    "grad_norm_lm", "grad_norm_thought", "thought_grad_scale", "policy_term")):
    def hook(info):
        m = info.host_metrics()
        curves.append({"step": info.step, **{k: m[k] for k in keys if k in m}})
    return hook


def _flops_ratio(work: str, seed: int) -> float:
    """Quiet-STaR (recipe) step FLOPs / plain-LM step FLOPs on the multihop config (jaxpr counts)."""
    import jax

    from quietstar_jax.training import setup as setup_lib
    from quietstar_jax.training.flops import step_flops

    out = []
    for arm in ("recipe", "baseline"):
        c = multihop_config(arm, seed, work)
        c.model.init_from = ""
        cfg = setup_lib.tiny_model_config(c)
        from quietstar_jax.training.tokenizer import ByteTokenizer

        tok = ByteTokenizer()
        setup = setup_lib.build_setup(c, cfg, setup_lib.quietstar_config(c, tok), tok.init_ids)
        key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
        traced = setup.step_fn.trace(setup.abstract_state(), setup_lib.abstract_batch(c, setup), key)
        out.append(step_flops(traced.jaxpr))
    return out[0] / out[1]


def _multihop_train_docs(work: str) -> str:
    """The training documents every multihop job reads (written once, from data seed 0)."""
    from quietstar_jax.data import multihop as mh

    path = os.path.join(work, "multihop", "train.jsonl")
    if not os.path.exists(path):
        mh.write_jsonl(path, mh.make_documents(mh.MultiHopTask(), MH["train_docs"], seed=0))
    return path


def run_multihop_job(arm: str, seed: int, work: str, job_dir: str) -> dict:
    import jax
    import numpy as np

    from quietstar_jax.data import multihop as mh
    from quietstar_jax.evaluation.answer_tokens import AnswerTokens, rows_from_texts
    from quietstar_jax.evaluation.heldout import HeldoutNLL
    from quietstar_jax.training.trainer import Trainer

    task = mh.MultiHopTask()
    smoke = FLAGS.smoke
    steps = None
    if arm == "baseline_flops":
        ratio = _flops_ratio(work, seed)
        steps = int(round((3 if smoke else MH["steps"]) * ratio))
    elif smoke:
        steps = 3 if arm != "pretrain" else 20
    c = multihop_config(arm, seed, work, steps)
    c.log_every = 50 if not smoke else 1
    held = mh.make_documents(task, 100 if smoke else MH["heldout_docs"], seed=10_000 + seed)
    queries = [d["text"] for d in held if d["kind"] == "query"]
    chains = [d["text"] for d in held if d["kind"] == "chain"]
    trainer = Trainer(c, os.path.join(job_dir, "workdir"))
    tok = trainer.loaded.tokenizer
    qs, cfg = trainer.setup.qs, trainer.setup.cfg
    q_tok, q_seg = rows_from_texts(queries, tok.encode, c.seq_len)
    c_tok, c_seg = rows_from_texts(chains, tok.encode, c.seq_len)
    q_ans = [mh.answer_positions(t) for t in queries]
    c_ans = [mh.one_hop_positions(t) for t in chains]
    answers = AnswerTokens(cfg, qs)
    nll_fn = HeldoutNLL(cfg, qs)
    n_eval = 16 if smoke else MH["eval_docs"]
    nll_batch = {"tokens": np.concatenate([q_tok[:n_eval // 2], c_tok[:n_eval // 2]]),
                 "segment_ids": np.concatenate([q_seg[:n_eval // 2], c_seg[:n_eval // 2]])}
    nll_batch["positions"] = np.broadcast_to(np.arange(c.seq_len, dtype=np.int32), nll_batch["tokens"].shape).copy()
    key = jax.random.key(1000 + seed)

    def evaluate(params, n=None):
        sl = slice(None) if n is None else slice(0, n)
        out = {"answer": answers(params, q_tok[sl], q_seg[sl], q_ans[sl], key),
               "one_hop": answers(params, c_tok[sl], c_seg[sl], c_ans[sl], key),
               "heldout_nll": nll_fn(params, nll_batch, key)}
        return out

    curves, evals = [], []
    trainer.add_hook(_curve_hook(curves), every=1)
    # The same number of evaluations in every arm (baseline_flops runs more, cheaper steps).
    every = 1 if smoke else (500 if arm == "pretrain" else max(MH["eval_every"], c.steps * MH["eval_every"] // MH["steps"]))
    trainer.add_hook(lambda info: evals.append({"step": info.step, **evaluate(info.state["params"], n_eval)}),
                     every=every, at_last=False)
    evals.append({"step": 0, **evaluate(trainer.state["params"], n_eval)})
    t0 = time.time()
    trainer.run()
    train_s = time.time() - t0
    final = evaluate(trainer.state["params"])
    return {"task": "multihop", "arm": arm, "seed": seed, "steps": c.steps, "train_seconds": round(train_s, 1),
            "final": final, "evals": evals, "curves": curves, "config": json.loads(c.to_json())}


def run_smollm2_job(arm: str, seed: int, job_dir: str) -> dict:
    import jax

    from quietstar_jax.evaluation.datasets import load_task
    from quietstar_jax.evaluation.heldout import HeldoutNLL, heldout_rows
    from quietstar_jax.evaluation.placement import Placement
    from quietstar_jax.evaluation.runner import EvalSettings, Evaluator
    from quietstar_jax.training.trainer import Trainer

    smoke = FLAGS.smoke
    c = smollm2_config(arm, seed, 3 if smoke else None)
    trainer = Trainer(c, os.path.join(job_dir, "workdir"))
    setup = trainer.setup
    held, unseen = heldout_rows(trainer.data.rows, 8 if smoke else SM["heldout_rows"], c.steps * c.global_batch_size)
    if not unseen:
        raise RuntimeError("held-out rows overlap the training rows")
    nll_fn = HeldoutNLL(setup.cfg, setup.qs, Placement(setup.mesh))
    key = jax.random.key(7)
    curves, evals = [], []
    trainer.add_hook(_curve_hook(curves), every=1)
    trainer.add_hook(lambda info: evals.append({"step": info.step, "heldout_nll": nll_fn(info.state["params"], held, key)}),
                     every=1 if smoke else SM["eval_every"], at_last=False)
    evals.append({"step": 0, "heldout_nll": nll_fn(trainer.state["params"], held, key)})
    t0 = time.time()
    trainer.run()
    train_s = time.time() - t0
    params = trainer.state["params"]
    gsm8k = FLAGS.gsm8k or os.path.join(REPO, "tests", "fixtures", "gsm8k", "test_slice.jsonl")
    n_csqa, n_gsm = (8, 8) if smoke else (SM["n_csqa"], SM["n_gsm8k"])
    tasks = {"csqa": load_task("csqa", "", n_csqa)[0], "gsm8k": load_task("gsm8k", gsm8k, n_gsm)[0]}
    modes = ("think", "no_think") if setup.qs.enabled else ("no_think",)
    settings = EvalSettings(metrics=("authors", "greedy"), modes=modes, batch_size=4, greedy_tokens=16, seed=0)
    t1 = time.time()
    res = Evaluator(setup.cfg, setup.qs, trainer.loaded.tokenizer, settings, mesh=setup.mesh).run(params, tasks)
    final = {"heldout_nll": nll_fn(params, held, key), "tasks": res.summary,
             "n": {k: len(v) for k, v in tasks.items()}, "gsm8k_path": gsm8k}
    return {"task": "smollm2", "arm": arm, "seed": seed, "steps": c.steps, "train_seconds": round(train_s, 1),
            "eval_seconds": round(time.time() - t1, 1), "final": final, "evals": evals, "curves": curves,
            "config": json.loads(c.to_json())}


def run_job(spec: str) -> None:
    task, arm, seed = spec.split("/")
    seed = int(seed.removeprefix("seed"))
    work = os.path.abspath(FLAGS.work)
    job_dir = os.path.join(work, task, arm, f"seed{seed}")
    os.makedirs(job_dir, exist_ok=True)
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    if task == "multihop":
        _multihop_train_docs(work)
        result = run_multihop_job(arm, seed, work, job_dir)
    else:
        result = run_smollm2_job(arm, seed, job_dir)
    tmp = os.path.join(job_dir, "result.json.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, os.path.join(job_dir, "result.json"))


# ----------------------------------------------------------------------------- the driver


def jobs() -> list[str]:
    out = []
    for task in FLAGS.tasks:
        if task == "multihop":
            n = FLAGS.seeds or 3
            out.append(f"multihop/pretrain/seed{PRETRAIN_SEED}")
            for s in range(n):
                out += [f"multihop/{a}/seed{s}" for a in MH_PRIORITY if not FLAGS.arms or a in FLAGS.arms]
                if s == 0:  # REINFORCE off: the control that decides whether the policy term is doing the work
                    out += [f"multihop/{a}/seed0" for a in ("recipe_no_reinforce",) if not FLAGS.arms or a in FLAGS.arms]
            out += [f"multihop/{a}/seed0" for a in ABLATIONS
                    if a != "recipe_no_reinforce" and (not FLAGS.arms or a in FLAGS.arms)]
        elif task == "smollm2":
            for a in SM_ARMS:
                if FLAGS.arms and a not in FLAGS.arms:
                    continue
                n = FLAGS.seeds or (1 if a == "authors" else 2)
                out += [f"smollm2/{a}/seed{s}" for s in range(n)]
        else:
            raise app.UsageError(f"--tasks: unknown task {task!r} (multihop, smollm2)")
    return out


def _result_path(spec: str) -> str:
    return os.path.join(os.path.abspath(FLAGS.work), spec, "result.json")


def _fmt(seconds: float) -> str:
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def drive() -> None:
    work = os.path.abspath(FLAGS.work)
    if "multihop" in FLAGS.tasks:
        _multihop_train_docs(work)
    todo = jobs()
    done_s: dict[str, list[float]] = {}
    t_start = time.time()
    for i, spec in enumerate(todo):
        kind = "/".join(spec.split("/")[:2])
        if os.path.exists(_result_path(spec)):
            continue
        left = [s for s in todo[i:] if not os.path.exists(_result_path(s))]
        est = sum(_mean(done_s.get("/".join(s.split("/")[:2]), [])) or _guess(s) for s in left)
        print(f"[{i + 1}/{len(todo)}] {spec}: running; elapsed {_fmt(time.time() - t_start)}, "
              f"ETA {_fmt(est)} for {len(left)} jobs", flush=True)
        t0 = time.time()
        cmd = [sys.executable, os.path.abspath(__file__), f"--job={spec}", f"--work={work}"]
        cmd += [f"--{name}={getattr(FLAGS, name)}" for name in _JOB_FLAGS if getattr(FLAGS, name)]
        log = os.path.join(work, spec, "log.txt")
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "w") as f:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
        if rc:
            sys.exit(f"error: job {spec} failed (exit {rc}); its output: {log}")
        done_s.setdefault(kind, []).append(time.time() - t0)
        print(f"[{i + 1}/{len(todo)}] {spec}: done in {_fmt(time.time() - t0)}", flush=True)
    report()


def _guess(spec: str) -> float:
    """Seconds a job of this kind took here (before one has run in this session)."""
    task, arm = spec.split("/")[:2]
    if task == "smollm2":
        return 600 if arm == "baseline" else 2800
    return {"pretrain": 1100, "baseline": 120, "baseline_flops": 900}.get(arm, 700)


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


# ----------------------------------------------------------------------------- the report


def report():
    from thinking_report import report as write_report  # benchmarks/ (this script's folder) is on sys.path

    return write_report(os.path.abspath(FLAGS.work), FLAGS.results,
                        {"multihop": MH, "multihop_init": MH_INIT, "smollm2": SM, "recipe": RECIPE,
                         "ablations": ABLATIONS, "smoke": FLAGS.smoke})


def main(argv):
    del argv
    if FLAGS.multihop_steps:
        MH["steps"] = FLAGS.multihop_steps
    if FLAGS.multihop_heldout_docs:
        MH["heldout_docs"] = FLAGS.multihop_heldout_docs
    if FLAGS.job:
        run_job(FLAGS.job)
    elif FLAGS.report:
        report()
    else:
        drive()


if __name__ == "__main__":
    app.run(main)
