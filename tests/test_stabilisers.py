"""The stabilisers in a real train step (their losses and gradients are checked against the dense
reference in test_quietstar.py): the trainable-parameter selector, the KL reference params in the
state and across a resume, the mixing-weight warm-up driven by the step counter, pause thoughts,
thought adapters, and one-line errors for bad values."""

import builders
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quietstar_jax.errors import ConfigError
from quietstar_jax.sharding import make_mesh
from quietstar_jax.training import config as config_lib
from quietstar_jax.training.setup import build_setup, model_config_only
from quietstar_jax.training.state import init_state, random_params_fn

START, END = 256, 257


def _setup(**over):
    c = builders.run_config(**{"global_batch_size": 2, "seq_len": 8, **over})
    cfg, _ = model_config_only(c)
    qs = config_lib.quietstar_config(c, START, END)
    setup = build_setup(c, cfg, qs, [45], mesh=make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1]))
    state = init_state(random_params_fn(cfg, qs, 0, [45]), setup.tx, setup.shardings)
    rng = np.random.RandomState(0)
    batch = {"tokens": jnp.asarray(rng.randint(0, 256, (2, 8)), jnp.int32),
             "positions": jnp.broadcast_to(jnp.arange(8, dtype=jnp.int32), (2, 8)),
             "segment_ids": jnp.ones((2, 8), jnp.int32)}
    return setup, state, batch


def _leaves(tree, prefix):
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)
            if jax.tree_util.keystr(p).startswith(prefix)}


def test_trainable_selector_freezes_the_rest_without_optimizer_state():
    """optimizer.trainable = "quietstar/.*" with thought adapters: after two steps the backbone is
    bit-identical, the adapters, thought embeddings and mixing head moved, and the optimizer holds
    moments for the trainable params only."""
    setup, state, batch = _setup(**{"optimizer.trainable": "quietstar/.*", "quietstar.adapter_rank": 2})
    before = jax.device_get(state["params"])
    n_opt = sum(x.size for x in jax.tree.leaves(state["opt_state"]) if hasattr(x, "size") and x.ndim)
    n_train = sum(x.size for x in jax.tree.leaves(before["quietstar"]))
    assert n_opt == 2 * n_train  # AdamW's mu and nu of the trainable params, nothing for the backbone
    for _ in range(2):
        state, m = setup.step_fn(state, batch, jax.random.key(0))
    after = jax.device_get(state["params"])
    for k, v in _leaves(before["model"], "").items():
        np.testing.assert_array_equal(_leaves(after["model"], "")[k], v, err_msg=k)
    moved = {k: float(np.abs(_leaves(after["quietstar"], "")[k] - v).max())
             for k, v in _leaves(before["quietstar"], "").items()}
    assert all(d > 0 for k, d in moved.items() if "lora_B" in k or "thought_embeddings" in k), moved


def test_kl_reference_is_the_initial_params_and_never_moves():
    setup, state, batch = _setup(**{"quietstar.kl_coef": 0.5, "quietstar.entropy_bonus": 0.1})
    init = jax.device_get(state["params"])
    np.testing.assert_array_equal(jax.device_get(state["ref_params"])["lm_head"]["weight"], init["lm_head"]["weight"])
    for _ in range(3):
        state, m = setup.step_fn(state, batch, jax.random.key(0))
    ref = jax.device_get(state["ref_params"])
    for k, v in _leaves(init, "").items():
        np.testing.assert_array_equal(_leaves(ref, "")[k], v, err_msg=k)
    assert float(np.abs(jax.device_get(state["params"])["lm_head"]["weight"] - init["lm_head"]["weight"]).max()) > 0
    assert float(m["kl"]) > 0 and np.isfinite(float(m["thought_entropy_train"]))


def test_kl_reference_survives_a_resume(tmp_path):
    """The reference params are part of the checkpointed state: a resumed run has the same reference
    (the initial params), not the params it resumed from."""
    from quietstar_jax.training.trainer import Trainer

    c = builders.run_config(**{"steps": 2, "quietstar.kl_coef": 0.5, "checkpoint.every_steps": 1,
                               "export_hf": False, "log_every": 0})
    t = Trainer(c, str(tmp_path), log=lambda s: None)
    init = jax.device_get(t.state["params"])
    t.run()
    c2 = builders.run_config(**{"steps": 4, "quietstar.kl_coef": 0.5, "checkpoint.every_steps": 1,
                                "export_hf": False, "log_every": 0})
    t2 = Trainer(c2, str(tmp_path), log=lambda s: None)
    assert t2.start == 2
    ref = jax.device_get(t2.state["ref_params"])
    np.testing.assert_array_equal(ref["lm_head"]["weight"], init["lm_head"]["weight"])
    assert float(np.abs(jax.device_get(t2.state["params"])["lm_head"]["weight"] - init["lm_head"]["weight"]).max()) > 0


