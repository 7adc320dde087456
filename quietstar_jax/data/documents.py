"""Documents (strings) from local files: jsonl, plain text and parquet, in a fixed, sorted file order.

A record becomes a document through ``data.text_field`` (one field) or ``data.text_template`` (a
``str.format`` template over several fields, e.g. GSM8K's question + answer). Errors name the file and
line (jsonl) or row (parquet) so a bad record in a large download can be found.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
from typing import Iterator, Mapping

from quietstar_jax.data.config import resolve_local_files, template_fields
from quietstar_jax.errors import DataError

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")


def render_record(record: Mapping, text_field: str, text_template: str, where: str) -> str:
    """The document text of one record. ``where`` ("file:line") is only used in error messages."""
    if not isinstance(record, Mapping):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if text_template:
        try:
            return text_template.format_map({k: _as_str(v) for k, v in record.items()})
        except KeyError as e:
            raise DataError(f"{where}: data.text_template needs field {e.args[0]!r}; the record has "
                             f"{sorted(record)}") from None
    if text_field not in record:
        raise DataError(f"{where}: no field {text_field!r} (data.text_field); the record has {sorted(record)}")
    value = record[text_field]
    if value is None:
        return ""
    if not isinstance(value, (str, bytes)):
        raise DataError(f"{where}: field {text_field!r} is a {type(value).__name__}, expected text")
    return _as_str(value)


def _as_str(value):
    # tfds Text features arrive as bytes; json/parquet strings as str.
    return value.decode("utf-8") if isinstance(value, bytes) else value


def iter_local_documents(data_cfg) -> Iterator[str]:
    """Document strings of a local source (data.source in jsonl / text / parquet), in file order.

    Reads at most data.max_documents records (0 = all); empty documents are yielded too (the caller
    drops them after tokenising, so that max_documents counts source records).
    """
    files = resolve_local_files(data_cfg.path, data_cfg.source)
    read = {"jsonl": _jsonl_docs, "text": _text_docs, "parquet": _parquet_docs}[data_cfg.source]
    docs = itertools.chain.from_iterable(read(f, data_cfg) for f in files)
    return itertools.islice(docs, data_cfg.max_documents) if data_cfg.max_documents else docs


def local_files_fingerprint(data_cfg) -> list:
    """(path, size, mtime) of every input file: part of the cache key, so an edited file is re-read."""
    out = []
    for f in resolve_local_files(data_cfg.path, data_cfg.source):
        st = os.stat(f)
        out.append([f, st.st_size, st.st_mtime_ns])
    return out


def _jsonl_docs(path: str, data_cfg) -> Iterator[str]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
            yield render_record(record, data_cfg.text_field, data_cfg.text_template, where)


def _text_docs(path: str, data_cfg) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
    if data_cfg.text_unit == "file":
        yield text.strip()
        return
    for para in _PARAGRAPH_BREAK.split(text):
        if para.strip():
            yield para.strip()


def _parquet_docs(path: str, data_cfg) -> Iterator[str]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    wanted = template_fields(data_cfg.text_template) if data_cfg.text_template else [data_cfg.text_field]
    have = set(pf.schema_arrow.names)
    missing = [c for c in dict.fromkeys(wanted) if c not in have]
    if missing:
        raise DataError(f"{path}: no column(s) {missing} (data.text_field / data.text_template); "
                         f"columns: {sorted(have)}")
    row = 0
    for batch in pf.iter_batches(batch_size=1024, columns=list(dict.fromkeys(wanted))):
        for record in batch.to_pylist():
            yield render_record(record, data_cfg.text_field, data_cfg.text_template, f"{path}:row {row}")
            row += 1
