"""Roofline step time of a compiled step on a TPU slice: the slowest of compute, HBM and ICI traffic.

    compute  = executed FLOPs per chip / peak bf16 FLOP/s           (matmuls, counted on the jaxpr with
                                                                      scan trip counts: quietstar_jax.compile)
    HBM      = HBM bytes per chip / HBM bandwidth                    (hlo_stats: the optimized HLO, each op
                                                                      x how often its loop runs)
    ICI      = collective bytes per chip / the chip's ICI bandwidth  (hlo_stats conventions)

Each is a lower bound on the step time if that resource were the only limit and ran at its published
peak; the step can be no faster than the largest (perfect overlap of the other two), and is slower in
practice (imperfect overlap, MXU utilisation below peak, element-wise work not counted in the FLOPs).

ICI assumption: a collective drives all the ICI links its replica group can use in parallel, one
direction each, at the published per-link rate. A group spanning the whole slice uses the slice's links
(hardware.slice_ici_bytes_per_s: torus wrap-around only where the docs promise it, else the mesh's end
chips set the pace); a smaller group (the sampler's decode layout: groups of consecutive devices of the
fsdp axis) uses the links inside the bounding box of that many consecutive devices of the mesh (a pair
of neighbours: one link), all groups at once on disjoint links. The per-chip bytes are what a chip must
receive (all-gather) or send (reduce-scatter ...), so bytes / (links x per-link rate) is the shortest
time the links allow; the ICI time sums that over group sizes (collectives do not share links in time).
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
    # {devices per group: (bytes per chip, links)} when the bytes were given by group size
    ici_by_group: dict = dataclasses.field(default_factory=dict)

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


def group_links(gen: hardware.TpuGeneration, dims: tuple, coords: list, n: int) -> int:
    """ICI links per chip for a collective over n consecutive devices of a mesh whose devices sit at
    `coords` (mesh order): those of their bounding box, with wrap-around only when the box is the whole
    slice and the slice has it (hardware.ici_links)."""
    if n >= len(coords):
        return hardware.ici_links(gen, dims)
    box = tuple(max(c[i] for c in coords[:n]) - min(c[i] for c in coords[:n]) + 1 for i in range(len(dims)))
    return sum(0 if d == 1 else 1 for d in box)


def estimate(gen: hardware.TpuGeneration, dims: tuple, flops_per_chip: float | None, hbm_bytes_per_chip: float,
             collective_bytes_per_chip: float, bytes_by_group: dict | None = None,
             coords: list | None = None) -> Roofline:
    """The roofline of one step on a slice of `gen` chips shaped `dims` (per-chip inputs; see module doc).
    bytes_by_group ({devices per replica group: bytes}) with the mesh's device `coords`: ICI time per
    group size; without them every collective is taken to span the slice."""
    links = hardware.ici_links(gen, dims)
    ici_bw = links * gen.ici_link_bytes_per_s
    if collective_bytes_per_chip and not ici_bw:
        raise ValueError(f"collectives on a one-chip slice {dims}: the program was not compiled for it")
    by_group, ici_s = {}, (collective_bytes_per_chip / ici_bw if ici_bw else 0.0)
    if bytes_by_group and coords:
        by_group = {n: (b, group_links(gen, dims, coords, n)) for n, b in sorted(bytes_by_group.items()) if b}
        ici_s = sum(b / (k * gen.ici_link_bytes_per_s) for b, k in by_group.values() if k)
    have_flops = flops_per_chip is not None and flops_per_chip == flops_per_chip
    return Roofline(
        compute_s=flops_per_chip / gen.peak_bf16_flops if have_flops else None,
        hbm_s=hbm_bytes_per_chip / gen.hbm_bytes_per_s,
        ici_s=ici_s,
        flops_per_chip=flops_per_chip if have_flops else None, hbm_bytes_per_chip=hbm_bytes_per_chip,
        collective_bytes_per_chip=collective_bytes_per_chip, peak_flops=gen.peak_bf16_flops,
        hbm_bytes_per_s=gen.hbm_bytes_per_s, ici_bytes_per_s=ici_bw, ici_links=links, ici_by_group=by_group)


def sources_line(gen: hardware.TpuGeneration) -> str:
    """One line naming where the three rates come from (fields sharing a source grouped)."""
    fields = {"peak bf16": "peak_bf16_flops", "HBM bandwidth": "hbm_bytes_per_s", "ICI per link": "ici_link_bytes_per_s",
              "ICI links": "ici_ports"}
    by_source: dict = {}
    for label, f in fields.items():
        by_source.setdefault(hardware.source_of(gen, f), []).append(label)
    return "sources: " + "; ".join(f"{', '.join(labels)}: {src}" for src, labels in by_source.items())
