"""The authors' metric (quietstar_jax.evaluation.metric) against a naive per-example implementation written
here from the description (eval_helpers.py's compute_metrics): encode, find the last "\\nA:" by decoding
prefixes, pick the valid set, loop over the answer tokens with a numpy softmax over the full distribution,
renormalise, multiply. Thinking on uses near-greedy thoughts (sample_temperature 1e-4) so that a thought
depends only on its prefix: then an example's score cannot depend on its batch or padding, and the
reference may run each example alone."""

import builders
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from quietstar_jax.evaluation.datasets import read_gsm8k_jsonl
from quietstar_jax.evaluation.metric import AuthorsMetric, plan_example, renormalised_log_score
from quietstar_jax.evaluation.placement import Placement
from quietstar_jax.evaluation.tasks import Example, scoring_text
from quietstar_jax.evaluation.vocab import ValidTokens
from quietstar_jax.inference.think import think_logprobs
from quietstar_jax.model.transformer import causal_lm_logits
from quietstar_jax.quietstar import QuietStarConfig
from quietstar_jax.sharding import make_mesh
from quietstar_jax.training.tokenizer import ByteTokenizer

FIXTURE = builders.GSM8K_FIXTURE
TOK = ByteTokenizer()
CFG = builders.model_config(vocab_size=258, max_position_embeddings=512)
QS = QuietStarConfig(n_ahead=5, n_ahead_talk=1, n_passes=1, start_id=256, end_id=257, sample_temperature=1e-4)
# Written by hand for the byte vocabulary (independent of vocab.ValidTokens): "0".."9", "A".."E", "\n".
DIGITS, LETTERS, NEWLINE = list(range(48, 58)), list(range(65, 70)), [10]


def make_params(seed=0):
    return builders.live_params(CFG, QS, seed, [45], 0.5)  # a live mixing head: thinking changes the prediction


PARAMS = make_params()


def examples():
    gsm = read_gsm8k_jsonl(FIXTURE)
    gsm = gsm[:3] + gsm[16:]  # short ones, the two thousands-comma answers, the two negative answers
    csqa = [Example("csqa", "c1", "Where do you put a cup?", "B", (("A", "sky"), ("B", "table"), ("C", "moon"),
                                                                  ("D", "sea"), ("E", "fire"))),
            Example("csqa", "c2", "What is cold?", "E", tuple(zip("ABCDE", ["sun", "oven", "lava", "tea", "ice"])))]
    return gsm + csqa


MAX_LEN = 128  # every example is cropped to one length: one compiled shape


def naive_score(text: str, logits_fn, max_len=MAX_LEN) -> float:
    """compute_metrics for one example, from the description. logits_fn(ids (1, n)) -> (n, V) numpy."""
    ids = list(text.encode("utf-8"))[-max_len:]  # the byte tokenizer's default encode; keep the last max_len
    full = bytes(ids).decode("utf-8", "replace")
    count = full.count("\nA:")
    i = 1
    for i in range(len(ids), 0, -1):
        if bytes(ids[:i]).decode("utf-8", "replace").count("\nA:") < count:
            break
    is_numeric = full.split("\nA:")[-1][1].isdigit()
    valid = DIGITS + NEWLINE if is_numeric else LETTERS + NEWLINE
    offset = 1 if is_numeric and not chr(ids[i + 1]).isdigit() else 0
    logits = np.asarray(logits_fn(np.asarray([ids], np.int32)), np.float64)
    prob = 1.0
    for j in range(i + offset, len(ids) - 1):
        true = ids[j + 1]
        if true not in valid:
            continue
        p = np.exp(logits[j] - logits[j].max())
        p /= p.sum()
        prob *= p[true] / p[valid].sum()
    return prob


PAD = MAX_LEN  # the reference runs each example alone, right-padded to one length (one compile; causal: the
# padding cannot change the earlier positions)


def _padded(fn):
    jitted = jax.jit(fn)

    def run(ids):
        n = ids.shape[1]
        x = np.zeros((1, PAD), np.int32)
        x[0, :n] = ids[0]
        seg = (np.arange(PAD) < n).astype(np.int32)[None]
        return np.asarray(jitted(jnp.asarray(x), jnp.asarray(seg)))[0, :n]
    return run


base_logits = _padded(lambda x, s: causal_lm_logits(PARAMS, CFG, x, s))
mixed_logits = _padded(lambda x, s: think_logprobs(PARAMS, CFG, QS, x, jax.random.key(9), segment_ids=s).mixed_logprobs)


