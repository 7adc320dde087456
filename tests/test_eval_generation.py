"""Accuracy by generation (quietstar_jax.evaluation.generation) against naive greedy loops that recompute
the whole sequence for every new token (the plain model's logits; think_logprobs' mixed distribution at
the last position), and the chain-of-thought pipeline with scripted model outputs."""

import builders
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quietstar_jax.evaluation.datasets import read_gsm8k_jsonl
from quietstar_jax.evaluation.generation import GenerationEval
from quietstar_jax.evaluation.tasks import Example, zero_shot_prompt
from quietstar_jax.inference.think import think_logprobs
from quietstar_jax.model.transformer import causal_lm_logits
from quietstar_jax.quietstar import QuietStarConfig
from quietstar_jax.training.tokenizer import ByteTokenizer

TOK = ByteTokenizer()
CFG = builders.model_config(vocab_size=258, max_position_embeddings=512)
QS = QuietStarConfig(n_ahead=4, n_ahead_talk=1, n_passes=1, start_id=256, end_id=257, sample_temperature=1e-4)
NEW = 6


def make_params(seed=3):
    p = builders.live_params(CFG, QS, seed, [45], 0.5)
    # The newline wins wherever "@" would: some rows stop early at a newline, others run to the budget.
    head = p["lm_head"]["weight"]
    p["lm_head"]["weight"] = head.at[10].set(1.05 * head[64])
    return p


PARAMS = make_params()
PAD = 384


def naive_greedy(prompt: str, think: bool) -> list[int]:
    """Recompute everything for every token; argmax of the next-token distribution (thought ids never
    chosen); stop after a token holding a newline."""
    if think:
        fn = jax.jit(lambda x, s: think_logprobs(PARAMS, CFG, QS, x, jax.random.key(0), segment_ids=s).mixed_logprobs)
    else:
        fn = jax.jit(lambda x, s: causal_lm_logits(PARAMS, CFG, x, s))
    ids = list(prompt.encode())
    out = []
    for _ in range(NEW):
        n = len(ids)
        x = np.zeros((1, PAD), np.int32)
        x[0, :n] = ids
        seg = (np.arange(PAD) < n).astype(np.int32)[None]
        logits = np.asarray(fn(jnp.asarray(x), jnp.asarray(seg)))[0, n - 1, :256]
        t = int(np.argmax(logits))
        ids.append(t)
        out.append(t)
        if t == 10:
            break
    return out


@pytest.mark.parametrize("think", [False, True], ids=["no_think", "think"])
def test_greedy_equals_a_naive_loop(think):
    """Thinking off runs with a model config trained without thinking (N = M = P = 1): no thought slots."""
    exs = read_gsm8k_jsonl(builders.GSM8K_FIXTURE)[:3]
    qs = QS if think else QS.replace(n_ahead=1, n_ahead_talk=1, n_passes=1)
    ev = GenerationEval(CFG, qs, TOK, batch_size=2)  # 2 batches, one short
    assert ev.line_ends == (10,)
    rows = ev.greedy(PARAMS, "gsm8k", exs, think, jax.random.key(0), max_new_tokens=NEW)
    want = [naive_greedy(zero_shot_prompt(ex), think) for ex in exs]
    assert [r["generated"] for r in rows] == [TOK.decode(w) for w in want]
    assert any(w[-1] == 10 for w in want) and any(len(w) == NEW for w in want)  # both ways of stopping
    for r, ex in zip(rows, exs):
        assert r["prompt"] == zero_shot_prompt(ex) and r["correct"] == (r["prediction"] == ex.gold)
        assert (r["thought_ids"] is not None) == think


def test_cot_majority_pipeline(monkeypatch):
    """Two stages per sample (chain, then "Therefore, the answer (arabic numerals) is"), the chain cut at a new
    question, the first number of the final text as the vote, the majority as the prediction."""
    exs = [Example("gsm8k", "a", "2+2?", " 4"), Example("gsm8k", "b", "3+3?", " 7")]
    ev = GenerationEval(CFG, QS, TOK, batch_size=2)
    chains = {0: " 2+2 is 4.\nQ: more", 1: " it is 5.", 2: " 2+2=4", 3: " 3+3 is 6.", 4: " six", 5: " 7"}
    finals = {0: " 4.", 1: " 5", 2: " 4, or 5", 3: " 6", 4: " 8", 5: " 7"}
    seen = []

    def texts(self, params, prompts, rows, gen, key, progress=None):
        seen.append([bytes(p).decode() for p in prompts])
        table = chains if len(seen) == 1 else finals
        return [{"ids": [], "text": table[r], "thoughts": None} for r in rows]

    monkeypatch.setattr(GenerationEval, "texts", texts)
    out = ev.cot_majority(PARAMS, "gsm8k", exs, think=True, key=jax.random.key(0), votes=3)
    assert seen[0][0] == "Q: 2+2?\nA: Let's think step by step." and seen[0][3].startswith("Q: 3+3?")
    assert seen[1][0] == "Q: 2+2?\nA: Let's think step by step. 2+2 is 4.\nTherefore, the answer (arabic numerals) is"
    assert [v["prediction"] for v in out[0]["votes"]] == ["4", "5", "4"] and out[0]["prediction"] == "4"
    assert out[0]["correct"]
    assert [v["prediction"] for v in out[1]["votes"]] == ["6", "8", "7"]
    assert out[1]["prediction"] == "6" and not out[1]["correct"]  # a three-way tie goes to the first vote
