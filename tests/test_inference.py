"""Thinking inference against independent references: the training objective (think_logprobs), the
naive no-cache loop (generation with thinking), HF transformers' greedy generate (thinking off),
one-by-one generation (batching and padding), a single device (sharded generation)."""

import dataclasses

import builders
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_generate as ref
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from quietstar_jax.inference.generate import GenerateConfig, Generator
from quietstar_jax.inference.sampler import Sampler
from quietstar_jax.inference.think import think_logprobs
from quietstar_jax.quietstar import QuietStarConfig, init_quietstar_params, quietstar_loss

V = 97
CFG = builders.model_config(vocab_size=V)
QS = QuietStarConfig(n_ahead=5, n_ahead_talk=2, start_id=V, end_id=V + 1)
SAMPLED = GenerateConfig(max_new_tokens=6, output=Sampler(temperature=0.8, top_k=30, top_p=0.9), eos_ids=(7,))


def make_params(cfg=CFG, qs=QS, seed=0):
    return builders.live_params(cfg, qs, seed, [3], 0.3)  # a live mixing head: w != 0


def adapted(params, qs):
    """Non-zero B for the thought adapters (B = 0 at init: no effect to test)."""
    if qs.adapter_rank:
        keys = iter(jax.random.split(jax.random.key(11), 64))
        params["quietstar"]["adapters"] = jax.tree_util.tree_map_with_path(
            lambda path, a: 0.5 * jax.random.normal(next(keys), a.shape) if "lora_B" in jax.tree_util.keystr(path)
            else a, params["quietstar"]["adapters"])
    return params


PROMPTS = np.array([[5, 9, 11, 13, 0, 0, 0], [1, 2, 3, 4, 5, 6, 8], [40, 41, 0, 0, 0, 0, 0]])
LENGTHS = np.array([4, 7, 2])


def _rows(out):
    return [(list(np.asarray(out.tokens[b, :n])), np.asarray(out.thoughts[b, :n]), np.asarray(out.weights[b, :n]))
            for b, n in enumerate(np.asarray(out.lengths))]


# ----------------------------------------------------------------------------- think_logprobs
@pytest.mark.parametrize("extra", [{}, {"adapter_rank": 3}], ids=["plain", "thought-adapters"])
def test_think_logprobs_equal_the_objectives_talk_step_0(extra):
    """Same thoughts: the mixed (and base) next-token log-probs equal what the training objective computes
    at talk step 0 (float64, 1e-10)."""
    with jax.enable_x64(True):
        cfg = CFG.replace(dtype="float64")
        qs = QS.replace(n_passes=1, n_ahead=6, **extra)
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), adapted(make_params(qs=qs), qs))
        B, L = 2, 9
        tokens = jnp.asarray(np.random.RandomState(0).randint(0, V, (B, L)), jnp.int32)
        seg = jnp.ones((B, L), jnp.int32).at[1, 6:].set(0)
        batch = {"tokens": tokens, "positions": jnp.broadcast_to(jnp.arange(L), (B, L)), "segment_ids": seg}
        thoughts = jax.random.randint(jax.random.key(4), (B, L, qs.num_thought_tokens), 0, V)
        _, m = jax.jit(lambda p: quietstar_loss(p, cfg, qs, batch, None, thoughts=thoughts, details=True))(params)
        d = m["details"]
        out = jax.jit(lambda p: think_logprobs(p, cfg, qs, tokens, None, segment_ids=seg, thoughts=thoughts))(params)
        target = jnp.concatenate([tokens[:, 1:], jnp.zeros((B, 1), jnp.int32)], axis=1)
        pick = lambda lp: np.asarray(jnp.take_along_axis(lp, target[..., None], -1)[..., 0])  # noqa: E731
        v = np.asarray(d["target_valid"][0])
        np.testing.assert_allclose(pick(out.mixed_logprobs)[v], np.asarray(d["mix_logp"][0])[v], rtol=0, atol=1e-10)
        np.testing.assert_allclose(pick(out.base_logprobs)[v], np.asarray(d["base_logp"])[v], rtol=0, atol=1e-10)
        np.testing.assert_allclose(np.asarray(out.mixing_weight)[v], np.asarray(d["mixing_weight"][0])[v], atol=1e-12)
        assert np.abs(np.asarray(out.mixing_weight)[v]).max() > 1e-4  # a live head: thinking changes the prediction


