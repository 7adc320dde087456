"""Read and write HF model folders: config.json + safetensors (single file or sharded with an index).

    cfg, params, raw_config = load_hf_folder("/path/to/hf")          # params: numpy float32 tree
    save_hf_folder("/path/out", cfg, params, dtype="bfloat16")       # process 0 writes, atomically

Writing goes to a temporary sibling folder that is renamed into place at the end, so an interrupted
export never leaves a half-written model where a complete one is expected.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import jax
import ml_dtypes
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from quietstar_jax.errors import CheckpointCorruptError, ConfigError, PathNotFoundError
from quietstar_jax.hf.mapping import CheckpointMismatchError, check_names_and_shapes, hf_to_params, params_to_hf
from quietstar_jax.model.config import ModelConfig

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
# Fields that describe where a config or tokenizer was loaded from on the machine that wrote it, not
# the model: never written into an export (it would be pushed to a hub as it is).
LOCAL_CONFIG_KEYS = ("_name_or_path", "_model_name_or_path", "_commit_hash")
LOCAL_TOKENIZER_KEYS = ("is_local", "local_files_only", "name_or_path", "_commit_hash")


def clean_tokenizer_config(path: str) -> None:
    """Drops the machine-local fields transformers' save_pretrained writes into tokenizer_config.json."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        d = json.load(f)
    if any(k in d for k in LOCAL_TOKENIZER_KEYS):
        with open(path, "w") as f:
            json.dump({k: v for k, v in d.items() if k not in LOCAL_TOKENIZER_KEYS}, f, indent=2, ensure_ascii=False)
            f.write("\n")


def _publishable(folder: str) -> None:
    """Ordinary permissions for a folder made with mkdtemp (0700) and its files: readable by others
    as the umask allows, like any folder a user creates."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(folder, 0o777 & ~mask)
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~mask)


def tensor_files(folder: str) -> dict[str, str]:
    """{tensor name: file path} of the model weights: from the index, else from the folder's
    model*.safetensors files (HF's names: model.safetensors, model-00001-of-00002.safetensors). Other
    .safetensors files (a Quiet-STaR sidecar, Mistral's consolidated.safetensors) are not weights of
    the transformers model and are never read as such."""
    index = os.path.join(folder, INDEX_NAME)
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointMismatchError(f"{index} has no 'weight_map'")
        files = {n: os.path.join(folder, fn) for n, fn in weight_map.items()}
        for fn in sorted(set(files.values())):
            if not os.path.exists(fn):
                raise PathNotFoundError(f"{index} lists {os.path.basename(fn)}, which is missing from {folder}")
        return files
    shards = sorted(fn for fn in os.listdir(folder) if fn.startswith("model") and fn.endswith(".safetensors"))
    if not shards:
        raise PathNotFoundError(f"no *.safetensors files of the model (model*.safetensors) in {folder} "
                                "(PyTorch .bin checkpoints are not supported: re-save with "
                                "save_pretrained(safe_serialization=True))")
    files = {}
    for fn in shards:
        with safe_open(os.path.join(folder, fn), "np") as f:
            for n in f.keys():
                files[n] = os.path.join(folder, fn)
    return files


def read_hf_config(folder: str) -> dict:
    if not os.path.isdir(folder):
        raise PathNotFoundError(f"HF model folder not found: {folder}")
    path = os.path.join(folder, "config.json")
    if not os.path.exists(path):
        raise PathNotFoundError(f"{folder} has no config.json")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise CheckpointCorruptError(f"{path} is not valid JSON: {e}") from e


def load_hf_folder(folder: str, place=None, **runtime) -> tuple[ModelConfig, dict, dict]:
    """Returns (ModelConfig, params, raw config.json dict). Params are float32 numpy arrays unless
    `place(path, array)` moves each leaf elsewhere (e.g. onto sharded devices)."""
    raw = read_hf_config(folder)
    cfg = ModelConfig.from_hf_dict(raw, **runtime)
    files = tensor_files(folder)
    handles: dict[str, object] = {}
    shapes = {}
    try:
        for fn in sorted(set(files.values())):
            handles[fn] = safe_open(fn, "np")
        for name, fn in files.items():
            shapes[name] = tuple(handles[fn].get_slice(name).get_shape())
        check_names_and_shapes(cfg, shapes)
        params = hf_to_params(cfg, lambda n: handles[files[n]].get_tensor(n), place=place)
    finally:
        handles.clear()
    return cfg, params, raw


def gather_to_host(params):
    """Every leaf as a host numpy array (works for multi-host sharded arrays too)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        params = multihost_utils.process_allgather(params, tiled=True)
    return jax.tree.map(np.asarray, params)


def save_hf_folder(folder: str, cfg: ModelConfig, params: dict, dtype: str = "bfloat16",
                   max_shard_bytes: int = 5 * 2**30, base_config: dict | None = None,
                   extra_files: dict[str, str] | None = None) -> str:
    """Writes `params` as an HF folder loadable by stock transformers. Returns the folder path.

    dtype: float32 | bfloat16 | float16 (tensors and config "dtype"). max_shard_bytes: shard size;
    an index is written whenever there is more than one shard. base_config: a config.json dict whose
    extra fields (tokenizer ids, generation settings...) are kept; architecture fields come from cfg.
    extra_files: {name in folder: source path} copied along (tokenizer files, etc.).
    Every process must call this (gathering is collective); only process 0 writes.
    """
    if dtype not in DTYPES:
        raise ConfigError(f"export dtype {dtype!r} not in {sorted(DTYPES)}")
    host = gather_to_host(params)
    if jax.process_index() != 0:
        return folder
    folder = os.path.abspath(folder)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=parent)
    try:
        shards: list[dict[str, np.ndarray]] = [{}]
        size = 0
        for name, arr in params_to_hf(cfg, host, DTYPES[dtype]):
            if shards[-1] and size + arr.nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][name] = np.ascontiguousarray(arr)
            size += arr.nbytes
        weight_map, total = {}, 0
        for i, shard in enumerate(shards):
            fn = SINGLE_NAME if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, os.path.join(tmp, fn), metadata={"format": "pt"})
            for n, a in shard.items():
                weight_map[n] = fn
                total += a.nbytes
        if len(shards) > 1:
            with open(os.path.join(tmp, INDEX_NAME), "w") as f:
                json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        config = {k: v for k, v in (base_config or {}).items() if k not in LOCAL_CONFIG_KEYS}
        for stale in ("rope_theta", "rope_scaling", "torch_dtype"):
            config.pop(stale, None)  # superseded by rope_parameters / dtype in the fresh fields
        config.update(cfg.to_hf_dict(dtype))
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        for name, src in (extra_files or {}).items():
            shutil.copy(src, os.path.join(tmp, name))
        clean_tokenizer_config(os.path.join(tmp, "tokenizer_config.json"))
        _publishable(tmp)
        if os.path.exists(folder):
            old = tempfile.mkdtemp(prefix=".old-export-", dir=parent)
            os.replace(folder, os.path.join(old, "x"))
            os.replace(tmp, folder)
            shutil.rmtree(old)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
