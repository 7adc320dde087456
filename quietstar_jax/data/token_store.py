"""Tokenised documents cached on disk as a tfds array_record dataset (written once, random access after).

Layout under ``<root>/tokenized/<key>/``:
  tokenized_docs/1.0.0/   tfds dataset, one record {"tokens": int32[n]} per non-empty document, in source
                          order (disable_shuffling), written by a GeneratorBasedBuilder without TensorFlow
  lengths.npy             int64[num_docs] token counts (packing needs them all up front)
  source.json             what the key stands for (for humans)

``key`` hashes (source, files or tfds dataset, text field/template, max_documents, tokenizer fingerprint),
so a second run with the same inputs reuses the store and any change re-tokenises into a new one.
tfds writes into an ``incomplete.*`` folder and renames it when done, so an interrupted preparation is
never mistaken for a finished one. Hosts that share one cache folder should prepare on one host first.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import tempfile
from typing import Callable, Iterable

import numpy as np
import tensorflow_datasets as tfds

from quietstar_jax.data.encoders import TextEncoder
from quietstar_jax.errors import EmptyCorpusError  # noqa: F401 - re-exported

_ENCODE_CHUNK = 512  # documents per encode_batch call while preparing
STORE_FORMAT = 1  # bump when the stored layout or the document -> tokens rule changes


def store_key(spec: dict) -> str:
    """Short stable hash of a JSON-able description of the corpus + tokenisation."""
    blob = json.dumps({"store_format": STORE_FORMAT, **spec}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class TokenizedDocs(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes encoder(text) of every non-empty document; keys are the running index, shuffling disabled,
    so record i is the i-th non-empty document."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, *, texts: Callable[[], Iterable[str]] | None = None, encoder: TextEncoder | None = None,
                 **kwargs):
        self._texts, self._encoder = texts, encoder
        self.lengths: list[int] = []
        super().__init__(**kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, description="quietstar_jax tokenised documents (cache)", disable_shuffling=True,
            features=tfds.features.FeaturesDict({"tokens": tfds.features.Tensor(shape=(None,), dtype=np.int32)}))

    # tfds prints "Downloading and preparing dataset ..." / "... downloaded and prepared" for every
    # preparation; for a cache of our own the caller reports the phase in one line instead.
    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        texts = iter(self._texts())
        index = 0
        while chunk := list(itertools.islice(texts, _ENCODE_CHUNK)):
            for ids in self._encoder.encode_many(chunk):
                if ids.size:  # an empty document carries nothing to learn and would break packing
                    self.lengths.append(int(ids.size))
                    yield index, {"tokens": ids}
                    index += 1
        if index == 0:  # tfds would fail with a bare AssertionError ("No examples were yielded")
            raise EmptyCorpusError("no document has any token (empty corpus, or every text is empty)")


class TokenStore:
    """Random access to a prepared store: len(), store[i] -> int32[n_i] raw token ids, .lengths int64[N]."""

    def __init__(self, store_dir: str):
        self.dir = store_dir
        self._source = TokenizedDocs(data_dir=store_dir, file_format="array_record").as_data_source(split="train")
        self.lengths = _load_lengths(store_dir, self._source)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i: int) -> np.ndarray:
        return self._source[int(i)]["tokens"]


def open_or_prepare(root: str, spec: dict, texts: Callable[[], Iterable[str]], encoder: TextEncoder,
                    what: str) -> TokenStore:
    """The store for ``spec`` under root, tokenising ``texts()`` into it first if it does not exist.

    what: human name of the corpus, used in errors. Raises EmptyCorpusError (a ValueError) if no
    document has any token; errors of ``texts()`` (a malformed record...) propagate unchanged.
    """
    store_dir = os.path.join(root, "tokenized", store_key(spec))
    os.makedirs(store_dir, exist_ok=True)
    with _quiet_tfds():
        builder = TokenizedDocs(texts=texts, encoder=encoder, data_dir=store_dir, file_format="array_record")
        prepared = builder.is_prepared()
        if not prepared:
            try:
                builder.download_and_prepare()
            except EmptyCorpusError as e:
                raise EmptyCorpusError(f"{what}: {e}") from None
    if not prepared:
        lengths = np.asarray(builder.lengths, np.int64)
        _atomic_write(os.path.join(store_dir, "lengths.npy"), lambda f: np.save(f, lengths))
        _atomic_write(os.path.join(store_dir, "source.json"),
                      lambda f: f.write(json.dumps(spec, indent=1, sort_keys=True, default=str).encode()))
    return TokenStore(store_dir)


@contextlib.contextmanager
def _quiet_tfds():
    """No tfds progress bars and no absl warnings about a store that does not exist yet ("has no
    dataset_info.json") while opening / preparing the cache."""
    from absl import logging as absl_logging

    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    tfds.disable_progress_bar()
    try:
        yield
    finally:
        absl_logging.set_verbosity(level)


def _load_lengths(store_dir: str, source) -> np.ndarray:
    path = os.path.join(store_dir, "lengths.npy")
    if os.path.exists(path):
        lengths = np.load(path)
        if lengths.shape == (len(source),):
            return lengths
    # Missing (a crash between tfds' rename and our write) or stale: recount once and keep it.
    lengths = np.asarray([source[i]["tokens"].size for i in range(len(source))], np.int64)
    _atomic_write(path, lambda f: np.save(f, lengths))
    return lengths


def _atomic_write(path: str, write: Callable) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
