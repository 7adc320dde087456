"""Cloud TPU hardware facts, one frozen record per generation: the one place these numbers live.

Units: FLOP/s and bytes/s are per chip (decimal: 1 GB/s = 1e9 B/s), HBM sizes in GiB (2**30 B),
prices in USD per chip-hour. A "chip" is what one JAX device is on a real slice: v4 and v5p chips have
two TensorCores that libtpu drives as one device ("megacore"); v5e and v6e chips have one TensorCore.

Every number cites its source in `sources` (the Cloud TPU system-architecture page of the generation
unless said otherwise; pages as stored in 2025/26). Where a page gives two spellings of one number (GB vs
GiB, an older revision), the note says which was taken and why. Derived numbers say how they are derived.

ICI (inter-chip interconnect): the docs give a per-chip total and the number of ports (links); the
per-link, per-direction rate below is total / ports / 2 for "bidirectional" totals. The number of links a
given slice actually has per chip depends on its shape (see `ici_links`).
"""

from __future__ import annotations

import dataclasses

# Source URLs, cited by key from each generation's `sources`.
URL = {
    "v4": "https://docs.cloud.google.com/tpu/docs/v4",
    "v5e": "https://docs.cloud.google.com/tpu/docs/v5e",
    "v5p": "https://docs.cloud.google.com/tpu/docs/v5p",
    "v6e": "https://docs.cloud.google.com/tpu/docs/v6e",
    "v4_paper": "https://arxiv.org/abs/2304.01433 (TPU v4 paper, ISCA 2023) as summarised at "
                "https://glennklockwood.com/garden/processors/TPUv4",
    "precision": "https://docs.jax.dev/en/latest/201/precision.html (f32 matmuls on TPU are one or several "
                 "bf16 passes)",
    "libtpu": "measured: the TPU compiler's 'available HBM' in RESOURCE_EXHAUSTED errors, libtpu 0.0.52 "
              "(quietstar_jax.compile.usable_hbm_bytes)",
    "price_v4": "https://github.com/skypilot-org/skypilot sky/clouds/service_catalog/data_fetchers/fetch_gcp.py "
                "(table copied from https://cloud.google.com/tpu/pricing, 2023): tpu-v4-8 (4 chips) $12.88/h "
                "on-demand, us-central2-b",
    "price_v6e": "Trillium GA announcement (Google Cloud, Dec 2024, 'starting at $2.7000 per chip-hour', as "
                 "quoted by https://neowin.net/news/google-takes-on-nvidia-blackwell-gpus-with-the-new-trillium-tpus); "
                 "matches https://github.com/skypilot-org/skypilot/pull/4540 (Jan 2025): tpu-v6e-128 $345.60/h "
                 "in us-east1",
    "price_unverified": "https://cloud.google.com/tpu/pricing list price, NOT verified against a stored copy of "
                        "that page in this project (only the 2022 v4-preview revision was available): treat as "
                        "approximate",
}

# f32 matmul throughput is not published. XLA runs an f32 x f32 matmul on the MXU as bf16 passes: one at
# the default precision, six (BF16_BF16_F32_X6) at HIGHEST; so f32 at full precision ~ bf16 peak / 6.
F32_PASSES_HIGHEST = 6


@dataclasses.dataclass(frozen=True)
class TpuGeneration:
    """Published facts about one TPU generation (per chip unless named otherwise)."""

    generation: str  # "v4", "v5e", "v5p", "v6e": the prefix of libtpu topology names ("v4:2x2x2")
    device_kinds: tuple  # jax Device.device_kind strings of this generation
    chip_config: str  # libtpu chip config: "megacore" = one JAX device per chip (both TensorCores)
    tensorcores_per_chip: int
    dims: int  # torus / mesh dimensions: 3 (v4, v5p) or 2 (v5e, v6e)
    names_count_cores: bool  # accelerator type v4-16 counts TensorCores (8 chips); v5litepod-16 chips
    chips_per_host: int  # of a full host (multi-host slices)
    peak_bf16_flops: float  # dense, per chip
    peak_int8_ops: float | None  # dense int8 OP/s, where published
    peak_fp8_flops: float | None  # where published
    hbm_gib: float  # physical HBM per chip
    usable_hbm_gib: float  # what one program may use, as the TPU compiler reports it (libtpu 0.0.52)
    hbm_bytes_per_s: float
    ici_ports: int  # ICI links per chip (a full torus uses them all)
    ici_link_bytes_per_s: float  # per link, per direction
    price_usd_per_chip_hour: float  # on-demand list price
    price_region: str
    sources: dict  # field name -> source (a key of URL, or a note)

    @property
    def peak_fp32_flops(self) -> float:
        """Derived, not published: f32 matmuls at HIGHEST precision = 6 bf16 passes (URL["precision"])."""
        return self.peak_bf16_flops / F32_PASSES_HIGHEST

    @property
    def ici_bytes_per_s(self) -> float:
        """All links, one direction: what one chip can send (or receive) at once over a full torus."""
        return self.ici_ports * self.ici_link_bytes_per_s


