"""HF export/import of a Quiet-STaR model: backbone + thought-token rows + mixing head.

    out = save_quietstar_hf("/path/out", cfg, params, qs, tokenizer=tok, dtype="bfloat16")
    cfg, params, qs, raw = load_quietstar_hf("/path/out")          # exact inverse (fp32 exports)

Folder layout (a standard HF folder; stock ``AutoModelForCausalLM.from_pretrained`` loads it):

    config.json, model.safetensors[.index.json]   the backbone, vocab extended by the thought rows
    quietstar.safetensors                          sidecar (always float32, exact):
        talk_head.0.0.weight (H, 2H)   talk_head.0.0.bias (H,)     names of the reference's
        talk_head.0.2.weight (H, H)    talk_head.0.2.bias (H,)     nn.Sequential talk_head.0.{0,2,4}
        talk_head.0.4.weight (1, H)    [talk_head.0.4.bias (1,)   only with mixing_head_last_bias]
        thought_embeddings (2, H)      raw: [start; end], stored / embedding_scale (as in our params)
        original_rows.model.embed_tokens.weight (n, H)   only if thought ids are inside the table:
        original_rows.lm_head.weight (n, H)              the rows the export overwrote (untied only)
        adapters.layers.{i}.{self_attn|mlp}.{proj}.lora_A.weight (r, in)   thought adapters (adapter_rank
        adapters.layers.{i}.{self_attn|mlp}.{proj}.lora_B.weight (out, r)  r > 0 only; PEFT's names)
    quietstar_config.json          QuietStarConfig fields, token strings, original/exported vocab size
    generation_config.json         with ``suppress_tokens`` = [start_id, end_id]
    tokenizer files                if a tokenizer was given (with the two special tokens)

Vocabulary rows
---------------
* Thought ids >= vocab_size: the embedding table (and an untied lm_head) grows to max(id) + 1 rows
  and config.json's vocab_size is updated; any gap rows between the old size and the ids are zeros.
  Thought ids inside the table (a padded table): those rows are overwritten, and the originals are
  kept in the sidecar so the round trip is lossless. Our model never uses those rows (embeddings are
  replaced, logits masked), so the originals only matter for bit-exactness.
* Embedding rows = thought_embeddings * embedding_scale: what our model feeds at those ids, so stock
  HF on a sequence containing the thought tokens computes exactly our base-stream hidden states.
* lm_head rows (untied): ZEROS. Our model masks the thought logits to -inf; a Llama-family lm_head has
  no bias, so no weight row can express -inf for every hidden state (the sign of w.h depends on h).
  A zero row gives the logit 0 for every input: neutral, input-independent, never learned, and easy to
  recognise. The -inf of our model is reproduced at generation time by ``suppress_tokens`` in
  generation_config.json (HF's SuppressTokensLogitsProcessor). For scoring, use logits[..., :V0]
  (V0 = quietstar_config.json "original_vocab_size") and mask overwritten ids: that is our model.
* Tied embeddings: the lm_head IS the embedding table, so the thought columns' logits are
  h . (embedding_scale * thought_embedding), an ordinary-sized logit (the embeddings start as the
  mean embedding of "---" and typically stay similar): a stock model may assign the thought tokens
  real probability. ``suppress_tokens`` still keeps ``generate`` from emitting them; raw logits over
  the full vocab differ from ours exactly in those columns. Untying on export would fix this at the
  cost of a second V x H matrix and a different architecture, so we don't.

The authors' last talk-head layer has no bias (``nn.Linear(H, 1, bias=False)``), nor has ours by
default; ``talk_head.0.4.bias`` is written iff ``QuietStarConfig.mixing_head_last_bias``. Exports
written before that field existed always carry the bias: the loader then sets the field from the
sidecar, so the exported function is kept.

Every process must call ``save_quietstar_hf`` (gathering sharded arrays is collective); process 0
writes. The folder appears atomically (the sidecar files ride along with ``save_hf_folder``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import tempfile
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from quietstar_jax.errors import CheckpointCorruptError, ConfigError, PathNotFoundError
from quietstar_jax.hf.io import (DTYPES, INDEX_NAME, SINGLE_NAME, gather_to_host, read_hf_config, save_hf_folder,
                                 tensor_files)
from quietstar_jax.hf.mapping import CheckpointMismatchError, check_names_and_shapes, hf_names, hf_to_params
from quietstar_jax.model.config import ModelConfig
from quietstar_jax.quietstar.config import QuietStarConfig
from quietstar_jax.quietstar.tokens import END_TOKEN, START_TOKEN

SIDECAR_NAME = "quietstar.safetensors"
CONFIG_NAME = "quietstar_config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
FORMAT = "quietstar_jax/hf-export"
FORMAT_VERSION = 1
HEAD_LAYERS = ("0", "2", "4")
EMBED_ROWS = "original_rows.model.embed_tokens.weight"
HEAD_ROWS = "original_rows.lm_head.weight"

__all__ = ["save_quietstar_hf", "load_quietstar_hf", "quietstar_config_to_dict", "quietstar_config_from_dict",
           "SIDECAR_NAME", "CONFIG_NAME"]


# ----------------------------------------------------------------------------- QuietStarConfig <-> dict


def quietstar_config_to_dict(qs: QuietStarConfig) -> dict:
    return dataclasses.asdict(qs)


def quietstar_config_from_dict(d: dict, source: str = "quietstar config") -> QuietStarConfig:
    """Builds a QuietStarConfig; unknown fields (a newer writer) are ignored with a warning."""
    if not isinstance(d, dict):
        raise CheckpointMismatchError(f"{source}: expected a dict of QuietStarConfig fields, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(QuietStarConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        warnings.warn(f"{source}: ignoring unknown QuietStarConfig fields {unknown}")
    return QuietStarConfig(**{k: v for k, v in d.items() if k in known})


# ----------------------------------------------------------------------------- helpers


LAST_BIAS = "talk_head.0.4.bias"


def _head_spec(H: int, last_bias: bool) -> dict[str, tuple[int, ...]]:
    """{sidecar name: shape} of the mixing head, the authors' names."""
    spec = {"talk_head.0.0.weight": (H, 2 * H), "talk_head.0.0.bias": (H,),
            "talk_head.0.2.weight": (H, H), "talk_head.0.2.bias": (H,),
            "talk_head.0.4.weight": (1, H)}
    if last_bias:
        spec[LAST_BIAS] = (1,)
    return spec


