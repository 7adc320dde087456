"""Where a decoder layer's activations and weights live: the training layout and the decode layout.

Training (`TRAINING`): fully sharded data parallel. Activations are pinned to the batch axes
(`constrain_batch`); every layer's fsdp-sharded weights are all-gathered where they are used. The
training pass runs each layer once forward (again for remat and the backward) over all K streams of
every row, so one gather of a layer serves a lot of work.

Decode (`DecodeLayout`, for the no-grad thought sampler): a decode pass pushes only one new stream of L
tokens per row through every layer, and the sampler runs T + 1 such passes per step, one after the
other (each needs the previous one's sampled tokens). Gathering every layer's weights again in every
pass moved ~12 GiB per chip per pass for Mistral-7B on a v4-16, 116 of the step's 166 GiB. The decode
layout instead keeps a compute-dtype copy of the weights resident for the whole sampling phase,
Megatron-style ("weight-stationary"), and moves the small activations:

    mesh      the fsdp axis split into (fsdp_outer, fsdp_inner): groups of m = decode_shards consecutive
              devices (ICI neighbours in a topology-ordered mesh). Each group holds one full copy of the
              weights, split m ways inside the group; different groups decode different rows.
    weights   q/k/v/gate/up split over fsdp_inner on their output features (heads, MLP columns), o/down
              on their input features, within the tensor axis's training split; embeddings, LM head
              and norms replicated over fsdp (the tensor axis keeps its vocabulary split). Made once
              per step: 1/m of the compute-dtype layers per chip (1/(m x tensor) with a tensor axis).
    residual  rows split over every device, so norms and the residual adds run once per row, not m
              times: the training layout (data x fsdp), or with a tensor axis data x fsdp_outer x
              tensor x fsdp_inner (see DecodeLayout.residual).
    per layer all-gather the normed input over fsdp_inner before the column-parallel matmuls;
              reduce-scatter the row-parallel matmuls' partial sums back to the residual, in float32
              (the accumulation dtype: one rounding to the compute dtype, as the unsplit matmul does).

Per chip per pass this moves 2 x (rows/b x L x H) x (2 + 4) bytes x (g-1)/g per layer (b = fsdp / m
groups of g = m x tensor devices) instead of the layer's weights; m trades HBM (weights / m resident)
for ICI bytes. m = 1 without a tensor axis: a full copy per chip, no per-pass traffic at all.

Logical device ids: a mesh built from an abstract mesh uses the jit's device assignment in row-major
order, so fsdp_inner groups are runs of consecutive devices of the training mesh's fsdp axis.
"""

from __future__ import annotations

import dataclasses
import math

import jax
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P

from quietstar_jax.errors import ConfigError
from quietstar_jax.sharding.rules import DEFAULT_RULES, constrain_batch, tree_specs

DECODE_AXES = ("data", "fsdp_outer", "fsdp_inner", "tensor")
# Logical axis -> decode mesh axes: the resident weights (see the module docstring).
DECODE_RULES = (
    ("batch", ("data", "fsdp_outer", "fsdp_inner")),
    ("vocab", "tensor"),
    ("embed", None),
    ("embed2", None),
    ("q_heads", ("tensor", "fsdp_inner")),
    ("kv_heads", ("tensor", "fsdp_inner")),
    ("mlp", ("tensor", "fsdp_inner")),
    ("layers", None),
    ("norm", None),
)
# The first hop from the training layout to DECODE_RULES: the fsdp_inner part of the embed split moves
# to the output features (an all-to-all inside each group), then an all-gather over fsdp_outer
# completes each group's copy. That receives 7/8 x 1/m of the weights per chip on fsdp = 8 (what the
# copy needs); one hop straight to DECODE_RULES makes XLA gather whole weights and slice them.
RESHARD_RULES = tuple((name, "fsdp_outer") if name == "embed" else (name, axes) for name, axes in DECODE_RULES)


class TrainingLayout:
    """Activations pinned to the batch axes; weights used as stored (fsdp: gathered per layer)."""

    row_parallel = False  # no matmul contraction is split over devices: no partial sums to reduce

    def residual(self, x):
        return constrain_batch(x)

    def group_rows(self, h):
        return h

    def features(self, y):
        return y

    def heads(self, t, batch_axis: int = 0):
        return t

    def place_weights(self, tree, axes_tree, dtype):
        """Weights are used as they are stored (each use casts and gathers its own)."""
        return tree


TRAINING = TrainingLayout()


