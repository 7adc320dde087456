"""Train state {"step", "params", "opt_state"}: abstract shapes, shardings, sharded initialisation.

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
    return dict(param_axes(cfg), quietstar=quietstar_param_axes(qs))


def param_shardings(cfg: ModelConfig, qs: QuietStarConfig, params_shape, mesh: Mesh,
                    rules: dict = DEFAULT_RULES):
    return tree_shardings(full_param_axes(cfg, qs), params_shape, mesh, rules)


def state_shardings(cfg: ModelConfig, qs: QuietStarConfig, tx: optax.GradientTransformation, abstract_state,
                    mesh: Mesh, rules: dict = DEFAULT_RULES):
    """Shardings for the whole state: optimizer moments follow their parameter, scalars replicate."""
    p_sh = param_shardings(cfg, qs, abstract_state["params"], mesh, rules)
    replicated = NamedSharding(mesh, P())
    opt_sh = optax.tree_map_params(tx, lambda _, sh: sh, abstract_state["opt_state"], p_sh,
                                   transform_non_params=lambda _: replicated,
                                   is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct))
    return {"step": replicated, "params": p_sh, "opt_state": opt_sh}


def abstract_state(params_shape, tx: optax.GradientTransformation):
    opt = jax.eval_shape(tx.init, params_shape)
    return {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": params_shape, "opt_state": opt}


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
        return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}
    return jax.jit(make, out_shardings=shardings)()


def init_state_from_params(params, tx: optax.GradientTransformation, shardings):
    """Already-placed params -> state (optimizer state created sharded, params not copied)."""
    opt = jax.jit(tx.init, out_shardings=shardings["opt_state"])(params)
    step = put_global(np.int32(0), shardings["step"])
    return {"step": step, "params": params, "opt_state": opt}
