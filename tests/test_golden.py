"""Our objective against the authors' own numbers: every case folder of the golden fixture.

For each case (tests/fixtures/reference_golden/, or the folder named by QUIETSTAR_GOLDEN_DIR): load the
weights into our params, replay the authors' sampled thoughts through quietstar_loss(..., thoughts=...)
in float64, and compare every recorded piece (tokens and position ids of every pass, the attention
rule, RoPE tables, hidden states, mixing weights, every pass's NLL, rewards before/after baseline and
clamp, the policy log-likelihoods and losses, the scalars) and every gradient.

Tolerances (both sides float64):
  * scalars (loss, LM part, policy loss, per-pass mean NLLs): 1e-9 relative;
  * per-position pieces: elementwise within 1e-9 of the piece's largest magnitude (relative to the
    piece, so that entries that are differences of nearly equal NLLs, e.g. rewards of ~1e-4 built from
    NLLs of ~6, are held to the precision their inputs carry);
  * gradients: the fixture stores them rounded to float32, so elementwise within 1e-6 of each tensor's
    max |g|; their float64 statistics (expected.json grad_stats_f64) within 1e-9 relative, except sums
    that cancel: |ours - theirs| <= 1e-9 * (sqrt(sumsq) * sqrt(size)), the scale of the terms summed.
"""

import dataclasses
import os
import re
import subprocess
import sys

import golden
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quietstar_jax.model.attention import StreamMask
from quietstar_jax.model.rope import rope_cos_sin
from quietstar_jax.quietstar import layout
from quietstar_jax.quietstar.config import QuietStarConfig
from quietstar_jax.quietstar.mixing import mixing_weight
from quietstar_jax.quietstar.objective import head_logprobs, quietstar_loss
from quietstar_jax.quietstar.routing import routed_value_and_grad

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = golden.case_names()
REL = 1e-9
# The comparison with the authors' numbers must not vanish as a row of skips: a golden folder without a case
# is a collection error of this module, one line naming the folder.
if not CASES:
    pytest.fail(golden.no_case_message(golden.golden_root()), pytrace=False)


def _close_rel(name, ours, theirs, rel=REL):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, f"{name}: shape {ours.shape} vs the authors' {theirs.shape}"
    scale = max(np.abs(theirs).max(initial=0.0), 1e-300)
    err = np.abs(ours - theirs).max(initial=0.0)
    assert err <= rel * scale, f"{name}: max |ours - authors'| = {err:.3e} > {rel:g} x {scale:.3e}"


def _scalar(name, ours, theirs, rel=REL):
    ours, theirs = float(ours), float(theirs)
    assert abs(ours - theirs) <= rel * abs(theirs), \
        f"{name}: ours {ours!r} vs the authors' {theirs!r} (rel err {abs(ours - theirs) / abs(theirs):.2e})"


def run_case(case: golden.Case, **qs_overrides):
    """(metrics, details, grads in the authors' names, cfg, qs, params) for one case in float64."""
    cfg = case.model_config("float64")
    qs = case.quietstar_config(**qs_overrides)
    params = jax.tree.map(jnp.asarray, case.params(cfg))
    batch = {k: jnp.asarray(v) for k, v in case.batch().items()}
    thoughts = jnp.asarray(case.thoughts())

    # As the train step computes its first step (training/step.py): the step counter at 0, the case's params
    # as the initial params (ref_params), the gradient through routed_value_and_grad (jax.value_and_grad
    # unless a config field routes the policy's gradient).
    def f(p):
        return quietstar_loss(p, cfg, qs, batch, jax.random.key(0), thoughts=thoughts, details=True,
                              step=jnp.int32(0), ref_params=params)

    (loss, metrics), grads = jax.jit(lambda p: routed_value_and_grad(f, qs, p))(params)
    metrics = jax.tree.map(np.asarray, metrics)
    return metrics, metrics.pop("details"), case.grads_to_hf(cfg, jax.tree.map(np.asarray, grads)), cfg, qs, params


