"""quietstar_jax.tpu.hlo_stats on handwritten HLO (trip counts, async pairs, tuples, dtypes, phases, HBM
model) and on the tiny model's real train step compiled for a v4 slice; quietstar_jax.tpu.roofline."""

import importlib.util
import math

import pytest

from quietstar_jax import hardware
from quietstar_jax.tpu import hlo_stats, roofline
from quietstar_jax.tpu.hlo_stats import analyze, phase_of, shape_bytes

needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason="libtpu not installed (pip install libtpu)")

# ------------------------------------------------------------------------------------------ snippets
# Outer loop (3 trips, counter at tuple index 0) around an inner loop (5 trips, counter at index 1,
# counting *down* from 5 with GT): an all-gather in the inner body runs 15 times, an all-reduce in the
# outer body 3 times. bf16[4,8] gathered from bf16[1,8] over 4 chips: received 3 x 8 x 2 = 48 bytes.
NESTED = """HloModule nested, num_partitions=4

%inner_body (p: (s32[], s32[], bf16[1,8])) -> (s32[], s32[], bf16[1,8]) {
  %p = (s32[], s32[], bf16[1,8]) parameter(0)
  %i = s32[] get-tuple-element(%p), index=1
  %one = s32[] constant(1)
  %next = s32[] subtract(%i, %one)
  %x = bf16[1,8] get-tuple-element(%p), index=2
  %ag = bf16[4,8]{1,0:T(8,128)(2,1)} all-gather(%x), replica_groups={{0,1,2,3}}, dimensions={0}, metadata={op_name="jit(step)/jvp(sample_thoughts)/while/body/dot_general"}
  %o = s32[] get-tuple-element(%p), index=0
  ROOT %t = (s32[], s32[], bf16[1,8]) tuple(%o, %next, %x)
}

%inner_cond (p: (s32[], s32[], bf16[1,8])) -> pred[] {
  %p = (s32[], s32[], bf16[1,8]) parameter(0)
  %i = s32[] get-tuple-element(%p), index=1
  %zero = s32[] constant(0)
  ROOT %gt = pred[] compare(%i, %zero), direction=GT
}

%outer_body (p: (s32[], s32[], bf16[1,8])) -> (s32[], s32[], bf16[1,8]) {
  %p = (s32[], s32[], bf16[1,8]) parameter(0)
  %o = s32[] get-tuple-element(%p), index=0
  %x = bf16[1,8] get-tuple-element(%p), index=2
  %five = s32[] constant(5)
  %five.c = s32[] copy(%five)
  %init = (s32[], s32[], bf16[1,8]) tuple(%o, %five.c, %x)
  %w = (s32[], s32[], bf16[1,8]) while(%init), condition=%inner_cond, body=%inner_body, metadata={op_name="jit(step)/jvp(sample_thoughts)/while"}
  %f = f32[16] broadcast(%five), dimensions={}
  %ar = f32[16] all-reduce(%f), replica_groups=[2,2]<=[4], to_apply=%add, metadata={op_name="jit(step)/transpose(jvp())/mul"}
  %one = s32[] constant(1)
  %o2 = s32[] add(%o, %one)
  ROOT %t = (s32[], s32[], bf16[1,8]) tuple(%o2, %five, %x)
}

%outer_cond (p: (s32[], s32[], bf16[1,8])) -> pred[] {
  %p = (s32[], s32[], bf16[1,8]) parameter(0)
  %o = s32[] get-tuple-element(%p), index=0
  %three = s32[] constant(3)
  ROOT %lt = pred[] compare(%o, %three), direction=LT
}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}

ENTRY %main (x: bf16[1,8]) -> (s32[], s32[], bf16[1,8]) {
  %x = bf16[1,8] parameter(0)
  %zero = s32[] constant(0)
  %init = (s32[], s32[], bf16[1,8]) tuple(%zero, %zero, %x)
  ROOT %w = (s32[], s32[], bf16[1,8]) while(%init), condition=%outer_cond, body=%outer_body
}
"""


