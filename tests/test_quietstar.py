"""Quiet-STaR core against independent references (dense masks, per-position loops, analytic grads)."""

import builders
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_quietstar as ref

from quietstar_jax.model.attention import StreamMask, stream_attention
from quietstar_jax.model.head import token_logprobs
from quietstar_jax.model.transformer import forward, lm_logits
from quietstar_jax.quietstar import QuietStarConfig, layout, quietstar_loss, sample_thoughts
from quietstar_jax.quietstar.objective import advantages
from quietstar_jax.quietstar.sampling import sample_inverse_cdf, sampling_uniforms
from quietstar_jax.quietstar.tokens import embed_with_thoughts, mask_thought_logits

V = 97
CFG = builders.model_config(vocab_size=V)
QS = QuietStarConfig(n_ahead=6, n_ahead_talk=3, n_passes=2, start_id=V, end_id=V + 1)


def make_params(cfg=CFG, qs=QS, seed=0, live_head=True):
    # A non-zero last layer, so w != 0 and rewards/advantages are non-trivial.
    p = builders.live_params(cfg, qs, seed, [3, 4], 0.3 if live_head else None)
    if live_head:
        last = p["quietstar"]["talk_head"]["4"]
        if "bias" in last:
            last["bias"] = jnp.full_like(last["bias"], 0.2)
        for layer in ("0", "2"):  # non-zero hidden biases too (init is zero)
            b = p["quietstar"]["talk_head"][layer]["bias"]
            p["quietstar"]["talk_head"][layer]["bias"] = 0.05 * jax.random.normal(jax.random.key(seed + 3), b.shape)
    return p


def make_batch(B=2, L=10, pad_from=None, seed=0):
    toks = np.random.RandomState(seed).randint(0, V, (B, L))
    seg = np.ones((B, L), np.int32)
    if pad_from is not None:
        seg[-1, pad_from:] = 0
    pos = np.broadcast_to(np.arange(L), (B, L))
    return {"tokens": jnp.asarray(toks, jnp.int32), "positions": jnp.asarray(pos, jnp.int32),
            "segment_ids": jnp.asarray(seg)}


# ----------------------------------------------------------------------------- stream attention


