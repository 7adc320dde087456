"""Cloud TPU slices described on any host: topology names, libtpu's compile-only devices, usable HBM.

    topo = get_topology("v4-16")     # Topology(name="v4:2x2x2", spec, dims, devices, num_hosts)

libtpu's compile-only client (`jax.experimental.topologies`) gives the slice's TPU devices without a
TPU, so programs can be lowered and compiled for it (quietstar_jax.tpu.aot). Topology names:
"<gen>:<AxBxC>" (v4:2x2x2, v5p:2x2x1, v5e:4x4, v6e:2x4) or a Cloud accelerator type (v4-16, v5p-8,
v5litepod-16, v6e-8). v4 / v5p compile in megacore mode (one JAX device per chip, as on a real slice).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from quietstar_jax import hardware
from quietstar_jax.errors import TopologyError

GIB = 1024 ** 3
# Read by libtpu when it loads (at the first topology request): no GCE metadata lookups and no
# "could not determine TPU worker hostnames" noise on a non-TPU host, no lock against another process
# holding libtpu. Never set in a process that may run on a real TPU (they would misconfigure it).
LIBTPU_COMPILE_ONLY_ENV = {"ALLOW_MULTIPLE_LIBTPU_LOAD": "1", "TPU_ACCELERATOR_TYPE": "v4-8",
                           "TPU_WORKER_HOSTNAMES": "localhost", "TF_CPP_MIN_LOG_LEVEL": "2"}


def cpu_only_process() -> bool:
    platforms = os.environ.get("JAX_PLATFORMS", "")
    return bool(platforms) and "tpu" not in platforms.lower().split(",")


def _compile_only_env() -> None:
    if cpu_only_process():
        for k, v in LIBTPU_COMPILE_ONLY_ENV.items():
            os.environ.setdefault(k, v)




# Per-generation hardware facts (peak FLOP/s, HBM, ICI, libtpu chip config, ...) live in
# quietstar_jax.hardware, with their sources; these names are kept for callers of this module.
TpuSpec = hardware.TpuGeneration
SPECS = hardware.GENERATIONS
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6lite": "v6e"}
# Standard slice shapes by chip count (Cloud TPU docs), for accelerator-type names.
_SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8",
              512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}
_SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
_TOPOLOGY_HELP = ("expected '<gen>:<AxBxC>' (v4:2x2x2, v5p:2x2x1; 2D for v5e/v6e: v5e:4x4) or an "
                  f"accelerator type (v4-16, v5p-8, v5litepod-16, v6e-8); generations: {sorted(SPECS)}")


def parse_topology(name: str) -> tuple[TpuSpec, tuple[int, ...]]:
    """'v4:2x2x2' or 'v4-16' -> (spec, chip grid dims). Raises TopologyError."""
    name = name.strip().lower()
    m = re.fullmatch(r"([a-z0-9]+?):(\d+(?:x\d+)+)", name)
    if m:
        gen, dims = _ALIASES.get(m.group(1), m.group(1)), tuple(int(d) for d in m.group(2).split("x"))
        if gen not in SPECS:
            raise TopologyError(f"topology {name!r}: unknown TPU generation {m.group(1)!r}; {_TOPOLOGY_HELP}")
        spec = SPECS[gen]
        if len(dims) != spec.dims or min(dims) < 1:
            raise TopologyError(f"topology {name!r}: {gen} needs {spec.dims} positive dimensions; {_TOPOLOGY_HELP}")
        return spec, dims
    m = re.fullmatch(r"([a-z0-9]+?)-(\d+)", name)
    if m:
        gen = _ALIASES.get(m.group(1), m.group(1))
        if gen not in SPECS:
            raise TopologyError(f"topology {name!r}: unknown TPU generation {m.group(1)!r}; {_TOPOLOGY_HELP}")
        spec = SPECS[gen]
        n = int(m.group(2))
        chips = n // 2 if spec.names_count_cores else n
        shapes = _SHAPES_3D if spec.dims == 3 else _SHAPES_2D
        if (spec.names_count_cores and n % 2) or chips not in shapes:
            sizes = sorted(c * (2 if spec.names_count_cores else 1) for c in shapes)
            raise TopologyError(f"topology {name!r}: no standard {gen} slice of that size (known: "
                                f"{', '.join(f'{m.group(1)}-{s}' for s in sizes)}); or give '{gen}:AxBxC'")
        return spec, tuple(int(d) for d in shapes[chips].split("x"))
    raise TopologyError(f"topology {name!r}: {_TOPOLOGY_HELP}")


def chips_per_host_bounds(spec: TpuSpec, dims: tuple[int, ...]) -> tuple[int, int, int]:
    """Chips per host as a 3D box: 2x2x1 (4 chips, every v4 / v5p host; v5e / v6e hosts of multi-host
    slices); single-host v5e / v6e slices of up to 8 chips (2x4) are one host."""
    d3 = tuple(dims) + (1,) * (3 - len(dims))
    if spec.dims == 2 and math.prod(dims) <= 8:
        return d3
    return tuple(min(d, b) for d, b in zip(d3, (2, 2, 1)))


@dataclasses.dataclass
class Topology:
    name: str  # canonical "<gen>:<AxBxC>"
    spec: TpuSpec
    dims: tuple
    devices: list
    num_hosts: int


def get_topology(name: str) -> Topology:
    """The slice's compile-only TPU devices (libtpu, works on a CPU host). Raises TopologyError."""
    spec, dims = parse_topology(name)
    canonical = f"{spec.generation}:{'x'.join(map(str, dims))}"
    _compile_only_env()
    try:
        from jax.experimental import topologies

        desc = topologies.get_topology_desc(topology_name=canonical, platform="tpu",
                                            chip_config_name=spec.chip_config,
                                            chips_per_host_bounds=chips_per_host_bounds(spec, dims), num_slices=1)
    except ImportError as e:
        raise TopologyError(f"cannot describe TPU topology {canonical!r}: {e}") from e
    except Exception as e:  # noqa: BLE001 - libtpu missing / rejects the layout: jaxlib raises RuntimeErrors
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = " (is libtpu installed? pip install libtpu)" if "libtpu" in msg.lower() or "plugin" in msg.lower() \
            or "tpu" not in msg.lower() else ""
        raise TopologyError(f"libtpu cannot describe TPU topology {canonical!r}: {msg}{hint}") from e
    devices = list(desc.devices)
    return Topology(canonical, spec, dims, devices, len({d.process_index for d in devices}))


_OOM_RE = re.compile(r"available HBM \(([\d.]+)\s*([KMGT])i?B?\)")
_UNITS = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}


def usable_hbm_bytes(topo: Topology) -> tuple[float, str]:
    """HBM the TPU compiler lets one program use per chip, read from the compiler itself (it states it
    when a program does not fit: compile one that cannot), else the spec table's measured value."""
    try:
        mesh = jax.sharding.Mesh(topo.devices[:1], ("d",))
        big = jax.ShapeDtypeStruct((2 ** 38,), jnp.float32, sharding=NamedSharding(mesh, P()))  # 1 TiB
        jax.jit(lambda x: x + 1).lower(big).compile()
    except Exception as e:  # noqa: BLE001 - the expected RESOURCE_EXHAUSTED
        m = _OOM_RE.search(str(e))
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)], "reported by the TPU compiler"
    return topo.spec.usable_hbm_gib * GIB, "table (libtpu 0.0.52)"
