"""Config -> row source -> per-host batches by step, and a resumable grain iterator over them.

Global batch at step s = rows [s*B, (s+1)*B) of the row source; host h of n takes the contiguous rows
[s*B + h*B/n, s*B + (h+1)*B/n). Batches are therefore a pure function of (data config, tokenizer, L, B,
step, host): resuming at step s needs nothing but s.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

import ml_collections
import numpy as np

from quietstar_jax.data.config import cache_root, check_batch, validate_data_config
from quietstar_jax.data.encoders import TextEncoder, as_encoder
from quietstar_jax.data.rows import CroppedRows, Documents, PackedRows

RowSource = PackedRows | CroppedRows


def build_row_source(data_cfg, encoder: TextEncoder, seq_len: int, cache_dir: str | None = None) -> RowSource:
    """rows[g] -> {"tokens", "positions", "segment_ids"}: int32 (seq_len,) for global row g >= 0.

    encoder: a TextEncoder (``hf_encoder(tok)``, ``byte_encoder()``), a tokenizer object with
    ``encode`` / ``bos_id`` / ``eos_id`` / ``fingerprint``, or a plain encode(text) -> ids.
    cache_dir: where tokenised stores go when data.cache_dir is empty (default: the shared cache root).
    The offline corpus always lives in data.cache_dir or the shared cache root (downloaded once).
    Validates the config first; then tokenises local / offline / tfds-pack sources once into the
    array_record cache (reused by later runs), or opens a tfds dataset for lazy tokenisation (tfds + crop).
    """
    validate_data_config(data_cfg)
    data_cfg = ml_collections.ConfigDict(data_cfg.to_dict() if hasattr(data_cfg, "to_dict") else dict(data_cfg))
    if not isinstance(seq_len, (int, np.integer)) or seq_len <= 0:
        raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
    enc = as_encoder(encoder)
    bos, eos = _special_id(enc.bos_id, data_cfg.add_bos, "bos"), _special_id(enc.eos_id, data_cfg.add_eos, "eos")
    corpus_root = cache_root(data_cfg)
    root = corpus_root if data_cfg.cache_dir or not cache_dir else os.path.abspath(os.path.expanduser(cache_dir))
    rows_cls = PackedRows if data_cfg.mode == "pack" else CroppedRows

    if data_cfg.source == "tfds":
        from quietstar_jax.data.tfds_text import TfdsTexts

        texts = TfdsTexts(data_cfg)
        if len(texts) == 0:
            raise ValueError(f"data.tfds_name={data_cfg.tfds_name!r} split {data_cfg.split!r} holds no records")
        if data_cfg.mode == "crop":  # one document per row: tokenise in the reader threads, no preparation
            docs = Documents(len(texts), lambda i: enc.encode(texts[i]), None, bos, eos)
            return rows_cls(docs, int(seq_len), data_cfg.seed, data_cfg.shuffle)
        spec = {"source": "tfds", "tfds": texts.fingerprint}
        what = f"data.tfds_name={data_cfg.tfds_name!r} split {data_cfg.split!r}"

        def read_texts():
            return (texts[i] for i in range(len(texts)))
    else:
        from quietstar_jax.data.documents import iter_local_documents, local_files_fingerprint

        if data_cfg.source == "offline_math":
            from quietstar_jax.assets.math_corpus import materialize_math_corpus

            data_cfg.update(source="jsonl", path=materialize_math_corpus(corpus_root), text_field="text", text_template="")
        spec = {"source": data_cfg.source, "files": local_files_fingerprint(data_cfg), "text_unit": data_cfg.text_unit}
        what = f"data.path={data_cfg.path!r}"

        def read_texts():
            return iter_local_documents(data_cfg)
    spec.update(text_field=data_cfg.text_field, text_template=data_cfg.text_template, max_documents=data_cfg.max_documents,
                tokenizer=enc.cache_fingerprint())
    # Imported here: it imports tensorflow_datasets (~1 s), which crop-from-tfds and config users skip.
    from quietstar_jax.data.token_store import open_or_prepare

    store = open_or_prepare(root, spec, read_texts, enc, what)
    return rows_cls(Documents(len(store), store.__getitem__, store.lengths, bos, eos), int(seq_len),
                    data_cfg.seed, data_cfg.shuffle)


def batch_at(rows: RowSource, step: int, global_batch: int, process_index: int = 0,
             process_count: int = 1) -> dict[str, np.ndarray]:
    """This host's share of the global batch at ``step``: {"tokens", "positions", "segment_ids"}, each
    int32 (global_batch // process_count, L)."""
    b = check_batch(global_batch, process_count, process_index)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    first = step * global_batch + process_index * b
    items = [rows[first + j] for j in range(b)]
    return {k: np.stack([it[k] for it in items]) for k in ("tokens", "positions", "segment_ids")}


def iterate_batches(rows: RowSource, global_batch: int, process_index: int = 0, process_count: int = 1,
                    start_step: int = 0, read_threads: int = 2, prefetch: int = 2):
    """A grain DatasetIterator whose k-th ``next()`` is ``batch_at(rows, start_step + k, ...)``.

    Batches are assembled ahead in ``read_threads`` threads, ``prefetch`` batches deep. Its state is
    ``{"next_index": step of the next batch}`` (``get_state`` / ``set_state``, or orbax's grain
    checkpoint handler), but since batches derive from the step alone, passing the restored training
    step as start_step resumes exactly without any iterator checkpoint.
    """
    import grain

    check_batch(global_batch, process_count, process_index)
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    # Element s of this (practically infinite) random-access dataset is the batch of step s.
    ds = grain.MapDataset.range(sys.maxsize).map(
        lambda step: batch_at(rows, step, global_batch, process_index, process_count))
    it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch)))
    it.set_state({"next_index": int(start_step)})
    return it


