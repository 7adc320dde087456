"""Where evaluation runs: one device, or a mesh (the training mesh: params fsdp / tensor-sharded as in
training, evaluation batches split over the batch axes), and the fixed shapes it runs in.

    place = Placement(mesh)                 # mesh None: the default device
    fn = place.jit(lambda params, x: ...)   # traced under the mesh; outputs replicated on every process
    x = place.put(np_batch)                 # (B, ...) host array -> batch-sharded global array
    L = bucket(n, 64, cap=256)              # few distinct shapes -> few compiles

Every process calls the same functions with the same host arrays (multi-host evaluation needs the
collectives), and every process gets the whole (small) result.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from quietstar_jax.errors import ConfigError
from quietstar_jax.sharding import batch_sharding, under_mesh


def bucket(n: int, step: int, cap: int) -> int:
    """n rounded up to a multiple of `step`, at most cap (and at least n)."""
    return max(n, min(cap, -(-n // step) * step))


class Placement:
    def __init__(self, mesh=None):
        self.mesh = mesh
        self.batch_size_multiple = 1 if mesh is None else math.prod(mesh.shape[a] for a in ("data", "fsdp"))

    def check_batch_size(self, batch_size: int, what: str = "batch_size") -> int:
        if batch_size < 1 or batch_size % self.batch_size_multiple:
            raise ConfigError(f"{what}={batch_size} must be a positive multiple of the data x fsdp mesh size "
                              f"{self.batch_size_multiple} (mesh {dict(self.mesh.shape) if self.mesh else {}})")
        return batch_size

    def jit(self, fn, **kw):
        if self.mesh is None:
            return jax.jit(fn, **kw)
        return jax.jit(under_mesh(fn, self.mesh), out_shardings=NamedSharding(self.mesh, P()), **kw)

    def put(self, x: np.ndarray) -> jax.Array:
        x = np.asarray(x)
        if self.mesh is None:
            return jnp.asarray(x)
        from quietstar_jax.training.state import put_global

        return put_global(x, batch_sharding(self.mesh, x.ndim))

    def params(self, params, cfg):
        """Host (numpy) params -> the backbone laid out on the mesh as training lays it out (fsdp / tensor
        by logical axes), the small Quiet-STaR params replicated; or all on the default device."""
        if self.mesh is None:
            return jax.tree.map(jnp.asarray, params)
        from quietstar_jax.model.params import param_axes
        from quietstar_jax.sharding import tree_shardings
        from quietstar_jax.training.state import place_params

        backbone = {k: v for k, v in params.items() if k != "quietstar"}
        shape = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), backbone)
        placed = place_params(backbone, tree_shardings(param_axes(cfg), shape, self.mesh))
        replicated = NamedSharding(self.mesh, P())
        placed["quietstar"] = jax.tree.map(lambda a: place_params(a, replicated), params["quietstar"])
        return placed
