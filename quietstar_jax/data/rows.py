"""Training rows of exactly L tokens as a pure function of (seed, global row index).

Every row is a dict of int32 arrays of shape (L,):
  tokens       token ids, 0 at padding
  segment_ids  1, 2, 3, ... for the documents in the row in order of appearance, 0 = padding
  positions    position within the document piece, restarting at 0 at every document start AND at the
               row start (a document continued from the previous row starts again at 0: the model only
               sees this row, and RoPE scores depend on relative positions only)

Global row g lives in epoch e = g // rows_per_epoch, at r = g % rows_per_epoch. Epoch e visits the
documents in the permutation ``_order(seed, e)`` (a new one per epoch; identity with shuffle=False).

pack: the epoch's token stream (documents in that order, each with its BOS/EOS) is cut into
  rows_per_epoch = ceil(total_tokens / L) rows; row r is stream[r*L : (r+1)*L], the last one padded.
  Random access needs the document lengths up front (prefix sums per epoch, cached).
crop: row r holds document order[r]; a document longer than L gives a crop at an offset drawn from
  (seed, g), a shorter one is padded. rows_per_epoch = number of documents.
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np

_ORDER, _CROP = 0, 1  # stream tags mixed into the seeds so permutations and crop offsets are independent


class Documents:
    """Token ids of document i with BOS/EOS applied: docs[i] -> int32[n_i]; len(docs).

    raw: i -> int32 ids without special tokens; raw_lengths: int64[N] (None when documents are tokenised
    lazily, which only crop mode supports).
    """

    def __init__(self, n: int, raw: Callable[[int], np.ndarray], raw_lengths: np.ndarray | None = None,
                 bos_id: int | None = None, eos_id: int | None = None):
        self._n, self._raw = n, raw
        self._pre = [] if bos_id is None else [bos_id]
        self._post = [] if eos_id is None else [eos_id]
        extra = len(self._pre) + len(self._post)
        self.lengths = None if raw_lengths is None else np.asarray(raw_lengths, np.int64) + extra

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> np.ndarray:
        ids = np.asarray(self._raw(int(i)), np.int32).reshape(-1)
        if self._pre or self._post:
            ids = np.concatenate([np.asarray(self._pre, np.int32), ids, np.asarray(self._post, np.int32)])
        return ids


def _order(seed: int, epoch: int, n: int, shuffle: bool) -> np.ndarray:
    """int64[n] document order of an epoch. PCG64 seeded by (seed, tag, epoch): stable across runs."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([seed, _ORDER, epoch]).permutation(n)


def _empty_row(L: int) -> dict[str, np.ndarray]:
    return {k: np.zeros((L,), np.int32) for k in ("tokens", "positions", "segment_ids")}


class _EpochCache:
    """A few recent epochs' derived arrays; a batch straddles at most two epochs. Thread-safe (grain
    reads rows from several threads); a race only computes the same value twice."""

    def __init__(self, make: Callable[[int], object], size: int = 3):
        self._make, self._size, self._lock, self._items = make, size, threading.Lock(), {}

    def __call__(self, epoch: int):
        with self._lock:
            if epoch in self._items:
                return self._items[epoch]
        value = self._make(epoch)
        with self._lock:
            self._items[epoch] = value
            while len(self._items) > self._size:
                self._items.pop(min(self._items))
        return value


class PackedRows:
    """rows[g] -> the packed row g (see module docstring). docs must have lengths."""

    def __init__(self, docs: Documents, seq_len: int, seed: int, shuffle: bool):
        if docs.lengths is None:
            raise ValueError("packing needs every document's length up front (tokenise into the store first)")
        if seq_len <= 0:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        self.docs, self.seq_len, self.seed, self.shuffle = docs, seq_len, seed, shuffle
        self.total_tokens = int(docs.lengths.sum())
        self.rows_per_epoch = -(-self.total_tokens // seq_len)
        self._epoch = _EpochCache(self._make_epoch)

    def _make_epoch(self, epoch: int):
        order = _order(self.seed, epoch, len(self.docs), self.shuffle)
        starts = np.concatenate([[0], np.cumsum(self.docs.lengths[order])])  # int64[N+1] stream offsets
        return order, starts

    def __getitem__(self, g: int) -> dict[str, np.ndarray]:
        epoch, r = divmod(int(g), self.rows_per_epoch)
        order, starts = self._epoch(epoch)
        L = self.seq_len
        row = _empty_row(L)
        lo, hi = r * L, min((r + 1) * L, self.total_tokens)
        k = int(np.searchsorted(starts, lo, side="right")) - 1  # document holding stream offset lo
        fill, seg = 0, 0
        while lo < hi:
            ids = self.docs[order[k]]
            off = lo - int(starts[k])
            n = min(ids.size - off, hi - lo)
            if n <= 0:  # would loop forever; only a store whose lengths.npy disagrees with its records
                raise RuntimeError(f"document {order[k]} has {ids.size} tokens, its stored length says more")
            seg += 1
            row["tokens"][fill:fill + n] = ids[off:off + n]
            row["segment_ids"][fill:fill + n] = seg
            row["positions"][fill:fill + n] = np.arange(n, dtype=np.int32)
            fill, lo, k = fill + n, lo + n, k + 1
        return row


class CroppedRows:
    """rows[g] -> one document per row, randomly cropped to L or padded (see module docstring)."""

    def __init__(self, docs: Documents, seq_len: int, seed: int, shuffle: bool):
        if seq_len <= 0:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        self.docs, self.seq_len, self.seed, self.shuffle = docs, seq_len, seed, shuffle
        self.rows_per_epoch = len(docs)
        self._epoch = _EpochCache(lambda e: _order(seed, e, len(docs), shuffle))

    def __getitem__(self, g: int) -> dict[str, np.ndarray]:
        g = int(g)
        epoch, r = divmod(g, self.rows_per_epoch)
        ids = self.docs[self._epoch(epoch)[r]]
        L = self.seq_len
        row = _empty_row(L)
        if ids.size > L:
            start = int(np.random.default_rng([self.seed, _CROP, g]).integers(0, ids.size - L + 1))
            ids = ids[start:start + L]
        n = ids.size
        row["tokens"][:n] = ids
        row["segment_ids"][:n] = 1
        row["positions"][:n] = np.arange(n, dtype=np.int32)
        return row
