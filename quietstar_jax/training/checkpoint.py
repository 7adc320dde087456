"""Orbax checkpointing of the train state: async, keep-N, step- and time-based, preemption-safe.

A checkpoint at step s holds the state *after* s optimizer steps plus a JSON "meta" item (model and
Quiet-STaR config, tokenizer fingerprint) that is checked on restore, so resuming with a different
model fails with a clear message instead of a shape error deep in orbax. Orbax writes each step to a
temporary directory and renames it when complete, so a crash (even SIGKILL) mid-save never damages
the latest finished step.

Damaged checkpoints (truncated data, missing metadata: a disk fault, a bad copy) are not config
mismatches: `restore_latest` reports each one as corrupt, naming its folder, moves it aside to
`<checkpoints>.corrupt/` (never deleted: keep it for inspection) and falls back to the newest intact
step.
"""

from __future__ import annotations

import os
import sys
import time

import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as cm

from quietstar_jax.errors import CheckpointCorruptError, CheckpointMismatchError  # noqa: F401 - re-exported


def _save_policy(every_steps: int, every_secs: int):
    policies = []
    if every_steps:
        policies.append(cm.FixedIntervalPolicy(int(every_steps)))
    if every_secs:
        policies.append(cm.ContinuousCheckpointingPolicy(minimum_interval_secs=int(every_secs)))
    if jax.process_count() > 1:
        # Multi-host: all hosts agree on the preemption step through JAX's coordination service.
        policies.append(cm.PreemptionCheckpointingPolicy())
    return cm.AnySavePolicy(policies) if policies else cm.SpecificStepsPolicy(steps=())


class _StderrCapture:
    """Redirects the process's stderr (file descriptor 2, which C++ libraries write to) into a temporary
    file. On exit without settle() (success), whatever was captured is written back to stderr."""

    def __enter__(self):
        import tempfile

        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        self._failed = False
        self.text = b""
        return self

    def settle(self, quiet_s: float = 0.3, max_s: float = 10.0) -> None:
        """A failure: wait until background reads stop writing (no growth for quiet_s), keep the text."""
        import gc

        self._failed = True
        gc.collect()  # abandoned futures report now, not later on the console
        start, size, still = time.time(), -1, time.time()
        while time.time() - start < max_s:
            now = os.fstat(self._file.fileno()).st_size
            if now != size:
                size, still = now, time.time()
            elif time.time() - still >= quiet_s:
                break
            time.sleep(0.05)

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read()
        self._file.close()
        if not self._failed and self.text:
            sys.stderr.buffer.write(self.text)
            sys.stderr.flush()

    def save(self, path: str) -> str:
        if jax.process_index() == 0:
            epath.Path(path).write_bytes(self.text)
            _route_abandoned_reads(path)
        return path


def _is_abandoned_read(unraisable) -> bool:
    """The reads a failed restore left behind: orbax coroutines finalised later, or TensorStore callbacks
    into orbax's closed event loop."""
    text = f"{unraisable.exc_value!r} {unraisable.object!r}"
    return "Encountered error while reading array index" in text or "_read_array_index" in text or \
        "Event loop is closed" in text


def _route_abandoned_reads(log_path: str) -> None:
    """From now on, unraisable exceptions of abandoned checkpoint reads (reported whenever Python
    finalises them, possibly at exit) go to log_path instead of the console; others are untouched."""
    previous = sys.unraisablehook

    def hook(unraisable):
        if _is_abandoned_read(unraisable):
            import traceback

            with open(log_path, "a") as f:
                f.write(f"{unraisable.err_msg or 'Exception ignored in'}: {unraisable.object!r}\n")
                traceback.print_exception(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback,
                                          file=f)
            return
        previous(unraisable)

    sys.unraisablehook = hook


def _is_mismatch(e: Exception) -> bool:
    """Orbax's errors for a restore target that differs from what is on disk (tree or shapes), as opposed
    to damaged files (TensorStore read errors, missing metadata files)."""
    msg = str(e)
    return isinstance(e, ValueError) and ("Structure mismatch" in msg or "stored shape" in msg
                                          or "tree structures do not match" in msg)


