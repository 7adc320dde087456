"""A new user's path: one-line errors from every CLI, damaged checkpoints, changed configs on resume,
re-running a finished run, the progress line, utilisation that cannot pass 100%, the end-of-run
summary."""

import ast
import concurrent.futures
import gc
import json
import os
import time

import builders
import jax
import jax.numpy as jnp
import pytest
from cli_runs import assert_one_error_line, run_cli

from quietstar_jax.cli import one_line
from quietstar_jax.errors import CheckpointCorruptError, ConfigError
from quietstar_jax.training.flops import Peak, device_peak
from quietstar_jax.training.logger import Logger
from quietstar_jax.training.trainer import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "tiny.py")


# ----------------------------------------------------------------------------- one-line CLI errors
def _cli(args):
    return run_cli(*args)


BAD_INPUTS = [  # (command line, text the one error line must contain)
    (["quietstar_jax.train", "--config.stpes=3"], "--config.stpes: no such config field (did you mean 'steps'?)"),
    (["quietstar_jax.train", "--config=configs/nope.py"], "--config=configs/nope.py: no such config file"),
    # The message's own closing quote stays (absl's message ends with the value in quotes).
    (["quietstar_jax.train", "--config.steps=abc"], "flag --config.steps=abc: invalid literal for int() with base "
                                                    "10: 'abc'"),
    (["quietstar_jax.generate", "--max_new_token=3"],
     "--max_new_token: no such flag (did you mean --max_new_tokens?); --help lists the flags"),
    (["quietstar_jax.eval", "--helpp"], "--helpp: no such flag (did you mean --help?)"),
    (["quietstar_jax.train", "--config.model.path=/data/my-model"],
     "config.model.path: is set ('/data/my-model') but model.source is 'smollm2'"),
    (["quietstar_jax.train", f"--config={TINY}", "--config.quietstar.n_ahead=2"], "n_ahead must be >= 3"),
    (["quietstar_jax.train", "extra"], "unexpected arguments ['extra']"),
    (["quietstar_jax.convert", "hf_to_jax", "--src=/nonexistent", "--dst=/tmp/x"],
     "--src=/nonexistent does not exist"),
    (["quietstar_jax.convert", "jax_to_hf", "--src=/nonexistent", "--dst=/tmp/x"],
     "--src=/nonexistent does not exist"),
    (["quietstar_jax.convert", "sideways", "--src=/a", "--dst=/b"], "usage: python -m quietstar_jax.convert"),
    (["quietstar_jax.compile", f"--config={TINY}", "--topology=v4:7x7"], "3 positive dimensions"),
    (["quietstar_jax.compile", "--topology=v4-8"], "--config is required"),
]


@pytest.mark.e2e
def test_every_bad_input_is_one_line_and_exit_status_2():
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda row: _cli(row[0]), BAD_INPUTS))
    for (args, want), out in zip(BAD_INPUTS, results):
        assert_one_error_line(out.returncode, out.stderr, want, args)


def test_one_line_keeps_the_quotes_that_belong_to_the_message():
    assert one_line("Unknown command line flag 'helpp'") == "Unknown command line flag 'helpp'"
    assert one_line("invalid literal for int() with base 10: 'abc'") == "invalid literal for int() with base 10: 'abc'"
    assert one_line(str(KeyError("stpes"))) == "stpes"  # a quoted string: its quotes go
    assert one_line("'a' is not 'b'") == "'a' is not 'b'"
    assert one_line("first\n  second") == "first; second"


# ----------------------------------------------------------------------------- --help
COMMANDS = ("train", "generate", "eval", "compile", "convert")


def _declared_flags(command: str) -> dict:
    """{name: help text} of every flag the command's source defines (flags.DEFINE_*, config_flags)."""
    tree = ast.parse(open(os.path.join(REPO, "quietstar_jax", f"{command}.py")).read())
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "").startswith("DEFINE_"):
            kw = {k.arg: k.value for k in node.keywords}
            position = 3 if node.func.attr == "DEFINE_enum" else 2  # name, default, [enum values,] help
            help_node = kw.get("help", node.args[position] if len(node.args) > position else None)
            found[ast.literal_eval(node.args[0])] = ast.literal_eval(help_node)
    return found


def _words(text: str) -> str:
    return " ".join(text.split())


# (command, help flag, what the output must also hold). Both help flags on every command, absl's other
# spellings once each, and help winning over a bad override on the same command line.
HELP_RUNS = [(c, h, ()) for c in COMMANDS for h in ("--help", "--helpfull")] + [
    ("generate", "-h", ()), ("eval", "--helpshort", ()), ("convert", "-?", ()),
    ("train", "--config.stpes=3 --help", ()), ("convert", "sideways --help", ())]
MUST_SHOW = {  # per command, in both helps
    "train": ("--config.FIELD=VALUE", "quietstar_jax/training/config.py", "docs/algorithm.md",
              "(default: '" + os.path.join(REPO, "configs", "default.py") + "')"),
    "convert": ("{hf_to_jax|jax_to_hf}", "hf_to_jax   an HF folder", "jax_to_hf   a params checkpoint"),
    "compile": ("--config.FIELD=VALUE",),
}
FULL_ONLY = {  # per command, in --helpfull only
    "train": ("flags of absl.logging:", "-v, --verbosity:", "config fields of --config", "quietstar.n_ahead = 6",
              "steps = 12", "optimizer.lr_multipliers = {}"),
    "compile": ("flags of absl.logging:",),
}


