"""Ahead-of-time compile of the real train step for a Cloud TPU slice, on any host (no TPU needed).

    python -m quietstar_jax.compile --config=configs/tpu_v4.py                 # the config's slice
    python -m quietstar_jax.compile --config=configs/tpu_v4.py --topology=v4:2x2x4 --config.mesh.fsdp=16

libtpu's compile-only client describes the slice (`jax.experimental.topologies`); the mesh is built
over its devices, `build_setup` (the trainer's own code) gives the jitted step, which is lowered with
the abstract state, an abstract batch and a key, then compiled by the TPU compiler. Prints per-chip
memory (XLA's memory_analysis) against usable HBM, FLOPs per step and an estimated step time, the
collective bytes per chip per step by kind and phase read off the compiled HLO (quietstar_jax.hlo_stats)
and a roofline step time: the max of compute, HBM and ICI time (quietstar_jax.roofline).
Exit status: 0 fits, 1 does not fit (or compile failed), 2 bad config / topology / mesh.

Topology names: "<gen>:<AxBxC>" (v4:2x2x2, v5p:2x2x1, v5e:4x4, v6e:2x4) or a Cloud accelerator type
(v4-16, v5p-8, v5litepod-16, v6e-8). v4 / v5p are compiled in megacore mode (one JAX device per chip,
as on a real slice). Only the model architecture is needed (model.preset, or model.path's config.json);
no weights, tokenizer or data are read.

FLOPs. XLA's cost_analysis() counts a while-loop body once, ignoring the trip count, so for a step
whose layers / micro-batches / thought tokens run under lax.scan it undercounts by ~n_layers. The
FLOPs here are counted on the step's jaxpr instead: every dot_general, scan bodies times their length,
remat recomputation included ("executed"); "model" FLOPs are the same count with remat off (the
usual MFU numerator). Element-wise work is not counted (a few percent).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from quietstar_jax import hardware, hlo_stats, roofline
from quietstar_jax.model.config import ConfigError
from quietstar_jax.errors import TopologyError  # noqa: F401 - re-exported
from quietstar_jax.sharding import MeshError, make_mesh
from quietstar_jax.training.flops import jaxpr_matmul_flops  # noqa: F401 - re-exported

GIB = 1024 ** 3
# Read by libtpu when it loads (at the first topology request): no GCE metadata lookups and no
# "could not determine TPU worker hostnames" noise on a non-TPU host, no lock against another process
# holding libtpu. Never set in a process that may run on a real TPU (they would misconfigure it).
LIBTPU_COMPILE_ONLY_ENV = {"ALLOW_MULTIPLE_LIBTPU_LOAD": "1", "TPU_ACCELERATOR_TYPE": "v4-8",
                           "TPU_WORKER_HOSTNAMES": "localhost", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _cpu_only_process() -> bool:
    platforms = os.environ.get("JAX_PLATFORMS", "")
    return bool(platforms) and "tpu" not in platforms.lower().split(",")


def _compile_only_env() -> None:
    if _cpu_only_process():
        for k, v in LIBTPU_COMPILE_ONLY_ENV.items():
            os.environ.setdefault(k, v)




# Per-generation hardware facts (peak FLOP/s, HBM, ICI, libtpu chip config, ...) live in
# quietstar_jax.hardware, with their sources; these names are kept for callers of this module.
TpuSpec = hardware.TpuGeneration
SPECS = hardware.GENERATIONS
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6lite": "v6e"}
# Standard slice shapes by chip count (Cloud TPU docs), for accelerator-type names.
_SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8",
              512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}
_SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
_TOPOLOGY_HELP = ("expected '<gen>:<AxBxC>' (v4:2x2x2, v5p:2x2x1; 2D for v5e/v6e: v5e:4x4) or an "
                  f"accelerator type (v4-16, v5p-8, v5litepod-16, v6e-8); generations: {sorted(SPECS)}")


def parse_topology(name: str) -> tuple[TpuSpec, tuple[int, ...]]:
    """'v4:2x2x2' or 'v4-16' -> (spec, chip grid dims). Raises TopologyError."""
    name = name.strip().lower()
    m = re.fullmatch(r"([a-z0-9]+?):(\d+(?:x\d+)+)", name)
    if m:
        gen, dims = _ALIASES.get(m.group(1), m.group(1)), tuple(int(d) for d in m.group(2).split("x"))
        if gen not in SPECS:
            raise TopologyError(f"topology {name!r}: unknown TPU generation {m.group(1)!r}; {_TOPOLOGY_HELP}")
        spec = SPECS[gen]
        if len(dims) != spec.dims or min(dims) < 1:
            raise TopologyError(f"topology {name!r}: {gen} needs {spec.dims} positive dimensions; {_TOPOLOGY_HELP}")
        return spec, dims
    m = re.fullmatch(r"([a-z0-9]+?)-(\d+)", name)
    if m:
        gen = _ALIASES.get(m.group(1), m.group(1))
        if gen not in SPECS:
            raise TopologyError(f"topology {name!r}: unknown TPU generation {m.group(1)!r}; {_TOPOLOGY_HELP}")
        spec = SPECS[gen]
        n = int(m.group(2))
        chips = n // 2 if spec.names_count_cores else n
        shapes = _SHAPES_3D if spec.dims == 3 else _SHAPES_2D
        if (spec.names_count_cores and n % 2) or chips not in shapes:
            sizes = sorted(c * (2 if spec.names_count_cores else 1) for c in shapes)
            raise TopologyError(f"topology {name!r}: no standard {gen} slice of that size (known: "
                                f"{', '.join(f'{m.group(1)}-{s}' for s in sizes)}); or give '{gen}:AxBxC'")
        return spec, tuple(int(d) for d in shapes[chips].split("x"))
    raise TopologyError(f"topology {name!r}: {_TOPOLOGY_HELP}")


def chips_per_host_bounds(spec: TpuSpec, dims: tuple[int, ...]) -> tuple[int, int, int]:
    """Chips per host as a 3D box: 2x2x1 (4 chips, every v4 / v5p host; v5e / v6e hosts of multi-host
    slices); single-host v5e / v6e slices of up to 8 chips (2x4) are one host."""
    d3 = tuple(dims) + (1,) * (3 - len(dims))
    if spec.dims == 2 and math.prod(dims) <= 8:
        return d3
    return tuple(min(d, b) for d, b in zip(d3, (2, 2, 1)))


@dataclasses.dataclass
class Topology:
    name: str  # canonical "<gen>:<AxBxC>"
    spec: TpuSpec
    dims: tuple
    devices: list
    num_hosts: int


def get_topology(name: str) -> Topology:
    """The slice's compile-only TPU devices (libtpu, works on a CPU host). Raises TopologyError."""
    spec, dims = parse_topology(name)
    canonical = f"{spec.generation}:{'x'.join(map(str, dims))}"
    _compile_only_env()
    try:
        from jax.experimental import topologies

        desc = topologies.get_topology_desc(topology_name=canonical, platform="tpu",
                                            chip_config_name=spec.chip_config,
                                            chips_per_host_bounds=chips_per_host_bounds(spec, dims), num_slices=1)
    except ImportError as e:
        raise TopologyError(f"cannot describe TPU topology {canonical!r}: {e}") from e
    except Exception as e:  # noqa: BLE001 - libtpu missing / rejects the layout: jaxlib raises RuntimeErrors
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = " (is libtpu installed? pip install libtpu)" if "libtpu" in msg.lower() or "plugin" in msg.lower() \
            or "tpu" not in msg.lower() else ""
        raise TopologyError(f"libtpu cannot describe TPU topology {canonical!r}: {msg}{hint}") from e
    devices = list(desc.devices)
    return Topology(canonical, spec, dims, devices, len({d.process_index for d in devices}))


