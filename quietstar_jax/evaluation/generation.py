"""Accuracy by generation (KV-cached, thinking before every generated token or not):

* greedy zero-shot: continue tasks.zero_shot_prompt ("Q: ...\\nA:") greedily until a token holding a
  newline (or EOS, or `greedy_tokens`); the answer is, for GSM8K, the last number of that line (commas
  removed), for CSQA its first standalone letter A-E. Correct = equal to the gold answer.
* chain-of-thought majority vote (the authors' zero-shotcot-eval.py protocol, after Kojima et al. 2022):
  k samples at `temperature` continue tasks.cot_prompt ("Q: ...\\nA: Let's think step by step.") for up
  to `cot_tokens` (or EOS); each is cut where the model starts a new question ("\\nQ:") or leaves three
  newlines; then "\\nTherefore, the answer (arabic numerals) is" (CSQA: "...among A through E, the answer
  is") is appended and `cot_answer_tokens` more are sampled; the vote is the first number (letter) of
  that. The prediction is the majority of the k votes (answers.majority: ties go to the earliest vote).

Every row's random draws are keyed by its own id (example index x k + vote), so a row's text does not
depend on the batch it ran in.

    gen = GenerationEval(cfg, qs, tokenizer, Placement(mesh), batch_size=8)
    rows = gen.greedy(params, "gsm8k", examples, think=True, key=key)
    rows = gen.cot_majority(params, "gsm8k", examples, think=True, key=key, votes=8, temperature=0.9)
"""

from __future__ import annotations

import jax
import numpy as np

from quietstar_jax.errors import ConfigError
from quietstar_jax.evaluation import answers
from quietstar_jax.evaluation.placement import Placement, bucket
from quietstar_jax.evaluation.tasks import FINAL_ANSWER, Example, cot_prompt, zero_shot_prompt
from quietstar_jax.evaluation.vocab import encode_default, ids_containing
from quietstar_jax.inference.generate import GenerateConfig, generate
from quietstar_jax.inference.sampler import Sampler
from quietstar_jax.model.config import ModelConfig
from quietstar_jax.quietstar.config import QuietStarConfig

PROMPT_STEP = 64  # prompts are padded to a multiple of this: few compiled shapes
CHAIN_STOPS = ("\nQ:", "\n\n\n")


def extract(task: str, text: str, final: bool = False) -> str | None:
    """The answer in generated text: GSM8K the last number (the first after the CoT's "the answer is":
    final=True), CSQA the first standalone letter A-E."""
    if task == "csqa":
        return answers.first_letter(text)
    return answers.first_number(text) if final else answers.last_number(text)


def cut_chain(text: str) -> str:
    """A sampled chain of thought up to where the model starts a new question or leaves three newlines."""
    cut = len(text)
    for stop in CHAIN_STOPS:
        at = text.find(stop)
        if at >= 0:
            cut = min(cut, at)
    return text[:cut]


