"""Evaluation end to end on a tiny trained workdir: the trainer's evaluation hooks (periodic eval in
TensorBoard and on the console, the held-out before/after table), then `python -m quietstar_jax.eval` on
the finished run (outputs, the same numbers as the hook, one-line errors)."""

import glob
import json
import os

import builders
import pytest
from cli_runs import assert_one_error_line, run_cli

from quietstar_jax.evaluation.train_hooks import add_config_hooks
from quietstar_jax.training.trainer import Trainer

FIXTURE = builders.GSM8K_FIXTURE
EVAL = {"eval.tasks": "gsm8k", "eval.every_steps": 1, "eval.limit": 4, "eval.gsm8k_path": FIXTURE,
        "eval.metrics": "authors", "eval.think": "both", "eval.batch_size": 8, "eval.max_len": 64,
        "eval.heldout_rows": 8}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    wd = str(tmp_path_factory.mktemp("eval") / "run")
    c = builders.run_config(**{"steps": 2, "checkpoint.enabled": False, "export_hf": False, "data.prefetch": 0,
                               "peak_flops_per_device": 1e11, "quietstar.n_ahead": 5, **EVAL})
    lines = []
    trainer = Trainer(c, wd, log=lines.append)
    add_config_hooks(trainer)
    trainer.run()
    return wd, "\n".join(lines)


def test_training_hooks(run):
    wd, log = run
    history = [json.loads(line) for line in open(os.path.join(wd, "eval_history.jsonl"))]
    assert [h["step"] for h in history] == [1, 2]
    res = history[-1]["results"]["gsm8k"]
    assert res["n"] == 4 and set(res["think"]) == set(res["no_think"]) == {"authors"}
    assert 0 < res["think"]["authors"] < 1 and "eval step 2 (thinking / no thinking): gsm8k authors" in log
    # The held-out table: the initial params' mixing weight is 0, so thinking changes nothing before training.
    held = json.load(open(os.path.join(wd, "heldout_nll.json")))
    assert held["unseen"] and held["initial"]["nll_mix"] == pytest.approx(held["initial"]["nll_base"], abs=1e-6)
    assert held["final"]["nll_base"] != held["initial"]["nll_base"]
    assert "held-out NLL (8 rows x 8 tokens" in log and "with thinking" in log
    events = b"".join(open(p, "rb").read() for p in glob.glob(os.path.join(wd, "tensorboard", "*tfevents*")))
    for tag in (b"eval/gsm8k/authors_think", b"eval/gsm8k/authors_no_think", b"heldout/nll_mix_final",
                b"train/nll_base"):
        assert tag in events, tag


def _eval(*args):
    # The 8 simulated devices and the session's compilation cache (conftest): with --mesh=data=8 the CLI
    # compiles the programs the training hook already compiled, so it reads them from the cache.
    return run_cli("quietstar_jax.eval", *args, keep_xla_flags=True,
                   env={"JAX_COMPILATION_CACHE_DIR": os.environ.get("QS_TEST_JAX_CACHE", "")})