_OOM_RE = re.compile(r"available HBM \(([\d.]+)\s*([KMGT])i?B?\)")
_UNITS = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}


def usable_hbm_bytes(topo: Topology) -> tuple[float, str]:
    """HBM the TPU compiler lets one program use per chip, read from the compiler itself (it states it
    when a program does not fit: compile one that cannot), else the spec table's measured value."""
    try:
        mesh = jax.sharding.Mesh(topo.devices[:1], ("d",))
        big = jax.ShapeDtypeStruct((2 ** 38,), jnp.float32, sharding=NamedSharding(mesh, P()))  # 1 TiB
        jax.jit(lambda x: x + 1).lower(big).compile()
    except Exception as e:  # noqa: BLE001 - the expected RESOURCE_EXHAUSTED
        m = _OOM_RE.search(str(e))
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)], "reported by the TPU compiler"
    return topo.spec.usable_hbm_gib * GIB, "table (libtpu 0.0.52)"


# --------------------------------------------------------------------------- the compile
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
        f"{_bytes(state_bytes).strip()} per chip")

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
    compiled = lowered.compile()
    report["compile_s"] = time.time() - t

    ma = compiled.memory_analysis()
    mem = {k: int(getattr(ma, f"{k}_size_in_bytes", 0) or 0)
           for k in ("argument", "output", "alias", "temp", "generated_code")}
    mem["total"] = mem["argument"] + mem["output"] - mem["alias"] + mem["temp"] + mem["generated_code"]
    usable, src = usable_hbm_bytes(topo)
    report.update(memory=mem, usable_hbm=usable, usable_hbm_source=src)
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        report["xla_flops_per_chip"] = float((cost or {}).get("flops", float("nan")))
    except Exception:  # noqa: BLE001 - cost model unavailable
        report["xla_flops_per_chip"] = float("nan")
    report.update(communication_report(compiled, topo, report))
    report["compiled"] = compiled
    return report


