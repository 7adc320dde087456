"""The (data, fsdp, tensor) device mesh.

data:   pure data parallelism (params replicated across it).
fsdp:   data parallelism with params / optimizer state sharded along it (ZeRO-3 style).
tensor: Megatron-style model parallelism over heads / MLP columns / vocab.
The batch is split over data x fsdp. One size may be -1: it takes the remaining devices.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from quietstar_jax.errors import MeshError  # noqa: F401 - re-exported

MESH_AXES = ("data", "fsdp", "tensor")




def resolve_mesh_shape(shape: dict | tuple, num_devices: int) -> tuple[int, int, int]:
    """{"data": -1, "fsdp": 4, "tensor": 1} (or a 3-tuple) -> concrete sizes whose product is num_devices."""
    if isinstance(shape, dict) or hasattr(shape, "items"):
        unknown = set(dict(shape)) - set(MESH_AXES)
        if unknown:
            raise MeshError(f"mesh: unknown axes {sorted(unknown)}; axes are {MESH_AXES}")
        sizes = [int(dict(shape).get(a, 1)) for a in MESH_AXES]
    else:
        sizes = [int(s) for s in shape]
        if len(sizes) != 3:
            raise MeshError(f"mesh: need 3 sizes for {MESH_AXES}, got {tuple(shape)}")
    if any(s == 0 or s < -1 for s in sizes):
        raise MeshError(f"mesh: sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}")
    if sizes.count(-1) > 1:
        raise MeshError(f"mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise MeshError(f"mesh {dict(zip(MESH_AXES, sizes))}: {num_devices} devices are not divisible "
                            f"by the fixed axes' product {known}")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise MeshError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                        f"{num_devices} available")
    return tuple(sizes)


def make_mesh(shape: dict | tuple, devices=None) -> Mesh:
    """Mesh over `devices` (default: all) with Auto axis types (XLA propagates shardings; Explicit would
    require an out_sharding on every gather and matmul of the model)."""
    devices = jax.devices() if devices is None else list(devices)
    sizes = resolve_mesh_shape(shape, len(devices))
    try:
        # Topology-aware device order on TPU (ICI neighbours on the fast axes); falls back below.
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(sizes, devices=devices)
    except Exception:  # noqa: BLE001 - CPU / odd topologies: plain row-major order is fine.
        grid = np.asarray(devices).reshape(sizes)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * 3)