@pytest.mark.e2e
def test_help_on_every_command_lists_every_flag_and_exits_0():
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda r: _cli([f"quietstar_jax.{r[0]}", *r[1].split()]), HELP_RUNS))
    for (command, how, _), out in zip(HELP_RUNS, results):
        context = (command, how, out.stdout[-3000:], out.stderr[-2000:])
        assert out.returncode == 0 and "error" not in out.stderr and "Traceback" not in out.stderr, context
        assert out.stdout.startswith(f"usage: python -m quietstar_jax.{command} "), context
        text = _words(out.stdout)
        declared = _declared_flags(command)
        assert declared, command
        for name, help_text in declared.items():
            assert f"--{name}: " in out.stdout or f"--[no]{name}: " in out.stdout, (name, context)
            assert _words(help_text) in text, (name, help_text, context)
        assert "--debug:" in out.stdout and "--helpfull" in out.stdout, context
        for want in MUST_SHOW.get(command, ()):
            assert _words(want) in text, (want, context)
        full = how.endswith("--helpfull")
        for want in FULL_ONLY.get(command, ()):
            assert (_words(want) in text) == full, (want, full, context)
        assert ("run_with_pdb" in out.stdout) is False, context  # absl.app's flags do nothing here


@pytest.mark.e2e
def test_debug_flag_shows_the_traceback():
    out = _cli(["quietstar_jax.convert", "hf_to_jax", "--src=/nonexistent", "--dst=/tmp/x", "--debug"])
    assert out.returncode == 2 and "Traceback" in out.stderr and "error: --src=/nonexistent" in out.stderr


@pytest.mark.e2e
def test_console_is_one_line_per_phase(tmp_path):
    """A first run (the token cache built from scratch) prints phase lines and progress lines only: no
    progress bars (carriage returns), no tfds preparation banners, no absl warnings from tfds."""
    from quietstar_jax.assets.math_corpus import CORPUS_NAME, materialize_math_corpus

    cache = tmp_path / "cache"
    (cache / "math_corpus").mkdir(parents=True)
    (cache / "math_corpus" / CORPUS_NAME).write_bytes(open(materialize_math_corpus(), "rb").read())
    out = _cli(["quietstar_jax.train", f"--config={TINY}", f"--workdir={tmp_path / 'run'}", "--config.steps=1",
                "--config.seq_len=8", "--config.export_hf=False", f"--config.data.cache_dir={cache}"])
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "\r" not in text and "Downloading and preparing" not in text and "dataset_info" not in text, text
    assert "Generating" not in text and "Shuffling" not in text, text
    assert any(line.startswith("data: offline_math") for line in out.stdout.splitlines()), text
    assert len(text.splitlines()) < 25, text


# ----------------------------------------------------------------------------- runs in a workdir
def _tiny_run(**over):
    return builders.run_config(**{"steps": 4, "checkpoint.every_steps": 2, "checkpoint.keep": 5,
                                  "checkpoint.async_save": False, "data.prefetch": 0, "sample_every": 0,
                                  **over})


def _train(config, workdir):
    lines = []
    result = Trainer(config, workdir, log=lines.append).run()
    return result, "\n".join(lines)


def _tb_files(workdir):
    d = os.path.join(workdir, "tensorboard")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def test_finished_run_changed_config_and_resume(tmp_path, capsys):
    wd = str(tmp_path / "run")
    result, log = _train(_tiny_run(), wd)
    assert result["final_step"] == 4 and not result["already_complete"]
    utils = [float(x.split("util ")[1].split("%")[0]) for x in log.splitlines() if "util " in x and "util nan" not in x]
    assert utils and all(0 <= u <= 100 for u in utils), utils
    # The end of a run says where everything is.
    for what in ("tensorboard --logdir", "checkpoints", "final metrics", "params export", "HF export"):
        assert what in log, log
    final = os.path.join(wd, "final_metrics.json")
    before = (open(final).read(), os.path.getmtime(final), _tb_files(wd), os.path.getmtime(os.path.join(wd, "hf_export")))

    # Re-running a finished run: says so, compiles / exports / writes nothing.
    t = time.time()
    result, log = _train(_tiny_run(), wd)
    assert result["already_complete"] and "run already complete at step 4" in log, log
    assert time.time() - t < 5  # no model loading, no compile
    after = (open(final).read(), os.path.getmtime(final), _tb_files(wd), os.path.getmtime(os.path.join(wd, "hf_export")))
    assert after == before

    # A change that matters is an error naming the field; the recorded config stays.
    recorded = open(os.path.join(wd, "config.json")).read()
    with pytest.raises(ConfigError, match=r"seq_len: 8 -> 16"):
        Trainer(_tiny_run(seq_len=16), wd)
    with pytest.raises(ConfigError, match=r"quietstar.n_passes: 2 -> 1"):
        Trainer(_tiny_run(**{"quietstar.n_passes": 1}), wd)
    # A harmless change (more steps, another log cadence) continues the run and is recorded.
    result, log = _train(_tiny_run(steps=6, log_every=2), wd)
    assert result["final_step"] == 6 and "resumed from" in log and "/4" in log, log
    assert open(os.path.join(wd, "config.json")).read() == recorded
    history = [json.loads(x) for x in open(os.path.join(wd, "config_history.jsonl"))]
    assert history[-1]["resumed_at_step"] == 4
    assert history[-1]["changes"]["steps"] == {"old": 4, "new": 6}
    assert json.load(open(final))["step"] == 6


