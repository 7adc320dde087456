"""Ahead-of-time compile of the real train step for a Cloud TPU slice, on any host (no TPU needed).

    report = compile_train_step(config, "v4-16")     # memory, FLOPs, communication, roofline

The mesh is built over the slice's compile-only devices (quietstar_jax.tpu.topology); `build_setup`
(the trainer's own code) gives the jitted step, which is lowered with the abstract state, an abstract
batch and a key, then compiled by the TPU compiler. The report holds XLA's memory_analysis per chip
against usable HBM, the step's FLOPs, the collective and HBM bytes per chip per step read off the
compiled HLO (quietstar_jax.tpu.hlo_stats) and a roofline step time (quietstar_jax.tpu.roofline).

FLOPs. XLA's cost_analysis() counts a while-loop body once, ignoring the trip count, so for a step
whose layers / micro-batches / thought tokens run under lax.scan it undercounts by ~n_layers. The
FLOPs here are counted on the step's jaxpr instead: every dot_general, scan bodies times their length,
remat recomputation included ("executed"); "model" FLOPs are the same count with remat off (the
usual MFU numerator). Element-wise work is not counted (a few percent).
"""

from __future__ import annotations

import glob
import math
import os
import tempfile
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from quietstar_jax.errors import ConfigError
from quietstar_jax.sharding import make_mesh
from quietstar_jax.tpu import hlo_stats, roofline
from quietstar_jax.tpu.topology import Topology, get_topology, usable_hbm_bytes
from quietstar_jax.training.flops import jaxpr_matmul_flops

# Token ids of "---" (the thought embeddings' init text) without loading a tokenizer. They only set the
# initial values of the thought embeddings, which never reach a compiled program; shapes are all
# that matter here, so any in-vocabulary id works for other models.
INIT_IDS = {"mistral-7b": [11940]}


def _count_params(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def bytes_per_chip(abstract, shardings) -> int:
    """Bytes of one device's shards of a tree of ShapeDtypeStructs laid out by `shardings`."""
    return sum(math.prod(sh.shard_shape(a.shape)) * jnp.dtype(a.dtype).itemsize
               for a, sh in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)))


def memory_per_chip(compiled, topo) -> dict:
    """{"memory": XLA's memory_analysis per chip (argument, output, alias, temp, generated_code, total),
    "usable_hbm", "usable_hbm_source"} of a compiled program for topology `topo`."""
    ma = compiled.memory_analysis()
    mem = {k: int(getattr(ma, f"{k}_size_in_bytes", 0) or 0)
           for k in ("argument", "output", "alias", "temp", "generated_code")}
    mem["total"] = mem["argument"] + mem["output"] - mem["alias"] + mem["temp"] + mem["generated_code"]
    usable, src = usable_hbm_bytes(topo)
    return {"memory": mem, "usable_hbm": usable, "usable_hbm_source": src}