def test_nested_loops_multiply_trip_counts():
    st = analyze(NESTED)
    assert sorted((n, trips, mult) for n, trips, mult in st.loops) == [("w", 3, 1.0), ("w", 5, 3.0)]
    assert st.unknown_loops == []
    assert st.collective_bytes[("all-gather", "sampling")] == 15 * 3 * 8 * 2
    assert st.collective_count[("all-gather", "sampling")] == 15
    # f32[16] all-reduced in groups of 2 ([2,2]<=[4]): 2 (n-1)/n x 64 bytes = 64, 3 times.
    assert st.collective_bytes[("all-reduce", "backward")] == 3 * 64
    assert st.total_collective_bytes == 15 * 48 + 3 * 64


# An async all-gather (start/done) inside a loop whose trip count only the backend_config knows (the
# bound is a loop-state element, not a constant); a tuple-shaped all-reduce of f32 and bf16 parts; a
# reduce-scatter, an all-to-all and a collective-permute; ops without a jax op_name inherit the loop's.
ASYNC = """HloModule async_etc, num_partitions=8

%body (p: (s32[], s32[], f32[2,8])) -> (s32[], s32[], f32[2,8]) {
  %p = (s32[], s32[], f32[2,8]) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %x = f32[2,8] get-tuple-element(%p), index=2
  %ags = (f32[2,8], f32[16,8]) all-gather-start(%x), replica_groups=[1,8]<=[8], dimensions={0}, metadata={op_name="jit(step)/jvp()/dot_general"}
  %agd = f32[16,8] all-gather-done(%ags), metadata={op_name="jit(step)/jvp()/dot_general"}
  %rs = f32[2,8] reduce-scatter(%agd), replica_groups=[1,8]<=[8], dimensions={0}, to_apply=%add, metadata={op_name="reduce-scatter.3"}
  %one = s32[] constant(1)
  %n = s32[] add(%i, %one)
  %b = s32[] get-tuple-element(%p), index=1
  ROOT %t = (s32[], s32[], f32[2,8]) tuple(%n, %b, %rs)
}

%cond (p: (s32[], s32[], f32[2,8])) -> pred[] {
  %p = (s32[], s32[], f32[2,8]) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %b = s32[] get-tuple-element(%p), index=1
  ROOT %lt = pred[] compare(%i, %b), direction=LT
}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}

ENTRY %main (x: f32[2,8], y: bf16[4,4], n: s32[]) -> f32[2,8] {
  %x = f32[2,8] parameter(0)
  %y = bf16[4,4] parameter(1)
  %n = s32[] parameter(2)
  %zero = s32[] constant(0)
  %init = (s32[], s32[], f32[2,8]) tuple(%zero, %n, %x)
  %w = (s32[], s32[], f32[2,8]) while(%init), condition=%cond, body=%body, metadata={op_name="jit(step)/transpose(jvp())/while"}, backend_config={"known_trip_count":{"n":"7"}}
  %w2 = (s32[], s32[], f32[2,8]) while(%init), condition=%cond, body=%body, metadata={op_name="jit(step)/optimizer/while"}
  %ar = (f32[2,8], bf16[4,4]) all-reduce(%x, %y), replica_groups=mesh['data'=2,'fsdp'=4] {'fsdp'}, to_apply=%add, metadata={op_name="jit(step)/optimizer/add"}
  %a2a = bf16[4,4] all-to-all(%y), replica_groups={{0,1},{2,3},{4,5},{6,7}}, dimensions={0}
  %cp = bf16[4,4] collective-permute(%y), source_target_pairs={{0,1},{1,0}}, metadata={op_name="jit(step)/while/body/ppermute"}
  ROOT %out = f32[2,8] get-tuple-element(%w), index=2
}
"""