@pytest.mark.parametrize("window", [1 << 30, 3])
def test_stream_attention_equals_dense_values_and_grads(window):
    B, K, L, Hq, Hkv, D = 2, 5, 7, 4, 2, 8
    ks = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(ks[0], (B, K, L, Hq, D))
    k = jax.random.normal(ks[1], (B, K, L, Hkv, D))
    v = jax.random.normal(ks[2], (B, K, L, Hkv, D))
    ct = jax.random.normal(ks[3], (B, K, L, Hq, D))
    seg = jnp.asarray([[1] * 7, [1, 1, 1, 2, 2, 2, 0]], jnp.int32)  # packing and padding
    mask = StreamMask.streams(seg, K)
    dense_mask = jnp.asarray(ref.dense_stream_mask(seg, K, window))

    def ours(q, k, v):
        o = stream_attention(q, k[:, 0], v[:, 0], k[:, 1:], v[:, 1:], mask, window, D ** -0.5)
        return jnp.sum(o * ct), o

    def dense(q, k, v):
        flat = lambda a: a.reshape(B, K * L, *a.shape[3:])  # noqa: E731
        o = ref.dense_attention(flat(q), flat(k), flat(v), dense_mask, D ** -0.5).reshape(q.shape)
        return jnp.sum(o * ct), o

    (_, o1), g1 = jax.jit(jax.value_and_grad(ours, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    (_, o2), g2 = jax.jit(jax.value_and_grad(dense, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    np.testing.assert_allclose(o1, o2, atol=1e-5, rtol=1e-5)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_model_on_streams_equals_dense_transformer():
    params = make_params()
    batch = make_batch(pad_from=7)
    thoughts = jax.random.randint(jax.random.key(5), (2, 10, QS.num_thought_tokens), 0, V)
    streams = layout.stream_tokens(QS, batch["tokens"], thoughts)
    K = QS.num_streams
    h = jax.jit(lambda p: forward(p, CFG, embed_with_thoughts(p, CFG, QS, streams),
                                  layout.stream_positions(QS, batch["positions"]),
                                  StreamMask.streams(batch["segment_ids"], K)))(params)
    flat = streams.reshape(2, -1)
    pos = layout.stream_positions(QS, batch["positions"]).reshape(2, -1)
    mask = jnp.asarray(ref.dense_stream_mask(batch["segment_ids"], K))
    h_ref = jax.jit(lambda p: ref.dense_forward(p, CFG, ref.embed_ref(p, QS, flat), pos, mask))(params).reshape(h.shape)
    np.testing.assert_allclose(h, h_ref, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("top_k", [0, 5])
def test_parallel_sampling_equals_naive_per_position_loop(top_k):
    qs = QS.replace(top_k=top_k, n_ahead=5)
    params = make_params(qs=qs)
    batch = make_batch(B=2, L=5)
    key = jax.random.key(7)
    thoughts, _, raws = jax.jit(lambda p: sample_thoughts(p, CFG, qs, batch["tokens"], batch["positions"],
                                                          batch["segment_ids"], key, return_logits=True))(params)
    naive, naive_raws = ref.naive_thoughts(params, CFG, qs, batch["tokens"], batch["positions"], key,
                                              sampling_uniforms)
    np.testing.assert_allclose(raws, naive_raws, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(thoughts, naive)
    assert len(np.unique(np.asarray(thoughts))) > 3  # really sampled, not a constant


@pytest.mark.parametrize("top_k", [0, 5])
def test_top_k_keeps_the_thoughts_among_the_k_most_likely_ids(top_k):
    """top_k acts only where thoughts are sampled (a golden case replays the authors' thoughts, so
    tests/test_golden.py cannot see it): with k > 0 every thought token is one of the k most likely ids of
    the distribution it was drawn from; with 0 (the authors' full vocabulary) less likely ids are drawn too."""
    qs = QS.replace(top_k=top_k)
    batch = make_batch(B=2, L=16)
    thoughts, _, raws = jax.jit(lambda p: sample_thoughts(p, CFG, qs, batch["tokens"], batch["positions"],
                                                          batch["segment_ids"], jax.random.key(3),
                                                          return_logits=True))(make_params(qs=qs))
    z = np.asarray(mask_thought_logits(raws, qs))  # (R, L, T, V): the ids a thought can be
    drawn = np.take_along_axis(z, np.asarray(thoughts)[..., None], -1)
    rank = (z > drawn).sum(-1)  # ids more likely than the one drawn
    assert rank.size == 2 * 16 * QS.num_thought_tokens
    if top_k:
        assert rank.max() < top_k, np.bincount(rank.ravel())
    else:
        assert rank.max() >= 5, np.bincount(rank.ravel())


def test_inverse_cdf_sampling_matches_the_distribution():
    """Empirical frequencies of many draws vs softmax (chi-square-like bound), masked ids never drawn."""
    logits = jnp.array([1.0, -jnp.inf, 0.5, 2.0, -1.0, -jnp.inf], jnp.float32)
    n = 200_000
    u = jax.random.uniform(jax.random.key(0), (n,), minval=jnp.finfo(jnp.float32).tiny, maxval=1.0)
    tok, ent = sample_inverse_cdf(jnp.broadcast_to(logits, (n, 6)), u)
    freq = np.bincount(np.asarray(tok), minlength=6) / n
    p = np.asarray(jax.nn.softmax(logits))
    np.testing.assert_allclose(freq, p, atol=4 * np.sqrt(p.max() / n))
    assert freq[1] == 0 and freq[5] == 0
    np.testing.assert_allclose(ent[0], -np.sum(p[p > 0] * np.log(p[p > 0])), rtol=1e-5)


@pytest.mark.parametrize("block", [None, 1, 4, 7])
def test_two_level_inverse_cdf_equals_full_cdf_search(block):
    """The blocked search returns the id a float64 search of the full CDF returns (random logits with
    excluded ids, incl. whole excluded blocks and a trailing excluded id), and never an excluded id
    even for u at the extremes."""
    rng = np.random.default_rng(0)
    V, n = 37, 4000
    logits = rng.normal(0, 2, (n, V)).astype(np.float32)
    logits[:, [0, 5, 6, 7, 8, 20, 36]] = -np.inf
    u = rng.uniform(0, 1, n).astype(np.float32)
    u[:4] = [np.finfo(np.float32).tiny, 1e-30, np.nextafter(np.float32(1), np.float32(0)), 0.5]
    tok, _ = jax.jit(lambda z, u: sample_inverse_cdf(z, u, block))(jnp.asarray(logits), jnp.asarray(u))
    tok = np.asarray(tok)
    p = np.exp(logits.astype(np.float64) - logits.max(-1, keepdims=True))
    cdf = np.cumsum(p / p.sum(-1, keepdims=True), -1)
    want = np.array([np.searchsorted(cdf[i], u[i], side="left") for i in range(n)])
    assert (p[np.arange(n), tok] > 0).all()
    # float32 vs float64 may disagree only for u within rounding of a CDF boundary
    gap = np.abs(cdf[np.arange(n), np.minimum(want, V - 1)] - u)
    assert ((tok == want) | (gap < 1e-5)).all()
    assert (tok == want).mean() > 0.999


def test_sampling_never_emits_thought_ids_inside_vocab():
    qs = QS.replace(start_id=5, end_id=6, n_ahead=8)
    params = make_params(qs=qs)
    # Make ids 5 and 6 overwhelmingly likely: they must still never be sampled.
    params["lm_head"]["weight"] = params["lm_head"]["weight"].at[5:7].mul(200.0)
    b = make_batch()
    th, _ = sample_thoughts(params, CFG, qs, b["tokens"], b["positions"], b["segment_ids"], jax.random.key(0))
    assert not np.isin(np.asarray(th), [5, 6]).any()


@pytest.mark.parametrize("adapter_rank", [0, 2])
def test_cached_sampling_logits_equal_training_forward_logits(adapter_rank):
    """The KV-cached sampler and the teacher-forced training pass give the same log-probs (with thought
    adapters: both run them in the thought streams)."""
    from quietstar_jax.quietstar.adapters import thought_adapters

    qs = QS.replace(adapter_rank=adapter_rank)
    params = adapted_params(qs)
    b = make_batch(pad_from=8)
    th, _, raws = sample_thoughts(params, CFG, qs, b["tokens"], b["positions"], b["segment_ids"],
                                  jax.random.key(3), return_logits=True)
    streams = layout.stream_tokens(qs, b["tokens"], th)
    h = forward(params, CFG, embed_with_thoughts(params, CFG, qs, streams),
                layout.stream_positions(qs, b["positions"]), StreamMask.streams(b["segment_ids"], qs.num_streams),
                adapters=thought_adapters(params, qs))
    if adapter_rank:  # the adapters change the thought streams' logits (else the test shows nothing)
        h0 = forward(params, CFG, embed_with_thoughts(params, CFG, qs, streams),
                     layout.stream_positions(qs, b["positions"]), StreamMask.streams(b["segment_ids"], qs.num_streams))
        assert float(jnp.abs(h - h0)[:, 1:].max()) > 1e-2 and float(jnp.abs(h - h0)[:, 0].max()) == 0.0
    T = qs.num_thought_tokens
    train = jnp.moveaxis(lm_logits(params, CFG, h[:, 1:T + 1]), 1, 2)
    np.testing.assert_allclose(jax.nn.log_softmax(train), jax.nn.log_softmax(raws), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mesh_shape, shards", [
    ({"data": 1, "fsdp": 8, "tensor": 1}, 2),
    ({"data": 1, "fsdp": 4, "tensor": 2}, 2),  # heads split over tensor x fsdp_inner
    ({"data": 2, "fsdp": 4, "tensor": 1}, 4),  # one group per data replica: plain Megatron over fsdp
])
def test_sampling_in_the_decode_layout_equals_unsharded(mesh_shape, shards):
    """ModelConfig.decode_shards (a resident weight copy split over device groups, activations moved
    instead of weights) samples the same thoughts with the same logits as one device, on meshes with
    data, fsdp and tensor axes; a group size that does not divide fsdp is a one-line ConfigError."""
    from quietstar_jax.errors import ConfigError
    from quietstar_jax.sharding import batch_sharding, make_mesh, tree_shardings
    from quietstar_jax.training.state import full_param_axes

    cfg = CFG.replace(num_attention_heads=8, num_key_value_heads=4)
    params = make_params(cfg=cfg)
    b = make_batch(B=16, L=6, pad_from=3)
    key = jax.random.key(3)
    want = jax.jit(lambda p: sample_thoughts(p, cfg, QS, b["tokens"], b["positions"], b["segment_ids"], key,
                                             return_logits=True))(params)
    mesh = make_mesh(mesh_shape)
    p_sh, b_sh = tree_shardings(full_param_axes(cfg, QS), params, mesh), batch_sharding(mesh)

    def on_mesh(c):
        def f(p, t, pos, seg):
            with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
                return sample_thoughts(p, c, QS, t, pos, seg, key, return_logits=True)
        return jax.jit(f, in_shardings=(p_sh, b_sh, b_sh, b_sh))(jax.device_put(params, p_sh), b["tokens"],
                                                                b["positions"], b["segment_ids"])

    thoughts, ent, raws = on_mesh(cfg.replace(decode_shards=shards))
    np.testing.assert_array_equal(thoughts, want[0])
    np.testing.assert_allclose(raws, want[2], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(ent, want[1], rtol=1e-5)
    with pytest.raises(ConfigError, match="decode_shards=3 does not divide the fsdp axis"):
        on_mesh(cfg.replace(decode_shards=3))


# ----------------------------------------------------------------------------- objective


# Every config variant (incl. our alternatives and packing) against the position-by-position dense
# reference, both in float64 (so the authors' 1e6 policy weight and the x100 thought-embedding scale
# do not turn float32 rounding into the comparison's error): 1e-9 of each gradient's scale. The
# authors' own numbers are checked by test_golden.py.
VARIANTS = {
    "P2-clamped-pairs": dict(),
    "P1-no-baseline": dict(n_passes=1),
    "P3-general-path": dict(n_passes=3),
    "policy-only": dict(base_loss_weight=0.0, mix_loss_weight=0.0),
    "policy-only-P1": dict(n_passes=1, base_loss_weight=0.0, mix_loss_weight=0.0),
    "thought-ids-in-vocab": dict(start_id=5, end_id=6),
    "thought-ids-in-vocab-nll-masked": dict(start_id=5, end_id=6, mask_thought_logits_in_nll=True),
    "our-reductions": dict(policy_reduction="sum", policy_denominator="valid", reward_needs_all_targets=True),
}
# The stabilisers (QuietStarConfig, docs/algorithm.md "Stabilisers"), each against the same dense
# reference, which writes them out position by position (tests/reference_quietstar.py).
STABILISER_VARIANTS = {
    "entropy-bonus": dict(entropy_bonus=0.3, policy_weight=10.0),
    "kl-to-initial": dict(kl_coef=0.7),
    "entropy-kl-P3": dict(n_passes=3, entropy_bonus=0.2, kl_coef=0.5, sample_temperature=1.5),
    "entropy-kl-thought-ids-in-vocab": dict(entropy_bonus=0.2, kl_coef=0.5, start_id=5, end_id=6),
    "advantage-norm-batch": dict(advantage_norm="batch", policy_weight=1.0),
    "advantage-norm-group-P3": dict(n_passes=3, advantage_norm="group", policy_weight=1.0),
    "warmup-fixed": dict(mixing_warmup_steps=5, mixing_warmup_mode="fixed", mixing_warmup_value=0.6),
    "warmup-floor": dict(mixing_warmup_steps=5, mixing_warmup_mode="floor", mixing_warmup_value=0.9),
    "thought-adapters": dict(adapter_rank=2, adapter_alpha=3.0, adapter_targets="q_proj,v_proj,o_proj,down_proj"),
    "pause": dict(thought_mode="pause"),
}
SLOW_VARIANTS = {
    "unclamped-bounded": dict(clamp_advantage=False, mixer_bounded=True),
    "logit-mixer-keep-last": dict(mixer="logit", drop_last_reward_position=False),
    "last-bias": dict(mixing_head_last_bias=True),
}


def adapted_params(qs, seed=0):
    """make_params, with thought adapters whose B is non-zero (at init B = 0: no effect)."""
    p = make_params(qs=qs, seed=seed)
    if qs.adapter_rank:
        keys = iter(jax.random.split(jax.random.key(seed + 7), 64))
        p["quietstar"]["adapters"] = jax.tree_util.tree_map_with_path(
            lambda path, a: 0.3 * jax.random.normal(next(keys), a.shape) if "lora_B" in jax.tree_util.keystr(path)
            else a, p["quietstar"]["adapters"])
    return p


def _compare_with_reference(qs, batch, seed=9, step=2):
    params = adapted_params(qs)
    ref_params = adapted_params(qs, seed=5) if qs.kl_coef else None  # "initial" params unlike the current
    R, L = batch["tokens"].shape[0] * qs.n_passes, batch["tokens"].shape[1]
    thoughts = jax.random.randint(jax.random.key(seed), (R, L, qs.num_thought_tokens), 0, V)
    # The sampler never emits the thought ids (masked); keep random thoughts off them too.
    thoughts = jnp.where(jnp.isin(thoughts, jnp.asarray([qs.start_id, qs.end_id])), 0, thoughts)
    with jax.enable_x64(True):
        cfg = CFG.replace(dtype="float64")
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)
        ref_params = None if ref_params is None else jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), ref_params)
        f = lambda p: quietstar_loss(p, cfg, qs, batch, None, thoughts=thoughts, step=jnp.int32(step),  # noqa: E731
                                     ref_params=ref_params)[0]
        g = lambda p: ref.reference_loss(p, cfg, qs, batch, thoughts, step, ref_params)  # noqa: E731
        l1, g1 = jax.jit(jax.value_and_grad(f))(params)
        l2, g2 = jax.jit(jax.value_and_grad(g))(params)  # one compile instead of many eager ops
        assert abs(float(l1) - float(l2)) <= 1e-9 * abs(float(l2)), (float(l1), float(l2))
        flat1, flat2 = jax.tree.leaves_with_path(g1), dict(jax.tree.leaves_with_path(g2))
        assert len(flat1) == len(flat2)
        for path, a in flat1:
            b = flat2[path]
            scale = max(float(jnp.abs(b).max()), 1e-300)
            np.testing.assert_allclose(a / scale, b / scale, rtol=0, atol=1e-9, err_msg=jax.tree_util.keystr(path))
    return g1


@pytest.mark.parametrize("variant", list(VARIANTS) + list(STABILISER_VARIANTS)
                         + [pytest.param(k, marks=pytest.mark.slow) for k in SLOW_VARIANTS])
def test_loss_and_grads_equal_dense_reference(variant):
    qs = QS.replace(n_ahead=5, **{**VARIANTS, **STABILISER_VARIANTS, **SLOW_VARIANTS}[variant])
    g = _compare_with_reference(qs, make_batch(L=7, pad_from=5))
    if qs.base_loss_weight == 0 and qs.mix_loss_weight == 0:  # the policy term alone moves the model
        assert np.abs(np.asarray(g["model"]["layers"]["mlp"]["up_proj"]["weight"])).max() > 0


@pytest.mark.parametrize("routing", [dict(policy_params="quietstar/.*"), dict(policy_grad_max_share=0.2),
                                     dict(policy_params="quietstar/(adapters|thought_embeddings)/.*",
                                          policy_grad_max_share=0.01)])
def test_routed_gradient_equals_the_reference_terms_recombined(routing):
    """quietstar.routing: the applied gradient is g_lm + c * mask(g_thought), with g_lm and g_thought the
    dense reference's gradients of its two terms, mask = policy_params, c = the share bound (float64)."""
    import re

    from quietstar_jax.model.params import path_string
    from quietstar_jax.quietstar.routing import routed_value_and_grad

    qs = QS.replace(n_ahead=5, adapter_rank=2, entropy_bonus=0.1, **routing)
    batch = make_batch(L=7, pad_from=5)
    params = adapted_params(qs)
    th = jax.random.randint(jax.random.key(9), (4, 7, qs.num_thought_tokens), 0, V)
    with jax.enable_x64(True):
        cfg = CFG.replace(dtype="float64")
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)
        (_, m), g = jax.jit(lambda p: routed_value_and_grad(
            lambda q: quietstar_loss(q, cfg, qs, batch, None, thoughts=th), qs, p))(params)
        g_lm = jax.jit(jax.grad(lambda p: ref.reference_loss(p, cfg, qs, batch, th, terms=True)[0]))(params)
        g_th = jax.jit(jax.grad(lambda p: ref.reference_loss(p, cfg, qs, batch, th, terms=True)[1]))(params)
        pat = re.compile(qs.policy_params or ".*")
        g_th = jax.tree_util.tree_map_with_path(
            lambda path, x: x if pat.fullmatch(path_string(path)) else 0 * x, g_th)
        norm = lambda t: float(np.sqrt(sum(float(jnp.sum(x * x)) for x in jax.tree.leaves(t))))  # noqa: E731
        n_lm, n_th = norm(g_lm), norm(g_th)
        s = qs.policy_grad_max_share
        c = min(1.0, s / (1 - s) * n_lm / n_th) if s else 1.0
        np.testing.assert_allclose(float(m["grad_norm_lm"]), n_lm, rtol=1e-9)
        np.testing.assert_allclose(float(m["grad_norm_thought"]), n_th, rtol=1e-9)
        np.testing.assert_allclose(float(m["thought_grad_scale"]), c, rtol=1e-9)
        if s == 0.01:
            assert c < 0.5  # the bound binds in this case
        want = jax.tree.map(lambda a, b: a + c * b, g_lm, g_th)
        for (path, a), b in zip(jax.tree.leaves_with_path(g), jax.tree.leaves(want)):
            scale = max(float(jnp.abs(b).max()), 1e-300)
            np.testing.assert_allclose(a / scale, b / scale, atol=1e-9, err_msg=jax.tree_util.keystr(path))
        if qs.policy_params == "quietstar/.*":  # the text-predicting weights learn from the NLL alone
            np.testing.assert_allclose(g["model"]["layers"]["mlp"]["up_proj"]["weight"],
                                       g_lm["model"]["layers"]["mlp"]["up_proj"]["weight"], rtol=1e-9, atol=1e-14)


def test_packed_documents_equal_dense_reference():
    """Our extension: packed rows (segment ids 1, 2, 3 and padding) are exact within each document."""
    qs = QS.replace(n_ahead=5, policy_weight=1.0)
    b = make_batch(L=9)
    b["segment_ids"] = jnp.asarray([[1, 1, 1, 1, 2, 2, 2, 2, 2], [1, 1, 2, 2, 2, 3, 3, 0, 0]], jnp.int32)
    b["positions"] = jnp.asarray([[0, 1, 2, 3, 0, 1, 2, 3, 4], [0, 1, 0, 1, 2, 0, 1, 0, 0]], jnp.int32)
    _compare_with_reference(qs, b)


def test_policy_gradient_reaches_lm_and_thought_embedding_but_not_mixing_head():
    params = make_params()
    batch = make_batch()
    thoughts = jax.random.randint(jax.random.key(1), (4, 10, QS.num_thought_tokens), 0, V)
    only_pg = QS.replace(base_loss_weight=0.0, mix_loss_weight=0.0, policy_weight=1.0)
    g = jax.jit(jax.grad(lambda p: quietstar_loss(p, CFG, only_pg, batch, None, thoughts=thoughts)[0]))(params)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g["quietstar"]["talk_head"]))
    assert float(jnp.abs(g["quietstar"]["thought_embeddings"][0]).max()) > 0  # start embedding
    assert float(jnp.abs(g["model"]["layers"]["self_attn"]["k_proj"]["weight"]).max()) > 0


