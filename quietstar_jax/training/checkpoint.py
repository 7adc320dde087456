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
            detail = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
            if _is_mismatch(e):
                raise CheckpointMismatchError(f"checkpoint {self.directory}/{step} does not match the train "
                                              f"state (params / optimizer): {detail}. Use a fresh --workdir or "
                                              "the same config.") from e
            raise CheckpointCorruptError(f"checkpoint {self.directory}/{step} is corrupt ({detail})") from e
        return out["state"]

    def restore_latest(self, abstract_with_shardings, warn=print):
        """(state, step) of the newest intact checkpoint, or (None, None) if there is none. Corrupt newer
        ones are reported through `warn` and moved aside; a mismatch is raised at once (it would hold
        for every older step too). Raises CheckpointCorruptError if checkpoints exist but none is intact."""
        corrupt = []
        for step in reversed(self.all_steps()):
            try:
                return self.restore(abstract_with_shardings, step), step
            except CheckpointCorruptError as e:
                corrupt.append(step)
                moved = self._move_aside(step)
                warn(f"WARNING: {e}; moved it aside to {moved} (not deleted); trying the previous checkpoint")
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