def _adapter_spec(cfg: ModelConfig, qs: QuietStarConfig) -> dict[str, tuple[int, ...]]:
    """{sidecar name: per-layer shape} of the thought adapters (none without adapter_rank)."""
    if not qs.adapter_rank:
        return {}
    from quietstar_jax.model.lora import adapter_spec

    out = {}
    for (mod, t, ab), (shape, _) in adapter_spec(cfg, qs.adapter_rank, qs.adapter_target_names).items():
        for i in range(cfg.num_hidden_layers):
            out[f"adapters.layers.{i}.{mod}.{t}.{ab}.weight"] = shape[1:]
    return out


def _adapters_to_sidecar(adapters: dict) -> dict:
    """Stacked adapter tree -> {sidecar name: (r, in) / (out, r) float32 array per layer}."""
    out = {}
    for mod, targets in adapters.items():
        for t, ab in targets.items():
            for name, stacked in ab.items():
                for i in range(stacked.shape[0]):
                    out[f"adapters.layers.{i}.{mod}.{t}.{name}.weight"] = stacked[i]
    return out


def _adapters_from_sidecar(cfg: ModelConfig, qs: QuietStarConfig, side: dict) -> dict:
    from quietstar_jax.model.lora import adapter_spec

    tree: dict = {}
    for (mod, t, ab) in adapter_spec(cfg, qs.adapter_rank, qs.adapter_target_names):
        layers = [side[f"adapters.layers.{i}.{mod}.{t}.{ab}.weight"] for i in range(cfg.num_hidden_layers)]
        tree.setdefault(mod, {}).setdefault(t, {})[ab] = np.stack(layers)
    return tree


