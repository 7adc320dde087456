"""One evaluation: tasks x modes (with / without thinking) x metrics, for given params.

    ev = Evaluator(cfg, qs, tokenizer, EvalSettings(metrics=("authors", "greedy"), modes=("think", "no_think")),
                   mesh=mesh)
    res = ev.run(params, {"gsm8k": examples})
    res.summary   {"gsm8k": {"n": 20, "think": {"authors": 0.012, "greedy": 0.05}, "no_think": {...}}}
    res.records   {("gsm8k", "think"): [one dict per example: question, gold, every metric's details]}

Metrics: "authors" (their metric: the mean renormalised probability of the answer tokens, metric.py),
"greedy" (zero-shot greedy accuracy), "cot_maj" (chain-of-thought majority-vote accuracy; generation.py).
Mode "think" is the trained model (a thought before every token, the mixing head), "no_think" the same
weights without thoughts (the base distribution). The params are an argument, so a training run keeps one
Evaluator and calls it every N steps (compiled programs are reused).

Randomness: every (task, mode, metric) draws from its own key, fold_in(key(seed), ...), so adding or
removing a metric changes no other number.
"""

from __future__ import annotations

import dataclasses
import time

import jax

from quietstar_jax.errors import ConfigError
from quietstar_jax.evaluation.placement import Placement
from quietstar_jax.evaluation.progress import Progress
from quietstar_jax.evaluation.tasks import TASKS, Example, scoring_text
from quietstar_jax.model.config import ModelConfig
from quietstar_jax.quietstar.config import QuietStarConfig

METRICS = ("authors", "greedy", "cot_maj")
MODES = ("think", "no_think")
METRIC_NAMES = {"authors": "authors' metric (mean p)", "greedy": "greedy zero-shot accuracy",
                "cot_maj": "CoT maj@{votes} accuracy"}


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    metrics: tuple = ("authors", "greedy")
    modes: tuple = ("think",)
    batch_size: int = 8
    max_len: int = 256  # the authors' metric: tokens per example (longer: the last max_len are kept)
    thought_tokens: int | None = None  # T per thought (None: as trained, N - 3)
    greedy_tokens: int = 32  # greedy: new tokens at most (stops at a newline)
    votes: int = 8  # CoT: samples per question
    temperature: float = 0.9  # CoT sampling temperature (the authors' zero-shotcot-eval.py default)
    cot_tokens: int = 384  # CoT: tokens of reasoning at most (the authors' start_final_answer_idx)
    cot_answer_tokens: int = 12  # CoT: tokens after "Therefore, the answer ... is" (the authors' answer_length)
    seed: int = 0
    save_thoughts: bool = False  # per-example records hold the thoughts (decoded)

    def __post_init__(self):
        for m in self.metrics:
            if m not in METRICS:
                raise ConfigError(f"unknown metric {m!r}: the metrics are {', '.join(METRICS)}")
        for m in self.modes:
            if m not in MODES:
                raise ConfigError(f"unknown mode {m!r}: the modes are {', '.join(MODES)}")
        if not self.metrics or not self.modes:
            raise ConfigError("evaluation needs at least one metric and one mode")
        for k in ("batch_size", "max_len", "greedy_tokens", "votes", "cot_tokens", "cot_answer_tokens"):
            if getattr(self, k) < 1:
                raise ConfigError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if self.thought_tokens is not None and self.thought_tokens < 0:
            raise ConfigError(f"thought tokens must be >= 0 (n_ahead >= 3), got {self.thought_tokens}")

    def metric_name(self, metric: str) -> str:
        return METRIC_NAMES[metric].format(votes=self.votes)


@dataclasses.dataclass
class Results:
    summary: dict  # {task: {"n": int, mode: {metric: value}}}
    records: dict  # {(task, mode): [per-example dicts]}
    seconds: dict  # {"task/mode/metric": wall seconds}