def test_async_pairs_tuples_dtypes_and_unknown_loops():
    st = analyze(ASYNC)
    # known_trip_count wins; without it the bound is not a constant: counted once and listed.
    assert ("w", 7, 1.0) in st.loops and ("w2", None, 1.0) in st.loops
    assert st.unknown_loops == ["w2"]
    # all-gather-start/done: one collective, f32[16,8] - f32[2,8] = 14 x 8 x 4 bytes received, its own
    # op_name (forward) wherever it runs: 7 + 1 times.
    assert st.collective_count[("all-gather", "forward")] == 8
    assert st.collective_bytes[("all-gather", "forward")] == 8 * 14 * 8 * 4
    # The reduce-scatter has no jax op_name: it takes its loop's phase. Sent f32[16,8] - f32[2,8].
    assert st.collective_bytes[("reduce-scatter", "backward")] == 7 * 14 * 8 * 4
    assert st.collective_bytes[("reduce-scatter", "optimizer")] == 14 * 8 * 4
    # Tuple all-reduce over the 4-chip 'fsdp' axis: f32[2,8] + bf16[4,4] = 64 + 32 bytes, x 2 (4-1)/4.
    assert st.collective_bytes[("all-reduce", "optimizer")] == pytest.approx(2 * 3 / 4 * (64 + 32))
    # all-to-all in pairs: (2-1)/2 of bf16[4,4]; collective-permute: the whole buffer; no phase.
    assert st.collective_bytes[("all-to-all", "unattributed")] == 16
    assert st.collective_bytes[("collective-permute", "unattributed")] == 32
    assert sum(st.by_phase().values()) == pytest.approx(st.total_collective_bytes)
    assert sum(st.by_kind().values()) == pytest.approx(st.total_collective_bytes)


# HBM model: a loop over 4 layers whose fusion slices one layer of a stacked bf16[4,128,128] weight
# (read 32 KiB a trip, not 128 KiB) through a nested fusion, and writes its result into a stacked
# buffer in place (a dynamic-update-slice: only the update's bytes).
HBM = """HloModule hbm, num_partitions=1

%slice_w (w: bf16[4,128,128], i: s32[]) -> bf16[128,128] {
  %w = bf16[4,128,128]{2,1,0:T(8,128)(2,1)} parameter(0)
  %i = s32[] parameter(1)
  %z = s32[] constant(0)
  %ds = bf16[1,128,128]{2,1,0:T(8,128)(2,1)} dynamic-slice(%w, %i, %z, %z), dynamic_slice_sizes={1,128,128}
  ROOT %b = bf16[128,128]{1,0:T(8,128)(2,1)} bitcast(%ds)
}

%layer (h: bf16[8,128], w: bf16[4,128,128], i: s32[]) -> bf16[8,128] {
  %h = bf16[8,128]{1,0:T(8,128)(2,1)} parameter(0)
  %w = bf16[4,128,128]{2,1,0:T(8,128)(2,1)} parameter(1)
  %i = s32[] parameter(2)
  %wi = bf16[128,128]{1,0:T(8,128)(2,1)} fusion(%w, %i), kind=kLoop, calls=%slice_w
  ROOT %d = bf16[8,128]{1,0:T(8,128)(2,1)} dot(%h, %wi), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%stash (acc: bf16[4,8,128], h: bf16[8,128], i: s32[]) -> bf16[4,8,128] {
  %acc = bf16[4,8,128]{2,1,0:T(8,128)(2,1)} parameter(0)
  %h = bf16[8,128]{1,0:T(8,128)(2,1)} parameter(1)
  %i = s32[] parameter(2)
  %z = s32[] constant(0)
  %h3 = bf16[1,8,128]{2,1,0:T(8,128)(2,1)} bitcast(%h)
  ROOT %u = bf16[4,8,128]{2,1,0:T(8,128)(2,1)} dynamic-update-slice(%acc, %h3, %i, %z, %z)
}

%body (p: (s32[], bf16[8,128], bf16[4,128,128], bf16[4,8,128])) -> (s32[], bf16[8,128], bf16[4,128,128], bf16[4,8,128]) {
  %p = (s32[], bf16[8,128], bf16[4,128,128], bf16[4,8,128]) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %h = bf16[8,128]{1,0:T(8,128)(2,1)} get-tuple-element(%p), index=1
  %w = bf16[4,128,128]{2,1,0:T(8,128)(2,1)} get-tuple-element(%p), index=2
  %acc = bf16[4,8,128]{2,1,0:T(8,128)(2,1)} get-tuple-element(%p), index=3
  %h2 = bf16[8,128]{1,0:T(8,128)(2,1)} fusion(%h, %w, %i), kind=kOutput, calls=%layer
  %acc2 = bf16[4,8,128]{2,1,0:T(8,128)(2,1)} fusion(%acc, %h2, %i), kind=kLoop, calls=%stash
  %one = s32[] constant(1)
  %n = s32[] add(%i, %one)
  ROOT %t = (s32[], bf16[8,128], bf16[4,128,128], bf16[4,8,128]) tuple(%n, %h2, %w, %acc2)
}

%cond (p: (s32[], bf16[8,128], bf16[4,128,128], bf16[4,8,128])) -> pred[] {
  %p = (s32[], bf16[8,128], bf16[4,128,128], bf16[4,8,128]) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %four = s32[] constant(4)
  ROOT %lt = pred[] compare(%i, %four), direction=LT
}

ENTRY %main (h: bf16[8,128], w: bf16[4,128,128], acc: bf16[4,8,128]) -> bf16[4,8,128] {
  %h = bf16[8,128]{1,0:T(8,128)(2,1)} parameter(0)
  %w = bf16[4,128,128]{2,1,0:T(8,128)(2,1)} parameter(1)
  %acc = bf16[4,8,128]{2,1,0:T(8,128)(2,1)} parameter(2)
  %zero = s32[] constant(0)
  %init = (s32[], bf16[8,128], bf16[4,128,128], bf16[4,8,128]) tuple(%zero, %h, %w, %acc)
  %loop = (s32[], bf16[8,128], bf16[4,128,128], bf16[4,8,128]) while(%init), condition=%cond, body=%body
  ROOT %out = bf16[4,8,128]{2,1,0:T(8,128)(2,1)} get-tuple-element(%loop), index=3
}
"""