class Checkpointer:
    def __init__(self, directory: str, ckpt_cfg, meta: dict):
        if not directory.startswith("gs://"):
            directory = os.path.abspath(directory)
        self.directory = directory
        self.meta = meta
        options = ocp.CheckpointManagerOptions(
            max_to_keep=int(ckpt_cfg.keep), enable_async_checkpointing=bool(ckpt_cfg.async_save),
            save_decision_policy=_save_policy(ckpt_cfg.every_steps, ckpt_cfg.every_secs), create=True)
        self.manager = ocp.CheckpointManager(directory, options=options, item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def _check_meta(self, step: int) -> None:
        try:
            meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:  # noqa: BLE001 - unreadable meta item: a damaged checkpoint
            raise CheckpointCorruptError(f"checkpoint {self.directory}/{step} is corrupt: its meta item cannot be "
                                         f"read ({type(e).__name__}: {str(e).strip()[:200]})") from e
        for key in sorted(set(self.meta) | set(meta)):
            if meta.get(key) != self.meta.get(key):
                raise CheckpointMismatchError(
                    f"checkpoint {self.directory}/{step} was written with a different {key!r}: saved "
                    f"{meta.get(key)!r}, now {self.meta.get(key)!r}. Use a fresh --workdir or the same config.")

    def restore(self, abstract_with_shardings, step: int | None = None):
        """abstract_with_shardings: ShapeDtypeStructs carrying .sharding. Returns the sharded state.
        Raises CheckpointMismatchError (written for another model / optimizer) or CheckpointCorruptError."""
        step = self.latest_step() if step is None else step
        self._check_meta(step)
        metadata = epath.Path(self.directory, str(step), "state", "_METADATA")
        if not metadata.exists():  # orbax would report it as a tree-structure error: it is damage
            raise CheckpointCorruptError(f"checkpoint {self.directory}/{step} is corrupt (state/_METADATA, the "
                                         "tree metadata, is missing)")
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_with_shardings)))
        except Exception as e:  # noqa: BLE001 - orbax / TensorStore raise many types
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            detail = f"{type(e).__name__}: {first.split(' See full TensorStore details')[0][:200]}"
            if _is_mismatch(e):
                raise CheckpointMismatchError(f"checkpoint {self.directory}/{step} does not match the train "
                                              f"state (params / optimizer): {detail}. Use a fresh --workdir or "
                                              "the same config.") from e
            raise CheckpointCorruptError(f"checkpoint {self.directory}/{step} is corrupt ({detail})") from e
        return out["state"]

    def restore_latest(self, abstract_with_shardings, warn=print):
        """(state, step) of the newest intact checkpoint, or (None, None) if there is none. Corrupt newer
        ones are reported through `warn` and moved aside; a mismatch is raised at once (it would hold
        for every older step too). Raises CheckpointCorruptError if checkpoints exist but none is intact.

        A damaged checkpoint makes TensorStore's pending reads print hundreds of lines of tracebacks to
        stderr after the first error; they are kept in <step>.log next to the moved checkpoint instead."""
        corrupt = []
        for step in reversed(self.all_steps()):
            with _StderrCapture() as captured:
                try:
                    return self.restore(abstract_with_shardings, step), step
                except CheckpointCorruptError as e:
                    error = e
                    captured.settle()
            corrupt.append(step)
            moved = self._move_aside(step)
            log = captured.save(f"{moved}.log") if captured.text else None
            warn(f"WARNING: {error}; moved it aside to {moved} (not deleted)"
                 + (f", TensorStore's errors in {log}" if log else "") + "; trying the previous checkpoint")
        if corrupt:
            raise CheckpointCorruptError(f"every checkpoint in {self.directory} is corrupt (steps {corrupt}, moved "
                                         f"aside to {self.directory}.corrupt/); start a new run with a fresh "
                                         "--workdir")
        return None, None

    def _move_aside(self, step: int) -> str:
        """Moves a corrupt step folder to <directory>.corrupt/<step>-<time> (process 0), so the run can
        save that step again; the data stays for inspection."""
        dest = epath.Path(f"{self.directory}.corrupt") / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        if jax.process_index() == 0:
            dest.parent.mkdir(parents=True, exist_ok=True)
            epath.Path(self.directory, str(step)).rename(dest)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"checkpoint {step} moved aside")
        self.manager.reload()
        return str(dest)

    def save(self, step: int, state, force: bool = False) -> bool:
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(self.meta)), force=force)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
