"""python -m quietstar_jax.generate end to end on a tiny trained workdir: streamed tokens with thoughts,
the same text from the latest checkpoint and from the finished run's export, the thoughts page, score
mode, and one-line errors."""

import os
import shutil

import builders
import pytest
from cli_runs import assert_one_error_line, run_cli

from quietstar_jax.training.trainer import Trainer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = str(tmp_path_factory.mktemp("gen") / "run")
    c = builders.run_config(**{"steps": 2, "checkpoint.every_steps": 1, "checkpoint.async_save": False,
                               "data.prefetch": 0, "export_dtype": "float32", "quietstar.n_ahead": 5})
    Trainer(c, wd, log=lambda s: None).run()
    return wd


def _generate(*args):
    return run_cli("quietstar_jax.generate", *args)


def test_generate_streams_thoughts_and_writes_the_page(workdir, tmp_path):
    page = str(tmp_path / "t.html")
    out = _generate(f"--model={workdir}", "--prompt=Q: 2+3=", "--max_new_tokens=6", "--show_thoughts",
                    "--show_weights", "--color=always", f"--html={page}", "--seed=3")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("Q: 2+3=")
    assert out.stdout.count("\033[2;36m⟨") == 6 and out.stdout.count(" w=") == 6  # a thought before every token
    assert "finished run, step 2" in out.stderr
    html = open(page, encoding="utf-8").read()
    assert "quietstar-thoughts/1" in html and "Q: 2+3=" not in html.split("<body")[0]  # tokens are in the body

    # The latest checkpoint of an unfinished run: the same params, the same text.
    unfinished = str(tmp_path / "unfinished")
    shutil.copytree(workdir, unfinished)
    os.remove(os.path.join(unfinished, "final_metrics.json"))
    again = _generate(f"--model={unfinished}", "--prompt=Q: 2+3=", "--max_new_tokens=6", "--show_thoughts",
                      "--show_weights", "--color=always", "--seed=3")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "checkpoint at step 2" in again.stderr and again.stdout == out.stdout

    plain = _generate(f"--model={workdir}", "--prompt=Q: 2+3=", "--max_new_tokens=6", "--no_think",
                      "--show_thoughts", "--color=never")
    assert plain.returncode == 0 and "⟨" not in plain.stdout, plain.stderr[-2000:]


def test_score_mode(workdir, tmp_path):
    page = str(tmp_path / "s.html")
    out = _generate(f"--model={workdir}/hf_export", "--score_text=one two three four", f"--html={page}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "predictions: mean log p" in out.stdout and "helped most" in out.stdout
    assert '"mode":"score"' in open(page, encoding="utf-8").read()


def test_errors_are_one_line(workdir, tmp_path):
    plain = str(tmp_path / "plain_hf")
    shutil.copytree(os.path.join(workdir, "hf_export"), plain)
    os.remove(os.path.join(plain, "quietstar_config.json"))
    empty = str(tmp_path / "empty_run")
    os.makedirs(empty)
    shutil.copy(os.path.join(workdir, "config.json"), empty)
    cases = [
        ([f"--model={plain}", "--prompt=hi"], "without the Quiet-STaR extras"),
        ([f"--model={plain}", "--prompt=hi", "--no_think"], "cannot load a tokenizer from"),  # bytes, no files
        ([f"--model={empty}", "--prompt=hi"], "no checkpoint and no params export yet"),
        ([f"--model={tmp_path}/nope", "--prompt=hi"], "does not exist"),
        ([f"--model={workdir}", "--prompt=hi", "--max_new_tokens=5000"], "shorten the prompt or lower --max_new_tokens"),
        ([f"--model={workdir}"], "give exactly one of --prompt"),
    ]
    for args, want in cases:
        out = _generate(*args)
        assert_one_error_line(out.returncode, out.stderr, want, args)
