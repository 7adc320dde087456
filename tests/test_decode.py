"""KV-cached decode steps (quietstar_jax.model.decode) against a plain causal forward over the whole
sequence, and chunks of several tokens against the same tokens one step at a time (float64)."""

import builders
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_generate as ref

from quietstar_jax.model import init_params
from quietstar_jax.model.decode import cpu_decode_params, decode_step, prefill
from quietstar_jax.quietstar import QuietStarConfig, init_quietstar_params
from quietstar_jax.quietstar.tokens import embed_with_thoughts

V = 97
QS = QuietStarConfig(n_ahead=5, n_ahead_talk=2, start_id=V, end_id=V + 1)
PROMPTS = np.array([[5, 9, 11, 13, 17, 19], [0, 0, 40, 41, 42, 43]])  # row 1 left-padded: 4 real tokens
LENGTHS = np.array([6, 4])
TEXT, THOUGHT = [23, 29], [31, 37]  # the next real token per row; two thought tokens per row


def _setup(window, layout):
    cfg = builders.model_config(vocab_size=V, dtype="float64", layer_windows=(window, 1000))
    params = init_params(cfg, jax.random.key(0))
    params["quietstar"] = init_quietstar_params(params, cfg, QS, jax.random.key(1), [3])  # <start> / <end>
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    decode_params = cpu_decode_params(params) if layout == "cpu" else params
    B, P = PROMPTS.shape
    valid = np.arange(P)[None] >= (P - LENGTHS)[:, None]
    positions = np.maximum(np.arange(P)[None] - (P - LENGTHS)[:, None], 0)
    x = embed_with_thoughts(params, cfg, QS, jnp.asarray(np.where(valid, PROMPTS, 0)))
    _, cache = prefill(decode_params, cfg, x, jnp.asarray(positions), jnp.asarray(valid), P + 2, 4)
    return cfg, params, decode_params, cache


def _emb(params, cfg, ids):
    return embed_with_thoughts(params, cfg, QS, jnp.asarray(ids, jnp.int32))


def _dense(params, cfg, b, extra):
    """Final hidden state of the last token of row b's prompt + extra under a plain causal forward."""
    return np.asarray(ref._last_hidden(params, cfg, QS, list(PROMPTS[b, -LENGTHS[b]:]) + list(extra)))


@pytest.mark.parametrize("layout", ["hf", "cpu"])
@pytest.mark.parametrize("window", [1000, 3], ids=["full", "sliding-window-3"])
def test_chunks_equal_single_steps_equal_a_causal_forward(window, layout):
    """The chosen token and the thought's <start> in one step, then two thought tokens in one step: the
    hidden states equal one token per step and a causal forward over prompt + token + <start> + thought
    (what a thought sees: the text up to its position and itself); the caches equal."""
    with jax.enable_x64(True):
        cfg, params, dp, cache = _setup(window, layout)
        P = PROMPTS.shape[1]
        pos = jnp.asarray(LENGTHS, jnp.int32)  # the new text token's position per row
        text = np.array(TEXT)[:, None]
        start = np.full((2, 1), QS.start_id)
        thought = np.tile(np.array(THOUGHT)[None], (2, 1))

        step = jax.jit(decode_step, static_argnames=("cfg",))
        h_a, c_a = step(dp, cfg, _emb(params, cfg, np.concatenate([text, start], 1)),
                        pos[:, None] + jnp.arange(2), cache, text_index=P, slot=0)
        h_b, c_a = step(dp, cfg, _emb(params, cfg, thought), pos[:, None] + 1 + jnp.arange(1, 3), c_a, slot=1,
                        anchor=pos)
        chunked = np.concatenate([h_a, h_b], axis=1)

        singles, c_s = [], cache
        h, c_s = step(dp, cfg, _emb(params, cfg, text), pos[:, None], c_s, text_index=P)
        singles.append(h)
        for j, ids in enumerate([start, thought[:, :1], thought[:, 1:]]):
            h, c_s = step(dp, cfg, _emb(params, cfg, ids), pos[:, None] + 1 + j, c_s, slot=j, anchor=pos)
            singles.append(h)
        np.testing.assert_allclose(chunked, np.concatenate(singles, axis=1), rtol=0, atol=1e-12)
        for a, b in zip(jax.tree.leaves(c_a), jax.tree.leaves(c_s)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-12)

        # A causal forward measures a thought token's window from itself, Quiet-STaR from the text token
        # it belongs to (as in training): with a sliding window only the text token compares.
        n = 4 if window == 1000 else 1
        for b in range(2):
            seq = [TEXT[b], QS.start_id] + THOUGHT
            want = [_dense(params, cfg, b, seq[:i]) for i in range(1, n + 1)]
            np.testing.assert_allclose(chunked[b, :n], np.stack(want), rtol=0, atol=1e-10)


def test_a_chunk_needs_its_slot_and_anchor():
    with jax.enable_x64(True):
        cfg, params, dp, cache = _setup(1000, "hf")
        x = _emb(params, cfg, np.full((2, 1), 3))
        with pytest.raises(ValueError, match="slot"):
            decode_step(dp, cfg, jnp.concatenate([x, x], 1), jnp.zeros((2, 2), jnp.int32), cache, text_index=6)
        with pytest.raises(ValueError, match="anchor"):
            decode_step(dp, cfg, x, jnp.zeros((2, 1), jnp.int32), cache, slot=0)