def make_iterator(data_cfg, encoder: TextEncoder, seq_len: int, global_batch: int, process_index: int = 0,
                  process_count: int = 1, start_step: int = 0, cache_dir: str | None = None):
    """``iterate_batches(build_row_source(data_cfg, encoder, seq_len), ...)`` with the config's
    read_threads / prefetch. Checks the batch split before any data work."""
    check_batch(global_batch, process_count, process_index)
    rows = build_row_source(data_cfg, encoder, seq_len, cache_dir)
    return iterate_batches(rows, global_batch, process_index, process_count, start_step,
                           read_threads=data_cfg["read_threads"], prefetch=data_cfg["prefetch"])


class BatchSource:
    """``batch_at(step)`` for a training loop that asks by step, with background prefetch.

    Consecutive steps (s, s+1, ...) come from a grain iterator running ahead (data.prefetch batches,
    data.read_threads threads). Looking back (a step already served, e.g. to show thoughts on the
    current batch) is computed directly; a jump forward restarts the iterator there. Every answer equals
    ``batch_at(rows, step, ...)``: (B // process_count, L) int32 arrays.
    """

    def __init__(self, rows: RowSource, global_batch: int, process_index: int = 0, process_count: int = 1,
                 read_threads: int = 2, prefetch: int = 2):
        self.per_host_batch = check_batch(global_batch, process_count, process_index)
        self.rows, self.global_batch = rows, global_batch
        self.process_index, self.process_count = process_index, process_count
        self._read_threads, self._prefetch = read_threads, prefetch
        self._lock = threading.Lock()
        self._it, self._next = None, None

    def batch_at(self, step: int) -> dict[str, np.ndarray]:
        with self._lock:
            if self._prefetch and (self._next is None or step >= self._next):
                if step != self._next:
                    self._it = iterate_batches(self.rows, self.global_batch, self.process_index,
                                               self.process_count, step, self._read_threads, self._prefetch)
                self._next = step + 1
                return next(self._it)
        return batch_at(self.rows, step, self.global_batch, self.process_index, self.process_count)


def make_batch_source(data_cfg, tokenizer, *, seq_len: int, global_batch_size: int, process_index: int = 0,
                      process_count: int = 1, cache_dir: str | None = None) -> BatchSource:
    """A BatchSource over ``build_row_source(data_cfg, tokenizer, seq_len, cache_dir)``."""
    check_batch(global_batch_size, process_count, process_index)
    rows = build_row_source(data_cfg, tokenizer, seq_len, cache_dir)
    return BatchSource(rows, global_batch_size, process_index, process_count,
                       read_threads=data_cfg["read_threads"], prefetch=data_cfg["prefetch"])


_warned: set = set()


def _special_id(token_id, wanted: bool, name: str):
    """The id to add, or None. A tokenizer without one (the byte demo vocabulary) adds nothing: the data
    config does not know which tokenizer a run picks, so this warns instead of failing."""
    if not wanted:
        return None
    if token_id is None:
        if name not in _warned:
            _warned.add(name)
            logging.warning("data.add_%s=True but the tokenizer has no %s id: documents get no %s "
                            "(segment_ids still separate them)", name, name.upper(), name.upper())
        return None
    return int(token_id)
