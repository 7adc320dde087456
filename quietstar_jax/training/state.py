"""Train state {"step", "params", "opt_state"} (+ "ref_params", the initial params, when the KL
stabiliser quietstar.kl_coef needs them): abstract shapes, shardings, sharded initialisation.

Abstract first (jax.eval_shape): shardings are derived from shapes + logical axes before any array
exists, then every array is created directly in its sharded layout (jit with out_shardings, or
device_put / make_array_from_callback for loaded weights), so no host ever holds a replicated copy of
the optimizer state.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from quietstar_jax.model.config import ModelConfig
from quietstar_jax.model.params import init_params, param_axes
from quietstar_jax.quietstar import init_quietstar_params, quietstar_param_axes
from quietstar_jax.quietstar.config import QuietStarConfig
from quietstar_jax.sharding.rules import DEFAULT_RULES, tree_shardings


def full_param_axes(cfg: ModelConfig, qs: QuietStarConfig) -> dict:
    return dict(param_axes(cfg), quietstar=quietstar_param_axes(qs, cfg))


def param_shardings(cfg: ModelConfig, qs: QuietStarConfig, params_shape, mesh: Mesh,
                    rules: dict = DEFAULT_RULES):
    return tree_shardings(full_param_axes(cfg, qs), params_shape, mesh, rules)


def state_shardings(cfg: ModelConfig, qs: QuietStarConfig, tx: optax.GradientTransformation, abstract_state,
                    mesh: Mesh, rules: dict = DEFAULT_RULES):
    """Shardings for the whole state: optimizer moments follow their parameter, scalars replicate."""
    p_sh = param_shardings(cfg, qs, abstract_state["params"], mesh, rules)
    replicated = NamedSharding(mesh, P())
    # Each optimizer-state leaf that is a copy of a parameter (AdamW's mu / nu) sits at a path ending with
    # that parameter's path, whatever transformations wrap it (chain, multi_transform's masked states).
    by_path = {_dict_keys(path): (sh, tuple(a.shape)) for (path, sh), a in zip(
        jax.tree_util.tree_leaves_with_path(p_sh), jax.tree.leaves(abstract_state["params"]))}

    def opt_leaf(path, leaf):
        keys = _dict_keys(path)
        for i in range(len(keys)):
            hit = by_path.get(keys[i:])
            if hit is not None and hit[1] == tuple(leaf.shape):
                return hit[0]
        return replicated

    opt_sh = jax.tree_util.tree_map_with_path(opt_leaf, abstract_state["opt_state"])
    out = {"step": replicated, "params": p_sh, "opt_state": opt_sh}
    if "ref_params" in abstract_state:
        out["ref_params"] = p_sh
    return out


def _dict_keys(path) -> tuple:
    """The dict keys of a pytree key path (attribute and index entries dropped)."""
    return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))


def keeps_reference(qs: QuietStarConfig) -> bool:
    """Whether the state holds a frozen copy of the initial params (the KL stabiliser's reference)."""
    return qs.enabled and qs.kl_coef > 0


def abstract_state(params_shape, tx: optax.GradientTransformation, with_reference: bool = False):
    opt = jax.eval_shape(tx.init, params_shape)
    out = {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": params_shape, "opt_state": opt}
    if with_reference:
        out["ref_params"] = params_shape
    return out


def random_params_fn(cfg: ModelConfig, qs: QuietStarConfig, seed: int, init_ids):
    """() -> full params (backbone + quietstar), for a randomly initialised model."""
    def f():
        params = init_params(cfg, jax.random.key(seed))
        params["quietstar"] = init_quietstar_params(params, cfg, qs, jax.random.key(seed + 1), init_ids)
        return params
    return f


def put_global(x, sharding) -> jax.Array:
    """A host array that every process holds in full -> a global array laid out as `sharding`; each
    process fills only its own devices' shards. (jax.device_put refuses a sharding that spans devices
    of other processes.)"""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def place_params(host_params, shardings):
    """Host numpy tree -> sharded global arrays. Each process supplies only its addressable shards."""
    return jax.tree.map(put_global, host_params, shardings)


def init_state(params_fn, tx: optax.GradientTransformation, shardings):
    """params_fn() -> params (traceable, e.g. random init, or a closure returning placed arrays).
    Returns the state with every leaf laid out as `shardings` says."""
    def make():
        params = params_fn()
        out = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}
        if "ref_params" in shardings:
            out["ref_params"] = jax.tree.map(jnp.copy, params)
        return out
    return jax.jit(make, out_shardings=shardings)()


def init_state_from_params(params, tx: optax.GradientTransformation, shardings):
    """Already-placed params -> state (optimizer state created sharded, params not copied)."""
    opt = jax.jit(tx.init, out_shardings=shardings["opt_state"])(params)
    step = put_global(np.int32(0), shardings["step"])
    out = {"step": step, "params": params, "opt_state": opt}
    if "ref_params" in shardings:  # a copy: the step donates the state, params and all
        out["ref_params"] = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=shardings["ref_params"])(params)
    return out