def _check_quietstar_params(cfg: ModelConfig, params: dict, qs: QuietStarConfig) -> None:
    H = cfg.hidden_size
    if "quietstar" not in params:
        raise CheckpointMismatchError('params has no "quietstar" subtree (thought embeddings + talk head); use '
                         'save_hf_folder for a plain backbone, or add them with init_quietstar_params')
    q = params["quietstar"]
    problems = []
    te = q.get("thought_embeddings")
    if te is None:
        problems.append('params["quietstar"]["thought_embeddings"] is missing')
    elif tuple(te.shape) != (2, H):
        problems.append(f'params["quietstar"]["thought_embeddings"] has shape {tuple(te.shape)}, expected (2, {H})')
    head = q.get("talk_head")
    if not isinstance(head, dict) or set(head) != set(HEAD_LAYERS):
        got = sorted(head) if isinstance(head, dict) else type(head).__name__
        problems.append(f'params["quietstar"]["talk_head"] must have layers {list(HEAD_LAYERS)}, got {got}')
    else:
        for name, shape in _head_spec(H, qs.mixing_head_last_bias).items():
            layer, kind = name.split(".")[2], name.split(".")[3]
            leaf = head[layer].get(kind) if isinstance(head[layer], dict) else None
            path = f'params["quietstar"]["talk_head"]["{layer}"]["{kind}"]'
            if leaf is None:
                problems.append(f"{path} is missing")
            elif tuple(leaf.shape) != shape:
                problems.append(f"{path} has shape {tuple(leaf.shape)}, expected {shape} (hidden_size {H})")
        if not qs.mixing_head_last_bias and isinstance(head.get("4"), dict) and "bias" in head["4"]:
            problems.append('params["quietstar"]["talk_head"]["4"]["bias"] exists but the QuietStarConfig has '
                            'mixing_head_last_bias=False')
    if problems:
        raise CheckpointMismatchError("cannot export Quiet-STaR params: " + "; ".join(problems))


def _check_ids(qs: QuietStarConfig) -> None:
    if qs.start_id < 0 or qs.end_id < 0:
        raise CheckpointMismatchError(f"QuietStarConfig start_id/end_id are unset ({qs.start_id}, {qs.end_id}); set them "
                         "from the tokenizer (quietstar_jax.quietstar.tokens.add_thought_tokens)")
    if qs.start_id == qs.end_id:
        raise CheckpointMismatchError(f"start_id and end_id are both {qs.start_id}")


def _prepare_tokenizer(tokenizer, qs: QuietStarConfig, vocab_rows: int):
    """The tokenizer to save: the thought tokens added (on a copy) if absent; ids checked."""
    vocab = tokenizer.get_vocab()
    if START_TOKEN not in vocab or END_TOKEN not in vocab:
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.add_special_tokens({"additional_special_tokens": [START_TOKEN, END_TOKEN]},
                                     replace_extra_special_tokens=False)
    ids = [int(i) for i in tokenizer.convert_tokens_to_ids([START_TOKEN, END_TOKEN])]
    if ids != [qs.start_id, qs.end_id]:
        raise CheckpointMismatchError(f"tokenizer maps {START_TOKEN!r}, {END_TOKEN!r} to ids {ids}, but the QuietStarConfig "
                         f"says start_id={qs.start_id}, end_id={qs.end_id}: pass the tokenizer the model was "
                         "trained with (after add_thought_tokens)")
    if len(tokenizer) > vocab_rows:
        raise CheckpointMismatchError(f"tokenizer has {len(tokenizer)} tokens but the exported embedding table has only "
                         f"{vocab_rows} rows: ids >= {vocab_rows} would crash the exported model")
    return tokenizer


def _extend_table(table, new_rows: int, ids, values):
    """table (V0, H) -> (new_rows, H): zero-padded, rows `ids` replaced by `values` (jit: works on sharded
    multi-host arrays too)."""
    dt = jnp.result_type(table.dtype, values.dtype)

    @jax.jit
    def f(t, v):
        out = jnp.zeros((new_rows, t.shape[1]), dt).at[: t.shape[0]].set(t.astype(dt))
        return out.at[jnp.asarray(ids, jnp.int32)].set(v.astype(dt)) if len(ids) else out

    return f(table, values)


def _generation_config(cfg: ModelConfig, ids: list[int], src: str | None) -> dict:
    gen = {}
    if src and os.path.exists(src):
        with open(src) as f:
            gen = json.load(f)
    else:
        for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(cfg, k) is not None:
                gen[k] = getattr(cfg, k)
    gen["suppress_tokens"] = sorted(set(gen.get("suppress_tokens") or []) | set(ids))
    return gen


# ----------------------------------------------------------------------------- save


