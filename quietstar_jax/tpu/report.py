"""The compile report as text: memory per chip, FLOPs, estimated step time, communication by kind
and phase, and the roofline (see quietstar_jax.tpu.aot for what the numbers are)."""

from __future__ import annotations

from quietstar_jax import hardware
from quietstar_jax.tpu import hlo_stats, roofline

GIB = 1024 ** 3


def fmt_bytes(b: float) -> str:
    """b bytes as GiB (from 0.1 GiB) or MiB, 8.2f."""
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
             f"  arguments (state + batch)  {fmt_bytes(mem['argument'])}"
             + (f"   (train state {fmt_bytes(r['state_bytes_per_chip']).strip()})" if "state_bytes_per_chip" in r
                else ""),
             f"  outputs                    {fmt_bytes(mem['output'])}",
             f"  aliased (donated state)    {fmt_bytes(-mem['alias'])}",
             f"  temporaries                {fmt_bytes(mem['temp'])}",
             f"  generated code             {fmt_bytes(mem['generated_code'])}",
             f"  total                      {fmt_bytes(mem['total'])}   ({100 * mem['total'] / usable:.1f}% of usable)",
             f"  usable HBM                 {fmt_bytes(usable)}   ({r['usable_hbm_source']}; {r['hbm_gib']:g} GiB "
             f"physical)",
             f"  headroom                   {fmt_bytes(usable - mem['total'])}"]
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
    lines = ["communication per chip per step (optimized HLO, loop bodies x trip counts; quietstar_jax.tpu.hlo_stats)",
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
    lines.append(f"roofline step time (max of the three; quietstar_jax.tpu.roofline): {_dur(rl.step_s)}, "
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
    rate = rl.ici_bytes_per_s / max(rl.ici_links, 1) / 1e9
    lines.append(f"  ICI      {_dur(rl.ici_s):>9}   {_bytes_short(rl.collective_bytes_per_chip)} per chip / "
                 f"({rl.ici_links} links x {rate:.0f} GB/s one way){mark('ICI')}")
    if any(n < r["chips"] for n in rl.ici_by_group):
        lines.append("           by group: " + ", ".join(
            f"{'slice' if n >= r['chips'] else f'{n} chips'} {_bytes_short(b)} on {k} link{'s' * (k != 1)}"
            for n, (b, k) in sorted(rl.ici_by_group.items(), key=lambda kv: -kv[0])))
    lines.append("  assumes: each limit alone at its peak, perfect overlap; a collective uses all the links of its "
                 "device group at once; HBM bytes = op operands + results outside fusions, tiled sizes")
    lines.append("  " + roofline.sources_line(gen))
    return lines
