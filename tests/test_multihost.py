"""Multi-process training on this machine: 2 processes x 4 CPU devices (gloo collectives, a localhost
coordinator, joined from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID by the trainer)
against 1 process x 8 devices. Every process runs the real command line (`python -m quietstar_jax.train`
through tests/multihost_driver.py, which records per step what each process fed and computed, and
which files it wrote) on the config in tests/multihost_config.py.

Checked: the same metrics and params as one process; each process feeds only its rows of the global
batch; only process 0 writes the workdir's outputs and the shared token cache; SIGTERM to one process
stops both after the same step with a checkpoint; killing both after a checkpoint and rerunning ends
with params bit-identical to an uninterrupted run.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from cli_runs import assert_one_error_line
from safetensors.numpy import load_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(REPO, "tests", "multihost_driver.py")
CONFIG = os.path.join(REPO, "tests", "multihost_config.py")
STEPS = 8  # multihost_config.py: steps, checkpoint every 2
COMPARED_STEPS = 3  # metrics and params compared with one process after this many steps
TOL = 1e-5
# Per-step sleep in the interrupted runs: JAX's preemption service notices a SIGTERM within ~1 s, so
# the stop must come several steps before the end of an 8-step run.
PACE = "0.7"
pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


class Launch:
    """One run of `processes` processes (8 CPU devices in all) on `workdir`; each process has its own
    stdout / stderr / record file under `logs`."""

    def __init__(self, logs, tag: str, workdir: str, cache: str, processes: int, **env):
        self.tag, self.logs, self.workdir = tag, str(logs), workdir
        base = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", QS_TEST_WATCH=f"{workdir}:{cache}",
                    XLA_FLAGS=f"--xla_force_host_platform_device_count={8 // processes} "
                              "--xla_backend_optimization_level=0",  # halves the compile; same in every run
                    JAX_COMPILATION_CACHE_DIR=os.environ["QS_TEST_JAX_CACHE"],
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
                    **env)
        for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
            base.pop(k, None)
        if processes > 1:
            base.update(JAX_COORDINATOR_ADDRESS=f"localhost:{_free_port()}", JAX_NUM_PROCESSES=str(processes))
        cmd = [sys.executable, DRIVER, f"--config={CONFIG}", f"--config.data.cache_dir={cache}",
               f"--workdir={workdir}"]
        self.procs = []
        for i in range(processes):
            penv = dict(base, QS_TEST_RECORD=self.path(i, "jsonl"))
            if processes > 1:
                penv["JAX_PROCESS_ID"] = str(i)
            with open(self.path(i, "out"), "w") as out, open(self.path(i, "err"), "w") as err:
                self.procs.append(subprocess.Popen(cmd, env=penv, cwd=REPO, stdout=out, stderr=err))

    def path(self, i: int, kind: str) -> str:
        return os.path.join(self.logs, f"{self.tag}.p{i}.{kind}")

    def text(self, i: int, kind: str = "out") -> str:
        with open(self.path(i, kind)) as f:
            return f.read()

    def tails(self) -> str:
        return "\n".join(f"--- {self.tag} process {i} {kind}:\n{self.text(i, kind)[-2500:]}"
                         for i in range(len(self.procs)) for kind in ("out", "err"))

    def wait(self, timeout: float, what: str = "finish") -> list[int]:
        deadline = time.time() + timeout
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"{self.tag}: the processes did not {what} within {timeout:.0f}s (one waiting for "
                            f"the other in a collective?)\n{self.tails()}")
        return [p.returncode for p in self.procs]

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait()

    def records(self, i: int) -> list[dict]:
        return [r for r in _lines(self.path(i, "jsonl")) if "step" in r]

    def writes(self, i: int) -> list[dict]:
        return [r for r in _lines(self.path(i, "jsonl")) if "write" in r]


def _lines(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def _run(logs, tag, workdir, cache, processes, timeout=240, **env) -> Launch:
    launch = Launch(logs, tag, workdir, cache, processes, **env)
    codes = launch.wait(timeout)
    assert codes == [0] * processes, launch.tails()
    return launch


def _final_params(workdir: str) -> dict:
    exp = os.path.join(workdir, "hf_export")
    return {**load_file(os.path.join(exp, "model.safetensors")),
            **{"qs." + k: v for k, v in load_file(os.path.join(exp, "quietstar.safetensors")).items()}}


def _checkpoints(workdir: str) -> list[int]:
    """Finished checkpoint steps (orbax renames a step's folder to its number when it is complete)."""
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _poll(cond, timeout: float, launch: Launch, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        if any(p.poll() is not None for p in launch.procs):
            break
        time.sleep(0.05)
    launch.kill()
    pytest.fail(f"{launch.tag}: {what} did not happen\n{launch.tails()}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted 2-process run (first, on an empty token cache) and a 1-process run."""
    from quietstar_jax.assets.math_corpus import CORPUS_NAME, materialize_math_corpus

    root = tmp_path_factory.mktemp("multihost")
    cache = root / "cache"
    (cache / "math_corpus").mkdir(parents=True)
    (cache / "math_corpus" / CORPUS_NAME).write_bytes(open(materialize_math_corpus(), "rb").read())
    logs = root / "logs"
    logs.mkdir()
    dump = {"QS_TEST_DUMP_STEP": str(COMPARED_STEPS)}
    multi = _run(logs, "multi", str(root / "multi"), str(cache), 2, **dump)
    single = _run(logs, "single", str(root / "single"), str(cache), 1, **dump)
    return {"multi": multi, "single": single, "root": root, "cache": str(cache), "logs": logs}


def test_same_metrics_and_params_as_one_process(runs):
    single, multi = runs["single"], runs["multi"]
    ref, m0, m1 = single.records(0), multi.records(0), multi.records(1)
    assert [r["step"] for r in ref] == [r["step"] for r in m0] == [r["step"] for r in m1] == list(range(1, STEPS + 1))
    for a, b, c in zip(ref[:COMPARED_STEPS], m0, m1):
        assert b["metrics"] == c["metrics"], "the processes disagree on a replicated metric"
        assert sorted(a["metrics"]) == sorted(b["metrics"])
        for k in a["metrics"]:
            np.testing.assert_allclose(b["metrics"][k], a["metrics"][k], rtol=0, atol=TOL,
                                       err_msg=f"step {a['step']} {k}")
    last = ref[COMPARED_STEPS - 1]["metrics"]
    assert last["policy_loss"] > 1e-5 and abs(last["reward_mean"]) > 1e-5 and abs(last["mixing_weight"]) > 1e-4, last
    pa = np.load(single.path(0, "jsonl") + f".params{COMPARED_STEPS}.npz")
    pb = np.load(multi.path(0, "jsonl") + f".params{COMPARED_STEPS}.npz")
    assert sorted(pa) == sorted(pb) and not os.path.exists(multi.path(1, "jsonl") + f".params{COMPARED_STEPS}.npz")
    for k in pa:
        np.testing.assert_allclose(pb[k], pa[k], rtol=0, atol=TOL, err_msg=k)
    # The final HF export, gathered from both processes, holds the model one process exports. After all 8
    # steps at SGD rate 1 float32 rounding has grown to ~2e-5 (measured); a shard gathered to the wrong
    # place would be off by the params' own size (~5e-2).
    fa, fb = _final_params(single.workdir), _final_params(multi.workdir)
    assert sorted(fa) == sorted(fb)
    for k in fa:
        np.testing.assert_allclose(fb[k], fa[k], rtol=0, atol=1e-3, err_msg=k)


def test_each_process_feeds_only_its_rows(runs):
    """Process h of 2 feeds rows [4h, 4h + 4) of the global batch one process feeds whole, and its
    devices hold exactly those rows of the global array."""
    ref = runs["single"].records(0)
    for h in (0, 1):
        for r, mine in zip(ref, runs["multi"].records(h)):
            assert r["rows"] == list(range(8))
            assert mine["rows"] == list(range(4 * h, 4 * h + 4)), (h, mine["step"], mine["rows"])
            assert mine["tokens"] == r["tokens"][4 * h:4 * h + 4], (h, mine["step"])


def test_only_process_0_writes_outputs_and_the_token_cache(runs):
    multi, cache = runs["multi"], runs["cache"]
    wd = multi.workdir
    assert sorted(os.listdir(wd)) == ["checkpoints", "config.json", "final_metrics.json", "hf_export",
                                      "params_export", "tensorboard"]
    assert len(os.listdir(os.path.join(wd, "tensorboard"))) == 1
    # Process 1 only writes its share of the sharded state: checkpoints and the orbax params export.
    shared = (os.path.join(wd, "checkpoints"), os.path.join(wd, "params_export"))
    p1 = [w["path"] for w in multi.writes(1)]
    assert p1, "the audit hook recorded nothing for process 1"
    outside = sorted({p for p in p1 if p != wd and not p.startswith(shared)})
    assert not outside, f"process 1 wrote {outside}"
    assert os.path.join(wd, "params_export", "config.json") not in p1
    # Process 0 wrote every output, and prepared the token cache both processes read.
    p0 = {w["path"] for w in multi.writes(0)}
    for out in ("config.json", "final_metrics.json", "hf_export", "params_export/config.json"):
        assert os.path.join(wd, out) in p0, out
    assert any(p.startswith(os.path.join(wd, "tensorboard") + os.sep) for p in p0)
    assert any(p.startswith(os.path.join(cache, "tokenized")) for p in p0)
    # Only process 0 prints (process 1's stdout holds at most gloo's connection lines, which gloo's threads
    # write unsynchronised: a line may carry a fragment of another, e.g. "5[Gloo] Rank 4 is connected ...").
    assert "step     1/8" in multi.text(0)
    assert [ln for ln in multi.text(1).splitlines() if ln.strip() and "[Gloo]" not in ln] == []


def test_sigterm_to_one_process_stops_both_and_resume_is_exact(runs):
    """SIGTERM to process 1 only: both stop after the same step, with a checkpoint of it. Rerun, kill
    both (SIGKILL) once a later checkpoint exists, rerun: the final params equal the uninterrupted run's
    bit for bit."""
    root, cache, logs = runs["root"], runs["cache"], runs["logs"]
    wd = str(root / "preempted")

    run = Launch(logs, "sigterm", wd, cache, 2, QS_TEST_PACE=PACE)
    _poll(lambda: run.records(1), 180, run, "a first step on process 1")
    run.procs[1].send_signal(signal.SIGTERM)
    assert run.wait(90, what="stop after SIGTERM to process 1") == [0, 0], run.tails()
    s = run.records(0)[-1]["step"]
    assert run.records(1)[-1]["step"] == s, "the processes stopped after different steps"
    assert f"preemption signal: saved step {s}, exiting" in run.text(0), run.tails()
    assert 1 <= s < STEPS - 2 and _checkpoints(wd)[-1] == s, (s, _checkpoints(wd))
    assert not os.path.exists(os.path.join(wd, "final_metrics.json"))

    run = Launch(logs, "sigkill", wd, cache, 2, QS_TEST_PACE=PACE)
    k = _poll(lambda: max([c for c in _checkpoints(wd) if c > s], default=None), 180, run,
              f"a checkpoint after step {s}")
    run.kill()
    assert [p.returncode for p in run.procs] == [-signal.SIGKILL] * 2, run.tails()
    assert f"resumed from {wd}/checkpoints/{s}" in run.text(0), run.tails()
    assert k < STEPS and not os.path.exists(os.path.join(wd, "hf_export")), k
    k = _checkpoints(wd)[-1]

    run = _run(logs, "resumed", wd, cache, 2)
    assert f"resumed from {wd}/checkpoints/{k}" in run.text(0), run.tails()
    assert [r["step"] for r in run.records(0)] == list(range(k + 1, STEPS + 1))
    ref = runs["multi"]
    assert run.records(0)[-1]["metrics"] == ref.records(0)[-1]["metrics"]
    a, b = _final_params(ref.workdir), _final_params(wd)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)


def _train_cli(workdir, env, *args):
    """`python -m quietstar_jax.train` on tests/multihost_config.py with `env` added; returns the Popen."""
    full = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1",
                XLA_FLAGS="--xla_force_host_platform_device_count=4", **env)
    return subprocess.Popen([sys.executable, "-m", "quietstar_jax.train", f"--config={CONFIG}", f"--workdir={workdir}",
                             *args], env=full, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _one_error_line(proc, timeout=120) -> str:
    out, err = proc.communicate(timeout=timeout)
    return assert_one_error_line(proc.returncode, err, context=out)


BAD_ENVIRONMENTS = [  # (environment of one process, text its one error line must contain)
    ({"JAX_COORDINATOR_ADDRESS": "localhost:1"}, "set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID"),
    ({"JAX_NUM_PROCESSES": "2"}, "set both JAX_NUM_PROCESSES and JAX_PROCESS_ID"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2", "JAX_COORDINATOR_ADDRESS": "localhost:1"},
     "JAX_PROCESS_ID=2 must be in [0, JAX_NUM_PROCESSES=2)"),
]


def test_an_incomplete_process_environment_is_one_line(tmp_path):
    """A half-described multi-process run fails before loading anything, instead of running N separate
    runs on one workdir or waiting minutes for a coordinator."""
    procs = [_train_cli(str(tmp_path / f"run{i}"), env) for i, (env, _) in enumerate(BAD_ENVIRONMENTS)]
    for proc, (env, want) in zip(procs, BAD_ENVIRONMENTS):
        assert want in _one_error_line(proc), env


def test_a_failure_of_process_0_stops_the_others_with_one_line(tmp_path):
    """Process 0 fails while preparing the shared token cache (an empty corpus): the process waiting
    for it stops at once with one line naming process 0's error, instead of hanging in a collective."""
    corpus = tmp_path / "empty.jsonl"
    corpus.write_text('{"text": ""}\n')
    env = {"JAX_COORDINATOR_ADDRESS": f"localhost:{_free_port()}", "JAX_NUM_PROCESSES": "2"}
    args = ["--config.data.source=jsonl", f"--config.data.path={corpus}", f"--config.data.cache_dir={tmp_path}"]
    procs = [_train_cli(str(tmp_path / "run"), dict(env, JAX_PROCESS_ID=str(i)), *args) for i in range(2)]
    first, other = (_one_error_line(p, timeout=60) for p in procs)
    assert "no document has any token" in first and "process 1" not in first, first
    assert "process 0 failed while preparing the token cache: EmptyCorpusError" in other, other