V4 = TpuGeneration(
    generation="v4", device_kinds=("TPU v4",), chip_config="megacore", tensorcores_per_chip=2, dims=3,
    names_count_cores=True, chips_per_host=4,
    peak_bf16_flops=275e12, peak_int8_ops=275e12, peak_fp8_flops=None,
    hbm_gib=32, usable_hbm_gib=30.75, hbm_bytes_per_s=1200e9,
    ici_ports=6, ici_link_bytes_per_s=50e9,
    price_usd_per_chip_hour=3.22, price_region="us-central2",
    sources=dict(peak_bf16_flops="v4: '275 teraflops (bf16 or int8)'", peak_int8_ops="v4",
                 hbm_gib="v4: '32 GiB, 1200 GBps'", hbm_bytes_per_s="v4", usable_hbm_gib="libtpu",
                 tensorcores_per_chip="v4", chips_per_host="https://cloud.google.com/tpu/pricing (2022 revision: "
                 "'four chips (one TPU VM)')", dims="v4: 3D mesh, 3D torus on slices of whole 4x4x4 cubes",
                 names_count_cores="v4 (v4-16 = 8 chips)",
                 ici_ports="v4_paper: 3D torus, 6 links per chip (6,144 optical links = 64 cubes x 6 faces x 16)",
                 ici_link_bytes_per_s="v4_paper: ICI '400G bandwidth in each direction' per link = 50 GB/s",
                 price_usd_per_chip_hour="price_v4: $12.88 / 4 chips"))

V5E = TpuGeneration(
    generation="v5e", device_kinds=("TPU v5 lite", "TPU v5e"), chip_config="default", tensorcores_per_chip=1,
    dims=2, names_count_cores=False, chips_per_host=8,
    peak_bf16_flops=197e12, peak_int8_ops=393e12, peak_fp8_flops=None,
    hbm_gib=16, usable_hbm_gib=15.75, hbm_bytes_per_s=819e9,
    ici_ports=4, ici_link_bytes_per_s=50e9,
    price_usd_per_chip_hour=1.20, price_region="US (unverified)",
    sources=dict(peak_bf16_flops="v5e: '197 TFLOPs'", peak_int8_ops="v5e: '393 TOPs'",
                 hbm_gib="v5e: '16 GB'; 16 GiB taken, since the compiler lets a program use 15.75 GiB",
                 hbm_bytes_per_s="v5e: '819 GBps' (another revision of the page: '800 GiBps' = 859 GB/s)",
                 usable_hbm_gib="libtpu", tensorcores_per_chip="v5e", dims="v5e: 2D torus",
                 names_count_cores="v5e (v5litepod-16 = 16 chips)", chips_per_host="v5e: 8",
                 ici_ports="v5e: 'ICI ports per chip 4'",
                 ici_link_bytes_per_s="v5e: 400 GBps bidirectional per chip / 4 ports / 2 directions "
                                      "(= the older revision's '1600 Gbps' one way)",
                 price_usd_per_chip_hour="price_unverified"))

V5P = TpuGeneration(
    generation="v5p", device_kinds=("TPU v5", "TPU v5p"), chip_config="megacore", tensorcores_per_chip=2, dims=3,
    names_count_cores=True, chips_per_host=4,
    peak_bf16_flops=459e12, peak_int8_ops=918e12, peak_fp8_flops=459e12,
    hbm_gib=96, usable_hbm_gib=95.73, hbm_bytes_per_s=2765e9,
    ici_ports=6, ici_link_bytes_per_s=100e9,
    price_usd_per_chip_hour=4.20, price_region="US (unverified)",
    sources=dict(peak_bf16_flops="v5p: 459 TFLOPs", peak_fp8_flops="v5p: 'Peak compute per chip (FP8) 459'",
                 peak_int8_ops="https://aiwiki.ai/wiki/google_tpu_v5p (918 TOPS int8; not on the Cloud page)",
                 hbm_gib="v5p: '96 GiB of physical HBM; the table lists 95 GiB' (reserved by the runtime)",
                 hbm_bytes_per_s="v5p: '2765 GBps'", usable_hbm_gib="libtpu", tensorcores_per_chip="v5p", chips_per_host="v5p: '(4-chip VM)'",
                 dims="v5p: 3D torus", names_count_cores="v5p (v5p-32 = 32 TensorCores, 16 chips)",
                 ici_ports="v5p: 3D torus (6 neighbours per chip)",
                 ici_link_bytes_per_s="v5p: 1200 GBps bidirectional per chip / 6 / 2 (= the older revision's "
                                      "'4800 Gbps' one way)",
                 price_usd_per_chip_hour="price_unverified"))

