"""The training system end to end: exact resume after SIGKILL and SIGTERM, NaN stop keeps the last
checkpoint, config errors before any compile, CLI overrides."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from quietstar_jax.model import ConfigError
from quietstar_jax.training import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "tiny.py")
STEPS = 8
ARGS = [f"--config={TINY}", f"--config.steps={STEPS}", "--config.checkpoint.every_steps=2",
        "--config.checkpoint.keep=2", "--config.data.prefetch=0", "--config.seq_len=16",
        "--config.quietstar.n_ahead=5"]


@pytest.fixture(scope="module", autouse=True)
def _compile_cache(tmp_path_factory):
    # The runs of a test compile the same step: a persistent cache compiles it once.
    os.environ["QS_TEST_JAX_CACHE"] = str(tmp_path_factory.mktemp("jax_cache"))
    yield
    os.environ.pop("QS_TEST_JAX_CACHE", None)


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1",
               JAX_COMPILATION_CACHE_DIR=os.environ.get("QS_TEST_JAX_CACHE", ""),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    env.pop("XLA_FLAGS", None)  # one device, like the CPU default
    return env


def _cmd(workdir):
    return [sys.executable, "-m", "quietstar_jax.train", f"--workdir={workdir}", *ARGS]


def _run(workdir):
    out = subprocess.run(_cmd(workdir), env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def _run_until(workdir, line_prefix, sig):
    """Starts a run, sends `sig` once a progress line starting with line_prefix appears."""
    p = subprocess.Popen(_cmd(workdir), env=_env(), cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.time() + 600
    for line in p.stdout:
        lines.append(line)
        if line.startswith(line_prefix):
            p.send_signal(sig)
            break
        assert time.time() < deadline, "".join(lines)
    rest = p.stdout.read()
    p.wait(timeout=120)
    return p.returncode, "".join(lines) + rest


def _final_params(workdir):
    exp = os.path.join(workdir, "hf_export")
    return {**load_file(os.path.join(exp, "model.safetensors")),
            **{"qs." + k: v for k, v in load_file(os.path.join(exp, "quietstar.safetensors")).items()}}


@pytest.mark.e2e
def test_resume_after_sigkill_and_sigterm_is_bit_exact(tmp_path):
    ref = str(tmp_path / "ref")
    _run(ref)
    run = str(tmp_path / "run")
    # SIGKILL mid-run (no chance to clean up), possibly during an async checkpoint write.
    code, out = _run_until(run, "step     5/", signal.SIGKILL)
    assert code == -signal.SIGKILL, out
    assert not os.path.exists(os.path.join(run, "hf_export"))
    # Same command: resumes from the latest complete checkpoint; SIGTERM (preemption) -> save + exit 0.
    code, out = _run_until(run, "step     7/", signal.SIGTERM)
    assert "resumed from" in out, out
    assert code == 0 and "preemption signal: saved step" in out, out
    out = _run(run)
    assert "resumed from" in out and "/7" in out.split("resumed from")[1].split("\n")[0], out
    a, b = _final_params(ref), _final_params(run)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _tiny(tmp_path, **over):
    c = config_lib.base_config()
    exec(open(TINY).read(), g := {})  # noqa: S102 - the repo's own config file
    c = g["get_config"]()
    return config_lib.override(c, **over)


def test_nan_stop_leaves_latest_checkpoint_intact(tmp_path):
    from quietstar_jax.train import run_training as train
    from quietstar_jax.training.checkpoint import Checkpointer

    # A huge learning rate blows the params up within a few steps -> non-finite loss.
    c = _tiny(tmp_path, **{"optimizer.learning_rate": 1e30, "optimizer.warmup_steps": 0, "nan_policy": "stop",
                           "checkpoint.every_steps": 1, "checkpoint.async_save": False, "steps": 6,
                           "global_batch_size": 8, "data.prefetch": 0, "log_every": 0, "seq_len": 8,
                           "quietstar.n_ahead": 4, "quietstar.n_ahead_talk": 2, "export_hf": False})
    wd = str(tmp_path / "nan")
    with pytest.raises(FloatingPointError, match="non-finite.*latest checkpoint left intact"):
        train(c, wd)
    ck = Checkpointer(os.path.join(wd, "checkpoints"), c.checkpoint, meta={})
    last = ck.latest_step()
    assert last is not None and 1 <= last < 6
    ck.close()


def test_config_errors_before_compile(tmp_path):
    c = _tiny(tmp_path)
    for over, msg in [({"model.source": "hf", "model.path": str(tmp_path / "nope")}, "model.path"),
                      ({"grad_accum_steps": 3}, "not divisible by grad_accum_steps"),
                      ({"data.source": "jsonl", "data.path": str(tmp_path / "missing.jsonl")}, "missing.jsonl"),
                      ({"quietstar.n_ahead": 2}, "n_ahead"),
                      ({"optimizer.schedule": "exp"}, "optimizer.schedule"),
                      ({"nan_policy": "ignore"}, "nan_policy")]:
        c2 = _tiny(tmp_path, **over)
        with pytest.raises((ConfigError, ValueError, FileNotFoundError), match=msg):
            config_lib.validate(c2)
    config_lib.validate(c)


@pytest.mark.e2e
def test_cli_rejects_unknown_override(tmp_path):
    out = subprocess.run([sys.executable, "-m", "quietstar_jax.train", f"--config={TINY}",
                          "--config.optimizer.lerning_rate=1.0", f"--workdir={tmp_path}"],
                         env=_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "lerning_rate" in out.stderr
