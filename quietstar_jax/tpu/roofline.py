"""Roofline step time of a compiled step on a TPU slice: the slowest of compute, HBM and ICI traffic.

    compute  = executed FLOPs per chip / peak bf16 FLOP/s           (matmuls, counted on the jaxpr with
                                                                      scan trip counts: quietstar_jax.compile)
    HBM      = HBM bytes per chip / HBM bandwidth                    (hlo_stats: the optimized HLO, each op
                                                                      x how often its loop runs)
    ICI      = collective bytes per chip / the chip's ICI bandwidth  (hlo_stats conventions)

Each is a lower bound on the step time if that resource were the only limit and ran at its published
peak; the step can be no faster than the largest (perfect overlap of the other two), and is slower in
practice (imperfect overlap, MXU utilisation below peak, element-wise work not counted in the FLOPs).

ICI assumption: every collective spans the whole slice (true of this project's 1-D fsdp / data meshes)
and drives all of the chip's usable ICI links in parallel, one direction each, at the published per-link
rate (hardware.slice_ici_bytes_per_s: torus wrap-around only where the docs promise it, else the mesh's
end chips set the pace). The per-chip bytes are what a chip must receive (all-gather) or send
(reduce-scatter ...), so bytes / (links x per-link rate) is the shortest time the links allow.
"""

from __future__ import annotations

import dataclasses

from quietstar_jax import hardware


@dataclasses.dataclass(frozen=True)
class Roofline:
    """Seconds per step under each limit (compute_s is None without a FLOP count), and their inputs."""

    compute_s: float | None
    hbm_s: float
    ici_s: float
    flops_per_chip: float | None
    hbm_bytes_per_chip: float
    collective_bytes_per_chip: float
    peak_flops: float
    hbm_bytes_per_s: float
    ici_bytes_per_s: float
    ici_links: int

    @property
    def times(self) -> dict:
        t = {"compute": self.compute_s, "HBM": self.hbm_s, "ICI": self.ici_s}
        return {k: v for k, v in t.items() if v is not None}

    @property
    def bound(self) -> str:
        """Which limit sets the roofline step time."""
        t = self.times
        return max(t, key=t.get)

    @property
    def step_s(self) -> float:
        return max(self.times.values())


def estimate(gen: hardware.TpuGeneration, dims: tuple, flops_per_chip: float | None, hbm_bytes_per_chip: float,
             collective_bytes_per_chip: float) -> Roofline:
    """The roofline of one step on a slice of `gen` chips shaped `dims` (per-chip inputs; see module doc)."""
    links = hardware.ici_links(gen, dims)
    ici_bw = links * gen.ici_link_bytes_per_s
    if collective_bytes_per_chip and not ici_bw:
        raise ValueError(f"collectives on a one-chip slice {dims}: the program was not compiled for it")
    have_flops = flops_per_chip is not None and flops_per_chip == flops_per_chip
    return Roofline(
        compute_s=flops_per_chip / gen.peak_bf16_flops if have_flops else None,
        hbm_s=hbm_bytes_per_chip / gen.hbm_bytes_per_s,
        ici_s=collective_bytes_per_chip / ici_bw if ici_bw else 0.0,
        flops_per_chip=flops_per_chip if have_flops else None, hbm_bytes_per_chip=hbm_bytes_per_chip,
        collective_bytes_per_chip=collective_bytes_per_chip, peak_flops=gen.peak_bf16_flops,
        hbm_bytes_per_s=gen.hbm_bytes_per_s, ici_bytes_per_s=ici_bw, ici_links=links)


def sources_line(gen: hardware.TpuGeneration) -> str:
    """One line naming where the three rates come from (fields sharing a source grouped)."""
    fields = {"peak bf16": "peak_bf16_flops", "HBM bandwidth": "hbm_bytes_per_s", "ICI per link": "ici_link_bytes_per_s",
              "ICI links": "ici_ports"}
    by_source: dict = {}
    for label, f in fields.items():
        by_source.setdefault(hardware.source_of(gen, f), []).append(label)
    return "sources: " + "; ".join(f"{', '.join(labels)}: {src}" for src, labels in by_source.items())