def test_hbm_model_slices_and_in_place_updates():
    st = analyze(HBM)
    h, wi, i = 8 * 128 * 2, 128 * 128 * 2, 4  # bf16[8,128], one layer of the weight, the s32 counter
    layer = h + wi + i + h  # reads h, one weight slice (not all 4 layers) and i; writes h
    stash = h + i + h  # reads the new h and i; writes only the updated slice of the stacked buffer
    counter = 3 * i  # the add
    cond = 2 * i + 1  # the compare, run trips + 1 times
    assert st.hbm_bytes == 4 * (layer + stash + counter) + 5 * cond
    assert st.hbm_bytes_once == layer + stash + counter + cond
    assert st.hbm_by_phase["unattributed"] == st.hbm_bytes  # no op_name anywhere
    assert st.total_collective_bytes == 0


def test_conditional_counts_its_costliest_branch():
    text = """HloModule cond, num_partitions=2
%big (x: f32[64]) -> f32[64] {
  %x = f32[64] parameter(0)
  ROOT %ar = f32[64] all-reduce(%x), replica_groups={{0,1}}, to_apply=%add
}
%small (x: f32[64]) -> f32[64] {
  %x = f32[64] parameter(0)
  %s = f32[8] slice(%x), slice={[0:8]}
  %ar = f32[8] all-reduce(%s), replica_groups={{0,1}}, to_apply=%add
  ROOT %b = f32[64] broadcast(%ar), dimensions={}
}
%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}
ENTRY %main (p: pred[], x: f32[64]) -> f32[64] {
  %p = pred[] parameter(0)
  %x = f32[64] parameter(1)
  ROOT %c = f32[64] conditional(%p, %x, %x), branch_computations={%small, %big}
}
"""
    st = analyze(text)
    assert st.collective_bytes[("all-reduce", "unattributed")] == 2 * 1 / 2 * 64 * 4
    assert st.collective_count[("all-reduce", "unattributed")] == 1


