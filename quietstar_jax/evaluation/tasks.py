"""The two evaluation tasks and every text the evaluation shows a model.

    ex = Example("gsm8k", "test-0", "Janet's ducks lay 16 eggs ...", " 18")
    scoring_text(ex)      # the authors' metric scores the answer inside this text
    zero_shot_prompt(ex)  # greedy accuracy continues this
    cot_prompt(ex)        # chain-of-thought majority vote continues this

Formats (the authors' eval_helpers.py, ezelikman/quiet-star):

    GSM8K scoring   "Q: " + question + "\\nA:" + answer + "\\n"
                    answer = the official answer string's text after its last "####", leading space kept (" 72")
    CSQA scoring    "Q: " + question + "\\n" + "\\n".join(f"({label}) {text}") + "\\nA:" + " " + answerKey + "\\n"
    zero-shot       the scoring text up to and including "\\nA:"
    chain of thought  the same + " Let's think step by step." (their zero-shotcot-eval.py)
"""

from __future__ import annotations

import dataclasses

from quietstar_jax.evaluation.answers import normalize_number

TASKS = ("gsm8k", "csqa")
MARKER = "\nA:"  # the authors' eval_answer_marker
COT_TRIGGER = " Let's think step by step."
# The second stage of zero-shot CoT (Kojima et al. 2022): the authors' GSM8K text, Kojima's for multiple choice.
FINAL_ANSWER = {"gsm8k": "\nTherefore, the answer (arabic numerals) is",
                "csqa": "\nTherefore, among A through E, the answer is"}


@dataclasses.dataclass(frozen=True)
class Example:
    task: str  # "gsm8k" | "csqa"
    id: str
    question: str  # GSM8K: the problem; CSQA: the question stem
    answer: str  # GSM8K: the official answer text after its last "####", as is (" 72"); CSQA: the key ("B")
    choices: tuple = ()  # CSQA: (("A", "bank"), ("B", "library"), ...)

    @property
    def gold(self) -> str:
        """The answer compared with a model's: GSM8K the number ("1,000" -> "1000"), CSQA the letter."""
        if self.task == "gsm8k":
            return normalize_number(self.answer) or self.answer.strip()
        return self.answer


def question_block(ex: Example) -> str:
    """ "Q: <question>" and, for CSQA, one "(label) text" line per choice."""
    text = "Q: " + ex.question
    if ex.choices:
        text += "\n" + "\n".join(f"({label}) {choice}" for label, choice in ex.choices)
    return text


def scoring_text(ex: Example) -> str:
    """The authors' text whose answer tokens their metric scores."""
    answer = ex.answer if ex.task == "gsm8k" else " " + ex.answer
    return question_block(ex) + MARKER + answer + "\n"


def zero_shot_prompt(ex: Example) -> str:
    return question_block(ex) + MARKER


def cot_prompt(ex: Example) -> str:
    return question_block(ex) + MARKER + COT_TRIGGER


def check_task(name: str) -> str:
    from quietstar_jax.errors import ConfigError

    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}: the tasks are {', '.join(TASKS)}")
    return name