def communication_report(compiled, topo: Topology, report: dict) -> dict:
    """Per chip per step: collective bytes by kind x phase and HBM bytes, read off the compiled program's
    HLO with loop trip counts (quietstar_jax.hlo_stats), and the roofline step time they give with the
    executed FLOPs on this slice (quietstar_jax.roofline)."""
    stats = hlo_stats.analyze(compiled.as_text())
    flops = report.get("flops_executed")
    rl = roofline.estimate(topo.spec, topo.dims, flops / report["chips"] if flops is not None else None,
                           stats.hbm_bytes, stats.total_collective_bytes)
    try:  # XLA's own count (loop bodies once), printed next to ours for comparison
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        xla_bytes = float((cost or {}).get("bytes accessed", float("nan")))
    except Exception:  # noqa: BLE001 - cost model unavailable
        xla_bytes = float("nan")
    return dict(hlo_stats=stats, roofline=rl, xla_bytes_accessed_per_chip=xla_bytes)


def _bytes(b: float) -> str:
    return f"{b / GIB:8.2f} GiB" if abs(b) >= GIB / 10 else f"{b / 2 ** 20:8.2f} MiB"


def _flops(f: float) -> str:
    if f != f:
        return "       n/a      "
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if abs(f) >= scale:
            return f"{f / scale:10.2f} {unit}"
    return f"{f / 1e6:10.2f} MFLOP"


def _secs(s: float) -> str:
    return f"{s:.2f} s" if s < 120 else f"{s / 60:.1f} min"


def format_report(r: dict, mfu: float = 0.4, tokens_per_step: int | None = None,
                  steps: int | None = None) -> str:
    mem, usable = r["memory"], r["usable_hbm"]
    lines = [f"== {r['topology']} ({r['device_kind']}, {r['chips']} chips, {r['hosts']} hosts), mesh {r['mesh']}, "
             f"{r['params'] / 1e9:.2f}B params ==",
             "memory per chip (XLA memory_analysis)",
             f"  arguments (state + batch)  {_bytes(mem['argument'])}"
             + (f"   (train state {_bytes(r['state_bytes_per_chip']).strip()})" if "state_bytes_per_chip" in r
                else ""),
             f"  outputs                    {_bytes(mem['output'])}",
             f"  aliased (donated state)    {_bytes(-mem['alias'])}",
             f"  temporaries                {_bytes(mem['temp'])}",
             f"  generated code             {_bytes(mem['generated_code'])}",
             f"  total                      {_bytes(mem['total'])}   ({100 * mem['total'] / usable:.1f}% of usable)",
             f"  usable HBM                 {_bytes(usable)}   ({r['usable_hbm_source']}; {r['hbm_gib']:g} GiB "
             f"physical)",
             f"  headroom                   {_bytes(usable - mem['total'])}"]
    peak = r["peak_flops_per_chip"]
    if "flops_executed" in r:
        n = r["chips"]
        ex, mo = r["flops_executed"], r["flops_model"]
        lines += ["FLOPs per step (matmuls counted on the jaxpr; scans x trip count)",
                  f"  model (no remat)           {_flops(mo)} total  {_flops(mo / n)} per chip",
                  f"  executed (with remat)      {_flops(ex)} total  {_flops(ex / n)} per chip",
                  f"  XLA cost_analysis          {'':16}       {_flops(r['xla_flops_per_chip'])} per chip "
                  f"(loop bodies counted once: not a step count)"]
        if r.get("flops_while_once"):
            lines.append("  note: the step has while loops of unknown trip count, counted once")
        t_mfu = mo / n / (peak * mfu)
        t_min = ex / n / peak
        lines += [f"estimated step time (peak {peak / 1e12:.0f} TFLOP/s bf16 per chip)",
                  f"  at {100 * mfu:.0f}% MFU                {_secs(t_mfu)}   (model FLOPs / (peak x MFU))",
                  f"  lower bound                {_secs(t_min)}   (executed FLOPs at 100% of peak)"]
        if tokens_per_step:
            lines.append(f"  tokens/s at {100 * mfu:.0f}% MFU        {tokens_per_step / t_mfu:,.0f} "
                         f"({tokens_per_step} text tokens per step)")
        if steps:
            lines.append(f"  {steps} steps at {100 * mfu:.0f}% MFU       {_secs(steps * t_mfu)}")
    if "hlo_stats" in r:
        lines += _communication_lines(r)
    lines.append(f"compile wall time: lower {r['lower_s']:.1f}s + compile {r['compile_s']:.1f}s"
                 + (f" (+ FLOP count {r['flops_trace_s']:.1f}s)" if "flops_trace_s" in r else ""))
    return "\n".join(lines)


