"""Multi-process runs: joining the processes, and work that one process must do before the others.

    initialize(config.distributed)        # before anything touches a JAX device
    store = main_first(prepare, "preparing the token cache")   # process 0, then everyone else

initialize: "off" never joins; "on" always calls jax.distributed.initialize (Cloud TPU slices, where JAX
finds the coordinator itself); "auto" joins when the environment names a multi-process run. Outside a
TPU slice the processes are described by three variables, set identically on every process except the id:

    JAX_COORDINATOR_ADDRESS=host:port   process 0's address (JAX reads this one itself)
    JAX_NUM_PROCESSES=N                 JAX does not read these two: without them it can only guess
    JAX_PROCESS_ID=i                    from a cluster manager (TPU, Slurm, MPI) and fails elsewhere

main_first: caches that several processes share (the tokenised corpus, the offline model) must be built
by one process while the others wait; otherwise two processes write the same folder at once. If
process 0 fails, the others stop with one line saying so instead of waiting in a collective forever.
"""

from __future__ import annotations

import itertools
import os

import jax

from quietstar_jax.errors import ConfigError, DistributedError

_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
# Process 0 may tokenise a large corpus while the others wait: a day, not the 5 minutes of JAX's own
# barriers (the wait ends at once if process 0 fails: it reports the failure).
_WAIT_MS = 24 * 3600 * 1000
_calls = itertools.count()


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not an integer") from None


def wanted(mode: str) -> bool:
    """Whether `mode` ("auto" | "on" | "off") joins a multi-process run in this environment."""
    if mode == "off":
        return False
    # Multi-process signals: an explicit coordinator or process count (a forgotten address must not make
    # N independent runs share one workdir), a TPU worker list with several hosts, a multislice
    # (Megascale) coordinator.
    multi = bool(os.environ.get("JAX_COORDINATOR_ADDRESS")) or (_env_int("JAX_NUM_PROCESSES") or 1) > 1 \
        or "," in os.environ.get("TPU_WORKER_HOSTNAMES", "") or bool(os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"))
    return mode == "on" or multi


def initialize(mode: str) -> bool:
    """jax.distributed.initialize when `mode` asks for it (see the module docstring); a no-op if the
    caller already joined. Returns whether this process is part of a distributed run. Must run before
    anything uses a JAX device (JAX refuses afterwards). Raises ConfigError / DistributedError (one line)."""
    if not wanted(mode):
        return False
    if jax.distributed.is_initialized():
        return True
    address = os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num, pid = _env_int("JAX_NUM_PROCESSES"), _env_int("JAX_PROCESS_ID")
    if (num is None) != (pid is None):
        raise ConfigError("set both JAX_NUM_PROCESSES and JAX_PROCESS_ID (or neither, on a cluster JAX detects), "
                          f"got JAX_NUM_PROCESSES={num} JAX_PROCESS_ID={pid}")
    if num is not None and not 0 <= pid < num:
        raise ConfigError(f"JAX_PROCESS_ID={pid} must be in [0, JAX_NUM_PROCESSES={num})")
    try:
        jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if address is None or num is None:
            raise DistributedError(f"distributed={mode!r}: JAX found no multi-process cluster ({first}); outside a "
                                   f"TPU slice set {', '.join(_ENV)} on every process, or use "
                                   "--config.distributed=off for one process") from None
        raise DistributedError(f"joining the run at JAX_COORDINATOR_ADDRESS={address} as process {pid} of {num} "
                               f"failed ({first[:300]}); is process 0 running and the address reachable?") from None
    return True


def _client():
    from jax._src import distributed  # the coordination service's client (what multihost_utils uses)

    if distributed.global_state.client is None:
        raise DistributedError(f"{jax.process_count()} processes but no jax.distributed client: start runs "
                               "through quietstar_jax (config.distributed) or call jax.distributed.initialize")
    return distributed.global_state.client


def main_first(fn, what: str):
    """fn() on process 0, then on every other process once process 0 has finished: for work that writes
    a cache all processes share (the others then only read it). Single process: fn().

    what: the work, for the others' error if process 0 fails ("preparing the token cache"). Every process
    must call it, in the same order."""
    if jax.process_count() == 1:
        return fn()
    client = _client()
    key = f"quietstar_jax/main_first/{next(_calls)}"
    if jax.process_index() == 0:
        try:
            out = fn()
        except BaseException as e:
            client.key_value_set(key, f"{type(e).__name__}: {e}")
            raise
        client.key_value_set(key, "ok")
        return out
    status = client.blocking_key_value_get(key, _WAIT_MS)
    if status != "ok":
        raise DistributedError(f"process 0 failed while {what}: {status[:400]}")
    return fn()