def text(ids) -> str:
    return bytes(int(i) for i in ids).decode("utf-8", "replace")


@pytest.mark.parametrize("think", [False, True], ids=["no_think", "think"])
def test_metric_equals_a_naive_per_example_loop(think):
    exs = examples()
    texts = [scoring_text(e) for e in exs]
    m = AuthorsMetric(CFG, QS, TOK, batch_size=3, max_len=MAX_LEN)  # several batches, a short last one
    got = m.score(PARAMS, m.plan(texts), think, jax.random.key(0))
    want = [naive_score(t, mixed_logits if think else base_logits) for t in texts]
    np.testing.assert_allclose([g["score"] for g in got], want, rtol=2e-4)
    assert min(want) > 0 and len(set(np.round(want, 12))) == len(want)  # real, distinct scores
    accuracy = sum(g["score"] for g in got) / len(got)
    assert accuracy == pytest.approx(np.mean(want), rel=2e-4)
    if think:  # thinking changed the scores (a live mixing head)
        plain = m.score(PARAMS, m.plan(texts), False, jax.random.key(0))
        assert max(abs(a["score"] - b["score"]) / b["score"] for a, b in zip(got, plain)) > 1e-3


def test_no_think_is_the_plain_model():
    """--no_think: the base distribution; equals the metric over the plain model's logits, computed here
    from the model without any Quiet-STaR params."""
    plain = {k: v for k, v in PARAMS.items() if k != "quietstar"}
    texts = [scoring_text(e) for e in examples()[:4]]
    m = AuthorsMetric(CFG, QS, TOK, batch_size=4, max_len=MAX_LEN)
    got = [g["score"] for g in m.score(PARAMS, m.plan(texts), False, jax.random.key(0))]
    plain_logits = _padded(lambda x, s: causal_lm_logits(plain, CFG, x, s))
    want = [naive_score(t, plain_logits) for t in texts]
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_plan_follows_the_authors_rules():
    valid = ValidTokens.derive(TOK)
    assert valid.numeric == tuple(NEWLINE + DIGITS) and valid.choice == tuple(NEWLINE + LETTERS)
    gsm = read_gsm8k_jsonl(FIXTURE)
    p = plan_example(TOK, scoring_text(gsm[17]), valid)  # "...\nA: 114,200\n"
    tail = text(p.ids[p.marker_end - 2:])
    assert tail == "\nA: 114,200\n" and p.numeric and p.first == p.marker_end + 1  # skip the space
    assert [chr(p.ids[j + 1]) for j in p.positions] == list("114200\n")  # the comma is skipped
    neg = plan_example(TOK, scoring_text(gsm[18]), valid)  # " -10": not numeric -> letters + newline
    assert not neg.numeric and neg.first == neg.marker_end and [p_ for p_ in neg.positions] == [len(neg.ids) - 2]
    c = plan_example(TOK, scoring_text(examples()[-1]), valid)  # "\nA: E\n"
    assert not c.numeric and [chr(c.ids[j + 1]) for j in c.positions] == ["E", "\n"]
    long = plan_example(TOK, "x" * 300 + scoring_text(gsm[0]), valid, max_len=256)
    assert long.cropped and len(long.ids) == 256 and text(long.ids[-5:]) == "A: 18\n"[-5:]


class MergedSpaceTokenizer:
    """Characters as ids, except " d" (space + digit) = one token 300 + d: a tokenizer that merges the
    space into the digit, where the authors' "+1 if numeric" would skip the first digit."""

    eos_id = None
    hf = None

    def encode(self, text):
        out, i = [], 0
        while i < len(text):
            if text[i] == " " and i + 1 < len(text) and text[i + 1].isdigit():
                out.append(300 + int(text[i + 1]))
                i += 2
            else:
                out.append(ord(text[i]))
                i += 1
        return out

    def decode(self, ids):
        return "".join(f" {i - 300}" if i >= 300 else chr(i) for i in ids)


def test_a_space_merged_into_the_digit_is_not_skipped():
    tok = MergedSpaceTokenizer()
    valid = ValidTokens.derive(tok)
    assert 307 in valid.digits and ord("7") in valid.digits
    p = plan_example(tok, "Q: 3 + 4?\nA: 72\n", valid)
    assert p.ids[p.marker_end] == ord(":") and p.first == p.marker_end  # " 7" holds a digit: no skip
    assert [tok.decode([p.ids[j + 1]]) for j in p.positions] == [" 7", "2", "\n"]


