"""The LM-head log-prob op (hand-written backward) against autodiff of log_softmax(lm_logits)."""

import builders
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quietstar_jax.model import init_params, lm_logits
from quietstar_jax.model.head import head_token_logprobs, token_logprobs


def _cfg(tied, dtype="float32"):
    return builders.model_config(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=1, tie_word_embeddings=tied, dtype=dtype)


def _reference(params, cfg, h, t, temperature, masked):
    z = lm_logits(params, cfg, h)
    if masked:
        z = z.at[..., jnp.asarray(masked)].set(-jnp.inf)
    return jnp.take_along_axis(jax.nn.log_softmax(z / temperature), t[..., None], -1)[..., 0]


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("temperature,masked", [(1.0, ()), (3.0, (5, 96))])
def test_values_and_gradients_equal_autodiff(tied, temperature, masked):
    cfg = _cfg(tied)
    params = init_params(cfg, jax.random.key(0))
    h = jax.random.normal(jax.random.key(1), (2, 3, 4, 16))
    t = jax.random.randint(jax.random.key(2), (2, 3, 4), 0, 90)
    t = jnp.where(t == 5, 6, t)
    w = jax.random.normal(jax.random.key(3), (2, 3, 4))

    def loss(fn):
        return lambda p, h: jnp.sum(w * fn(p, cfg, h, t, temperature, masked))

    (v, (gp, gh)) = jax.jit(jax.value_and_grad(loss(head_token_logprobs), argnums=(0, 1)))(params, h)
    (v_ref, (gp_ref, gh_ref)) = jax.value_and_grad(loss(_reference), argnums=(0, 1))(params, h)
    np.testing.assert_allclose(v, v_ref, rtol=1e-5)
    np.testing.assert_allclose(gh, gh_ref, atol=1e-5)
    chex.assert_trees_all_close(gp, gp_ref, atol=1e-5, rtol=0)
    name = "embed_tokens" if tied else "lm_head"
    head_g = (gp["model"]["embed_tokens"] if tied else gp["lm_head"])["weight"]
    assert float(jnp.abs(head_g).max()) > 1e-3, name  # the head really gets a gradient
    for i in masked:
        if not tied:
            assert np.all(np.asarray(head_g)[i] == 0)  # masked rows: no gradient


def test_bfloat16_compute_close_to_float32():
    """bf16 hidden/weights, float32 logits and softmax: log-probs within bf16 rounding of float32."""
    cfg32, cfg16 = _cfg(False), _cfg(False, "bfloat16")
    params = init_params(cfg32, jax.random.key(0))
    h = jax.random.normal(jax.random.key(1), (8, 16))
    t = jax.random.randint(jax.random.key(2), (8,), 0, 97)
    a = head_token_logprobs(params, cfg32, h, t)
    b = head_token_logprobs(params, cfg16, h.astype(jnp.bfloat16), t)
    assert b.dtype == jnp.float32
    np.testing.assert_allclose(a, b, atol=3e-2)
    g = jax.grad(lambda h: jnp.sum(head_token_logprobs(params, cfg16, h, t)))(h.astype(jnp.bfloat16))
    assert g.dtype == jnp.bfloat16


def test_token_logprobs_value_and_gradient_equal_log_softmax():
    """The hand-written backward of token_logprobs vs autodiff of log_softmax, incl. -inf (masked) ids."""
    z = (jax.random.normal(jax.random.key(0), (3, 5, 11)) * 3).at[..., 4].set(-jnp.inf)
    t = jax.random.randint(jax.random.key(1), (3, 5), 0, 4)
    w = jax.random.normal(jax.random.key(2), (3, 5))
    ours = jax.jit(jax.value_and_grad(lambda z: jnp.sum(w * token_logprobs(z, t))))
    want = jax.value_and_grad(
        lambda z: jnp.sum(w * jnp.take_along_axis(jax.nn.log_softmax(z), t[..., None], -1)[..., 0]))
    (v, g), (v_ref, g_ref) = ours(z), want(z)
    np.testing.assert_allclose(v, v_ref, rtol=1e-6)
    np.testing.assert_allclose(g, g_ref, atol=1e-6)
    assert np.all(np.asarray(g)[..., 4] == 0)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("masked", [(), (5, 96)])
def test_mixed_head_values_and_gradients_equal_autodiff_of_the_hidden_mix(tied, masked):
    """mixed_head_logprobs(head_logits(h_b), h_t - h_b, w) = log softmax(lm_head((1 - w) h_b + w h_t)), the
    authors' hidden-state mix, in value and in the gradients of h_b, h_t, w and the head (float64)."""
    from quietstar_jax.model.head import head_logits, mixed_head_logprobs

    with jax.enable_x64(True):
        cfg = _cfg(tied, "float64")
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), init_params(cfg, jax.random.key(0)))
        hb, ht = (jax.random.normal(jax.random.key(i), (3, 4, 16), jnp.float64) for i in (1, 2))
        w = jax.random.normal(jax.random.key(3), (3, 4, 1), jnp.float64)
        t = jax.random.randint(jax.random.key(4), (3, 4), 0, 90)
        t = jnp.where(t == 5, 6, t)
        c = jax.random.normal(jax.random.key(5), (3, 4), jnp.float64)

        def ours(p, hb, ht, w):
            lp, gain = mixed_head_logprobs(p, cfg, head_logits(p, cfg, hb), ht - hb, w, t, masked)
            return jnp.sum(c * lp), gain

        def ref(p, hb, ht, w):
            z = lm_logits(p, cfg, (1 - w) * hb + w * ht)
            zb = lm_logits(p, cfg, hb)
            if masked:
                z, zb = z.at[..., jnp.asarray(masked)].set(-jnp.inf), zb.at[..., jnp.asarray(masked)].set(-jnp.inf)
            pick = lambda a: jnp.take_along_axis(jax.nn.log_softmax(a), t[..., None], -1)[..., 0]  # noqa: E731
            return jnp.sum(c * pick(z)), pick(z) - pick(zb)

        (v, gain), g = jax.jit(jax.value_and_grad(ours, argnums=(0, 1, 2, 3), has_aux=True))(params, hb, ht, w)
        (v_ref, gain_ref), g_ref = jax.value_and_grad(ref, argnums=(0, 1, 2, 3), has_aux=True)(params, hb, ht, w)
        np.testing.assert_allclose(v, v_ref, rtol=1e-12)
        np.testing.assert_allclose(gain, gain_ref, rtol=1e-9, atol=1e-12)
        chex.assert_trees_all_close(g, g_ref, atol=1e-11, rtol=1e-11)
