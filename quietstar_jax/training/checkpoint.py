"""Orbax checkpointing of the train state: async, keep-N, step- and time-based, preemption-safe.

A checkpoint at step s holds the state *after* s optimizer steps plus a JSON "meta" item (model and
Quiet-STaR config) that is checked on restore, so resuming with a different model fails with a clear
message instead of a shape error deep in orbax. Orbax writes each step to a temporary directory and
renames it when complete, so a crash (even SIGKILL) mid-save never damages the latest finished step.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm


class CheckpointMismatchError(ValueError):
    """The checkpoint in the workdir was written for a different model / configuration."""


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

    def restore(self, abstract_with_shardings, step: int | None = None):
        """abstract_with_shardings: ShapeDtypeStructs carrying .sharding. Returns the sharded state."""
        step = self.latest_step() if step is None else step
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        for key in sorted(set(self.meta) | set(meta)):
            if meta.get(key) != self.meta.get(key):
                raise CheckpointMismatchError(
                    f"checkpoint {self.directory}/{step} was written with a different {key!r}: saved "
                    f"{meta.get(key)!r}, now {self.meta.get(key)!r}. Use a fresh --workdir or the same config.")
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_with_shardings)))
        except (ValueError, KeyError) as e:
            raise CheckpointMismatchError(f"checkpoint {self.directory}/{step} does not match the train "
                                          f"state (params / optimizer): {e}") from e
        return out["state"]

    def save(self, step: int, state, force: bool = False) -> bool:
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(self.meta)), force=force)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