_PHASE_HEADS = {"sampling": "sampling", "forward": "forward", "backward": "backward", "optimizer": "optimizer",
                "unattributed": "unattrib."}


def _bytes_short(b: float) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if abs(b) >= scale / 10:
            return f"{b / scale:.2f} {unit}"
    return f"{b:.0f} B"


def _dur(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.2f} us"
    return f"{s * 1e3:.2f} ms" if s < 1 else _secs(s)


def _communication_lines(r: dict) -> list[str]:
    """The collective-bytes table (kind x phase) and the roofline, for format_report."""
    st, rl = r["hlo_stats"], r["roofline"]
    cell = lambda b: f"{_bytes_short(b):>11}" if b else f"{'-':>11}"  # noqa: E731
    lines = ["communication per chip per step (optimized HLO, loop bodies x trip counts; quietstar_jax.hlo_stats)",
             f"  {'':20}" + "".join(f"{_PHASE_HEADS[p]:>11}" for p in hlo_stats.PHASES) + f"{'total':>11}"]
    for k in hlo_stats.KINDS:
        row = [st.collective_bytes[(k, p)] for p in hlo_stats.PHASES]
        lines.append(f"  {k:20}" + "".join(cell(b) for b in row) + cell(sum(row)))
    by_phase = st.by_phase()
    lines.append(f"  {'total':20}" + "".join(cell(by_phase[p]) for p in hlo_stats.PHASES)
                 + cell(st.total_collective_bytes))
    lines.append("  all-gather: bytes received; reduce-scatter: sent; all-reduce: 2(n-1)/n x buffer; all-to-all: "
                 "(n-1)/n x buffer; permute: buffer (logical shapes)")
    if st.unknown_loops:
        lines.append(f"  note: {len(st.unknown_loops)} while loop(s) of unreadable trip count counted once: "
                     f"{', '.join(st.unknown_loops[:5])}")
    gen = hardware.GENERATIONS[r["topology"].split(":")[0]]
    mark = lambda name: "   <- the roofline" if name == rl.bound else ""  # noqa: E731
    lines.append(f"roofline step time (max of the three; quietstar_jax.roofline): {_dur(rl.step_s)}, "
                 f"{rl.bound}-bound")
    if rl.compute_s is not None:
        lines.append(f"  compute  {_dur(rl.compute_s):>9}   {_flops(rl.flops_per_chip).strip()} executed per chip / "
                     f"{rl.peak_flops / 1e12:.0f} TFLOP/s bf16{mark('compute')}")
    else:
        lines.append("  compute        n/a   (no FLOP count: run without --noflops)")
    lines.append(f"  HBM      {_dur(rl.hbm_s):>9}   {_bytes_short(rl.hbm_bytes_per_chip)} per chip / "
                 f"{rl.hbm_bytes_per_s / 1e9:.0f} GB/s (XLA cost_analysis, loop bodies once: "
                 f"{_bytes_short(r.get('xla_bytes_accessed_per_chip', float('nan')))}; this model, once: "
                 f"{_bytes_short(st.hbm_bytes_once)}){mark('HBM')}")
    lines.append("           by phase: " + ", ".join(f"{_PHASE_HEADS[p].rstrip('.')} {_bytes_short(b)}"
                                                for p, b in st.hbm_by_phase.items() if b))
    lines.append(f"  ICI      {_dur(rl.ici_s):>9}   {_bytes_short(rl.collective_bytes_per_chip)} per chip / "
                 f"({rl.ici_links} links x {rl.ici_bytes_per_s / max(rl.ici_links, 1) / 1e9:.0f} GB/s one way)"
                 f"{mark('ICI')}")
    lines.append("  assumes: each limit alone at its peak, perfect overlap; collectives span the slice and use all "
                 "its links at once; HBM bytes = op operands + results outside fusions, tiled sizes")
    lines.append("  " + roofline.sources_line(gen))
    return lines


