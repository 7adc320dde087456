"""Ahead-of-time compile of generation with thinking for a Cloud TPU slice, on any host (no TPU needed).

    report = compile_generate(config, "v4-16", batch=8, prompt_len=256, max_new_tokens=256)

The program is quietstar_jax.inference.generate.generate (one jitted while loop: prefill, then per token
a thought's N - 1 tokens in N - 3 decode steps in branch slots, the mix, the choice, the text step with
the next <start>) with the params laid out as in training (config.mesh, fsdp / tensor) and the prompts
split over the batch axes, so it answers "does this model generate on this slice, and in how much memory
per chip". The report holds XLA's memory_analysis per chip against usable HBM, the params' and the KV
cache's share.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from quietstar_jax.errors import ConfigError
from quietstar_jax.sharding import batch_sharding, make_mesh, under_mesh
from quietstar_jax.tpu.aot import INIT_IDS, bytes_per_chip, memory_per_chip
from quietstar_jax.tpu.report import fmt_bytes
from quietstar_jax.tpu.topology import get_topology


def compile_generate(c, topology: str, *, batch: int, prompt_len: int, max_new_tokens: int, think: bool = True,
                     log=print) -> dict:
    """AOT-compiles generation of `batch` prompts of `prompt_len` tokens plus `max_new_tokens` for the
    model of run config `c` on `topology`. Raises ConfigError / MeshError / TopologyError for bad input."""
    from quietstar_jax.inference.generate import GenerateConfig, generate
    from quietstar_jax.training import config as config_lib
    from quietstar_jax.training.setup import model_config_only
    from quietstar_jax.training.state import param_shardings, random_params_fn

    config_lib.validate(c, for_compile=True)
    if min(batch, prompt_len, max_new_tokens) < 1:
        raise ConfigError("--batch, --prompt_len and --max_new_tokens must be >= 1")
    topo = get_topology(topology)
    mesh = make_mesh(dict(c.mesh), devices=topo.devices)
    b_sh = batch_sharding(mesh)
    n_batch = math.prod(mesh.shape[a] for a in ("data", "fsdp"))
    if batch % n_batch:
        raise ConfigError(f"--batch {batch} is not divisible by the data x fsdp mesh size {n_batch} "
                          f"(mesh {dict(mesh.shape)})")
    cfg, _ = model_config_only(c)
    qs = config_lib.quietstar_config(c, cfg.vocab_size, cfg.vocab_size + 1)
    gen = GenerateConfig(max_new_tokens=max_new_tokens, think=think)
    need = prompt_len + max_new_tokens + gen.num_thought_tokens(qs) + 2
    if need > cfg.max_position_embeddings:
        raise ConfigError(f"prompt_len + max_new_tokens + the thought need {need} positions; the model has "
                          f"{cfg.max_position_embeddings}")
    params_shape = jax.eval_shape(random_params_fn(cfg, qs, 0, INIT_IDS.get(c.model.preset, [0])))
    # Generation keeps no master weights: params in the compute dtype.
    params_shape = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, jnp.dtype(cfg.dtype)), params_shape)
    p_sh = param_shardings(cfg, qs, params_shape, mesh)
    params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), params_shape, p_sh)
    prompts = jax.ShapeDtypeStruct((batch, prompt_len), jnp.int32, sharding=b_sh)
    lengths = jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=NamedSharding(mesh, P(b_sh.spec[0])))
    key = jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype, sharding=NamedSharding(mesh, P()))
    rows = jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=NamedSharding(mesh, P(b_sh.spec[0])))
    fn = jax.jit(under_mesh(lambda p, x, n, k, r: generate(p, cfg, qs, gen, x, n, k, "right", r), mesh))
    log(f"{topo.name}: {len(topo.devices)} chips, {topo.num_hosts} host(s); mesh {dict(mesh.shape)}; generating "
        f"{batch} x ({prompt_len} + {max_new_tokens}) tokens, thinking {'on' if think else 'off'}")
    t = time.time()
    compiled = fn.lower(params, prompts, lengths, key, rows).compile()
    compile_s = time.time() - t
    D, Hkv, nL = cfg.head_dim, cfg.num_key_value_heads, cfg.num_hidden_layers
    cache_bytes = 2 * nL * batch * (prompt_len + max_new_tokens) * Hkv * D * jnp.dtype(cfg.dtype).itemsize
    return dict(topology=topo.name, chips=len(topo.devices), hosts=topo.num_hosts, mesh=dict(mesh.shape),
                **memory_per_chip(compiled, topo), compile_s=compile_s,
                params_bytes_per_chip=bytes_per_chip(params_shape, p_sh), cache_bytes_total=cache_bytes,
                batch=batch, prompt_len=prompt_len, max_new_tokens=max_new_tokens, think=think, compiled=compiled)


def format_generate_report(r: dict) -> str:
    mem, usable = r["memory"], r["usable_hbm"]
    g = fmt_bytes
    return "\n".join([
        f"== generation on {r['topology']} ({r['chips']} chips, {r['hosts']} hosts), mesh {r['mesh']}: "
        f"{r['batch']} x ({r['prompt_len']} + {r['max_new_tokens']}) tokens, thinking {'on' if r['think'] else 'off'} ==",
        "memory per chip (XLA memory_analysis)",
        f"  arguments (params + prompts) {g(mem['argument'])}   (params {g(r['params_bytes_per_chip']).strip()})",
        f"  temporaries (KV cache ...)   {g(mem['temp'])}   (text KV cache, all chips: "
        f"{g(r['cache_bytes_total']).strip()})",
        f"  total                        {g(mem['total'])}   ({100 * mem['total'] / usable:.1f}% of usable "
        f"{g(usable).strip()}, {r['usable_hbm_source']})",
        f"compile wall time {r['compile_s']:.1f}s"])
