"""launch/ scripts, run for real against a stub gcloud first on PATH.

The stub records each call's argv (one JSON list per line) and answers from a small rule table
(e.g. `describe` fails for a TPU that does not exist yet). The tests check the recorded command lines,
and evaluate the remote --command strings with `bash -c` in a stand-in worker home where python, hf,
uv, sudo, tar, sleep, pgrep and pkill are stubs or fenced wrappers -- the way the worker's shell
re-parses them after ssh. Nothing here reaches the network: curl is a stub that records and fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # runs the launch scripts end to end (gcloud stubbed)

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
SCRIPTS = ["env.sh", "create.sh", "setup.sh", "fetch.sh", "train.sh", "stop.sh"]
# accelerator type, generation, default zone, runtime version
GENERATIONS = [
    ("v4-16", "v4", "us-central2-b", "tpu-ubuntu2204-base"),
    ("v5litepod-16", "v5e", "us-west4-a", "v2-alpha-tpuv5-lite"),
    ("v5p-8", "v5p", "us-east5-a", "v2-alpha-tpuv5"),
    ("v6e-8", "v6e", "us-east5-b", "v2-alpha-tpuv6e"),
]
WORKDIR = "gs://test-bucket/runs/quietstar-mistral7b-v4"
TRAIN_DEFAULT_ARGS = [
    "--config=configs/tpu_v4.py", f"--workdir={WORKDIR}",
    "--config.model.path=/mnt/disks/models/Mistral-7B-v0.1",
    "--config.data.path=/mnt/disks/data/open-web-math", "--config.run_name=quietstar-mistral7b-v4",
]
WHERE = ["--zone=us-central2-b", "--project=test-proj"]

GCLOUD_STUB = """#!{python} -S
import json, os, shutil, sys
argv = sys.argv[1:]
log = os.environ["GCLOUD_STUB_LOG"]
with open(log, "a") as f:
    f.write(json.dumps(argv) + "\\n")
if "scp" in argv:  # keep the file that would be copied
    shutil.copy(argv[argv.index("scp") + 1], log + ".scp")
with open(os.environ["GCLOUD_STUB_RULES"]) as f:
    rules = json.load(f)
for i, rule in enumerate(rules):  # the first rule whose words all appear in argv answers
    if all(word in argv for word in rule["match"]):
        counter = "%s.rule%d" % (log, i)
        n = int(open(counter).read()) if os.path.exists(counter) else 0
        open(counter, "w").write(str(n + 1))
        reply = rule["replies"][min(n, len(rule["replies"]) - 1)]  # the last reply repeats
        sys.stdout.write(reply.get("out", ""))
        sys.stderr.write(reply.get("err", ""))
        sys.exit(reply.get("rc", 0))
"""
# Records argv (and HF_TOKEN from its environment) to the file named by $RECORD_LOG, exits with rc.
RECORDER = """#!{python} -S
import json, os, sys
with open(os.environ["RECORD_LOG"], "a") as f:
    f.write(json.dumps({{"tool": os.path.basename(sys.argv[0]), "argv": sys.argv[1:],
                        "hf_token": os.environ.get("HF_TOKEN")}}) + "\\n")