# How the TPU compiler writes a reduce-scatter (a kCustom fusion around an all-reduce that returns the
# chip's slice), inside a loop of 3; and the mesh replica-group form with an explicit device order.
FUSED_RS = """HloModule fused_rs, num_partitions=8

%all-reduce-scatter.1 (input: f32[4,32,64]) -> f32[8,8,64] {
  %input = f32[4,32,64]{2,1,0:T(8,128)} parameter(0)
  %bc = f32[16,8,64]{2,1,0:T(8,128)} bitcast(%input)
  %ar = f32[16,8,64]{2,1,0:T(8,128)} all-reduce(%bc), channel_id=8, replica_groups={{0,1},{2,3},{4,5},{6,7}}, to_apply=%add
  %table = u32[2]{0} constant({0, 1})
  %pid = u32[] partition-id()
  %ds0 = u32[1]{0} dynamic-slice(%table, %pid), dynamic_slice_sizes={1}
  %off = u32[] bitcast(%ds0)
  %z = u32[] constant(0)
  ROOT %ds = f32[8,8,64]{2,1,0:T(8,128)} dynamic-slice(%ar, %off, %z, %z), dynamic_slice_sizes={8,8,64}
}

%body (p: (s32[], f32[4,32,64])) -> (s32[], f32[4,32,64]) {
  %p = (s32[], f32[4,32,64]) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %x = f32[4,32,64] get-tuple-element(%p), index=1
  %f = f32[8,8,64] fusion(%x), kind=kCustom, calls=%all-reduce-scatter.1, metadata={op_name="jit(step)/jvp(sample_thoughts)/while/body/dot_general"}
  %one = s32[] constant(1)
  %n = s32[] add(%i, %one)
  ROOT %t = (s32[], f32[4,32,64]) tuple(%n, %x)
}

%cond (p: (s32[], f32[4,32,64])) -> pred[] {
  %p = (s32[], f32[4,32,64]) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %three = s32[] constant(3)
  ROOT %lt = pred[] compare(%i, %three), direction=LT
}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}

ENTRY %main (x: f32[4,32,64], y: bf16[4,8]) -> f32[4,32,64] {
  %x = f32[4,32,64] parameter(0)
  %y = bf16[4,8] parameter(1)
  %a2a = bf16[4,8] all-to-all(%y), replica_groups=mesh['a'=4,'b'=2], device_ids=([4,2]T(1,0)) {'b'}, dimensions={0}
  %zero = s32[] constant(0)
  %init = (s32[], f32[4,32,64]) tuple(%zero, %x)
  %w = (s32[], f32[4,32,64]) while(%init), condition=%cond, body=%body
  ROOT %out = f32[4,32,64] get-tuple-element(%w), index=1
}
"""


def test_fused_reduce_scatter_and_mesh_groups_with_device_order():
    st = analyze(FUSED_RS)
    # The all-reduce of f32[16,8,64] over pairs that keeps half: a reduce-scatter sending (2-1)/2 of the
    # buffer, 3 times (not an all-reduce's 2 (n-1)/n).
    buf = 16 * 8 * 64 * 4
    assert st.collective_bytes[("reduce-scatter", "sampling")] == 3 * buf / 2
    assert st.collective_bytes[("all-reduce", "sampling")] == 0
    # mesh['a'=4,'b'=2], device_ids=(...) {'b'}: groups of 2, (2-1)/2 of bf16[4,8].
    assert st.collective_bytes[("all-to-all", "unattributed")] == 4 * 8 * 2 / 2
    assert st.by_group() == {2: pytest.approx(3 * buf / 2 + 32)}
    assert all(c.group == 2 for c in st.collectives)


def test_shapes_and_phases():
    assert shape_bytes("bf16[4,8]{1,0:T(8,128)(2,1)}") == 64
    assert shape_bytes("bf16[4,8]{1,0:T(8,128)(2,1)}", padded=True) == 8 * 128 * 2
    assert shape_bytes("(f32[2,3], (s8[4], pred[]), /*index=2*/bf16[5])") == 24 + 4 + 1 + 10
    assert shape_bytes("f8e4m3fn[10]") == 10 and shape_bytes("s4[10]") == 5
    assert phase_of("jit(step)/while/body/closed_call/jvp(sample_thoughts)/while/body/dot_general") == "sampling"
    assert phase_of("jit(step)/while/body/closed_call/transpose(jvp())/checkpoint/rematted_computation/x") \
        == "backward"
    assert phase_of("jit(step)/while/body/closed_call/jvp()/while/body/add") == "forward"
    assert phase_of("jit(step)/optimizer/mul") == "optimizer"
    assert phase_of("jit(step)/while/body/add") == "unattributed"
    with pytest.raises(hlo_stats.HloParseError, match="ENTRY"):
        analyze("not hlo at all")