V6E = TpuGeneration(
    generation="v6e", device_kinds=("TPU v6 lite", "TPU v6e"), chip_config="default", tensorcores_per_chip=1,
    dims=2, names_count_cores=False, chips_per_host=8,
    peak_bf16_flops=918e12, peak_int8_ops=1836e12, peak_fp8_flops=None,
    hbm_gib=32, usable_hbm_gib=31.24, hbm_bytes_per_s=1638e9,
    ici_ports=4, ici_link_bytes_per_s=100e9,
    price_usd_per_chip_hour=2.70, price_region="us-east1 / us-east5",
    sources=dict(peak_bf16_flops="v6e: '918 TFLOPs'", peak_int8_ops="v6e: '1836 TOPs'",
                 hbm_gib="v6e: '32 GB'; 32 GiB taken, since the compiler lets a program use 31.24 GiB",
                 hbm_bytes_per_s="v6e: '1638 GBps'", usable_hbm_gib="libtpu", tensorcores_per_chip="v6e",
                 dims="v6e: 2D torus", names_count_cores="v6e (v6e-8 = 8 chips)", chips_per_host="v6e: 8",
                 ici_ports="v6e: 'ICI ports per chip 4'",
                 ici_link_bytes_per_s="v6e: 800 GBps bidirectional per chip / 4 / 2",
                 price_usd_per_chip_hour="price_v6e"))

GENERATIONS = {g.generation: g for g in (V4, V5E, V5P, V6E)}


def for_device_kind(kind: str) -> TpuGeneration | None:
    """The generation of a jax Device.device_kind ("TPU v5 lite" is v5e, "TPU v5" is v5p), else None."""
    for g in GENERATIONS.values():
        if kind in g.device_kinds:
            return g
    # Unknown suffixes ("TPU v4 foo"): the longest known kind the string starts with.
    best = max(((k, g) for g in GENERATIONS.values() for k in g.device_kinds if kind.startswith(k + " ")),
               key=lambda kg: len(kg[0]), default=None)
    return best[1] if best else None


def has_wraparound(gen: TpuGeneration, dims: tuple) -> bool:
    """Whether a slice of this shape is a torus (wrap-around links) rather than a mesh. Only where the docs
    say so: v4 / v5p slices built of whole 4x4x4 cubes (every dimension a multiple of 4); v5e / v6e whole
    16x16 pods. Other shapes are treated as meshes (the conservative reading)."""
    if gen.dims == 3:
        return all(d % 4 == 0 for d in dims)
    return tuple(dims) == (16, 16)


def ici_links(gen: TpuGeneration, dims: tuple) -> int:
    """ICI links one chip of this slice can use at once for a collective spanning the whole slice: per
    dimension of extent > 1, two (torus, or a mesh ring's both neighbours) or one where the dimension has
    extent 2 or no wrap-around (the end chips of a mesh line have one neighbour: they set the pace)."""
    wrap = has_wraparound(gen, dims)
    return sum(0 if d == 1 else (2 if wrap and d > 2 else 1) for d in dims)


def slice_ici_bytes_per_s(gen: TpuGeneration, dims: tuple) -> float:
    """One chip's ICI bandwidth in one direction for a whole-slice collective: links x per-link rate."""
    return ici_links(gen, dims) * gen.ici_link_bytes_per_s


def source_of(gen: TpuGeneration, field: str) -> str:
    """The source document of `gen.<field>`: its URL (or citation), without the quoted detail."""
    note = gen.sources.get(field, "")
    key = note.split(":")[0].split(" ")[0]
    return URL.get(key, note)


def cite(gen: TpuGeneration, field: str) -> str:
    """The source of `gen.<field>` with its URL key expanded ("v4: '32 GiB'" -> "https://...v4: '32 GiB'")."""
    note = gen.sources.get(field, "")
    key, sep, rest = note.partition(":")
    if key in URL and (sep or not rest):
        return URL[key] + (f": {rest.strip()}" if rest.strip() else "")
    head = note.split(" ", 1)
    return URL[head[0]] + (" " + head[1] if len(head) > 1 else "") if head[0] in URL else note