def save_quietstar_hf(folder: str, cfg: ModelConfig, params: dict, qs: QuietStarConfig, tokenizer=None,
                      dtype: str = "bfloat16", base_config: dict | None = None,
                      max_shard_bytes: int = 5 * 2**30, extra_files: dict[str, str] | None = None,
                      byte_tokenizer: bool = False) -> str:
    """Writes a Quiet-STaR model as an HF folder stock transformers loads (see the module docstring).

    params: our tree incl. params["quietstar"] = {"thought_embeddings": (2, H), "talk_head": {...}}.
    qs: start_id/end_id must be set. tokenizer: an HF tokenizer; the thought tokens are added to a copy
    if absent, and their ids must equal qs.start_id/end_id (ValueError otherwise).
    dtype: backbone tensors (float32 | bfloat16 | float16); the sidecar is always float32.
    base_config / max_shard_bytes / extra_files: as for save_hf_folder (a generation_config.json among
    extra_files is kept, with the thought ids added to its suppress_tokens).
    Returns the folder path. Every process must call this; process 0 writes.
    """
    if dtype not in DTYPES:
        raise ConfigError(f"export dtype {dtype!r} not in {sorted(DTYPES)}")
    _check_ids(qs)
    _check_quietstar_params(cfg, params, qs)
    V0, H = cfg.vocab_size, cfg.hidden_size
    ids = [qs.start_id, qs.end_id]
    V1 = max(V0, max(ids) + 1)
    inside = [i for i in ids if i < V0]
    if tokenizer is not None:
        tokenizer = _prepare_tokenizer(tokenizer, qs, V1)

    # ---- backbone with extended / overwritten rows (jax ops: collective on multi-host arrays)
    q = params["quietstar"]
    te = jnp.asarray(q["thought_embeddings"])
    rows = te * qs.embedding_scale  # exactly what embed_with_thoughts feeds (before the compute cast)
    emb = params["model"]["embed_tokens"]["weight"]
    orig = {EMBED_ROWS: jnp.take(jnp.asarray(emb), jnp.asarray(inside, jnp.int32), axis=0)} if inside else {}
    out_params = {k: v for k, v in params.items() if k not in ("quietstar", "model", "lm_head")}
    out_params["model"] = {**params["model"], "embed_tokens": {"weight": _extend_table(emb, V1, ids, rows)}}
    if not cfg.tie_word_embeddings:
        head = params["lm_head"]["weight"]
        if inside:
            orig[HEAD_ROWS] = jnp.take(jnp.asarray(head), jnp.asarray(inside, jnp.int32), axis=0)
        out_params["lm_head"] = {"weight": _extend_table(head, V1, ids, jnp.zeros((2, H), jnp.float32))}
    cfg1 = cfg.replace(vocab_size=V1)

    # ---- sidecar (small: gathered to every host, written by process 0)
    side_src = {"thought_embeddings": q["thought_embeddings"], "head": q["talk_head"], "orig": orig,
                "adapters": q.get("adapters", {}) if qs.adapter_rank else {}}
    side_host = gather_to_host(side_src)
    if jax.process_index() != 0:
        save_hf_folder(folder, cfg1, out_params, dtype=dtype, max_shard_bytes=max_shard_bytes,
                       base_config=base_config)
        return folder

    sidecar = {"thought_embeddings": side_host["thought_embeddings"]}
    for name in _head_spec(H, qs.mixing_head_last_bias):
        layer, kind = name.split(".")[2], name.split(".")[3]
        sidecar[name] = side_host["head"][layer][kind]
    sidecar.update(side_host["orig"])
    sidecar.update(_adapters_to_sidecar(side_host["adapters"]))
    sidecar = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in sidecar.items()}

    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "quietstar": quietstar_config_to_dict(qs),
        "start_token": START_TOKEN,
        "end_token": END_TOKEN,
        "start_id": qs.start_id,
        "end_id": qs.end_id,
        "original_vocab_size": V0,
        "vocab_size": V1,
        "overwritten_ids": inside,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "embedding_rows": "thought_embeddings * embedding_scale",
        "lm_head_rows": "tied: equal to the embedding rows" if cfg.tie_word_embeddings else "zeros",
        "sidecar": SIDECAR_NAME,
        # No tokenizer files: the model reads UTF-8 bytes (quietstar_jax's tiny demo vocabulary).
        **({"tokenizer": "utf-8 bytes"} if byte_tokenizer and tokenizer is None else {}),
    }

    folder = os.path.abspath(folder)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=".tmp-quietstar-", dir=parent)
    try:
        files = dict(extra_files or {})
        save_file(sidecar, os.path.join(stage, SIDECAR_NAME), metadata={"format": "pt"})
        with open(os.path.join(stage, CONFIG_NAME), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        gen = _generation_config(cfg, ids, files.get(GENERATION_CONFIG_NAME))
        with open(os.path.join(stage, GENERATION_CONFIG_NAME), "w") as f:
            json.dump(gen, f, indent=2, sort_keys=True)
        # One shard => save_hf_folder writes no index; the export always has one, listing exactly the
        # backbone tensors (readers never need to scan the folder, where the sidecar also lives).
        names = hf_names(cfg1)
        total = sum(int(np.prod(shape)) * np.dtype(DTYPES[dtype]).itemsize for _, shape, _ in names.values())
        if total <= max_shard_bytes:
            with open(os.path.join(stage, INDEX_NAME), "w") as f:
                json.dump({"metadata": {"total_size": total},
                           "weight_map": {n: SINGLE_NAME for n in sorted(names)}}, f, indent=2)
        if tokenizer is not None:
            tok_dir = os.path.join(stage, "tokenizer")
            tokenizer.save_pretrained(tok_dir)
            for fn in os.listdir(tok_dir):
                files[fn] = os.path.join(tok_dir, fn)
        for fn in os.listdir(stage):
            if os.path.isfile(os.path.join(stage, fn)):
                files[fn] = os.path.join(stage, fn)
        return save_hf_folder(folder, cfg1, out_params, dtype=dtype, max_shard_bytes=max_shard_bytes,
                              base_config=base_config, extra_files=files)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# ----------------------------------------------------------------------------- load


def _read_meta(folder: str) -> dict:
    path = os.path.join(folder, CONFIG_NAME)
    if not os.path.exists(path):
        raise PathNotFoundError(f"{folder} has no {CONFIG_NAME}: not a Quiet-STaR export (a plain HF model "
                                "loads with quietstar_jax.hf.load_hf_folder)")
    with open(path) as f:
        try:
            meta = json.load(f)
        except json.JSONDecodeError as e:
            raise CheckpointCorruptError(f"{path} is not valid JSON: {e}") from e
    if meta.get("format") != FORMAT:
        raise CheckpointMismatchError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointMismatchError(f"{path}: format_version {meta['format_version']} is newer than this reader "
                         f"({FORMAT_VERSION})")
    for key in ("quietstar", "original_vocab_size", "vocab_size"):
        if key not in meta:
            raise CheckpointMismatchError(f"{path} is missing required field {key!r}")
    return meta


def _check_sidecar(path: str, tensors: dict, H: int, inside: list[int], tied: bool, last_bias: bool,
                   adapters: dict | None = None) -> None:
    expected = dict(_head_spec(H, last_bias), **(adapters or {}))
    expected["thought_embeddings"] = (2, H)
    if inside:
        expected[EMBED_ROWS] = (len(inside), H)
        if not tied:
            expected[HEAD_ROWS] = (len(inside), H)
    missing = sorted(n for n in expected if n not in tensors)
    extra = sorted(n for n in tensors if n not in expected)
    bad = [f"{n}: sidecar has {tuple(tensors[n].shape)}, expected {expected[n]}"
           for n in sorted(expected) if n in tensors and tuple(tensors[n].shape) != expected[n]]
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected tensors: {', '.join(extra)}")
    if bad:
        problems.append("wrong shapes: " + "; ".join(bad))
    if problems:
        raise CheckpointMismatchError(f"{path} does not match the model (hidden {H}, "
                                      f"{len(inside)} thought ids inside the table): " + " | ".join(problems))


def load_quietstar_hf(folder: str, **runtime) -> tuple[ModelConfig, dict, QuietStarConfig, dict]:
    """Inverse of save_quietstar_hf: (cfg, params, qs, raw config).

    cfg / params describe the backbone with its original vocab_size (rows added by the export are
    dropped, overwritten rows restored from the sidecar); params["quietstar"] holds the thought
    embeddings and talk head (float32 numpy). raw is config.json with vocab_size restored, so it can be
    passed on as base_config / a params-checkpoint config. runtime: ModelConfig runtime fields.
    """
    folder = os.path.abspath(folder)
    raw = read_hf_config(folder)
    meta = _read_meta(folder)
    qs = quietstar_config_from_dict(meta["quietstar"], f"{folder}/{CONFIG_NAME}")
    side_path = os.path.join(folder, meta.get("sidecar", SIDECAR_NAME))
    if not os.path.exists(side_path):
        raise PathNotFoundError(f"{folder} has {CONFIG_NAME} but its sidecar {os.path.basename(side_path)} "
                                "(talk head + thought embeddings) is missing")
    cfg1 = ModelConfig.from_hf_dict(raw, **runtime)
    V0, V1 = int(meta["original_vocab_size"]), int(meta["vocab_size"])
    if cfg1.vocab_size != V1:
        raise CheckpointMismatchError(f"config.json vocab_size is {cfg1.vocab_size} but {CONFIG_NAME} records an "
                                      f"export with {V1} rows (was config.json or the model resized?)")
    ids = [qs.start_id, qs.end_id]
    if min(ids) < 0 or max(ids) >= V1 or V0 > V1:
        raise CheckpointMismatchError(f"{CONFIG_NAME}: thought ids {ids} / original vocab {V0} do not fit the "
                                      f"exported table of {V1} rows")
    inside = [i for i in ids if i < V0]
    if list(meta.get("overwritten_ids", inside)) != inside:
        raise CheckpointMismatchError(f"{CONFIG_NAME}: overwritten_ids {meta.get('overwritten_ids')} disagree "
                                      f"with start/end ids {ids} and original vocab {V0}")

    files = tensor_files(folder)
    handles = {}
    try:
        for fn in sorted(set(files.values())):
            handles[fn] = safe_open(fn, "np")
        shapes = {n: tuple(handles[fn].get_slice(n).get_shape()) for n, fn in files.items()}
        check_names_and_shapes(cfg1, shapes)
        params = hf_to_params(cfg1, lambda n: handles[files[n]].get_tensor(n))
    finally:
        handles.clear()

    side = load_file(side_path)
    H = cfg1.hidden_size
    if "mixing_head_last_bias" not in meta["quietstar"]:  # written before the field existed
        qs = qs.replace(mixing_head_last_bias=LAST_BIAS in side)
    _check_sidecar(side_path, side, H, inside, cfg1.tie_word_embeddings, qs.mixing_head_last_bias,
                   _adapter_spec(cfg1, qs))
    side = {k: np.asarray(v, np.float32) for k, v in side.items()}
    te = side["thought_embeddings"]

    emb = params["model"]["embed_tokens"]["weight"]
    expected = (te * np.float32(qs.embedding_scale)).astype(np.float32)
    file_dtype = DTYPES.get(str(raw.get("dtype") or raw.get("torch_dtype") or "float32"), np.float32)
    if not np.array_equal(emb[ids], expected.astype(file_dtype).astype(np.float32)):
        warnings.warn(f"{folder}: the embedding rows of the thought ids differ from {SIDECAR_NAME} "
                      "thought_embeddings * embedding_scale (model changed after export?); using the sidecar")
    new_emb = np.ascontiguousarray(emb[:V0])
    if inside:
        new_emb[inside] = side[EMBED_ROWS]
    params["model"]["embed_tokens"]["weight"] = new_emb
    if not cfg1.tie_word_embeddings:
        head = np.ascontiguousarray(params["lm_head"]["weight"][:V0])
        if inside:
            head[inside] = side[HEAD_ROWS]
        params["lm_head"]["weight"] = head
    talk = {}
    for name in _head_spec(H, qs.mixing_head_last_bias):
        layer, kind = name.split(".")[2], name.split(".")[3]
        talk.setdefault(layer, {})[kind] = side[name]
    params["quietstar"] = {"thought_embeddings": te, "talk_head": talk}
    if qs.adapter_rank:
        params["quietstar"]["adapters"] = _adapters_from_sidecar(cfg1, qs, side)
    raw = dict(raw)
    raw["vocab_size"] = V0
    return cfg1.replace(vocab_size=V0), params, qs, raw