def compile_train_step(c, topology: str, *, flops: bool = True, log=print) -> dict:
    """AOT-compiles the train step of config `c` for `topology`. Returns a report dict (see
    format_report). Raises ConfigError / MeshError / TopologyError for bad input; the TPU compiler's
    RESOURCE_EXHAUSTED (JaxRuntimeError) when the program cannot fit in HBM."""
    from quietstar_jax.training import config as config_lib
    from quietstar_jax.training.setup import abstract_batch, build_setup, model_config_only

    config_lib.validate(c, for_compile=True)
    topo = get_topology(topology)
    mesh = make_mesh(dict(c.mesh), devices=topo.devices)
    if c.global_batch_size % topo.num_hosts:
        raise ConfigError(f"config.global_batch_size {c.global_batch_size} is not divisible by the "
                          f"{topo.num_hosts} hosts of {topo.name} (each host feeds its share of the batch)")
    cfg, _ = model_config_only(c)
    qs = config_lib.quietstar_config(c, cfg.vocab_size, cfg.vocab_size + 1)  # as an HF tokenizer adds them
    init_ids = INIT_IDS.get(c.model.preset, [0])
    setup = build_setup(c, cfg, qs, init_ids, mesh=mesh)
    state = setup.abstract_state()
    batch = abstract_batch(c, setup)
    key = jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype,
                               sharding=NamedSharding(mesh, P()))
    n_params = _count_params(setup.abstract["params"])
    state_bytes = bytes_per_chip(setup.abstract, setup.shardings)
    log(f"{topo.name}: {len(topo.devices)} chips, {topo.num_hosts} host(s); mesh {dict(mesh.shape)}; "
        f"{cfg.model_type} {n_params / 1e9:.2f}B params; train state (params + optimizer) "
        f"{state_bytes / 2 ** 30:.2f} GiB per chip")

    report = dict(topology=topo.name, chips=len(topo.devices), hosts=topo.num_hosts,
                  device_kind=topo.devices[0].device_kind, mesh=dict(mesh.shape), params=n_params,
                  state_bytes_per_chip=state_bytes, peak_flops_per_chip=topo.spec.peak_bf16_flops,
                  hbm_gib=topo.spec.hbm_gib)
    t = time.time()
    traced = setup.step_fn.trace(state, batch, key)  # counted below and lowered: one trace
    trace_s = time.time() - t
    if flops:
        t = time.time()
        executed, w1 = jaxpr_matmul_flops(traced.jaxpr)
        if cfg.remat_policy != "none":
            c_model = c.copy_and_resolve_references()
            with c_model.unlocked():
                c_model.model.remat_policy = "none"
            cfg0, _ = model_config_only(c_model)
            s0 = build_setup(c_model, cfg0, qs, init_ids, mesh=mesh)
            model, w2 = jaxpr_matmul_flops(jax.make_jaxpr(s0.step_fn)(state, batch, key))
        else:
            model, w2 = executed, False
        report.update(flops_executed=executed, flops_model=model, flops_while_once=w1 or w2,
                      flops_trace_s=time.time() - t)

    t = time.time()
    lowered = traced.lower()
    report["lower_s"] = trace_s + time.time() - t
    log(f"lowered in {report['lower_s']:.1f}s; compiling for {topo.name} (the TPU compiler, on this host)...")
    t = time.time()
    with tempfile.TemporaryDirectory(prefix="quietstar-aot-") as dump:
        compiled = lowered.compile(compiler_options=_DUMP_OPTIONS | {"xla_dump_to": dump})
        report["compile_s"] = time.time() - t
        report["hlo_text"] = optimized_hlo_text(compiled, dump)

    report.update(memory_per_chip(compiled, topo))
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        report["xla_flops_per_chip"] = float((cost or {}).get("flops", float("nan")))
    except Exception:  # noqa: BLE001 - cost model unavailable
        report["xla_flops_per_chip"] = float("nan")
    report.update(communication_report(compiled, topo, report, [tuple(d.coords) for d in mesh.devices.flat]))
    report["compiled"] = compiled
    return report


# The TPU compiler writes the optimized module's text itself (no proto round trip): `*.after_optimizations.txt`.
_DUMP_OPTIONS = {"xla_dump_hlo_as_text": True}


def optimized_hlo_text(compiled, dump_dir: str) -> str:
    """The compiled (optimized, partitioned) module's HLO text: compiled.as_text(), or, where jaxlib cannot
    read the module libtpu returns back (jax 0.10.2 + libtpu 0.0.52 for v6e 7B: "async-update instruction
    should have 1 operands but sees 3"), the text the compiler dumped into `dump_dir`."""
    try:
        return compiled.as_text()
    except Exception:  # noqa: BLE001 - a JaxRuntimeError from the HLO proto parser
        files = sorted(glob.glob(os.path.join(dump_dir, "*.after_optimizations.txt")))
        if not files:
            raise
        with open(files[-1]) as f:
            return f.read()


def communication_report(compiled, topo: Topology, report: dict, coords: list | None = None) -> dict:
    """Per chip per step: collective bytes by kind x phase and HBM bytes, read off the compiled program's
    HLO with loop trip counts (quietstar_jax.tpu.hlo_stats), and the roofline step time they give with the
    executed FLOPs on this slice (quietstar_jax.tpu.roofline). coords: the mesh's devices' chip
    coordinates in mesh order (the ICI links of collectives over device groups)."""
    stats = hlo_stats.analyze(report.get("hlo_text") or compiled.as_text())
    flops = report.get("flops_executed")
    rl = roofline.estimate(topo.spec, topo.dims, flops / report["chips"] if flops is not None else None,
                           stats.hbm_bytes, stats.total_collective_bytes, stats.by_group(), coords)
    try:  # XLA's own count (loop bodies once), printed next to ours for comparison
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        xla_bytes = float((cost or {}).get("bytes accessed", float("nan")))
    except Exception:  # noqa: BLE001 - cost model unavailable
        xla_bytes = float("nan")
    return dict(hlo_stats=stats, roofline=rl, xla_bytes_accessed_per_chip=xla_bytes)
