"""`python -m quietstar_jax.train` with recorders, for tests/test_multihost.py: one process of a run.

    QS_TEST_RECORD=/dir/proc0.jsonl QS_TEST_WATCH=/workdir:/cache python tests/multihost_driver.py --config=...

The real entry point (flags, config, distributed initialisation from JAX_COORDINATOR_ADDRESS /
JAX_NUM_PROCESSES / JAX_PROCESS_ID, one-line errors) runs unchanged; this adds, in this process only:

* after every step, one JSON line {"step", "time", "metrics", "tokens", "rows"} in QS_TEST_RECORD: the
  logged metrics as host floats, the rows this process fed (its local batch) and which global batch
  rows the devices of this process hold in the array built from them;
* a Python audit hook that appends {"write": event, "path"} for every Python file operation that
  creates, changes or removes something under a QS_TEST_WATCH root (open for writing, mkdir, rename,
  remove, chmod...), so the test can tell which process wrote what in a workdir both processes share.
  TensorStore's and safetensors' own file writes are native and not seen, but every output (an HF
  export's staging folder and its rename, a checkpoint's temporary folder) also goes through Python;
* QS_TEST_PACE seconds of sleep after every step, so a signal lands before a short run ends;
* QS_TEST_DUMP_STEP=s: the params after step s, gathered, in <QS_TEST_RECORD>.params<s>.npz;
* persistent compilation cache entries written by every process, not only process 0 (speed only).

Records go through a raw file descriptor (os.write is not audited, so the hook cannot recurse) and are
flushed line by line: a run killed with SIGKILL keeps what it recorded.
"""

import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

_FD = os.open(os.environ["QS_TEST_RECORD"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
_ROOTS = [os.path.abspath(r) for r in os.environ.get("QS_TEST_WATCH", "").split(":") if r]
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_CHANGES = {"os.rename", "os.remove", "os.rmdir", "os.chmod", "os.truncate", "os.link",
            "os.symlink", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.copymode", "shutil.copystat"}


def _record(obj) -> None:
    os.write(_FD, (json.dumps(obj) + "\n").encode())


def _watched(path) -> str | None:
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        return None  # a file descriptor
    path = os.path.abspath(os.fspath(path))
    return path if any(path == r or path.startswith(r + os.sep) for r in _ROOTS) else None


def _audit(event, args):
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None))[:3]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
            (isinstance(flags, int) and flags & _WRITE_FLAGS)
        paths = [path] if writing else []
    elif event == "os.mkdir":  # os.makedirs(exist_ok=True) of an existing folder changes nothing
        paths = [args[0]] if isinstance(args[0], (str, bytes, os.PathLike)) and not os.path.exists(args[0]) else []
    elif event in _CHANGES:
        paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
    else:
        return
    for p in paths:
        if (w := _watched(p)) is not None:
            _record({"write": event, "path": w})


def _dump_params(params, path: str) -> None:
    """The full params (gathered: every process calls this) as one npz, written by process 0."""
    import jax
    from jax.experimental import multihost_utils

    from quietstar_jax.model.params import path_string

    if jax.process_count() > 1:
        params = multihost_utils.process_allgather(params, tiled=True)
    flat = {path_string(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    if jax.process_index() == 0:
        np.savez(path, **flat)


def _share_compilation_cache() -> None:
    """Test speed only: JAX writes persistent-cache entries from process 0 alone, and process 1's
    cache keys differ from process 0's, so without this process 1 recompiles every program on every
    launch of the test (~17 s on 2 cores). Here every process writes its own entries; the programs and
    what they compute are unchanged. If JAX's internals moved, process 1 just compiles."""
    import jax
    from jax._src import compilation_cache, compiler

    write = getattr(compiler, "_cache_write", None)
    if write is None:
        return

    def cache_write(cache_key, compile_time_secs, module_name, backend, executable, host_callbacks):
        if jax.process_index() == 0 or host_callbacks:
            return write(cache_key, compile_time_secs, module_name, backend, executable, host_callbacks)
        compilation_cache.put_executable_and_time(cache_key, module_name, executable, backend,
                                                  int(compile_time_secs))

    compiler._cache_write = cache_write


def _install_recorders() -> None:
    import jax

    from quietstar_jax.training import setup as setup_lib
    from quietstar_jax.training import trainer as trainer_lib

    fed = {}
    global_batch = setup_lib.global_batch

    def recording_global_batch(local, setup, config):
        out = global_batch(local, setup, config)
        shards = out["tokens"].addressable_shards
        fed["tokens"] = np.asarray(local["tokens"]).tolist()
        fed["rows"] = sorted({r for s in shards for r in range(*s.index[0].indices(config.global_batch_size))})
        return out

    setup_lib.global_batch = recording_global_batch
    pace = float(os.environ.get("QS_TEST_PACE", "0"))

    dump_step = int(os.environ.get("QS_TEST_DUMP_STEP", "0"))

    def after_step(info):
        _record({"step": info.step, "time": time.time(), "process": jax.process_index(),
                 "metrics": info.host_metrics(), **fed})
        if info.step == dump_step:
            _dump_params(info.state["params"], os.environ["QS_TEST_RECORD"] + f".params{dump_step}.npz")
        time.sleep(pace)

    from quietstar_jax import train as entry_lib
    from quietstar_jax.evaluation.train_hooks import add_config_hooks

    def run_training(config, workdir):  # quietstar_jax.train.run_training plus the recorder
        trainer = trainer_lib.Trainer(config, workdir)
        add_config_hooks(trainer)
        trainer.add_hook(after_step, every=1)
        return trainer.run()

    entry_lib.run_training = run_training


if __name__ == "__main__":
    sys.addaudithook(_audit)
    _share_compilation_cache()
    _install_recorders()
    from quietstar_jax import cli
    from quietstar_jax import train as entry

    cli.run(entry.main, define_flags=entry.define_flags)