def check_case(case: golden.Case, **qs_overrides):
    """Every recorded piece and gradient of one case; raises AssertionError naming the first mismatch."""
    ex, sc = case.arrays, case.expected
    N, M, P, K, L, R, Lr = case.N, case.M, case.P, case.K, case.L, case.R, case.Lr
    metrics, d, grads, cfg, qs, params = run_case(case, **qs_overrides)
    batch = case.batch()
    tokens = np.repeat(batch["tokens"], P, 0)
    seg = np.repeat(batch["segment_ids"], P, 0)

    # ---- layout: the token and position id of every pass, the attention rule, the RoPE tables
    streams = np.asarray(layout.stream_tokens(qs, jnp.asarray(tokens), jnp.asarray(case.thoughts())))
    np.testing.assert_array_equal(np.moveaxis(streams, 1, 0), ex["tokens_per_pass"], "tokens of every pass")
    pos = np.asarray(layout.stream_positions(qs, jnp.asarray(np.repeat(batch["positions"], P, 0))))
    np.testing.assert_array_equal(np.moveaxis(pos, 1, 0)[:, 0], ex["position_ids"], "position ids")
    mask = StreamMask.streams(jnp.asarray(seg), K)
    allowed = np.zeros((R, L, K * L), bool)
    allowed[:, :, :L] = np.asarray(mask.base_visible(cfg.layer_windows[0]))
    diag = np.asarray(mask.diag_visible())[:, K - 1]  # (R, L, K-1): the last pass's query
    for slot in range(K - 1):
        allowed[:, np.arange(L), (slot + 1) * L + np.arange(L)] = diag[:, :, slot]
    np.testing.assert_array_equal(allowed, ex["attention_allowed"].astype(bool), "attention rule")
    cos, sin = rope_cos_sin(cfg, jnp.arange(L + K))
    _close_rel("rope_cos", cos, ex["rope_cos"])
    _close_rel("rope_sin", sin, ex["rope_sin"])

    # ---- hidden states of every pass, mixing weights of every pass
    h = d["hidden"]  # (R, K, L, H)
    _close_rel("hidden_base", h[:, 0], ex["hidden_base"])
    _close_rel("hidden_norm", np.moveaxis(np.linalg.norm(h, axis=-1), 1, 0), ex["hidden_norm"])
    _close_rel("hidden_sum", np.moveaxis(h.sum(-1), 1, 0), ex["hidden_sum"])
    head = params["quietstar"]["talk_head"]
    weights, nll = [], {}
    for k in range(1, K):
        s = max(0, k - (N - 1))
        cb = jnp.roll(jnp.asarray(h[:, 0]), -s, axis=1)  # the authors roll the base states left by s
        w = mixing_weight(head, qs, cb, jnp.asarray(h[:, k]))
        weights.append(np.asarray(w[..., 0]))
        if k < N - 1:  # thinking passes: recorded by the authors, never in the loss
            mixed = (1 - w) * cb + w * jnp.asarray(h[:, k])
            lp = np.asarray(head_logprobs(params, cfg, qs, mixed, jnp.asarray(layout.shift_left(tokens, 1)),
                                          mask_thoughts=qs.mask_thought_logits_in_nll))
            nll[k] = np.where(np.asarray(layout.next_token_valid(seg, 0)), -lp, 0.0)[:, :L - 1]
    _close_rel("mixing_weight (every pass)", np.stack(weights), ex["mixing_weight"])
    for t in range(M):  # the objective's own talk-step weights, where a target exists
        v = d["target_valid"][t]
        _close_rel(f"objective mixing weight, talk step {t}", np.where(v, d["mixing_weight"][t], 0),
                   np.where(v, ex["mixing_weight"][N - 2 + t], 0))

    # ---- per-pass NLLs (0 where the target is padding), their means, the LM part
    valid0 = d["target_valid"][0]
    nll[0] = np.where(valid0, -d["base_logp"], 0.0)[:, :L - 1]
    for t in range(M):
        nll[N - 1 + t] = np.where(d["target_valid"][t], -d["mix_logp"][t], 0.0)[:, :L - 1 - t]
    for k in range(K):
        _close_rel(f"nll.{k}", nll[k], ex[f"nll.{k}"])
        n_valid = int((nll[k] != 0).sum())
        assert n_valid == sc["n_valid_targets"][k], f"nll.{k}: {n_valid} targets vs {sc['n_valid_targets'][k]}"
        _scalar(f"loss_mean[{k}]", nll[k].sum() / n_valid, sc["loss_mean"][k])
    for t in range(M):
        _close_rel(f"base_nll.{t}", nll[0][:, t:], ex[f"base_nll.{t}"])
        _close_rel(f"reward_term.{t}", nll[0][:, t:] - nll[N - 1 + t], ex[f"reward_term.{t}"])
    _scalar("loss_lm_part", metrics["nll"], sc["loss_lm_part"])

    # ---- rewards, baseline, clamp, policy log-likelihoods and losses
    _close_rel("policy_reward", d["reward"][:, :Lr], ex["policy_reward"])
    assert not np.any(d["reward"][:, Lr:]), "rewards outside the authors' slice"
    _close_rel("policy_reward_baselined", d["baselined"][:, :Lr], ex["policy_reward_baselined"])
    _close_rel("policy_reward_clamped", d["advantage"][:, :Lr], ex["policy_reward_clamped"])
    T = N - 3
    dqn = []
    for i in range(T):
        lp = d["policy_logp"][..., i]
        _close_rel(f"action_loglik.{i}", lp[:, :L - 1], ex[f"action_loglik.{i}"])
        actor = -d["advantage"][:, :Lr] * lp[:, :Lr]
        _close_rel(f"actor_loss.{i}", actor, ex[f"actor_loss.{i}"])
        dqn.append(actor.mean())
        _scalar(f"dqn_loss_list[{i}]", dqn[-1], sc["dqn_loss_list"][i])
    _scalar("dqn_loss", metrics["policy_loss"], sc["dqn_loss"])
    _scalar("policy_part", metrics["policy_term"], sc["policy_part"])
    _scalar("loss", metrics["loss"], sc["loss"])

    # ---- gradients
    theirs = case.grads
    assert set(grads) == set(theirs), (f"parameter sets differ: ours only {sorted(set(grads) - set(theirs))}, "
                                       f"the authors' only {sorted(set(theirs) - set(grads))}")
    for name, g in sorted(grads.items()):
        ref = theirs[name].astype(np.float64)
        assert g.shape == ref.shape, f"grad {name}: shape {g.shape} vs {ref.shape}"
        scale = np.abs(ref).max()
        err = np.abs(g - ref).max()
        assert err <= 1e-6 * scale or (scale == 0 and err == 0), \
            f"grad {name}: max |ours - authors' (float32)| = {err:.3e} > 1e-6 x {scale:.3e}"
        st, ref_st = golden.grad_stats(g), sc["grad_stats_f64"][name]
        terms = np.sqrt(ref_st["sumsq"]) * np.sqrt(g.size)  # scale of the terms a sum adds up
        for key in ("sumsq", "absmax"):
            assert abs(st[key] - ref_st[key]) <= REL * abs(ref_st[key]), \
                f"grad {name} {key}: {st[key]!r} vs the authors' {ref_st[key]!r}"
        for key in ("sum", "dot_cos"):
            assert abs(st[key] - ref_st[key]) <= REL * max(abs(ref_st[key]), terms), \
                f"grad {name} {key}: {st[key]!r} vs the authors' {ref_st[key]!r}"