@dataclasses.dataclass(frozen=True)
class DecodeLayout(TrainingLayout):
    """The decode layout. Build it with `decode_layout`."""

    mesh: AbstractMesh  # axes DECODE_AXES
    train_mesh: AbstractMesh  # the (data, fsdp, tensor) mesh it splits; the stored weights' layout
    row_parallel = True

    def _constrain(self, x, dims: dict):
        """Pins the dims in `dims` ({dim: mesh axes}) and leaves the others to XLA. A dim whose size is
        not divisible by its axes is left to XLA too (any mesh works, at some traffic cost)."""
        spec = [P.UNCONSTRAINED] * x.ndim
        for d, axes in dims.items():
            axes = tuple(a for a in axes if self.mesh.shape[a] > 1)
            if not axes:
                spec[d] = None
            elif x.shape[d] % math.prod(self.mesh.shape[a] for a in axes) == 0:
                spec[d] = axes
        with jax.sharding.use_abstract_mesh(self.mesh):
            return jax.lax.with_sharding_constraint(x, P(*spec))

    def residual(self, x):
        """The residual stream: rows split over every device, the tensor axis included, in the order of
        the group's (tensor, fsdp_inner) split of the heads and MLP columns, so the row-parallel partial
        sums are one float32 reduce-scatter over the group. (Rows replicated over tensor, as in the
        training layout, or split in the other order, made XLA all-reduce over the group and slice.)
        Without a tensor axis (or rows for it) this is the training layout."""
        if self.mesh.shape["tensor"] == 1 or x.shape[0] % math.prod(self.mesh.shape.values()):
            return constrain_batch(x)
        return self._constrain(x, {0: ("data", "fsdp_outer", "tensor", "fsdp_inner")})

    def group_rows(self, h):
        """(B, ...) -> the rows of the chip's group, replicated inside it: what the column-parallel
        matmuls and the attention read (on the normed layer input: the all-gather of the layout)."""
        return self._constrain(h, {0: ("data", "fsdp_outer")})

    def features(self, y):
        """(B, ..., F) column-parallel output (MLP columns): features split over the group."""
        return self._constrain(y, {0: ("data", "fsdp_outer"), y.ndim - 1: ("tensor", "fsdp_inner")})

    def heads(self, t, batch_axis: int = 0):
        """(..., B, ..., heads, D): q / k / v and the KV cache, heads split over the group."""
        return self._constrain(t, {batch_axis: ("data", "fsdp_outer"), t.ndim - 2: ("tensor", "fsdp_inner")})

    def place_weights(self, tree, axes_tree, dtype):
        """Stored weights (logical axes `axes_tree`, training rules) -> the resident copy: cast to `dtype`
        in place first (pinned there, or XLA moves the float32 masters and casts after), then the two
        hops of RESHARD_RULES and DECODE_RULES."""
        hops = [(self.train_mesh, DEFAULT_RULES), (self.mesh, RESHARD_RULES), (self.mesh, DECODE_RULES)]
        tree = jax.tree.map(lambda w: w.astype(dtype), tree)
        for mesh, rules in hops:
            specs = tree_specs(axes_tree, tree, mesh, rules)
            with jax.sharding.use_abstract_mesh(mesh):
                tree = jax.tree.map(jax.lax.with_sharding_constraint, tree, specs)
        return tree


def decode_layout(decode_shards: int) -> TrainingLayout:
    """The layout of the no-grad decode passes under the current (abstract) mesh: DecodeLayout with the
    fsdp axis split into groups of `decode_shards` devices; TRAINING when decode_shards is 0 or when
    tracing without a mesh (one device: nothing to gather). Raises ConfigError when decode_shards does
    not divide the fsdp axis."""
    mesh = jax.sharding.get_abstract_mesh()
    if not decode_shards or mesh.empty:
        return TRAINING
    names = tuple(mesh.axis_names)
    if names != ("data", "fsdp", "tensor"):
        raise ConfigError(f"model.decode_shards needs the (data, fsdp, tensor) training mesh, got axes {names}")
    fsdp = mesh.shape["fsdp"]
    if fsdp % decode_shards:
        raise ConfigError(f"config.model.decode_shards={decode_shards} does not divide the fsdp axis ({fsdp} "
                          f"devices): use a divisor of {fsdp}, or 0 to gather the weights in every pass")
    sizes = (mesh.shape["data"], fsdp // decode_shards, decode_shards, mesh.shape["tensor"])
    return DecodeLayout(AbstractMesh(sizes, DECODE_AXES, axis_types=mesh.axis_types[:1] * 4), mesh)