def test_reinforce_gradient_on_toy_categorical_matches_analytic():
    """d/dθ of -A log softmax(θ/τ)[a] = -A (onehot(a) - softmax(θ/τ)) / τ, summed over samples: the
    surrogate the objective builds from token_logprobs (its hand-written backward) and the advantages."""
    tau = 3.0
    theta = jax.random.normal(jax.random.key(0), (11,))
    acts = jnp.asarray([[[1, 4]], [[7, 7]], [[0, 2]]])  # (R=3, L=1, T=2)
    adv = jnp.asarray([[0.5], [1.5], [-0.25]])
    logits = jnp.broadcast_to(theta, (3, 1, 2, 11))

    def surrogate(t):
        logp = token_logprobs(jnp.broadcast_to(t, (3, 1, 2, 11)) / tau, acts).sum(-1)
        return jnp.sum(-jax.lax.stop_gradient(adv) * logp) / 3

    grad = jax.grad(surrogate)(theta)
    probs = np.asarray(jax.nn.softmax(theta / tau))
    analytic = np.zeros(11)
    for r in range(3):
        for a in np.asarray(acts)[r, 0]:
            analytic += -float(adv[r, 0]) * (np.eye(11)[a] - probs) / tau
    analytic /= 3  # mean over the 3 valid positions
    np.testing.assert_allclose(grad, analytic, atol=1e-6)
    assert logits.shape == (3, 1, 2, 11)