@pytest.mark.parametrize("mode", ["fixed", "floor"])
def test_mixing_weight_warmup_follows_the_step_counter(mode):
    """w = value for the first steps ("fixed") or >= the decaying floor ("floor"), then the head's own."""
    setup, state, batch = _setup(**{"quietstar.mixing_warmup_steps": 2, "quietstar.mixing_warmup_mode": mode,
                                    "quietstar.mixing_warmup_value": 0.5})
    ws = []
    for _ in range(3):
        state, m = setup.step_fn(state, batch, jax.random.key(0))
        ws.append(float(m["mixing_weight"]))
    if mode == "fixed":
        assert ws[0] == pytest.approx(0.5) and ws[1] == pytest.approx(0.5)
    else:
        assert ws[0] >= 0.5 - 1e-6 and ws[1] >= 0.25 - 1e-6
    assert abs(ws[2]) < 0.05  # the head's own w (it starts at 0 and moved only a little)


def test_pause_thoughts_have_no_policy_and_no_sampling():
    setup, state, batch = _setup(**{"quietstar.thought_mode": "pause"})
    state, m = setup.step_fn(state, batch, jax.random.key(0))
    assert float(m["policy_loss"]) == 0.0 and float(m["thought_entropy"]) == 0.0
    assert np.isfinite(float(m["loss"]))


@pytest.mark.parametrize("field, value, match", [
    ("quietstar.thought_mode", "think", "thought_mode 'think' not in"),
    ("quietstar.advantage_norm", "z", "advantage_norm 'z' not in"),
    ("quietstar.policy_grad_max_share", 1.0, r"policy_grad_max_share must be in \[0, 1\)"),
    ("quietstar.adapter_targets", "qproj", "adapter_targets 'qproj'"),
    ("quietstar.policy_params", "(", "not a regular expression"),
    ("quietstar.entropy_bonus", -1.0, "entropy_bonus and kl_coef must be >= 0"),
])
def test_bad_stabiliser_values_are_one_line_config_errors(field, value, match):
    with pytest.raises(ConfigError, match=match):
        config_lib.validate(builders.run_config(**{field: value}))


def test_policy_params_and_trainable_must_match_something():
    with pytest.raises(ConfigError, match="policy_params.*matches no parameter"):
        _setup(**{"quietstar.policy_params": "quietstar/nothing/.*"})
    with pytest.raises(ConfigError, match="trainable.*matches no parameter"):
        _setup(**{"optimizer.trainable": "nothing"})


def test_thought_init_texts_set_the_initial_embeddings():
    """<start> / <end> start as the mean embedding of their init texts (divided by the storage scale):
    "---" for both by default (the authors), each its own text on request."""
    from quietstar_jax.quietstar import QuietStarConfig, init_quietstar_params
    from quietstar_jax.quietstar.tokens import thought_init_ids
    from quietstar_jax.training.tokenizer import ByteTokenizer

    cfg = builders.model_config(vocab_size=258)
    params = {"model": {"embed_tokens": {"weight": jax.random.normal(jax.random.key(0), (258, 32))}}}
    table = np.asarray(params["model"]["embed_tokens"]["weight"])
    tok = ByteTokenizer()
    for start, end in (("---", "---"), (" ", ">"), ("ab", "-")):
        qs = QuietStarConfig(start_id=256, end_id=257, start_init_text=start, end_init_text=end)
        te = np.asarray(init_quietstar_params(params, cfg, qs, jax.random.key(1),
                                              thought_init_ids(tok, qs))["thought_embeddings"])
        for row, text in zip(te, (start, end)):
            want = table[list(text.encode())].mean(0) / qs.embedding_scale
            np.testing.assert_allclose(row, want, rtol=1e-6, atol=1e-8)