def _is_oom(e: Exception) -> bool:
    s = str(e)
    return "RESOURCE_EXHAUSTED" in s or "HbmOom" in s or "Ran out of memory" in s


def run(c, topology: str, mfu: float = 0.4, min_headroom_gib: float = 0.0, flops: bool = True,
        dump_hlo: str = "") -> int:
    """The CLI: compile, print the table, return the exit status."""
    if not 0 < mfu <= 1:
        print(f"error: --mfu must be in (0, 1], got {mfu}", file=sys.stderr)
        return 2
    try:
        r = compile_train_step(c, topology, flops=flops, log=lambda s: print(s, flush=True))
    except (ConfigError, MeshError, TopologyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the TPU compiler's errors are JaxRuntimeError
        if _is_oom(e):
            print(f"DOES NOT FIT on {topology}: the TPU compiler ran out of HBM.\n{str(e).strip()[:2000]}\n"
                  "Try: a larger slice (--topology), more fsdp (--config.mesh.fsdp), "
                  "--config.grad_accum_steps=<more micro-batches>, --config.model.remat_policy=full.",
                  file=sys.stderr)
            return 1
        raise
    if dump_hlo:
        with open(dump_hlo, "w") as f:
            f.write(r["compiled"].as_text())
        print(f"optimized HLO (per-chip SPMD program) written to {dump_hlo}")
    print(format_report(r, mfu, tokens_per_step=c.global_batch_size * c.seq_len, steps=c.steps), flush=True)
    total, usable = r["memory"]["total"], r["usable_hbm"]
    if total > usable - min_headroom_gib * GIB:
        print(f"DOES NOT FIT: {total / GIB:.2f} GiB per chip > usable {usable / GIB:.2f} GiB"
              + (f" - required headroom {min_headroom_gib:g} GiB" if min_headroom_gib else ""), file=sys.stderr)
        return 1
    print(f"FITS: {total / GIB:.2f} GiB of {usable / GIB:.2f} GiB usable per chip", flush=True)
    return 0


def main(argv=None):
    # A dedicated process: JAX on the CPU (the TPU compiler needs no TPU), libtpu in compile-only mode.
    if not os.environ.get("JAX_PLATFORMS"):
        os.environ["JAX_PLATFORMS"] = "cpu"
        jax.config.update("jax_platforms", "cpu")  # jax read the environment at import
    if not _cpu_only_process():
        print(f"note: JAX_PLATFORMS={os.environ['JAX_PLATFORMS']!r} includes tpu; compiling with the default "
              "libtpu settings", file=sys.stderr)
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "config file (configs/*.py with get_config())",
                                    lock_config=True)
    flags.DEFINE_string("topology", None, "TPU slice, e.g. v4:2x2x2 or v4-16 (default: the config's "
                                          "tpu_topology field)")
    flags.DEFINE_float("mfu", 0.4, "assumed model FLOP utilisation for the step-time estimate")
    flags.DEFINE_float("min_headroom_gib", 0.0, "fail unless this much HBM per chip stays free")
    flags.DEFINE_bool("flops", True, "count FLOPs on the step's jaxpr (traces the step twice; seconds)")
    flags.DEFINE_string("dump_hlo", "", "write the compiled (optimized, partitioned) HLO text to this file")
    flags.mark_flag_as_required("config")

    def _main(args):
        if len(args) > 1:
            raise app.UsageError(f"unexpected arguments: {args[1:]}")
        FLAGS = flags.FLAGS
        c = FLAGS.config
        topology = FLAGS.topology or c.get("tpu_topology")
        if not topology:
            print("error: no topology: pass --topology=v4:2x2x2 (or set tpu_topology in the config)",
                  file=sys.stderr)
            sys.exit(2)
        sys.exit(run(c, topology, FLAGS.mfu, FLAGS.min_headroom_gib, FLAGS.flops, FLAGS.dump_hlo))

    app.run(_main, argv)


if __name__ == "__main__":
    main()