@pytest.mark.parametrize("name", CASES)
def test_matches_the_authors_numbers(name):
    with jax.enable_x64(True):
        check_case(golden.Case(f"{golden.golden_root()}/{name}"))


def test_a_golden_folder_without_cases_is_an_error(tmp_path):
    """QUIETSTAR_GOLDEN_DIR naming an empty or missing folder: this module fails to collect, with one line
    naming the folder (not a row of skips)."""
    for folder in (tmp_path, tmp_path / "missing"):
        env = dict(os.environ, QUIETSTAR_GOLDEN_DIR=str(folder))
        out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                              os.path.abspath(__file__)], env=env, capture_output=True, text=True, timeout=300)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith(f"no golden case: {folder} ")]
        assert out.returncode != 0 and len(lines) == 1, (folder, out.returncode, out.stdout[-3000:])
        assert "test_matches_the_authors_numbers" not in out.stdout, out.stdout  # nothing collected to skip


# ----------------------------------------------------------------------------- departures
# Every QuietStarConfig field is in exactly one of the places below (test_every_quietstar_field_is_placed).
# A new field that changes the objective when set (an opt-in stabiliser, say) goes in DEPARTURES as
# {field: a non-default value}: test_each_departure_from_the_authors_is_detected then shows a golden case fails,
# so the default still is the authors' objective and the comparison can see the option. docs/algorithm.md
# ("Deliberate differences", "How this is checked") must name the same fields (test_the_docs_list_...).
#   * the case sets it: golden.Case.case_settings() (the authors' hyper-parameters and token ids);
#   * DEPARTURES: ours, acting on the loss or gradients of a first train step (run_case computes it as
#     training/step.py does); each entry's values make some case fail. A field that only sets up another
#     (the warm-up's mode and value) appears together with it;
#   * ACT_ELSEWHERE: ours, but no golden case can show it (the case supplies the weights, which are also
#     the initial ones, and replays the authors' thoughts); the test named checks it where it acts;
#   * SAME_FUNCTION: another computation of the same values; the test named checks the equality.
DEPARTURES = [
    {"policy_reduction": "sum"},
    {"policy_denominator": "valid"},
    {"reward_needs_all_targets": True},
    {"mask_thought_logits_in_nll": True},
    {"drop_last_reward_position": False},
    {"mixer_bounded": True},
    # the stabilisers (docs/algorithm.md), each off by default
    {"thought_mode": "pause"},
    {"entropy_bonus": 0.1},
    {"advantage_norm": "batch"},
    {"advantage_norm": "group"},
    {"policy_params": "quietstar/.*"},
    {"policy_grad_max_share": 0.1},
    {"mixing_warmup_steps": 2},
    {"mixing_warmup_steps": 2, "mixing_warmup_mode": "floor", "mixing_warmup_value": 0.5},
]
_DENSE = "tests/test_quietstar.py::test_loss_and_grads_equal_dense_reference"
ACT_ELSEWHERE = {
    # init only: the case supplies the weights
    "mixing_head_init": "tests/test_quietstar.py::test_each_init_departure_from_the_authors_is_detected",
    "mixing_head_last_bias": "tests/test_quietstar.py::test_each_init_departure_from_the_authors_is_detected",
    "start_init_text": "tests/test_stabilisers.py::test_thought_init_texts_set_the_initial_embeddings",
    "end_init_text": "tests/test_stabilisers.py::test_thought_init_texts_set_the_initial_embeddings",
    # sampling only: the case replays the authors' thoughts
    "top_k": "tests/test_quietstar.py::test_top_k_keeps_the_thoughts_among_the_k_most_likely_ids",
    # KL to the initial params: 0, and so is its gradient, at the initial params, which a case's are
    "kl_coef": _DENSE,
    # thought adapters: a case has none, and they start as a no-op (B = 0); alpha and targets set them up
    "adapter_rank": _DENSE,
    "adapter_alpha": _DENSE,
    "adapter_targets": _DENSE,
}
SAME_FUNCTION = {  # (mixer="logit" in the objective: the slow variant of test_quietstar.py's dense reference)
    "mixer": "tests/test_inference.py::test_generation_equals_the_naive_loop",
}