def _truncate_largest_data_file(step_dir):
    files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs
             if "ocdbt.process_0" in r]
    big = max(files, key=os.path.getsize)
    with open(big, "r+b") as f:
        f.truncate(os.path.getsize(big) // 2)


# The damaged reads orbax abandons are finalised whenever Python collects them (the trainer routes them to
# a log file; pytest's own unraisable hook sees them first here).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_checkpoints_are_reported_kept_and_skipped(tmp_path):
    """Two kinds of damage (a truncated data file, a missing _METADATA): each reported as corrupt (not
    as a config mismatch), moved aside (not deleted), and the run resumes from the newest intact step;
    when none is intact, one clear error."""
    wd = str(tmp_path / "run")
    _train(_tiny_run(steps=6, **{"export_hf": False}), wd)
    ckpts = os.path.join(wd, "checkpoints")
    assert sorted(os.listdir(ckpts), key=int) == ["2", "4", "6"]
    _truncate_largest_data_file(os.path.join(ckpts, "6"))
    os.remove(os.path.join(ckpts, "4", "state", "_METADATA"))
    os.remove(os.path.join(wd, "final_metrics.json"))  # as if the run had died after saving step 6
    result, log = _train(_tiny_run(steps=6, **{"export_hf": False}), wd)
    for step in (6, 4):
        assert f"checkpoint {ckpts}/{step} is corrupt" in log, log
    assert "written with a different" not in log, log
    assert "resumed from" in log and log.split("resumed from")[1].split()[0] == f"{ckpts}/2", log
    assert result["final_step"] == 6
    moved = sorted(os.listdir(ckpts + ".corrupt"))
    assert [m.split("-")[0] for m in moved] == ["4", "6"]  # kept for inspection, not deleted
    assert sorted(os.listdir(ckpts), key=int) == ["2", "4", "6"]  # saved again, intact

    for step in ("2", "4", "6"):
        os.remove(os.path.join(ckpts, step, "state", "_METADATA"))
    os.remove(os.path.join(wd, "final_metrics.json"))
    with pytest.raises(CheckpointCorruptError, match=r"every checkpoint in .* is corrupt \(steps \[6, 4, 2\]"):
        Trainer(_tiny_run(steps=6, **{"export_hf": False}), wd, log=lambda s: None)
    gc.collect()  # finalise the abandoned reads inside this test


# ----------------------------------------------------------------------------- the progress line, MFU
def test_progress_line_shows_the_parts_not_the_combined_loss(tmp_path):
    lg = Logger(str(tmp_path), 12, 96, 1e9, Peak(1e11, "test", True), policy_weight=1e6)
    m = {"loss": 855.05, "nll_base": 3.4891, "nll_mix": 3.4374, "policy_loss": 8.516e-4, "reward_mean": 4.88e-4,
         "advantage_pos_frac": 0.5, "mixing_weight": 4.4e-4, "thought_entropy": 3.95, "grad_norm": 7539.8,
         "learning_rate": 1e-6}
    line = lg.format(5, m, dt=2.0)
    lg.close()
    assert "loss 855" not in line and "nll_base 3.4891" in line and "nll_mix 3.4374" in line
    assert "policy 8.516e-04 (x1e+06)" in line and "w +4.40e-04" in line and "reward +4.88e-04" in line
    assert "util 0.5%" in line  # measured CPU peak: "util", not MFU against a spec


def test_utilisation_cannot_exceed_100_percent():
    """Against the measured peak (the best of several large matmul chains), plain matmuls of the shapes
    a small step is made of (attention-sized, an LM head over few rows) stay below 100%. The step's own
    FLOPs are counted on its jaxpr (checked against hand counts in tests/test_compile.py) and its
    utilisation is checked in test_finished_run_changed_config_and_resume."""
    peak = device_peak()
    assert peak.measured and "measured at start-up" in peak.label
    for m, k, n in [(256, 256, 256), (96, 576, 49152)]:
        a, b = jnp.ones((m, k), jnp.float32), jnp.ones((k, n), jnp.float32)
        f = jax.jit(lambda a, b: a @ b)
        f(a, b).block_until_ready()
        best = min(_timed(lambda: f(a, b)) for _ in range(5))
        util = 2 * m * k * n / jax.local_device_count() / best / peak.flops_per_s
        assert 0.001 < util <= 1.0, ((m, k, n), util)


def _timed(run):
    t = time.perf_counter()
    run().block_until_ready()
    return time.perf_counter() - t