sys.exit({rc})
"""
# Unless a test says otherwise: nothing exists yet, and gcloud has no default project.
DEFAULT_RULES = [
    {"match": ["describe"], "replies": [{"rc": 1, "err": "ERROR: (gcloud) NOT_FOUND\n"}]},
    {"match": ["config", "get-value", "project"], "replies": [{"out": "\n"}]},
]


def _script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def _jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def flag(call: list[str], name: str) -> str:
    """The value of the one --name=value in a recorded argv."""
    values = [a.split("=", 1)[1] for a in call if a.startswith(f"--{name}=")]
    assert len(values) == 1, (name, call)
    return values[0]


def is_query(call: list[str]) -> bool:
    """The read-only existence/state checks (skipped by DRY_RUN=1)."""
    return "describe" in call and any(a in ("--format=value(state)", "--format=value(state.state)") for a in call)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A copy of launch/ and configs/ in a fresh git checkout, with configs for every generation."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(LAUNCH, root / "launch")
    shutil.copytree(REPO / "configs", root / "configs", ignore=shutil.ignore_patterns("__pycache__"))
    for _, gen, _, _ in GENERATIONS:  # the v5e/v5p/v6e configs may not exist yet
        (root / "configs" / f"tpu_{gen}.py").touch()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


class Gcloud:
    """Runs launch/ scripts with the stub gcloud (and a failing curl) first on PATH."""

    def __init__(self, repo: Path, tmp: Path):
        self.repo, self.tmp = repo, tmp
        self.bin = tmp / "bin"
        self.log = tmp / "gcloud.jsonl"
        self.curl_log = tmp / "curl.jsonl"
        self.rules: list[dict] = []
        _script(self.bin / "gcloud", GCLOUD_STUB.format(python=sys.executable))
        _script(self.bin / "curl", RECORDER.format(python=sys.executable, rc=1))
        (tmp / "home").mkdir()
        (tmp / "tmp").mkdir()
        self.env = {
            "PATH": f"{self.bin}:{os.environ['PATH']}", "HOME": str(tmp / "home"), "TMPDIR": str(tmp / "tmp"),
            "LANG": "C.UTF-8", "PROJECT": "test-proj", "BUCKET": "gs://test-bucket",
            "GCLOUD_STUB_LOG": str(self.log), "GCLOUD_STUB_RULES": str(tmp / "rules.json"),
            "RECORD_LOG": str(self.curl_log),
        }

    def reply(self, *match: str, replies: list[dict]) -> None:
        """Answer calls whose argv holds all of `match` with `replies` in turn (the last one repeats)."""
        self.rules.append({"match": list(match), "replies": replies})

    def environ(self, **env) -> dict:
        (self.tmp / "rules.json").write_text(json.dumps(self.rules + DEFAULT_RULES))
        e = dict(self.env)
        for k, v in env.items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = str(v)
        return e

    def run(self, script: str, *args: str, **env) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.repo / "launch" / script), *args], env=self.environ(**env),
                              capture_output=True, text=True, timeout=60)

    def bash(self, command: str, **env) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", command], env=self.environ(**env), cwd=self.repo,
                              capture_output=True, text=True, timeout=60)

    def calls(self) -> list[list[str]]:
        return _jsonl(self.log)

    def clear(self) -> None:
        for p in self.tmp.glob("gcloud.jsonl*"):
            p.unlink()

    def only(self, *words: str) -> list[str]:
        """The one recorded call holding all of `words`."""
        found = [c for c in self.calls() if all(w in c for w in words)]
        assert len(found) == 1, (words, self.calls())
        return found[0]


@pytest.fixture
def gc(repo, tmp_path):
    g = Gcloud(repo, tmp_path)
    yield g
    assert _jsonl(g.curl_log) == [], "curl was called"


NO_SESSION = 99999999  # a session id no process has


class Worker:
    """A stand-in TPU worker: `bash -c COMMAND` in a home with stub tools (the shell ssh hands it to)."""

    def __init__(self, tmp: Path):
        self.home = tmp / "worker"
        self.bin = tmp / "worker-bin"
        self.log = tmp / "worker.jsonl"
        (self.home / "quietstar_jax").mkdir(parents=True)
        recorder = RECORDER.format(python=sys.executable, rc=0)
        for tool in ("venv/bin/python", "venv/bin/hf"):
            _script(self.home / tool, recorder)
        for tool in ("uv", "tar", "gcloud"):
            _script(self.bin / tool, recorder)
        _script(self.bin / "sleep", "#!/bin/sh\nexit 0\n")
        _script(self.bin / "sudo", '#!/bin/sh\nexec "$@"\n')
        # pgrep/pkill only ever see the session WORKER_SID: a test must not touch other processes.
        for tool in ("pgrep", "pkill"):
            real = shutil.which(tool)
            if real is None:
                pytest.skip(f"{tool} not installed")
            _script(self.bin / tool, f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{tmp}/{tool}.args"\n'
                                     f'exec {real} -s "$WORKER_SID" "$@"\n')

    def sh(self, command: str, sid: int = NO_SESSION) -> subprocess.CompletedProcess:
        env = {"PATH": f"{self.bin}:{os.environ['PATH']}", "HOME": str(self.home), "USER": os.environ.get(
            "USER", "root"), "LANG": "C.UTF-8", "RECORD_LOG": str(self.log), "WORKER_SID": str(sid)}
        return subprocess.run(["bash", "-c", command], env=env, cwd=self.home, capture_output=True, text=True,
                              timeout=30)

    def calls(self, tool: str, n: int | None = None, timeout: float = 10.0) -> list[list[str]]:
        """argv of each call of `tool`; with n, waits for n of them (background processes)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r["argv"] for r in _jsonl(self.log) if r["tool"] == tool]
            if n is None or len(found) >= n or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def records(self, tool: str) -> list[dict]:
        return [r for r in _jsonl(self.log) if r["tool"] == tool]