# ------------------------------------------------------------------------------------------ roofline
def test_roofline_is_the_max():
    rl = roofline.estimate(hardware.V4, (2, 2, 2), 275e12, 1200e9 * 0.5, 150e9 * 2)
    assert (rl.compute_s, rl.hbm_s, rl.ici_s) == pytest.approx((1.0, 0.5, 2.0))
    assert rl.ici_links == 3 and rl.bound == "ICI" and rl.step_s == pytest.approx(2.0)
    no_flops = roofline.estimate(hardware.V4, (2, 2, 1), None, 1200e9, 0.0)
    assert no_flops.compute_s is None and no_flops.bound == "HBM" and no_flops.step_s == pytest.approx(1.0)
    assert "docs.cloud.google.com/tpu/docs/v4" in roofline.sources_line(hardware.V4)
    # By replica-group size: the 8 chips of a v4 2x2x2 in mesh order, pairs of neighbours along z; a
    # pair has one link between them, a 2x2 plane two, the slice three.
    coords = [(x, y, z) for x in range(2) for y in range(2) for z in range(2)]
    assert [roofline.group_links(hardware.V4, (2, 2, 2), coords, n) for n in (2, 4, 8)] == [1, 2, 3]
    grouped = roofline.estimate(hardware.V4, (2, 2, 2), 275e12, 0.0, 300e9, {2: 50e9, 8: 250e9}, coords)
    assert grouped.ici_s == pytest.approx(50e9 / 50e9 + 250e9 / 150e9)
    assert grouped.ici_by_group == {2: (50e9, 1), 8: (250e9, 3)}


# ------------------------------------------------------------------------------------------ real HLO
@pytest.fixture(scope="module")
def tiny_compiled():
    """The tiny model's train step for v4:2x2x1 (4 chips, fsdp=4) with distinct trip counts: 2
    micro-batches, 3 layers, 4 thought-decode steps (n_ahead 7 -> 4 sampled tokens)."""
    from test_compile import tiny_config  # the compile tests' tiny bf16 + remat step

    from quietstar_jax.tpu import aot

    c = tiny_config(**{"model.tiny.num_hidden_layers": 3, "quietstar.n_ahead": 7})
    return c, aot.compile_train_step(c, "v4:2x2x1", log=lambda s: None)


@needs_libtpu
def test_tiny_train_step_communication(tiny_compiled):
    c, r = tiny_compiled
    st, rl = r["hlo_stats"], r["roofline"]
    cfg, chips, accum = c.model.tiny, r["chips"], c.grad_accum_steps
    T = c.quietstar.n_ahead - 3
    # Every loop's trip count read; the counts are the config's: micro-batches, layers, decode steps.
    assert st.unknown_loops == []
    assert {n for _, n, _ in st.loops} == {accum, cfg.num_hidden_layers, T}
    # Layer loops inside the decode loop inside the micro-batch loop run accum x T times a step.
    assert max(mult for _, _, mult in st.loops) == accum * T
    # The sampler's weight all-gathers: every layer's bf16 weights, (n-1)/n of them received per chip,
    # for the base pass and each decode step of each micro-batch (+ the embedding / lm head gathers).
    H, I, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    layer = 2 * (H * hd * (2 * cfg.num_attention_heads + 2 * cfg.num_key_value_heads) + 3 * H * I)
    expect = accum * (T + 1) * cfg.num_hidden_layers * layer * (chips - 1) / chips
    sampled = st.collective_bytes[("all-gather", "sampling")]
    assert expect <= sampled < 1.5 * expect, (sampled, expect)
    for phase in ("forward", "backward"):
        assert st.collective_bytes[("all-gather", phase)] > 0, phase
    assert sum(st.by_phase().values()) == pytest.approx(st.total_collective_bytes)
    assert sum(st.by_kind().values()) == pytest.approx(st.total_collective_bytes)
    # The trip-weighted HBM bytes exceed XLA's count with loop bodies once (and our own once-count,
    # which should be of the same order as XLA's).
    assert st.hbm_bytes > st.hbm_bytes_once > 0
    assert sum(st.hbm_by_phase.values()) == pytest.approx(st.hbm_bytes)
    assert st.hbm_by_phase["sampling"] > 0 and st.hbm_by_phase["backward"] > 0
    assert 0.25 < st.hbm_bytes_once / r["xla_bytes_accessed_per_chip"] < 4
    # The roofline: three positive times, the step time their max.
    assert rl.compute_s > 0 and rl.hbm_s > 0 and rl.ici_s > 0
    assert rl.step_s == max(rl.compute_s, rl.hbm_s, rl.ici_s)
    assert rl.flops_per_chip == pytest.approx(r["flops_executed"] / chips)
    assert math.isclose(rl.collective_bytes_per_chip, st.total_collective_bytes)