def test_clamped_advantage_with_two_passes_is_half_the_gap():
    qs = QS.replace(n_passes=2)
    r = jnp.asarray([[1.0, -2.0], [3.0, 0.5]])  # rows 0,1 are the two thoughts of one example
    _, a = advantages(qs, r)
    np.testing.assert_allclose(a, [[0.0, 0.0], [1.0, 1.25]])  # |R1 - R2| / 2 for the better one


def test_one_pass_has_no_baseline():
    """P = 1: the authors use clamp(R, 0) (no mean to subtract), so the policy gradient is not zero."""
    qs = QS.replace(n_passes=1)
    r = jnp.asarray([[1.0, -2.0], [3.0, 0.5]])
    base, a = advantages(qs, r)
    np.testing.assert_allclose(base, r)
    np.testing.assert_allclose(a, [[1.0, 0.0], [3.0, 0.5]])
    params = make_params(qs=qs)
    only_pg = qs.replace(base_loss_weight=0.0, mix_loss_weight=0.0, policy_weight=1.0)
    b = make_batch()
    th = jax.random.randint(jax.random.key(1), (2, 10, qs.num_thought_tokens), 0, V)
    g = jax.jit(jax.grad(lambda p: quietstar_loss(p, CFG, only_pg, b, None, thoughts=th)[0]))(params)
    assert float(jnp.abs(g["lm_head"]["weight"]).max()) > 0


