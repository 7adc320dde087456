"""AOT compile for a TPU topology on the CPU host (quietstar_jax.compile): topology names, the jaxpr
FLOP counter against hand counts, a tiny model's real train step compiled for v4:2x2x1, clear errors."""

import importlib.util
import math

import builders
import jax
import jax.numpy as jnp
import pytest

from quietstar_jax import compile as qc
from quietstar_jax.errors import ConfigError, MeshError, TopologyError
from quietstar_jax.tpu import aot, report, topology
from quietstar_jax.training.flops import jaxpr_matmul_flops

needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason="libtpu not installed (pip install libtpu)")


def tiny_config(**over):
    """A tiny model's bf16 step with full remat, 2 micro-batches, fsdp over all chips."""
    return builders.run_config(**{"model.dtype": "bfloat16", "model.remat_policy": "full", "seq_len": 32,
                                  "grad_accum_steps": 2, "quietstar.n_ahead": 5, "mesh.data": 1, "mesh.fsdp": -1,
                                  **over})


# ----------------------------------------------------------------------------- topology names
@pytest.mark.parametrize("name, gen, dims", [
    ("v4:2x2x1", "v4", (2, 2, 1)), ("v4:2x2x2", "v4", (2, 2, 2)), ("V4-16", "v4", (2, 2, 2)),
    ("v4-8", "v4", (2, 2, 1)), ("v4-128", "v4", (4, 4, 4)), ("v5p-8", "v5p", (2, 2, 1)),
    ("v5litepod-16", "v5e", (4, 4)), ("v5e:2x4", "v5e", (2, 4)), ("v6e-8", "v6e", (2, 4)),
])
def test_parse_topology(name, gen, dims):
    spec, d = topology.parse_topology(name)
    assert (spec.generation, d) == (gen, dims)


@pytest.mark.parametrize("name, match", [
    ("v4", "expected"), ("v9:2x2x2", "unknown TPU generation"), ("v4:2x2", "3 positive dimensions"),
    ("v4-12", "no standard v4 slice"), ("v5e:2x2x2", "2 positive dimensions"), ("tpu-v4-16", "expected"),
])
def test_bad_topology_names(name, match):
    with pytest.raises(TopologyError, match=match):
        topology.parse_topology(name)


def test_chips_per_host():
    v4, v5e = topology.SPECS["v4"], topology.SPECS["v5e"]
    assert topology.chips_per_host_bounds(v4, (2, 2, 1)) == (2, 2, 1)
    assert topology.chips_per_host_bounds(v4, (4, 4, 8)) == (2, 2, 1)
    assert topology.chips_per_host_bounds(v5e, (2, 4)) == (2, 4, 1)  # v5litepod-8: one host
    assert topology.chips_per_host_bounds(v5e, (4, 4)) == (2, 2, 1)


# ----------------------------------------------------------------------------- FLOP counter
def test_jaxpr_flops_match_hand_counts():
    """Scan bodies x length, backward = 2x forward, remat = +1 forward, cond = max branch."""
    n, layers = 32, 5
    x, w = jnp.ones((n, n)), jnp.ones((layers, n, n))
    mm = 2 * n ** 3

    def net(x, w, remat=False):
        body = lambda h, wi: (jnp.tanh(h @ wi), None)  # noqa: E731
        return jax.lax.scan(jax.checkpoint(body) if remat else body, x, w)[0].sum()

    count = lambda f, *a: jaxpr_matmul_flops(jax.make_jaxpr(f)(*a))  # noqa: E731
    assert count(net, x, w) == (layers * mm, False)
    assert count(jax.grad(net, argnums=1), x, w) == (3 * layers * mm, False)
    assert count(jax.jit(jax.grad(lambda x, w: net(x, w, True), argnums=1)), x, w) == (4 * layers * mm, False)
    branchy = lambda x, w: jax.lax.cond(x[0, 0] > 0, lambda: (x @ w[0]) @ w[1], lambda: x @ w[0])  # noqa: E731
    assert count(branchy, x, w) == (2 * mm, False)
    fori = lambda x, w: jax.lax.fori_loop(0, 3, lambda i, h: h @ w[0], x)  # static bounds: a scan  # noqa: E731
    assert count(fori, x, w) == (3 * mm, False)
    loop = lambda x, w: jax.lax.while_loop(lambda h: h[0, 0] < 1e9, lambda h: h @ w[0], x)  # noqa: E731
    assert count(loop, x, w) == (mm, True)  # unknown trip count: body counted once, flagged


