"""Preemption: SIGTERM (what Cloud TPU / GCE send before preempting a VM) asks the loop to save at
the next step boundary and exit. On a multi-host slice every host must stop at the same step: JAX's
coordination service agrees on it (multihost_utils.reached_preemption_sync_point)."""

from __future__ import annotations

import signal

import jax


class Preemption:
    """Context manager installing the SIGTERM handler; `should_stop(step)` at every step boundary."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
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
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            return bool(multihost_utils.reached_preemption_sync_point(step)) or self.requested
        return self.requested