@pytest.mark.parametrize("overrides", DEPARTURES, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_each_departure_from_the_authors_is_detected(overrides):
    defaults = QuietStarConfig()
    assert all(getattr(defaults, k) != v for k, v in overrides.items()), f"{overrides}: a default is not a departure"
    # Cases with padding first (several departures differ only there); stop at the first failure.
    cases = [golden.Case(f"{golden.golden_root()}/{name}") for name in CASES]
    cases.sort(key=lambda c: bool(np.all(c.batch()["segment_ids"])))
    with jax.enable_x64(True):
        for case in cases:
            try:
                check_case(case, **overrides)
            except AssertionError:
                return
    pytest.fail(f"{overrides}: every golden case still passes, so the test cannot see this departure")


def test_every_quietstar_field_is_placed():
    departures = {k for d in DEPARTURES for k in d}
    places = [set(golden.Case(f"{golden.golden_root()}/{CASES[0]}").case_settings()), departures,
              set(ACT_ELSEWHERE), set(SAME_FUNCTION)]
    fields = {f.name for f in dataclasses.fields(QuietStarConfig)}
    placed = set().union(*places)
    assert sum(map(len, places)) == len(placed), f"a field is in two places: {places}"
    assert fields - placed == set(), f"QuietStarConfig fields placed nowhere here: {sorted(fields - placed)}"
    assert placed - fields == set(), f"not QuietStarConfig fields: {sorted(placed - fields)}"
    for field, where in {**ACT_ELSEWHERE, **SAME_FUNCTION}.items():  # the named test exists
        path, test = where.split("::")
        assert f"def {test}(" in open(os.path.join(REPO, path)).read(), (field, where)


def test_the_docs_list_exactly_these_departures():
    """docs/algorithm.md: its table of deliberate differences names (as config fields) exactly the
    QuietStarConfig fields of DEPARTURES and ACT_ELSEWHERE, and its paragraph on this test names each."""
    doc = open(os.path.join(REPO, "docs", "algorithm.md")).read()
    fields = {f.name for f in dataclasses.fields(QuietStarConfig)}
    table = doc.split("Deliberate differences")[1].split("\n\n")[1]
    in_table = {name for row in table.splitlines() for name in re.findall(r"`(\w+)`", row.split("|")[-2])} & fields
    departures = {k for d in DEPARTURES for k in d}
    want = departures | set(ACT_ELSEWHERE)
    assert in_table == want, (f"docs/algorithm.md's deliberate differences only: {sorted(in_table - want)}; "
                              f"DEPARTURES / ACT_ELSEWHERE only: {sorted(want - in_table)}")
    checked = doc.split("* `tests/test_golden.py`")[1].split("\n* ")[0]
    for field in want:
        assert f"`{field}`" in checked, f"docs/algorithm.md, How this is checked: {field} is not named"