# ----------------------------------------------------------------------------- with libtpu
@needs_libtpu
def test_compile_tiny_for_v4():
    """The real train step of a tiny model, compiled by the TPU compiler for a v4-8 (4 chips)."""
    c = tiny_config()
    r = aot.compile_train_step(c, "v4:2x2x1", log=lambda s: None)
    assert r["chips"] == 4 and r["hosts"] == 1 and r["device_kind"] == "TPU v4"
    assert r["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
    mem, usable = r["memory"], r["usable_hbm"]
    assert 30 * 2 ** 30 < usable <= 32 * 2 ** 30
    for k in ("argument", "output", "temp", "generated_code", "total"):
        assert mem[k] > 0, k
    assert mem["total"] < usable
    # The arguments are the train state (+ the small batch; TPU layouts pad tiny arrays).
    assert r["state_bytes_per_chip"] <= mem["argument"] < 2 * r["state_bytes_per_chip"] + 2 ** 20
    # The donated state comes back in place: (nearly) all outputs alias arguments.
    assert mem["alias"] > 0.9 * mem["output"]
    # Analytic check of the model FLOPs: 4 chips; backbone + lm head matmuls, forward x3 for training,
    # plus no-grad sampling. At least the training pass of the K streams must be there.
    cfg = c.model.tiny
    K = c.quietstar.n_ahead + c.quietstar.n_ahead_talk - 1
    rows = c.global_batch_size * c.quietstar.n_passes
    H, I, V, nL = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_hidden_layers
    per_token = 2 * nL * (H * cfg.num_attention_heads * cfg.head_dim * 2
                          + H * cfg.num_key_value_heads * cfg.head_dim * 2 + 3 * H * I)
    train_backbone = 3 * per_token * rows * K * c.seq_len
    assert r["flops_model"] > train_backbone
    assert r["flops_executed"] > r["flops_model"]  # full remat recomputes the forward
    assert r["flops_model"] < 10 * train_backbone + 3 * 2 * H * V * rows * K * c.seq_len
    assert r["xla_flops_per_chip"] > 0
    text = report.format_report(r, 0.4, tokens_per_step=c.global_batch_size * c.seq_len, steps=c.steps)
    assert "usable HBM" in text and "MFU" in text


@needs_libtpu
def test_bad_topology_from_libtpu():
    # Parses, but libtpu rejects a v4 layout that hosts of 2x2x1 chips cannot tile.
    with pytest.raises(TopologyError, match="v4:3x3x3"):
        topology.get_topology("v4:3x3x3")


@needs_libtpu
def test_impossible_mesh_and_batch():
    with pytest.raises(MeshError, match="4 available"):
        aot.compile_train_step(tiny_config(**{"mesh.fsdp": 3}), "v4:2x2x1", log=lambda s: None)
    with pytest.raises(ConfigError, match="global_batch_size"):  # 2 rows per micro-batch over 4 chips
        aot.compile_train_step(tiny_config(global_batch_size=2, grad_accum_steps=1), "v4:2x2x1",
                              log=lambda s: None)
    with pytest.raises(ConfigError, match="2 hosts"):  # v4-16 has 2 hosts; 1 example cannot split
        aot.compile_train_step(tiny_config(global_batch_size=1, grad_accum_steps=1, **{"mesh.fsdp": 1,
                                                                                       "mesh.data": -1}),
                              "v4:2x2x2", log=lambda s: None)


@needs_libtpu
def test_bad_input_raises_before_compiling():
    with pytest.raises(TopologyError, match="3 positive dimensions"):
        qc.run(tiny_config(), "v4:7x7")
    with pytest.raises(ConfigError, match="model.preset"):
        qc.run(tiny_config(**{"model.preset": "nope"}), "v4:2x2x1")


@needs_libtpu
def test_does_not_fit_exits_1(capsys):
    """A model far larger than 4 x 30.75 GiB: the TPU compiler's OOM becomes exit status 1."""
    big = dict(vocab_size=258, hidden_size=8192, intermediate_size=32768, num_hidden_layers=16,
               num_attention_heads=64, num_key_value_heads=8, head_dim=128)
    c = tiny_config(**{f"model.tiny.{k}": v for k, v in big.items()})
    assert qc.run(c, "v4:2x2x1", flops=False) == 1
    assert "DOES NOT FIT" in capsys.readouterr().err


def test_math_of_report_units():
    r = dict(topology="v4:2x2x1", device_kind="TPU v4", chips=4, hosts=1, mesh={}, params=1e9,
             memory=dict(argument=2 ** 30, output=2 ** 30, alias=2 ** 30, temp=2 ** 30, generated_code=0,
                         total=2 * 2 ** 30), usable_hbm=30.75 * 2 ** 30, usable_hbm_source="table",
             hbm_gib=32, peak_flops_per_chip=275e12, flops_executed=4 * 275e12, flops_model=3 * 275e12,
             xla_flops_per_chip=1.0, flops_while_once=False, lower_s=1.0, compile_s=2.0, flops_trace_s=0.5)
    text = report.format_report(r, mfu=0.5)
    # model FLOPs per chip 0.75 peak-seconds / 0.5 MFU = 1.5 s; lower bound 1 s.
    assert "1.50 s" in text and "1.00 s" in text and math.isclose(2.0, r["memory"]["total"] / 2 ** 30)


@needs_libtpu
def test_compile_generation_for_v4():
    """Generation with thinking (the whole while loop) compiled for a v4-8 with training's layout."""
    from quietstar_jax.tpu.aot_generate import compile_generate, format_generate_report

    r = compile_generate(tiny_config(), "v4:2x2x1", batch=4, prompt_len=32, max_new_tokens=16, log=lambda s: None)
    assert r["chips"] == 4 and r["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
    assert 0 < r["memory"]["total"] < r["usable_hbm"] and r["params_bytes_per_chip"] > 0
    text = format_generate_report(r)
    assert "generation on v4:2x2x1" in text and "thinking on" in text
    with pytest.raises(ConfigError, match="--batch 3 is not divisible"):
        compile_generate(tiny_config(), "v4:2x2x1", batch=3, prompt_len=8, max_new_tokens=4, log=lambda s: None)