@pytest.fixture
def worker(tmp_path):
    return Worker(tmp_path)


# --- the scripts themselves ----------------------------------------------------------------------

def test_scripts_parse():
    for name in SCRIPTS:
        r = subprocess.run(["bash", "-n", str(LAUNCH / name)], capture_output=True, text=True)
        assert r.returncode == 0, (name, r.stderr)


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck not installed (Debian: apt-get install shellcheck; .ci/run installs it)")
def test_shellcheck_clean():
    r = subprocess.run(["shellcheck", "-x", *(f"launch/{n}" for n in SCRIPTS)], cwd=REPO, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# --- create ----------------------------------------------------------------------------------------

def test_create_v4_default(gc):
    gc.reply("tpu-vm", "describe", replies=[{"rc": 1}, {"out": "READY\tV4_16\n"}])
    r = gc.run("create.sh")
    assert r.returncode == 0, r.stderr
    calls = gc.calls()
    assert [c[:4] for c in calls] == [["compute", "tpus", "tpu-vm", "describe"],
                                      ["compute", "tpus", "tpu-vm", "create"],
                                      ["compute", "tpus", "tpu-vm", "describe"]]
    assert calls[1] == ["compute", "tpus", "tpu-vm", "create", "quietstar-v4-16", *WHERE,
                        "--accelerator-type=v4-16", "--version=tpu-ubuntu2204-base"]


def test_create_spot(gc):
    gc.reply("tpu-vm", "describe", replies=[{"rc": 1}, {"out": "READY\n"}])
    assert gc.run("create.sh", SPOT=1).returncode == 0
    assert gc.only("create")[-1] == "--spot"


def test_create_existing_tpu_is_reused(gc):
    gc.reply("tpu-vm", "describe", replies=[{"out": "READY\n"}])
    r = gc.run("create.sh")
    assert r.returncode == 0, r.stderr
    assert not [c for c in gc.calls() if "create" in c]
    assert "already exists" in r.stderr and "not creating it again" in r.stderr


def test_create_preempted_tpu_says_delete_first(gc):
    gc.reply("tpu-vm", "describe", replies=[{"out": "PREEMPTED\n"}])
    r = gc.run("create.sh")
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "PREEMPTED" in r.stderr and "stop.sh --delete" in r.stderr
    assert not [c for c in gc.calls() if "create" in c]


def test_project_defaults_to_gcloud_config(gc):
    gc.reply("config", "get-value", "project", replies=[{"out": "cfg-proj\n"}])
    gc.reply("tpu-vm", "describe", replies=[{"rc": 1}, {"out": "READY\n"}])
    assert gc.run("create.sh", PROJECT=None).returncode == 0
    assert flag(gc.only("create"), "project") == "cfg-proj"


@pytest.mark.parametrize("acc,gen,zone,runtime", GENERATIONS)
def test_generation_defaults(gc, worker, acc, gen, zone, runtime):
    gc.reply("tpu-vm", "describe", replies=[{"rc": 1}, {"out": "READY\n"}])
    assert gc.run("create.sh", ACCELERATOR_TYPE=acc).returncode == 0
    assert gc.only("create") == ["compute", "tpus", "tpu-vm", "create", f"quietstar-{acc}", f"--zone={zone}",
                                 "--project=test-proj", f"--accelerator-type={acc}", f"--version={runtime}"]
    gc.clear()
    gc.rules = []
    gc.reply("queued-resources", "describe", replies=[{"rc": 1}, {"out": "ACTIVE\n"}])
    gc.reply("tpu-vm", "describe", replies=[{"out": "READY\n"}])
    assert gc.run("create.sh", ACCELERATOR_TYPE=acc, QUEUED=1).returncode == 0
    queued = gc.only("queued-resources", "create")
    assert [flag(queued, f) for f in ("zone", "accelerator-type", "runtime-version")] == [zone, acc, runtime]
    gc.clear()
    r = gc.run("train.sh", ACCELERATOR_TYPE=acc)
    assert r.returncode == 0, r.stderr
    ssh = gc.only("ssh")
    assert flag(ssh, "zone") == zone and flag(ssh, "worker") == "all" and f"quietstar-{acc}" in ssh
    assert worker.sh(flag(ssh, "command")).returncode == 0
    [argv] = worker.calls("python", 1)
    assert argv[2:5] == [f"--config=configs/tpu_{gen}.py", f"--workdir=gs://test-bucket/runs/quietstar-mistral7b-{gen}",
                         "--config.model.path=/mnt/disks/models/Mistral-7B-v0.1"]


@pytest.mark.parametrize("gen", ["v4", "v5e", "v5p", "v6e"])
def test_default_slice_is_the_one_the_config_is_sized_for(gc, gen):
    """CONFIG=configs/tpu_<gen>.py alone picks the accelerator type whose chip grid is the config's
    tpu_topology (the slice its memory table was compiled for), and the config's mesh uses every chip."""
    import math

    from quietstar_jax.tpu.topology import parse_topology
    from quietstar_jax.training.config import config_from_file

    r = gc.bash('. launch/env.sh && printf %s "$ACCELERATOR_TYPE"', CONFIG=f"configs/tpu_{gen}.py")
    assert r.returncode == 0, r.stderr
    c = config_from_file(str(REPO / "configs" / f"tpu_{gen}.py"))
    (gen_a, dims_a), (gen_c, dims_c) = parse_topology(r.stdout), parse_topology(c.tpu_topology)
    assert (gen_a.generation, dims_a) == (gen_c.generation, dims_c) == (gen, dims_c), (r.stdout, c.tpu_topology)
    assert math.prod(dict(c.mesh).values()) == math.prod(dims_c)


def test_generation_from_config(gc, worker):
    gc.reply("tpu-vm", "describe", replies=[{"rc": 1}, {"out": "READY\n"}])
    assert gc.run("create.sh", CONFIG="configs/tpu_v6e.py").returncode == 0
    create = gc.only("create")
    assert [flag(create, f) for f in ("zone", "accelerator-type", "version")] == ["us-east5-b", "v6e-8",
                                                                                  "v2-alpha-tpuv6e"]
    gc.clear()
    assert gc.run("train.sh", CONFIG="configs/tpu_v6e.py", ZONE="europe-west4-a").returncode == 0
    assert flag(gc.only("ssh"), "zone") == "europe-west4-a"  # explicit settings win over the defaults
    worker.sh(flag(gc.only("ssh"), "command"))
    assert worker.calls("python", 1)[0][2] == "--config=configs/tpu_v6e.py"


# --- queued resources -------------------------------------------------------------------------------

def test_queued_create_waits_until_active(gc):
    gc.reply("queued-resources", "describe", replies=[
        {"rc": 1}, {"out": "WAITING_FOR_RESOURCES\n"}, {"out": "WAITING_FOR_RESOURCES\n"},
        {"out": "PROVISIONING\n"}, {"out": "ACTIVE\n"}, {"out": "BOGUS-polled-too-often\n"}])
    gc.reply("tpu-vm", "describe", replies=[{"out": "READY\n"}])
    r = gc.run("create.sh", QUEUED=1, SPOT=1, VALID_UNTIL_DURATION="6h", POLL_SECONDS=0)
    assert r.returncode == 0, r.stderr
    calls = gc.calls()
    assert calls[1] == ["compute", "tpus", "queued-resources", "create", "quietstar-v4-16",
                        "--node-id=quietstar-v4-16", *WHERE, "--accelerator-type=v4-16",
                        "--runtime-version=tpu-ubuntu2204-base", "--spot", "--valid-until-duration=6h"]
    polls = [c for c in calls if "queued-resources" in c and "describe" in c]
    assert len(polls) == 5  # the existence check, then WAITING x2, PROVISIONING, ACTIVE
    assert all(c[4] == "quietstar-v4-16" and "--format=value(state.state)" in c for c in polls)
    assert calls[-1][:5] == ["compute", "tpus", "tpu-vm", "describe", "quietstar-v4-16"]  # the node, once ACTIVE
    assert "WAITING_FOR_RESOURCES" in r.stderr and "ACTIVE" in r.stderr


def test_queued_best_effort_uses_alpha(gc):
    gc.reply("queued-resources", "describe", replies=[{"rc": 1}, {"out": "ACTIVE\n"}])
    gc.reply("tpu-vm", "describe", replies=[{"out": "READY\n"}])
    assert gc.run("create.sh", QUEUED=1, BEST_EFFORT=1, ACCELERATOR_TYPE="v5litepod-16").returncode == 0
    create = gc.only("queued-resources", "create")
    assert create[:4] == ["alpha", "compute", "tpus", "queued-resources"] and create[-1] == "--best-effort"


def test_queued_timeout(gc):
    gc.reply("queued-resources", "describe", replies=[{"rc": 1}, {"out": "WAITING_FOR_RESOURCES\n"}])
    r = gc.run("create.sh", QUEUED=1, QUEUED_TIMEOUT=0, POLL_SECONDS=0)
    assert r.returncode != 0
    assert "still WAITING_FOR_RESOURCES after 0 s" in r.stderr.splitlines()[-1]
    assert not [c for c in gc.calls() if "tpu-vm" in c]


def test_queued_failed(gc):
    gc.reply("queued-resources", "describe", replies=[{"rc": 1}, {"out": "FAILED\n"}])
    r = gc.run("create.sh", QUEUED=1, POLL_SECONDS=0)
    assert r.returncode != 0 and "is FAILED" in r.stderr.splitlines()[-1]


def test_queued_existing_request_is_not_requested_again(gc):
    gc.reply("queued-resources", "describe", replies=[{"out": "WAITING_FOR_RESOURCES\n"}, {"out": "ACTIVE\n"}])
    gc.reply("tpu-vm", "describe", replies=[{"out": "READY\n"}])
    r = gc.run("create.sh", QUEUED=1, POLL_SECONDS=0)
    assert r.returncode == 0, r.stderr
    assert not [c for c in gc.calls() if "create" in c]
    assert "not requesting it again" in r.stderr


# --- setup, fetch, train, stop ------------------------------------------------------------------------

def test_every_host_acts(gc):
    """Code copy, setup, fetch, train and stop go to all workers of the slice, in its zone and project."""
    for script in ("setup.sh", "fetch.sh", "train.sh", "stop.sh"):
        r = gc.run(script)
        assert r.returncode == 0, (script, r.stderr)
    calls = gc.calls()
    assert [c[3] for c in calls] == ["scp", "ssh", "ssh", "ssh", "ssh"]
    for c in calls:
        assert flag(c, "worker") == "all", c
        assert flag(c, "zone") == "us-central2-b" and flag(c, "project") == "test-proj"
    assert calls[0][5] == "quietstar-v4-16:/tmp/quietstar_jax.tar.gz"
    assert all(c[4] == "quietstar-v4-16" for c in calls[1:])


def test_setup_copies_the_checkout_and_installs_it(gc, worker):
    r = gc.run("setup.sh")
    assert r.returncode == 0, r.stderr
    scp, ssh = gc.calls()
    assert scp[:4] == ["compute", "tpus", "tpu-vm", "scp"]
    assert scp[5:] == ["quietstar-v4-16:/tmp/quietstar_jax.tar.gz", *WHERE, "--worker=all"]
    with tarfile.open(str(gc.log) + ".scp") as tar:
        names = set(tar.getnames())
    assert {"launch/env.sh", "launch/train.sh", "configs/tpu_v4.py"} <= names
    assert not Path(scp[4]).exists()  # the local tarball is removed
    w = worker.sh(flag(ssh, "command"))
    assert w.returncode == 0, w.stderr
    home = str(worker.home)
    assert worker.calls("tar") == [["-xzf", "/tmp/quietstar_jax.tar.gz", "-C", f"{home}/quietstar_jax"]]
    [install] = worker.calls("uv")  # the venv exists: only the install; uv exists: no curl
    assert install == ["pip", "install", "--python", f"{home}/venv/bin/python", "jax[tpu]==0.10.2",
                       "-e", f"{home}/quietstar_jax", "pyarrow", "huggingface_hub[cli]"]
    assert worker.calls("python")[0][0] == "-c"


def test_fetch_quotes_paths_and_patterns(gc, worker):
    model_dir, data_dir = worker.home / "models" / "Mistral 7B", worker.home / "data" / "o w m"
    (worker.home / "data").mkdir()
    (worker.home / "data" / "train-00000-of-00001.parquet").touch()  # an unquoted pattern would match it
    r = gc.run("fetch.sh", MODEL_DIR=model_dir, DATA_DIR=data_dir, HF_TOKEN="hf_t'ok en")
    assert r.returncode == 0, r.stderr
    w = worker.sh(flag(gc.only("ssh"), "command"))
    assert w.returncode == 0, w.stderr
    model, data = worker.records("hf")
    assert model["argv"] == ["download", "mistralai/Mistral-7B-v0.1", "--local-dir", str(model_dir),
                             "--include", "*.json", "--include", "*.safetensors", "--include", "tokenizer.model"]
    assert data["argv"] == ["download", "open-web-math/open-web-math", "--repo-type", "dataset", "--local-dir",
                            str(data_dir), "--include", "data/train-00000-*"]
    assert model["hf_token"] == "hf_t'ok en"
    assert model_dir.is_dir() and data_dir.is_dir()


def test_fetch_from_gcs(gc, worker):
    r = gc.run("fetch.sh", MODEL_SRC="gs://b/my model/", DATA_SRC="gs://b/owm", MODEL_DIR=worker.home / "m",
               DATA_DIR=worker.home / "d")
    assert r.returncode == 0 and "HF_TOKEN" not in r.stderr
    assert worker.sh(flag(gc.only("ssh"), "command")).returncode == 0
    assert worker.calls("gcloud") == [["storage", "cp", "-r", "gs://b/my model/*", f"{worker.home}/m/"],
                                      ["storage", "cp", "-r", "gs://b/owm/*", f"{worker.home}/d/"]]


def test_train_arguments_reach_the_trainer_unchanged(gc, worker):
    """The user's arguments survive both shells: the local one and the worker's (ssh --command)."""
    r = gc.bash("""./launch/train.sh --config.run_name="a b" '--config.data.path=/x y' \\
                   "--config.note=it's \\$HOME \\"q\\" \\`id\\` ; *" '' $'two\\nlines' """)
    assert r.returncode == 0, r.stderr
    ssh = gc.only("ssh")
    assert ssh[:5] == ["compute", "tpus", "tpu-vm", "ssh", "quietstar-v4-16"]
    assert ssh[5:8] == [*WHERE, "--worker=all"]
    w = worker.sh(flag(ssh, "command"))
    assert w.returncode == 0, w.stderr
    assert "started" in w.stdout
    [argv] = worker.calls("python", 1)
    assert argv == ["-m", "quietstar_jax.train", *TRAIN_DEFAULT_ARGS, "--config.run_name=a b",
                    "--config.data.path=/x y", """--config.note=it's $HOME "q" `id` ; *""", "", "two\nlines"]


def test_train_rerun_resumes(gc, worker):
    """Running train.sh again sends the same command: same --workdir, so the trainer resumes there."""
    assert gc.run("train.sh", "--config.steps=10").returncode == 0
    assert gc.run("train.sh", "--config.steps=10").returncode == 0
    first, second = gc.calls()
    assert first == second
    for call in (first, second):
        assert worker.sh(flag(call, "command")).returncode == 0
    a, b = worker.calls("python", 2)
    assert a == b == ["-m", "quietstar_jax.train", *TRAIN_DEFAULT_ARGS, "--config.steps=10"]


def test_train_needs_the_code_on_the_worker(gc, worker):
    assert gc.run("train.sh").returncode == 0
    (worker.home / "quietstar_jax").rmdir()  # setup.sh has not run
    assert worker.sh(flag(gc.only("ssh"), "command")).returncode != 0
    assert worker.calls("python") == []


@pytest.fixture
def trainer(tmp_path):
    """A process that looks like a running trainer: <venv>/bin/python -m quietstar_jax.train, own session."""
    pkg = tmp_path / "fake" / "quietstar_jax"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "train.py").write_text("import time\ntime.sleep(60)\n")
    python = tmp_path / "fake-venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)
    proc = subprocess.Popen([str(python), "-m", "quietstar_jax.train", "--workdir=x"], cwd=pkg.parent,
                            start_new_session=True, env={"PATH": os.environ["PATH"]})
    deadline = time.monotonic() + 10
    while "-m quietstar_jax.train" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_stop_ends_the_trainer_and_train_refuses_a_second_one(gc, worker, trainer):
    assert gc.run("train.sh").returncode == 0
    train_command = flag(gc.only("ssh"), "command")
    w = worker.sh(train_command, sid=trainer.pid)
    assert w.returncode == 1 and "already running" in w.stderr  # no second trainer next to the first
    assert worker.calls("python") == []
    gc.clear()
    r = gc.run("stop.sh")
    assert r.returncode == 0, r.stderr
    stop = gc.only("ssh")
    assert stop[4:8] == ["quietstar-v4-16", *WHERE, "--worker=all"]
    command = flag(stop, "command")
    w = worker.sh(command, sid=trainer.pid)
    assert w.returncode == 0 and "stopped training" in w.stdout, w.stderr
    assert trainer.wait(timeout=10) == -15
    w = worker.sh(command, sid=trainer.pid)
    assert w.returncode == 0 and "no training process" in w.stdout
    # The pattern matches the trainer, never the worker shell whose command line names the module.
    pattern = (worker.bin.parent / "pkill.args").read_text().splitlines()[0].split(" ", 1)[1]
    assert re.search(pattern, "/home/u/venv/bin/python -m quietstar_jax.train --workdir=gs://b")
    assert not re.search(pattern, f"bash -c {command}")
    assert not re.search(pattern, f"bash -c {train_command}")