def test_padding_and_tail_positions_are_masked():
    params = make_params()
    b = make_batch(L=10, pad_from=6)
    th = jax.random.randint(jax.random.key(2), (4, 10, QS.num_thought_tokens), 0, V)
    loss = jax.jit(lambda bb, tt: quietstar_loss(params, CFG, QS, bb, None, thoughts=tt))
    l0, m0 = loss(b, th)
    # Change padded tokens and the thoughts at padded positions: nothing may change.
    b2 = dict(b, tokens=b["tokens"].at[-1, 6:].set(1))
    th2 = th.at[-2:, 6:].set(0)
    l1, m1 = loss(b2, th2)
    np.testing.assert_allclose(l0, l1, rtol=1e-6)
    # Rewarded positions (the authors' rule): p <= L - 2 - M, with at least the next token real; near
    # the end of the real text the reward is a partial sum. reward_needs_all_targets: all M targets
    # real, and the last such position dropped too.
    valid = np.asarray(layout.reward_valid(QS, b["segment_ids"]))
    M = QS.n_ahead_talk
    assert valid[0].tolist() == [p <= 10 - 2 - M for p in range(10)]
    assert valid[1].tolist() == [p <= min(10 - 2 - M, 6 - 2) for p in range(10)]
    strict = np.asarray(layout.reward_valid(QS.replace(reward_needs_all_targets=True), b["segment_ids"]))
    assert strict[1].tolist() == [p <= 6 - 2 - M for p in range(10)]
    # The thoughts at non-rewarded positions get no policy gradient.
    only_pg = QS.replace(base_loss_weight=0.0, mix_loss_weight=0.0, policy_weight=1.0)
    grad = jax.jit(jax.grad(lambda p, t: quietstar_loss(p, CFG, only_pg, b, None, thoughts=t)[0]))
    g, g2 = grad(params, th), grad(params, th.at[:, 6:].set(0))
    chex.assert_trees_all_close(g, g2, atol=1e-7, rtol=0)