def test_think_logprobs_sample_their_own_thoughts_of_any_length():
    params = make_params()
    tokens = jnp.asarray(np.random.RandomState(1).randint(0, V, (2, 6)), jnp.int32)
    out = jax.jit(lambda p, k: think_logprobs(p, CFG, QS, tokens, k, num_thought_tokens=4))(params, jax.random.key(0))
    assert out.thoughts.shape == (2, 6, 4) and out.mixed_logprobs.shape == (2, 6, V)
    np.testing.assert_allclose(np.exp(np.asarray(out.mixed_logprobs)).sum(-1), 1.0, rtol=1e-5)
    assert not np.isin(np.asarray(out.thoughts), [QS.start_id, QS.end_id]).any()


# ----------------------------------------------------------------------------- generation
@pytest.mark.parametrize("gen,qs", [
    (SAMPLED, QS),
    (GenerateConfig(max_new_tokens=5, thought_tokens=1, thought=Sampler(temperature=1.3, top_p=0.8)), QS),
    (GenerateConfig(max_new_tokens=4, thought_tokens=0), QS),  # <start><end>: no sampled token
    (SAMPLED, dataclasses.replace(QS, mixer="logit")),  # the naive loop mixes hidden states: equal
    (SAMPLED, dataclasses.replace(QS, adapter_rank=2, adapter_targets="q_proj,v_proj,up_proj,down_proj")),
    (SAMPLED, dataclasses.replace(QS, thought_mode="pause")),
], ids=["sampled", "thought-length-1", "thought-length-0", "logits-mixer", "thought-adapters", "pause"])
def test_generation_equals_the_naive_loop(gen, qs):
    """KV-cached, batched, prompts of different lengths, sampled thoughts and output, EOS: every token,
    thought and mixing weight as the loop that recomputes everything for each new token (thought
    adapters: in the thought's tokens only; pause: fixed <start> thoughts)."""
    params = adapted(make_params(qs=qs), qs)
    key = jax.random.key(3)
    # An EOS id that row 0 emits as its third token, so that a row stops early.
    first = Generator(params, CFG, qs, gen).generate(PROMPTS, LENGTHS, key)
    gen = dataclasses.replace(gen, eos_ids=(int(first.tokens[0, 2]),))
    out = Generator(params, CFG, qs, gen).generate(PROMPTS, LENGTHS, key)
    assert int(out.lengths[0]) == 3 and (np.asarray(out.tokens[0, 3:]) == gen.pad_id).all()
    for b, (tokens, thoughts, weights) in enumerate(_rows(out)):
        n_tok, n_th, n_w = ref.naive_generate(params, CFG, qs, gen, list(PROMPTS[b, :LENGTHS[b]]), key, b)
        assert tokens == n_tok, b
        np.testing.assert_array_equal(thoughts, np.asarray(n_th).reshape(thoughts.shape))
        np.testing.assert_allclose(weights, n_w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("padding", ["left", "right"])
def test_batched_equals_one_by_one(padding):
    params = make_params()
    key = jax.random.key(5)
    g = Generator(params, CFG, QS, SAMPLED, padding=padding)
    prompts = PROMPTS if padding == "right" else np.stack(
        [np.roll(p, len(p) - n) for p, n in zip(PROMPTS, LENGTHS)])
    batched = _rows(g.generate(prompts, LENGTHS, key))
    for b in range(len(PROMPTS)):
        alone = _rows(g.generate(prompts[b:b + 1], LENGTHS[b:b + 1], key, rows=[b]))[0]
        assert alone[0] == batched[b][0]
        np.testing.assert_array_equal(alone[1], batched[b][1])
        np.testing.assert_allclose(alone[2], batched[b][2], rtol=1e-5, atol=1e-7)


def test_streaming_equals_one_program():
    params = make_params()
    key = jax.random.key(6)
    g = Generator(params, CFG, QS, SAMPLED)
    out = g.generate(PROMPTS, LENGTHS, key)
    steps = list(g.stream(PROMPTS, LENGTHS, key))
    streamed = np.stack([s["tokens"] for s in steps], axis=1)
    np.testing.assert_array_equal(streamed, np.asarray(out.tokens)[:, :streamed.shape[1]])
    assert steps[-1]["done"].all() or len(steps) == SAMPLED.max_new_tokens


def test_thinking_off_is_plain_greedy_decoding():
    """think=False: the base model's greedy continuation, the same as the naive loop without thoughts
    (and, below, as HF transformers)."""
    params = make_params()
    gen = GenerateConfig(max_new_tokens=6, think=False)
    out = Generator(params, CFG, QS, gen).generate(PROMPTS, LENGTHS, jax.random.key(0))
    for b, (tokens, _, weights) in enumerate(_rows(out)):
        assert tokens == ref.naive_generate(params, CFG, QS, gen, list(PROMPTS[b, :LENGTHS[b]]), jax.random.key(0), b)[0]
        assert not weights.any()


@pytest.mark.hf
def test_thinking_off_equals_hf_greedy_generate(tmp_path):
    import torch
    from hf_utils import build_hf_model, save_hf_model

    from quietstar_jax.hf import load_hf_folder

    model = build_hf_model("llama", seed=3)
    folder = save_hf_model(model, str(tmp_path / "hf"))
    cfg, params, _ = load_hf_folder(folder)
    qs = QS.replace(start_id=cfg.vocab_size, end_id=cfg.vocab_size + 1)
    params["quietstar"] = init_quietstar_params(params, cfg, qs, jax.random.key(0), [3])
    gen = GenerateConfig(max_new_tokens=8, think=False)
    prompts = np.array([[5, 9, 11, 13, 17], [1, 2, 3, 0, 0]])
    lengths = np.array([5, 3])
    ours = _rows(Generator(jax.tree.map(jnp.asarray, params), cfg, qs, gen).generate(prompts, lengths,
                                                                                      jax.random.key(0)))
    for b in range(2):
        with torch.no_grad():
            hf = model.generate(torch.tensor(prompts[b:b + 1, :lengths[b]]), max_new_tokens=8, do_sample=False,
                                pad_token_id=0, eos_token_id=None)
        assert ours[b][0] == hf[0, lengths[b]:].tolist(), b


@pytest.mark.parametrize("mesh_shape", [(2, 4, 1), (1, 4, 2)])
def test_sharded_generation_equals_single_device(mesh_shape):
    """Params laid out as in training (fsdp / tensor), batch over the batch axes: same tokens."""
    from quietstar_jax.sharding import batch_sharding, make_mesh
    from quietstar_jax.training.state import param_shardings

    params = make_params()
    prompts = np.concatenate([PROMPTS, PROMPTS[::-1], PROMPTS[:2]])  # 8 rows for the batch axes
    lengths = np.concatenate([LENGTHS, LENGTHS[::-1], LENGTHS[:2]])
    key = jax.random.key(7)
    want = Generator(params, CFG, QS, SAMPLED).generate(prompts, lengths, key)
    mesh = make_mesh(dict(zip(("data", "fsdp", "tensor"), mesh_shape)))
    placed = jax.device_put(params, param_shardings(CFG, QS, params, mesh))
    b_sh = batch_sharding(mesh)
    g = Generator(placed, CFG, QS, SAMPLED, mesh=mesh)
    got = g.generate(jax.device_put(prompts, b_sh), jax.device_put(lengths, NamedSharding(mesh, P(b_sh.spec[0]))),
                     key)
    np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(want.tokens))
    np.testing.assert_array_equal(np.asarray(got.thoughts), np.asarray(want.thoughts))
    np.testing.assert_allclose(np.asarray(got.weights), np.asarray(want.weights), rtol=1e-4, atol=1e-6)