def test_stop_delete(gc):
    assert gc.run("stop.sh", "--delete").returncode == 0
    assert gc.calls() == [["compute", "tpus", "tpu-vm", "delete", "quietstar-v4-16", *WHERE, "--quiet"]]
    gc.clear()
    assert gc.run("stop.sh", "--delete", QUEUED=1).returncode == 0
    assert gc.calls() == [["compute", "tpus", "queued-resources", "delete", "quietstar-v4-16", *WHERE,
                           "--force", "--quiet"]]


# --- DRY_RUN ------------------------------------------------------------------------------------------

DRY_CASES = [
    ("create.sh", [], {}),
    ("create.sh", [], {"QUEUED": 1, "SPOT": 1, "VALID_UNTIL_DURATION": "6h"}),
    ("setup.sh", [], {}),
    ("fetch.sh", [], {"MODEL_DIR": "/mnt/a b"}),
    ("train.sh", ["--config.run_name=a b", "--config.note=it's"], {"ACCELERATOR_TYPE": "v5p-16"}),
    ("stop.sh", [], {}),
    ("stop.sh", ["--delete"], {"QUEUED": 1}),
]


@pytest.mark.parametrize("script,args,env", DRY_CASES, ids=lambda x: str(x) if isinstance(x, str) else None)
def test_dry_run_prints_the_commands_and_runs_nothing(gc, script, args, env):
    def normalized(calls):  # setup.sh's tarball: mktemp's name for real, a fixed name in the dry run
        return [[re.sub(r"quietstar_jax\.\w{6}$", "quietstar_jax.tar.gz", a) for a in c] for c in calls]

    absent_then_ready = [{"rc": 1}, {"out": "READY\n"}]  # create.sh checks, creates, then describes
    gc.reply("tpu-vm", "describe", replies=[{"out": "READY\n"}] if env.get("QUEUED") else absent_then_ready)
    gc.reply("queued-resources", "describe", replies=[{"rc": 1}, {"out": "ACTIVE\n"}])
    real = gc.run(script, *args, POLL_SECONDS=0, **env)
    assert real.returncode == 0, real.stderr
    actions = normalized([c for c in gc.calls() if not is_query(c)])
    gc.clear()
    dry = gc.run(script, *args, DRY_RUN=1, **env)
    assert dry.returncode == 0, dry.stderr
    assert gc.calls() == []  # nothing ran
    assert dry.stdout.strip()
    # What it printed is what it would have run: pasted into a shell, the same gcloud calls arrive.
    gc.rules = [{"match": ["describe"], "replies": [{"out": "READY\n"}]}]
    replay = gc.bash(dry.stdout)
    assert replay.returncode == 0, replay.stderr
    assert gc.calls() == actions
    if script == "setup.sh":
        assert "launch/env.sh" in tarfile.open(str(gc.log) + ".scp").getnames()
        assert not (gc.tmp / "tmp" / "quietstar_jax.tar.gz").exists()