def test_reward_is_exactly_zero_at_init():
    params = make_params(live_head=False)
    _, m = jax.jit(lambda p: quietstar_loss(p, CFG, QS, make_batch(), jax.random.key(0)))(params)
    assert float(m["reward_mean"]) == 0.0 and float(m["reward_std"]) == 0.0
    assert float(m["mixing_weight"]) == 0.0
    assert 0 < float(m["thought_entropy"]) <= np.log(V) + 1e-4


def test_bf16_compute_agrees_with_fp32():
    params = make_params()
    b = make_batch()
    th = jax.random.randint(jax.random.key(4), (4, 10, QS.num_thought_tokens), 0, V)
    _, m32 = jax.jit(lambda p: quietstar_loss(p, CFG, QS.replace(policy_weight=1.0), b, None, thoughts=th))(params)
    _, m16 = jax.jit(lambda p: quietstar_loss(p, CFG.replace(dtype="bfloat16"), QS.replace(policy_weight=1.0), b,
                                              None, thoughts=th))(params)
    # Stated tolerance: bf16 activations (8-bit mantissa) move per-token log-probs by ~1e-2 on this
    # model; averaged NLLs agree to 2e-2 absolute.
    for k in ("nll_base", "nll_mix"):
        assert abs(float(m32[k]) - float(m16[k])) < 2e-2, k


