"""A task where a written intermediate step is the way to the answer: multi-hop lookup in a random table.

Every document draws a fresh random table: `table_size` distinct letters arranged in one random cycle,
so sigma(x) is the letter after x in the cycle and sigma^h(x) differs from x for 0 < h < table_size.
The table is written as adjacent pairs "x sigma(x)" in random order, then one of two kinds of lines:

    chain document   T:ac db cd ba\\n  a>c>d>b\\n  d>b>a>c\\n ...   walks: each letter after ">" is
                                                               sigma of the letter before ">"
    query document   T:ac db cd ba\\n  ?ad\\n  ?cb\\n ...          "?" x sigma^hops(x): the answer
                                                               letter follows x directly

(spaces above only for reading; a line is e.g. "a>c>d>b"). A model learns from the chain documents to
look one letter up in the table of its own document (one hop: an induction-style lookup, which a
2-layer transformer can learn); a query needs `hops` lookups in a row, one after the other, inside one
forward pass, which a model too shallow to compose two lookups cannot do (it can only rule letters out).
Written out, the intermediate step turns the query into single hops: "a" > "c" (= sigma(a)), then
sigma(c) = "d" is the answer. Quiet-STaR can learn to write that step in its thought after "a": a
thought "c" followed by <end> makes the answer one lookup away. Pause tokens (thoughts without
content) give extra positions but no extra sequential lookup (each layer attends once), so they cannot
replace the written step.

Text is plain ASCII so that the byte tokenizer maps one character to one token and answer positions
are character positions. `answer_positions` gives the index of every answer letter of a query document.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclasses.dataclass(frozen=True)
class MultiHopTask:
    table_size: int = 8  # letters per table (one cycle)
    hops: int = 2  # a query's answer is sigma^hops(x)
    queries: int = 5  # query lines per query document (distinct x; fewer than table_size, so that
    # the last answers cannot be had by elimination)
    chains: int = 4  # chain lines per chain document
    chain_length: int = 4  # letters per chain line
    chain_fraction: float = 0.5  # of the documents (the rest are query documents)

    def __post_init__(self):
        if not 2 <= self.table_size <= len(LETTERS):
            raise ValueError(f"table_size must be in [2, {len(LETTERS)}], got {self.table_size}")
        if not 1 <= self.hops < self.table_size:
            raise ValueError(f"hops must be in [1, table_size), got {self.hops}")
        if not 1 <= self.queries <= self.table_size:
            raise ValueError(f"queries must be in [1, table_size], got {self.queries}")

    @property
    def max_chars(self) -> int:
        """The longest document (characters = byte tokens)."""
        table = 2 + 3 * self.table_size
        return table + max(self.queries * 4, self.chains * (2 * self.chain_length))


def _table(rng: np.random.RandomState, task: MultiHopTask) -> tuple[str, dict]:
    letters = list(rng.choice(list(LETTERS), task.table_size, replace=False))
    sigma = {letters[i]: letters[(i + 1) % len(letters)] for i in range(len(letters))}
    pairs = [k + sigma[k] for k in letters]
    rng.shuffle(pairs)
    return "T:" + " ".join(pairs) + "\n", sigma


def _hop(sigma: dict, x: str, n: int) -> str:
    for _ in range(n):
        x = sigma[x]
    return x


def make_document(rng: np.random.RandomState, task: MultiHopTask, kind: str) -> str:
    """One document of `kind` "chain" or "query" (see the module docstring)."""
    head, sigma = _table(rng, task)
    keys = sorted(sigma)
    if kind == "chain":
        lines = []
        for x in rng.choice(keys, task.chains, replace=task.chains > len(keys)):
            lines.append(">".join(_hop(sigma, str(x), i) for i in range(task.chain_length)))
        return head + "\n".join(lines) + "\n"
    if kind != "query":
        raise ValueError(f"kind must be 'chain' or 'query', got {kind!r}")
    xs = rng.choice(keys, task.queries, replace=False)
    return head + "".join(f"?{x}{_hop(sigma, str(x), task.hops)}\n" for x in xs)


def answer_positions(text: str) -> list[int]:
    """Character indices of the answers of a query document: the letter after "?x"."""
    return [i + 2 for i, ch in enumerate(text) if ch == "?" and i + 2 < len(text)]


def one_hop_positions(text: str) -> list[int]:
    """Character indices of the one-hop targets of a chain document: the letter after each ">"."""
    return [i + 1 for i, ch in enumerate(text) if ch == ">" and i + 1 < len(text)]


def make_documents(task: MultiHopTask, n: int, seed: int) -> list[dict]:
    """n documents {"text", "kind"}, chain documents with probability chain_fraction, from `seed`."""
    rng = np.random.RandomState(seed)
    kinds = np.where(rng.random_sample(n) < task.chain_fraction, "chain", "query")
    return [{"text": make_document(rng, task, str(k)), "kind": str(k)} for k in kinds]


def write_jsonl(path: str, docs: list[dict]) -> str:
    """Writes documents as jsonl ({"text", "kind"} per line) atomically; returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
    os.replace(tmp, path)
    return path