def test_dry_run_hides_the_hf_token(gc):
    r = gc.run("fetch.sh", DRY_RUN=1, HF_TOKEN="hf_secret123")
    assert r.returncode == 0 and "hf_secret123" not in r.stdout + r.stderr and "<HF_TOKEN>" in r.stdout


# --- bad input: one line naming the problem and the fix, non-zero exit, nothing run ----------------

@pytest.mark.parametrize("script,args,env,words", [
    ("train.sh", [], {"BUCKET": None}, ["BUCKET is not set", "export BUCKET=gs://"]),
    ("train.sh", [], {"BUCKET": "my-bucket"}, ["BUCKET=my-bucket", "export BUCKET=gs://"]),
    ("create.sh", [], {"ACCELERATOR_TYPE": "v3-8"}, ["ACCELERATOR_TYPE=v3-8", "unknown TPU generation",
                                                     "v5litepod-N"]),
    ("create.sh", [], {"ACCELERATOR_TYPE": "v5e-16"}, ["set ACCELERATOR_TYPE=v5litepod-16"]),
    ("train.sh", [], {"ACCELERATOR_TYPE": "v4-16", "CONFIG": "configs/tpu_v5p.py"}, ["CONFIG=configs/tpu_v5p.py",
                                                                                      "is a v4 slice"]),
    ("train.sh", [], {"CONFIG": "configs/missing.py"}, ["CONFIG=configs/missing.py", "no such file"]),
    ("create.sh", [], {"PROJECT": None}, ["no Google Cloud project", "set PROJECT="]),
    ("create.sh", [], {"QUEUED": "yes"}, ["QUEUED=yes", "set QUEUED=1"]),
    ("create.sh", [], {"SPOT": 1, "BEST_EFFORT": 1, "QUEUED": 1}, ["SPOT=1 and BEST_EFFORT=1"]),
    ("create.sh", [], {"BEST_EFFORT": 1}, ["set QUEUED=1"]),
    ("stop.sh", ["--bogus"], {}, ["--bogus", "stop.sh [--delete]"]),
])
def test_bad_input(gc, script, args, env, words):
    r = gc.run(script, *args, **env)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert all(c == ["config", "get-value", "project"] for c in gc.calls())
