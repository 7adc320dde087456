"""What the cross-process stop check costs per step: 2 processes x 4 CPU devices on this machine.

    python benchmarks/stop_check_bench.py

Every process of a multi-process run must stop after the same step when one of them gets SIGTERM.
Two ways to agree, measured here (process 0 prints the table):

* JAX's preemption sync manager (what quietstar_jax.training.preemption uses): a local call per
  step; the agreement runs in the background through the coordination service only after a signal.
* an all-reduce of each process's local "SIGTERM seen" flag every step (a jitted max over a global
  array, read back on the host): a collective plus a host sync per step.

Each is timed alone (median per call) and inside a loop of small sharded matmul "steps" dispatched
asynchronously, against the same loop without any check (a blocking check also stops the host from
running ahead of the devices).
"""

import os
import socket
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def worker() -> None:
    sys.path.insert(0, REPO)
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from quietstar_jax.training import multihost
    from quietstar_jax.training.preemption import Preemption

    multihost.initialize("auto")
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("d",))
    rows, rep = NamedSharding(mesh, P("d")), NamedSharding(mesh, P())
    any_flag = jax.jit(jnp.max, out_shardings=rep)

    def allreduce_check(_step) -> bool:
        local = np.zeros((jax.local_device_count(),), np.int32)  # this process's flag, once per device
        flags = jax.make_array_from_process_local_data(rows, local, (jax.device_count(),))
        return bool(any_flag(flags))

    x = jax.make_array_from_process_local_data(rows, np.ones((4 * 256, 256), np.float32), (8 * 256, 256))
    w = jax.jit(lambda: jnp.eye(256, dtype=jnp.float32), out_shardings=rep)()
    step = jax.jit(lambda x, w: jnp.tanh(x @ w) @ w, out_shardings=rows)

    def per_call(check, n):
        check(0)
        times = []
        for i in range(n):
            t = time.perf_counter()
            check(i + 1)
            times.append(time.perf_counter() - t)
        return float(np.median(times))

    def loop(check, n=60):
        y = step(x, w)
        y.block_until_ready()
        t = time.perf_counter()
        for i in range(n):
            y = step(y, w)
            if check is not None:
                check(i + 1)
        y.block_until_ready()
        return (time.perf_counter() - t) / n

    with Preemption() as pre:
        sync = pre.should_stop
        results = {"sync manager, per call": per_call(sync, 2000),
                   "all-reduce, per call": per_call(allreduce_check, 200)}
        for _ in range(2):  # the second round is the one reported (the first warms caches)
            base = loop(None)
            results.update({"step loop, no check": base, "step loop + sync manager": loop(sync),
                            "step loop + all-reduce": loop(allreduce_check)})
    if jax.process_index() == 0:
        print(f"{jax.process_count()} processes x {jax.local_device_count()} CPU devices")
        for name, secs in results.items():
            print(f"  {name:28s} {secs * 1e3:9.4f} ms")


def main() -> None:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_COORDINATOR_ADDRESS=f"localhost:{_free_port()}", JAX_NUM_PROCESSES="2")
    procs = [subprocess.Popen([sys.executable, __file__, "--worker"], env=dict(env, JAX_PROCESS_ID=str(i)),
                              stdout=None if i == 0 else subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for i in range(2)]
    codes = [p.wait(timeout=600) for p in procs]
    if codes != [0, 0]:
        sys.exit(f"benchmark processes failed: exit codes {codes}")


if __name__ == "__main__":
    if "--help" in sys.argv or "-h" in sys.argv:
        print(__doc__.strip())
    else:
        worker() if "--worker" in sys.argv else main()