@pytest.mark.e2e
def test_eval_cli(run, tmp_path):
    wd, _ = run
    out_dir = str(tmp_path / "out")
    out = _eval(f"--model={wd}", "--task=gsm8k", f"--data={FIXTURE}", "--limit=4", "--compare",
                "--metrics=authors,greedy",
                "--batch_size=8", "--max_len=64", "--greedy_tokens=4", f"--out={out_dir}", "--save_thoughts",
                "--mesh=data=8")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "authors' metric (mean p)" in out.stdout and "greedy zero-shot accuracy" in out.stdout
    assert "\r" not in out.stderr and "gsm8k authors' metric (think)" in out.stderr and "100%" in out.stderr
    summary = json.load(open(os.path.join(out_dir, "summary.json")))
    assert summary["step"] == 2 and summary["n"] == 4 and summary["settings"]["modes"] == ["think", "no_think"]
    # Thinking off is deterministic: the CLI on the finished run's export gives the hook's last number.
    hook = json.loads(open(os.path.join(wd, "eval_history.jsonl")).read().splitlines()[-1])["results"]["gsm8k"]
    got = summary["results"]["gsm8k"]
    assert got["no_think"]["authors"] == pytest.approx(hook["no_think"]["authors"], rel=1e-4)
    assert f"{got['think']['authors']:12.4f}" in out.stdout
    rows = [json.loads(line) for line in open(os.path.join(out_dir, "gsm8k.think.jsonl"))]
    assert [r["gold"] for r in rows] == ["18", "3", "70000", "540"]
    r = rows[0]
    assert r["authors"]["text"].endswith("\nA: 18\n") and r["authors"]["scored_tokens"] == 3
    assert len(r["authors"]["thoughts"]) == 3 and r["greedy"]["prompt"].endswith("\nA:")
    assert r["greedy"]["thoughts"] and all(isinstance(t, str) for t in r["greedy"]["thoughts"])
    assert glob.glob(os.path.join(out_dir, "tensorboard", "*tfevents*"))


@pytest.mark.e2e
def test_eval_cli_errors_are_one_line(run, tmp_path):
    wd, _ = run
    bad = tmp_path / "bad.jsonl"
    bad.write_text(open(FIXTURE).readline() + "{not json\n")
    cases = [
        ([f"--model={wd}", "--task=mmlu"], "give --task=gsm8k or --task=csqa"),
        ([f"--model={wd}", "--task=gsm8k", f"--data={bad}"], f"{bad}:2: malformed JSON"),
        ([f"--model={wd}", "--task=gsm8k", f"--data={tmp_path}/nope.jsonl"], "does not exist"),
        ([f"--model={wd}", "--task=gsm8k", "--no_think", "--compare"], "at most one of --no_think"),
        ([f"--model={wd}", "--task=gsm8k", "--metrics=authors,bleu"], "unknown metric 'bleu'"),
    ]
    for args, want in cases:
        out = _eval(*args)
        assert_one_error_line(out.returncode, out.stderr, want, args)


def test_initial_params_are_the_step_0_params():
    """The held-out table's "initial" column re-creates the step-0 params: equal to initial_state's, for a
    random init and for loaded weights (fresh Quiet-STaR params from the seed)."""
    import dataclasses

    import jax
    import numpy as np

    from quietstar_jax.training import setup as setup_lib

    c = builders.run_config()
    loaded = setup_lib.load_model(c, log=lambda s: None)
    setup = setup_lib.build_setup(c, loaded.cfg, setup_lib.quietstar_config(c, loaded.tokenizer),
                                  loaded.tokenizer.init_ids)
    first = jax.device_get(setup_lib.initial_state(c, setup, loaded)["params"])
    host = {k: v for k, v in first.items() if k != "quietstar"}
    with_weights = dataclasses.replace(loaded, host_params=host)
    for lm, want in ((loaded, first), (with_weights, None)):
        want = want or jax.device_get(setup_lib.initial_state(c, setup, lm)["params"])
        got = jax.device_get(setup_lib.initial_params(c, setup, lm))
        jax.tree.map(np.testing.assert_array_equal, got, want)
    assert np.abs(first["quietstar"]["thought_embeddings"]).sum() > 0


def test_eval_config_is_validated():
    from quietstar_jax.errors import ConfigError
    from quietstar_jax.training import config as config_lib

    for over, key in [({"eval.tasks": "gsm8k,mmlu"}, "eval.tasks"), ({"eval.metrics": "bleu"}, "eval.metrics"),
                      ({"eval.think": "sometimes"}, "eval.think"), ({"eval.every_steps": -1}, "eval.every_steps"),
                      ({"eval.gsm8k_path": "/nonexistent.jsonl"}, "eval.gsm8k_path"),
                      ({"eval.heldout_rows": -2}, "eval.heldout_rows")]:
        with pytest.raises(ConfigError, match=f"config.{key}"):
            config_lib.validate(builders.run_config(**over))
    config_lib.validate(builders.run_config(**EVAL))
