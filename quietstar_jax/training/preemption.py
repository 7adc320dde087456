"""Preemption: SIGTERM (what Cloud TPU / GCE send before preempting a VM) asks the loop to save at
the next step boundary and exit.

One process: a Python SIGTERM handler sets a flag; the loop stops at the next step boundary.

Several processes: the signal may reach only one of them (a preempted host of a slice, `kill` of one
process), yet every process must stop after the same step, or the others wait forever in the next
step's collectives. JAX's preemption sync manager (started by jax.distributed.initialize) does exactly
this: its own SIGTERM handler tells the coordination service, which picks a step every process has not
passed yet; `reached_preemption_sync_point(step)` is true at that step on every process. Per step it
is a local check: 0.4 us, against 3-4 ms for an all-reduce of a local flag, which also makes the host
wait for every step (+6 ms per step in a loop of 3 ms steps; benchmarks/stop_check_bench.py, 2
processes x 4 CPU devices here). The price: the signal is noticed within ~1 s (JAX polls for it),
so the processes stop a step or a few later than one process would. In a multi-process run no Python
handler is installed: it would replace JAX's, and only the signalled process would stop.
"""

from __future__ import annotations

import signal

import jax

from quietstar_jax.errors import DistributedError


def _sync_manager():
    from jax._src import distributed

    return distributed.global_state.preemption_sync_manager


class Preemption:
    """Context manager; `should_stop(step)` at every step boundary, on every process."""

    def __init__(self):
        self.requested = False
        self._old = None
        self.multi = jax.process_count() > 1

    def __enter__(self):
        if self.multi:
            if _sync_manager() is None:
                raise DistributedError("a multi-process run stops on SIGTERM through JAX's preemption service, which "
                                       "is disabled: unset JAX_ENABLE_PREEMPTION_SERVICE / "
                                       "jax_enable_preemption_service=False")
            return self
        try:
            self._old = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread (e.g. inside some test runners)
            self._old = None
        return self

    def _handler(self, signum, frame):
        del signum, frame
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)

    def should_stop(self, step: int) -> bool:
        """step: optimizer steps completed. Multi-process: true on every process at the same step."""
        if self.multi:
            from jax.experimental import multihost_utils

            return bool(multihost_utils.reached_preemption_sync_point(step))
        return self.requested