def _rewards_at_small_w(qs, cfg, mean_abs_w=3e-5):
    """Rewards (at rewarded positions) of the live-head tiny model with the mixing head's last layer
    scaled so that the mean |w| is `mean_abs_w`, for given thoughts: {dtype: rewards}."""
    p = builders.live_params(cfg, qs, 0, [3, 4], 1.0)
    b = make_batch(B=4, L=32)
    th = jax.random.randint(jax.random.key(4), (4 * qs.n_passes, 32, qs.num_thought_tokens), 0, V)
    run = jax.jit(lambda p, c: quietstar_loss(p, c, qs, b, None, thoughts=th, details=True)[1]["details"],
                  static_argnums=1)
    w = float(jnp.abs(run(p, cfg)["mixing_weight"]).mean())
    p["quietstar"]["talk_head"]["4"]["weight"] *= mean_abs_w / w
    out = {}
    for dtype in ("float32", "bfloat16"):
        d = run(p, cfg.replace(dtype=dtype))
        out[dtype] = np.asarray(d["reward"])[np.asarray(d["reward_valid"])]
        np.testing.assert_allclose(float(jnp.abs(d["mixing_weight"]).mean()), mean_abs_w, rtol=0.05)
    with jax.enable_x64(True):
        d = run(jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), p), cfg.replace(dtype="float64"))
        out["float64"] = np.asarray(d["reward"])[np.asarray(d["reward_valid"])]
    return out


@pytest.mark.parametrize("mixer", ["hidden", "logit"])
def test_bf16_rewards_follow_float32_rewards(mixer):
    """The learning signal survives bf16 compute while w is tiny (the start of every run): the mix and
    the reward are taken in float32 on the logits. Before, the hidden mixer rounded the mixed bf16 hidden
    state back to h_base (here: 84% of rewards exactly 0, correlation 0.21 with float32), and float32
    itself carried ~10% error from the difference of two log-probs (correlation 0.996 with float64)."""
    r = _rewards_at_small_w(QS.replace(mixer=mixer, policy_weight=1.0), CFG)
    assert np.mean(r["bfloat16"] == 0) < 0.01
    assert np.corrcoef(r["float32"], r["bfloat16"])[0, 1] >= 0.99
    # float32 rewards against float64: relative error of rounding size, not of the reward's size.
    assert np.abs(r["float32"] - r["float64"]).max() <= 1e-4 * np.abs(r["float64"]).max()


def test_mix_gain_equals_difference_of_log_probs():
    """mix_gain (no cancellation) = log softmax(zb + w zd)[t] - log softmax(zb)[t] in float64, for small
    and large |w zd| (its two branches) and with masked ids."""
    from quietstar_jax.model.head import mix_gain

    with jax.enable_x64(True):
        zb = jax.random.normal(jax.random.key(0), (6, 11), jnp.float64) * 3
        zd = jax.random.normal(jax.random.key(1), (6, 11), jnp.float64) * 2
        t = jnp.asarray([0, 1, 2, 3, 5, 7])
        for w in (1e-6, 1e-2, 0.7, -3.0):
            wm = jnp.full((6, 1), w)
            for masked in ((), (4, 9)):
                # The reference in numpy's extended precision (80-bit on x86), where the difference of
                # two log-probs keeps the digits that float64 would cancel at w = 1e-6.
                def log_softmax(x):
                    x = np.asarray(x, np.longdouble).copy()
                    x[:, list(masked)] = -np.inf
                    m = x.max(-1, keepdims=True)
                    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
                zbl, zdl = np.asarray(zb, np.longdouble), np.asarray(zd, np.longdouble)
                want = (log_softmax(zbl + np.longdouble(w) * zdl) - log_softmax(zbl))[np.arange(6), np.asarray(t)]
                np.testing.assert_allclose(mix_gain(zb, zd, wm, t, masked), want.astype(np.float64), rtol=1e-9,
                                           atol=1e-18)


def test_baseline_config_is_plain_lm():
    params = make_params()
    b = make_batch()
    off = QuietStarConfig(n_ahead=1, n_ahead_talk=1, n_passes=1)
    loss, m = jax.jit(lambda p: quietstar_loss(p, CFG, off, b, jax.random.key(0)))(params)
    logits = lm_logits(params, CFG, forward(params, CFG, embed_with_thoughts(params, CFG, QS, b["tokens"])[:, None],
                                            b["positions"][:, None], StreamMask.causal(b["segment_ids"]))[:, 0])
    lp = jax.nn.log_softmax(logits)[:, :-1]
    nll = -np.mean(np.take_along_axis(np.asarray(lp), np.asarray(b["tokens"])[:, 1:, None], -1))
    np.testing.assert_allclose(loss, nll, rtol=1e-5)


def test_bad_quietstar_config():
    from quietstar_jax.model import ConfigError

    with pytest.raises(ConfigError, match="n_ahead must be >= 3"):
        QuietStarConfig(n_ahead=2)
    with pytest.raises(ConfigError, match="mixer"):
        QuietStarConfig(mixer="attention")


def test_dense_attention_impl_matches_stream_impl():
    """The benchmark's dense-mask variant computes the same function."""
    params = make_params()
    b = make_batch(pad_from=7)
    th = jax.random.randint(jax.random.key(4), (4, 10, QS.num_thought_tokens), 0, V)
    l1, _ = jax.jit(lambda p: quietstar_loss(p, CFG, QS.replace(policy_weight=1.0), b, None, thoughts=th))(params)
    l2, _ = jax.jit(lambda p: quietstar_loss(p, CFG.replace(attention_impl="dense"), QS.replace(policy_weight=1.0), b,
                                             None, thoughts=th))(params)
    np.testing.assert_allclose(l1, l2, rtol=1e-5)