@pytest.fixture(scope="module")
def decode_layout_compiled():
    """A tiny model whose weights, like a 7B model's, outweigh one decode pass's activations (hidden 256,
    MLP 1024; 4 rows x 32 tokens per device group), compiled for v4:2x2x1 (fsdp=4) with the sampler in
    the decode layout over pairs of chips (model.decode_shards=2)."""
    from test_compile import tiny_config

    from quietstar_jax.tpu import aot

    c = tiny_config(**{"model.tiny.num_hidden_layers": 3, "model.tiny.hidden_size": 256,
                       "model.tiny.intermediate_size": 1024, "model.tiny.head_dim": 64, "quietstar.n_ahead": 7,
                       "model.decode_shards": 2})
    return c, aot.compile_train_step(c, "v4:2x2x1", log=lambda s: None)


@needs_libtpu
def test_decode_layout_gathers_the_weights_once_per_sampler_call(decode_layout_compiled):
    """Regression guard for the sampler's communication (issue 13): with model.decode_shards the decode
    passes move activations, and the weights cross the ICI once per sampler call (per micro-batch), not
    once per pass as with decode_shards=0 (test_tiny_train_step_communication)."""
    c, r = decode_layout_compiled
    st, rl = r["hlo_stats"], r["roofline"]
    cfg, chips, accum, m = c.model.tiny, r["chips"], c.grad_accum_steps, c.model.decode_shards
    T, H, nL = c.quietstar.n_ahead - 3, cfg.hidden_size, cfg.num_hidden_layers
    passes = accum * (T + 1) * nL  # layer passes per step: base + T decode steps per micro-batch
    rows = c.global_batch_size // accum * c.quietstar.n_passes // (chips // m)  # rows per device group
    act = rows * c.seq_len * H  # one layer input of a group
    # Per layer pass: 2 float32 reduce-scatters (o_proj, down_proj partial sums) and 2 bf16 all-gathers
    # (the normed inputs) inside each pair: (m-1)/m of the buffer.
    rs = st.collective_bytes[("reduce-scatter", "sampling")]
    assert rs == pytest.approx(passes * 2 * act * 4 * (m - 1) / m)
    hd = cfg.head_dim
    layer = 2 * (H * hd * (2 * cfg.num_attention_heads + 2 * cfg.num_key_value_heads) + 3 * H * cfg.intermediate_size)
    tables = 2 * 2 * cfg.vocab_size * H  # the bf16 embedding table and LM head, gathered for the copy
    once = accum * (nL * layer + tables)  # every bf16 weight once per sampler call
    moved = st.collective_bytes[("all-gather", "sampling")] + st.collective_bytes[("all-to-all", "sampling")]
    gathers = passes * 2 * act * 2 * (m - 1) / m
    assert gathers < moved <= once + 1.1 * gathers, (moved, once, gathers)
    assert st.collective_bytes[("all-reduce", "sampling")] < 2 ** 14  # scalars (the entropy), no activations
    # What decode_shards=0 moves: every layer's weights in every pass, (n-1)/n of them per chip.
    per_pass = accum * (T + 1) * nL * layer * (chips - 1) / chips
    assert st.by_phase()["sampling"] < per_pass / 2.5
    # The pairs' collectives are timed on the one link between the two chips of a pair.
    assert rl.ici_by_group[2][1] == 1 and rl.ici_by_group[2][0] >= rs
    assert r["memory"]["total"] < r["usable_hbm"]
