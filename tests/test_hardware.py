"""quietstar_jax.hardware: every number has a source; the tables that read it agree with it."""

import dataclasses
import numbers

import pytest

from quietstar_jax import hardware
from quietstar_jax.tpu import topology
from quietstar_jax.training import flops as metrics

FACTS = ("tensorcores_per_chip", "dims", "names_count_cores", "chips_per_host", "peak_bf16_flops", "peak_int8_ops",
         "peak_fp8_flops", "hbm_gib", "usable_hbm_gib", "hbm_bytes_per_s", "ici_ports", "ici_link_bytes_per_s",
         "price_usd_per_chip_hour")


@pytest.mark.parametrize("gen", list(hardware.GENERATIONS.values()), ids=list(hardware.GENERATIONS))
def test_every_fact_has_a_source(gen):
    numeric = {f.name for f in dataclasses.fields(gen) if isinstance(getattr(gen, f.name), numbers.Number)}
    assert numeric <= set(FACTS), f"new fields need a source and a place in FACTS: {numeric - set(FACTS)}"
    for name in FACTS:
        if getattr(gen, name) is not None:
            assert name in gen.sources and hardware.cite(gen, name), f"{gen.generation}.{name} has no source"
    # Physical HBM holds what the compiler lets a program use.
    assert gen.usable_hbm_gib <= gen.hbm_gib


def test_readers_agree():
    assert topology.SPECS is hardware.GENERATIONS and topology.TpuSpec is hardware.TpuGeneration
    for g in hardware.GENERATIONS.values():
        for kind in g.device_kinds:
            assert metrics.PEAK_FLOPS[kind] == g.peak_bf16_flops
            assert hardware.for_device_kind(kind) is g
    # "TPU v5 lite" (v5e) must not be read as "TPU v5" (v5p).
    assert hardware.for_device_kind("TPU v5 lite").generation == "v5e"
    assert hardware.for_device_kind("TPU v5").generation == "v5p"
    assert hardware.for_device_kind("cpu") is None


def test_cite_expands_url_keys():
    assert hardware.cite(hardware.V4, "hbm_gib").startswith(hardware.URL["v4"] + ": ")
    assert hardware.cite(hardware.V4, "usable_hbm_gib") == hardware.URL["libtpu"]


def test_ici_links():
    v4, v5e = hardware.V4, hardware.V5E
    assert hardware.ici_links(v4, (2, 2, 1)) == 2  # mesh: one neighbour per dimension of extent 2
    assert hardware.ici_links(v4, (2, 2, 2)) == 3
    assert hardware.ici_links(v4, (4, 4, 4)) == 6  # a whole cube: torus
    assert hardware.ici_links(v4, (2, 2, 4)) == 3  # not whole cubes: a mesh, the end chips set the pace
    assert hardware.ici_links(v5e, (16, 16)) == 4 and hardware.ici_links(v5e, (4, 4)) == 2
    assert hardware.slice_ici_bytes_per_s(v4, (2, 2, 2)) == 3 * 50e9