def test_pair_policy_loss_equals_full_policy_loss():
    """P = 2 + clamp: logits only for the better thought of each pair, same value and gradient."""
    from quietstar_jax.quietstar.objective import policy_logp_pairs, policy_logprobs

    qs = QS.replace(n_passes=2, clamp_advantage=True)
    params = make_params(qs=qs)
    R, L, T, K = 4, 6, qs.num_thought_tokens, qs.num_streams
    hidden = jax.random.normal(jax.random.key(3), (R, K, L, CFG.hidden_size))
    thoughts = jax.random.randint(jax.random.key(4), (R, L, T), 0, V)
    rewards = jax.random.normal(jax.random.key(5), (R, L)).at[2:4, 1].set(0.5)  # a tie: both A = 0
    _, adv = advantages(qs, rewards.at[:, -2:].set(0.0))

    def full(p, h):
        return jnp.sum(jax.lax.stop_gradient(adv) * policy_logprobs(p, CFG, qs, h, thoughts).sum(-1))

    pair = lambda p, h: policy_logp_pairs(p, CFG, qs, h, thoughts, adv)  # noqa: E731
    (l1, g1), (l2, g2) = [jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(params, hidden) for f in (full, pair)]
    np.testing.assert_allclose(l2, l1, rtol=1e-6)
    chex.assert_trees_all_close(g2, g1, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- mixing head init
# The init-only departures (a golden case supplies the weights, so tests/test_golden.py cannot see them;
# it lists them with this test): the authors' init rule holds for the default and fails for each alternative.
INIT_DEPARTURES = {"mixing_head_init": "uniform", "mixing_head_last_bias": True}


def _authors_init_violations(head: dict, H: int, std: float) -> list:
    """How a fresh mixing head differs from the authors' talk_head (HF _init_weights, then their last layer
    zeroed): hidden weights N(0, std) with zero biases, a last layer (1, H) of zeros without a bias."""
    bad = []
    shapes = {f"{layer}.{kind}": tuple(v.shape) for layer, d in head.items() for kind, v in d.items()}
    want = {"0.weight": (H, 2 * H), "0.bias": (H,), "2.weight": (H, H), "2.bias": (H,), "4.weight": (1, H)}
    if shapes != want:
        bad.append(f"params {shapes}, the authors' {want}")
    for layer in ("0", "2"):
        w = np.asarray(head[layer]["weight"])  # >= 65k samples: std within ~0.5%
        if abs(w.std() - std) > 0.05 * std or abs(w.mean()) > 0.05 * std:
            bad.append(f"layer {layer} weights: mean {w.mean():.2e} std {w.std():.2e}, not N(0, {std})")
        if np.any(head[layer]["bias"]):
            bad.append(f"layer {layer}: non-zero bias")
    if np.any(head["4"]["weight"]):
        bad.append("last layer not zero")
    return bad


def test_mixing_head_init_follows_the_authors():
    """Same names and shapes as their talk_head in the golden fixture; the authors' init rule."""
    import golden

    from quietstar_jax.quietstar.mixing import init_mixing_head

    case = golden.Case(f"{golden.FIXTURE_DIR}/case_a")
    theirs = {n: v.shape for n, v in case.weights.items() if n.startswith("talk_head.")}
    cfg = case.model_config("float32")
    head = init_mixing_head(jax.random.key(0), cfg.hidden_size, case.quietstar_config(), cfg.initializer_range)
    ours = {f"talk_head.0.{layer}.{kind}": v.shape for layer, d in head.items() for kind, v in d.items()}
    assert ours == theirs
    assert _authors_init_violations(init_mixing_head(jax.random.key(0), 256, QS, 0.02), 256, 0.02) == []


@pytest.mark.parametrize("field,value", [pytest.param(f, v, id=f"{f}={v}") for f, v in INIT_DEPARTURES.items()])
def test_each_init_departure_from_the_authors_is_detected(field, value):
    from quietstar_jax.quietstar.mixing import init_mixing_head

    head = init_mixing_head(jax.random.key(0), 256, QS.replace(**{field: value}), 0.02)
    assert _authors_init_violations(head, 256, 0.02), f"{field}={value!r} initialises as the authors do"
    if field == "mixing_head_init":  # torch nn.Linear's default: U(+-1/sqrt(fan_in)), biases too
        for layer, fan_in in (("0", 512), ("2", 256)):
            b = fan_in ** -0.5
            for kind in ("weight", "bias"):
                x = np.asarray(head[layer][kind])
                assert np.abs(x).max() <= b and np.abs(x).max() > 0.9 * b, (layer, kind)
            assert abs(np.asarray(head[layer]["weight"]).std() - b / np.sqrt(3)) < 0.01 * b
    else:  # a zero bias on the last layer: w is still exactly 0 at init
        assert head["4"]["bias"].shape == (1,) and not np.any(head["4"]["bias"])
