"""Logical axis names -> mesh axes.

Every parameter carries logical names per dimension (quietstar_jax.model.params.param_axes); the rules
map each name to mesh axes, with Flax's logical partitioning (flax.linen.logical_to_mesh_axes, as in
MaxText: rules in order of precedence, each mesh axis used once per array). On top of Flax's mapping,
mesh axes of size 1 are dropped and a dimension whose size is not divisible by its mesh axes is
replicated instead (e.g. 2 KV heads on a tensor axis of 4), so any mesh is valid for any model, at some
memory cost.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

# (logical name, mesh axis / tuple of axes / None = replicated), in order of precedence (Flax's format).
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("embed2", None),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("layers", None),
    ("norm", None),
    ("lora_rank", None),  # the rank of thought adapters (model.lora): small, replicated
)


def rule_for(name: str, rules=DEFAULT_RULES):
    """The mesh axes (str, tuple or None) of one logical name."""
    for logical, axes in rules:
        if logical == name:
            return axes
    raise ValueError(f"no sharding rule for logical axis {name!r}")


def _axis_size(mesh: Mesh, axes) -> int:
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else axes
    n = 1
    for a in axes:
        n *= mesh.shape[a]
    return n


def logical_to_spec(names: tuple, shape: tuple, mesh: Mesh, rules=DEFAULT_RULES) -> P:
    """Logical names of one array -> PartitionSpec: Flax's mapping, then size-1 mesh axes dropped and
    non-divisible dimensions replicated."""
    if len(names) != len(shape):
        raise ValueError(f"logical axes {names} do not match shape {shape}")
    for name in names:
        rule_for(name, rules)  # unknown names are an error, not silently replicated
    spec = nn.logical_to_mesh_axes(names, rules)
    out = []
    for axes, size in zip(spec, shape):
        flat = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
        flat = tuple(a for a in flat if mesh.shape[a] > 1)
        if not flat or size % _axis_size(mesh, flat):
            out.append(None)
        else:
            out.append(flat[0] if len(flat) == 1 else flat)
    return P(*out)


def _is_axes(x) -> bool:
    return isinstance(x, tuple) and all(isinstance(n, str) for n in x)


def tree_specs(axes_tree, shapes_tree, mesh: Mesh, rules=DEFAULT_RULES):
    """Same-structured trees of logical-axis tuples and arrays/ShapeDtypeStructs -> PartitionSpecs."""
    return jax.tree.map(lambda names, s: logical_to_spec(names, tuple(s.shape), mesh, rules),
                        axes_tree, shapes_tree, is_leaf=_is_axes)


def tree_shardings(axes_tree, shapes_tree, mesh: Mesh, rules=DEFAULT_RULES):
    return jax.tree.map(lambda spec: NamedSharding(mesh, spec), tree_specs(axes_tree, shapes_tree, mesh, rules),
                        is_leaf=lambda x: isinstance(x, P))


def _batch_axes(mesh, rules) -> tuple[str, ...]:
    """The mesh axes (of size > 1) that the logical "batch" axis maps to."""
    axes = rule_for("batch", rules)
    return tuple(a for a in ((axes,) if isinstance(axes, str) else axes)
                 if a in mesh.axis_names and mesh.shape[a] > 1)


def _batch_spec(axes: tuple[str, ...], ndim: int) -> P:
    first = None if not axes else (axes[0] if len(axes) == 1 else axes)
    return P(first, *([None] * (ndim - 1)))


def batch_sharding(mesh: Mesh, ndim: int = 2, rules=DEFAULT_RULES) -> NamedSharding:
    """(B, L, ...) arrays split over the batch axes."""
    return NamedSharding(mesh, _batch_spec(_batch_axes(mesh, rules), ndim))


def constrain_batch(x: jax.Array, rules=DEFAULT_RULES) -> jax.Array:
    """Pins dim 0 of an activation to the batch mesh axes when tracing under a mesh (no-op otherwise).

    Without it XLA's propagation may keep activations replicated and all-reduce them inside the layer
    loop instead of all-gathering the (fsdp-sharded) weights layer by layer: on the Mistral-7B v4
    config that cost ~5 GiB per chip and ~2x the collective traffic."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    axes = _batch_axes(mesh, rules)
    if not axes or x.shape[0] % math.prod(mesh.shape[a] for a in axes):
        return x
    return jax.lax.with_sharding_constraint(x, _batch_spec(axes, x.ndim))


def under_mesh(fn, mesh):
    """fn traced under `mesh`'s abstract mesh (so constrain_batch and the other activation constraints
    apply), or fn as it is without a mesh. Wrap before jax.jit."""
    if mesh is None:
        return fn

    @functools.wraps(fn)  # jit names the program after fn (profiles, HLO dumps)
    def traced(*args):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return fn(*args)
    return traced
