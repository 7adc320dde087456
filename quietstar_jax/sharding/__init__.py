"""Device mesh and logical-axis sharding rules."""

from quietstar_jax.sharding.mesh import MESH_AXES, MeshError, make_mesh, resolve_mesh_shape
from quietstar_jax.sharding.rules import (DEFAULT_RULES, batch_sharding, constrain_batch, logical_to_spec,
                                          tree_shardings, tree_specs)

__all__ = ["MESH_AXES", "MeshError", "make_mesh", "resolve_mesh_shape", "DEFAULT_RULES", "batch_sharding", "constrain_batch",
           "logical_to_spec", "tree_shardings", "tree_specs"]