class GenerationEval:
    def __init__(self, cfg: ModelConfig, qs: QuietStarConfig, tokenizer, placement: Placement | None = None,
                 batch_size: int = 8, thought_tokens: int | None = None):
        self.cfg, self.qs, self.tok = cfg, qs, tokenizer
        self.place = placement or Placement()
        self.batch_size = self.place.check_batch_size(batch_size)
        self.thought_tokens = thought_tokens
        vocab = min(cfg.vocab_size, getattr(tokenizer, "vocab_size", cfg.vocab_size))
        eos = () if tokenizer.eos_id is None else (int(tokenizer.eos_id),)
        self.eos = eos
        self.line_ends = tuple(sorted(set(ids_containing(tokenizer, vocab, "\n")) | set(eos)))
        self._fns = {}

    def _thought_tokens(self, think: bool):
        """T for generation: none without thinking (also for a model trained with N = 1)."""
        return self.thought_tokens if think else 0

    def decode_params(self, params):
        """The params generation reads (model.decode.params_for_decoding: on one CPU device a copy in the
        CPU decoding layout, ~1.7x faster decode steps). Laid-out params are returned as they are, so a
        caller evaluating several metrics lays them out once."""
        from quietstar_jax.model.decode import params_for_decoding

        return params_for_decoding(params, self.place.mesh)

    def _fn(self, gen: GenerateConfig):
        if gen not in self._fns:
            cfg, qs = self.cfg, self.qs
            self._fns[gen] = self.place.jit(lambda p, x, n, k, r: generate(p, cfg, qs, gen, x, n, k, "right", r))
        return self._fns[gen]

    def texts(self, params, prompts: list[list[int]], rows: list[int], gen: GenerateConfig, key,
              progress=None) -> list[dict]:
        """Generates for every prompt (token ids); rows: each prompt's id for its random draws. Returns per
        prompt {"ids": generated ids up to and including a stop token, "text", "thoughts": [T ids per token]}.
        Prompts run in batches of similar length (sorted), padded to a multiple of 64 tokens."""
        need = max(len(p) for p in prompts) + gen.max_new_tokens + gen.num_thought_tokens(self.qs) + 2
        if need > self.cfg.max_position_embeddings:
            raise ConfigError(f"prompts of up to {max(len(p) for p in prompts)} tokens + {gen.max_new_tokens} new "
                              f"tokens need {need} positions; the model has {self.cfg.max_position_embeddings}")
        fn = self._fn(gen)
        order = sorted(range(len(prompts)), key=lambda k: -len(prompts[k]))
        out: list = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            fill = idx + [idx[0]] * (self.batch_size - len(idx))
            P = bucket(max(len(prompts[k]) for k in fill), PROMPT_STEP, 1 << 30)
            x = np.zeros((self.batch_size, P), np.int32)
            for b, k in enumerate(fill):
                x[b, :len(prompts[k])] = prompts[k]
            n = np.asarray([len(prompts[k]) for k in fill], np.int32)
            r = np.asarray([rows[k] for k in fill], np.int32)
            res = jax.device_get(fn(params, self.place.put(x), self.place.put(n), key, self.place.put(r)))
            for b, k in enumerate(idx):
                m = int(res.lengths[b])
                ids = np.asarray(res.tokens[b, :m]).tolist()
                out[k] = {"ids": ids, "text": self.tok.decode([i for i in ids if i not in self.eos]),
                          "thoughts": np.asarray(res.thoughts[b, :m]).tolist() if gen.think else None}
            if progress is not None:
                progress.update(len(idx))
        return out

    def greedy(self, params, task: str, examples: list[Example], think: bool, key, max_new_tokens: int = 32,
               progress=None) -> list[dict]:
        """Per example {"prompt", "generated", "prediction", "correct"} (+ "thought_ids" per token)."""
        gen = GenerateConfig(max_new_tokens=max_new_tokens, think=think, thought_tokens=self._thought_tokens(think),
                             output=Sampler(), eos_ids=self.line_ends, pad_id=0)
        prompts = [zero_shot_prompt(ex) for ex in examples]
        outs = self.texts(self.decode_params(params), [encode_default(self.tok, p) for p in prompts],
                          list(range(len(examples))), gen, key, progress)
        rows = []
        for ex, prompt, o in zip(examples, prompts, outs):
            line = o["text"].split("\n")[0]
            pred = extract(task, line)
            rows.append({"prompt": prompt, "generated": o["text"], "prediction": pred, "correct": pred == ex.gold,
                         "thought_ids": o["thoughts"]})
        return rows

    def cot_majority(self, params, task: str, examples: list[Example], think: bool, key, votes: int = 8,
                     temperature: float = 0.9, cot_tokens: int = 384, answer_tokens: int = 12,
                     progress=None) -> list[dict]:
        """Per example {"prompt", "votes": [{"chain", "final", "prediction"}], "prediction", "correct"}."""
        if votes < 1:
            raise ConfigError(f"votes must be >= 1, got {votes}")
        sampler = Sampler(temperature=temperature)
        T = self._thought_tokens(think)
        chain_gen = GenerateConfig(max_new_tokens=cot_tokens, think=think, thought_tokens=T, output=sampler,
                                   eos_ids=self.eos)
        final_gen = GenerateConfig(max_new_tokens=answer_tokens, think=think, thought_tokens=T, output=sampler,
                                   eos_ids=self.eos)
        params = self.decode_params(params)
        prompts = [cot_prompt(ex) for ex in examples]
        rows = [i * votes + v for i in range(len(examples)) for v in range(votes)]
        first = [encode_default(self.tok, prompts[i // votes]) for i in rows]
        chains = self.texts(params, first, rows, chain_gen, jax.random.fold_in(key, 1), progress)
        chains = [cut_chain(c["text"]) for c in chains]
        second_texts = [prompts[r // votes] + c.rstrip() + FINAL_ANSWER[task] for r, c in zip(rows, chains)]
        finals = self.texts(params, [encode_default(self.tok, t) for t in second_texts], rows, final_gen,
                            jax.random.fold_in(key, 2), progress)
        out = []
        for i, ex in enumerate(examples):
            vs = []
            for v in range(votes):
                k = i * votes + v
                vs.append({"chain": chains[k], "final": finals[k]["text"],
                           "prediction": extract(task, finals[k]["text"], final=True)})
            pred = answers.majority([x["prediction"] for x in vs])
            out.append({"prompt": prompts[i], "votes": vs, "prediction": pred, "correct": pred == ex.gold})
        return out