class Evaluator:
    def __init__(self, cfg: ModelConfig, qs: QuietStarConfig, tokenizer, settings: EvalSettings = EvalSettings(),
                 mesh=None, progress: bool = True, progress_stream=None):
        self.cfg, self.qs, self.tok, self.s = cfg, qs, tokenizer, settings
        if "think" in settings.modes and not qs.enabled:
            raise ConfigError("this model was trained without thinking (N = M = P = 1): evaluate it with thinking "
                              "off only (--no_think)")
        self.place = Placement(mesh)
        self.place.check_batch_size(settings.batch_size)
        self.progress, self.progress_stream = progress, progress_stream
        self._metric = self._gen = None

    @property
    def metric(self):
        if self._metric is None:
            from quietstar_jax.evaluation.metric import AuthorsMetric

            self._metric = AuthorsMetric(self.cfg, self.qs, self.tok, self.place, self.s.batch_size, self.s.max_len,
                                         self.s.thought_tokens)
        return self._metric

    @property
    def generation(self):
        if self._gen is None:
            from quietstar_jax.evaluation.generation import GenerationEval

            self._gen = GenerationEval(self.cfg, self.qs, self.tok, self.place, self.s.batch_size,
                                       self.s.thought_tokens)
        return self._gen

    def _bar(self, label: str, total: int) -> Progress:
        return Progress(label, total, stream=self.progress_stream, enabled=self.progress)

    def run(self, params, tasks: dict[str, list[Example]]) -> Results:
        """params: laid out for this evaluator (Placement(mesh).params(...) or a train state's params)."""
        s = self.s
        base_key = jax.random.key(s.seed)
        summary, records, seconds = {}, {}, {}
        # Generation decodes from its own layout (a weight copy on CPU): made once for every task and mode.
        gen_params = self.generation.decode_params(params) if set(s.metrics) - {"authors"} else None
        for task, examples in tasks.items():
            summary[task] = {"n": len(examples)}
            for mode in s.modes:
                think = mode == "think"
                rows = [{"index": i, "id": ex.id, "question": ex.question, "gold": ex.gold,
                         **({"choices": [list(c) for c in ex.choices]} if ex.choices else {})}
                        for i, ex in enumerate(examples)]
                summary[task][mode] = {}
                for metric in s.metrics:
                    key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(
                        base_key, TASKS.index(task)), MODES.index(mode)), METRICS.index(metric))
                    t = time.time()
                    value = self._one(params if metric == "authors" else gen_params, task, examples, think, metric,
                                      key, rows)
                    seconds[f"{task}/{mode}/{metric}"] = round(time.time() - t, 2)
                    summary[task][mode][metric] = value
                records[(task, mode)] = rows
        return Results(summary, records, seconds)

    def _one(self, params, task, examples, think, metric, key, rows) -> float:
        s, mode = self.s, "think" if think else "no_think"
        n = len(examples)
        if metric == "authors":
            texts = [scoring_text(ex) for ex in examples]
            plans = self.metric.plan(texts)
            bar = self._bar(f"{task} authors' metric ({mode})", n)
            out = self.metric.score(params, plans, think, key, bar, with_thoughts=s.save_thoughts)
            bar.close()
            for row, text, r in zip(rows, texts, out):
                if "thoughts" in r:
                    r["thoughts"] = [{"position": t["position"], "next_token": self.tok.decode([t["target"]]),
                                      "thought": self.tok.decode(t["thought"]), "weight": t["weight"]}
                                     for t in r["thoughts"]]
                row["authors"] = {"text": text, **r}
            return sum(r["score"] for r in out) / n
        if metric == "greedy":
            bar = self._bar(f"{task} greedy ({mode})", n)
            out = self.generation.greedy(params, task, examples, think, key, s.greedy_tokens, bar)
            bar.close()
            for row, r in zip(rows, out):
                ids = r.pop("thought_ids")
                if s.save_thoughts and ids is not None:
                    r["thoughts"] = [self.tok.decode(t) for t in ids]
                row["greedy"] = r
            return sum(r["correct"] for r in out) / n
        bar = self._bar(f"{task} CoT maj@{s.votes} ({mode})", 2 * n * s.votes)
        out = self.generation.cot_majority(params, task, examples, think, key, s.votes, s.temperature,
                                           s.cot_tokens, s.cot_answer_tokens, bar)
        bar.close()
        for row, r in zip(rows, out):
            row["cot_maj"] = r
        return sum(r["correct"] for r in out) / n


def flat_scalars(summary: dict) -> dict:
    """{"gsm8k/authors_think": 0.012, ...} for TensorBoard."""
    return {f"{task}/{metric}_{mode}": v for task, per in summary.items() for mode, vals in per.items()
            if mode != "n" for metric, v in vals.items()}


def table(summary: dict, settings: EvalSettings) -> str:
    """The final table: one row per (task, metric), one column per mode."""
    modes = [m for m in MODES if m in settings.modes]
    head = {"think": "thinking", "no_think": "no thinking"}
    lines = [f"{'task':7s} {'metric':30s} " + " ".join(f"{head[m]:>12s}" for m in modes) + f" {'n':>6s}"]
    for task, per in summary.items():
        for metric in settings.metrics:
            vals = " ".join(f"{per[m][metric]:12.4f}" for m in modes)
            lines.append(f"{task:7s} {settings.metric_name(metric):30s} {vals} {per['n']:6d}")
    return "\n".join(lines)