def test_renormalisation_over_the_valid_set():
    """Handmade log-probs: almost all mass on an invalid id; the score only sees the valid ids."""
    V, union = 12, (2, 5, 7, 9)
    logits = np.full((1, 4, V), -3.0)
    logits[0, :, 0] = 8.0  # invalid id 0 dominates everywhere
    logits[0, 1, [2, 5, 7]] = [1.0, 2.0, 0.5]
    logits[0, 2, [2, 9]] = [0.0, 1.0]
    logp = jax.nn.log_softmax(jnp.asarray(logits), axis=-1)
    member = np.array([[True, True, True, False]])  # this row's set: {2, 5, 7}; 9 is the other set's
    slots = np.array([[0, 1, 0, 0]])  # position 1 -> id 5; position 2 -> id 2
    scored = np.array([[False, True, True, False]])
    got = float(np.exp(renormalised_log_score(logp, union, member, slots, scored)[0]))
    p1 = np.exp(2.0) / (np.exp(1.0) + np.exp(2.0) + np.exp(0.5))
    p2 = np.exp(0.0) / (np.exp(0.0) + 2 * np.exp(-3.0))  # 9 is not in the set: ids 2, 5, 7 only
    assert got == pytest.approx(p1 * p2, rel=1e-6)
    nothing = renormalised_log_score(logp, union, member, slots, np.zeros_like(scored))
    assert float(nothing[0]) == 0.0  # an empty product is 1, as in the authors' loop


def test_sharded_equals_one_device():
    """Params laid out on a mesh (fsdp x tensor) and the batch split over it: the same scores."""
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    place = Placement(mesh)
    sharded = place.params(jax.device_get(PARAMS), CFG)
    assert any(isinstance(x.sharding, NamedSharding) and x.sharding.spec != P() for x in jax.tree.leaves(sharded))
    texts = [scoring_text(e) for e in examples()[:4]]
    one = AuthorsMetric(CFG, QS, TOK, batch_size=4, max_len=MAX_LEN)
    many = AuthorsMetric(CFG, QS, TOK, place, batch_size=4, max_len=MAX_LEN)
    a = [g["score"] for g in one.score(PARAMS, one.plan(texts), True, jax.random.key(1))]
    b = [g["score"] for g in many.score(sharded, many.plan(texts), True, jax.random.key(1))]
    np.testing.assert_allclose(b, a, rtol=1e-4)


def test_heldout_nll_against_a_per_target_loop():
    """next_token_nll: the summed -log p of every next token inside its segment, against a numpy loop over
    rows, positions and segments (two packed documents and padding), without thinking from the plain
    causal LM, with thinking from think_logprobs' base and mixed distributions (same key)."""
    from quietstar_jax.evaluation.heldout import next_token_nll

    B, L = 2, 12
    rng = np.random.RandomState(1)
    tokens = jnp.asarray(rng.randint(0, 256, (B, L)), jnp.int32)
    seg = jnp.asarray([[1] * 5 + [2] * 7, [1] * 9 + [0] * 3], jnp.int32)
    pos = jnp.asarray([list(range(5)) + list(range(7)), list(range(9)) + [0] * 3], jnp.int32)
    key = jax.random.key(7)

    def loop(logp):
        logp, t, s = np.asarray(logp, np.float64), np.asarray(tokens), np.asarray(seg)
        total, n = 0.0, 0
        for b in range(B):
            for p in range(L - 1):
                if s[b, p] > 0 and s[b, p + 1] == s[b, p]:
                    total -= logp[b, p, t[b, p + 1]]
                    n += 1
        return total, n

    logits = np.asarray(causal_lm_logits(PARAMS, CFG, tokens, seg, pos), np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    base, mix, n = next_token_nll(PARAMS, CFG, QS, tokens, pos, seg, key, think=False)
    want, want_n = loop(logp)
    assert int(n) == want_n == 4 + 6 + 8 and float(mix) == 0
    np.testing.assert_allclose(float(base), want, rtol=1e-5)

    out = think_logprobs(PARAMS, CFG, QS, tokens, key, segment_ids=seg, positions=pos)
    base, mix, n = next_token_nll(PARAMS, CFG, QS, tokens, pos, seg, key, think=True)
    np.testing.assert_allclose(float(base), loop(out.base_logprobs)[0], rtol=1e-5)
    np.testing.assert_allclose(float(mix), loop(out.mixed_logprobs)[0], rtol=1e-5)
    assert abs(float(mix) - float(base)) > 1e-3  # the live mixing head: thinking changes the NLL
