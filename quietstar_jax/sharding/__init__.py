"""Device mesh, logical-axis sharding rules, and the layouts of the training pass and the decode passes."""

from quietstar_jax.sharding.layout import TRAINING, DecodeLayout, decode_layout
from quietstar_jax.sharding.mesh import MESH_AXES, MeshError, make_mesh, resolve_mesh_shape
from quietstar_jax.sharding.rules import (DEFAULT_RULES, batch_sharding, constrain_batch, logical_to_spec,
                                          tree_shardings, tree_specs, under_mesh)

__all__ = ["MESH_AXES", "MeshError", "make_mesh", "resolve_mesh_shape", "DEFAULT_RULES", "batch_sharding", "constrain_batch",
           "logical_to_spec", "tree_shardings", "tree_specs", "under_mesh", "TRAINING", "DecodeLayout",
           "decode_layout"]
