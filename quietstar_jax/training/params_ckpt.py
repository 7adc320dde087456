"""Params-only checkpoints: an orbax pytree plus the HF config.json describing it.

    <dir>/params/        orbax (tensorstore) checkpoint of the param tree, restorable sharded
    <dir>/config.json    HF config of the backbone (and a "quietstar" section once thoughts are added)

This is what `convert hf_to_jax` writes, what training can start from, and what `convert jax_to_hf`
turns back into an HF folder.
"""

from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp

from quietstar_jax.errors import PathNotFoundError
from quietstar_jax.model.config import ModelConfig


def save_params(directory: str, params, hf_config: dict) -> str:
    """Local path or gs:// (orbax + etils.epath handle both). Every process calls it."""
    remote = "://" in directory
    directory = directory if remote else os.path.abspath(directory)
    if not remote:
        os.makedirs(directory, exist_ok=True)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(os.path.join(directory, "params"), params, force=True)
    ckpt.wait_until_finished()
    if jax.process_index() == 0:
        text = json.dumps(hf_config, indent=2, sort_keys=True)
        if remote:
            from etils import epath

            (epath.Path(directory) / "config.json").write_text(text)
        else:
            tmp = os.path.join(directory, ".config.json.tmp")
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, os.path.join(directory, "config.json"))
    return directory


def load_params(directory: str, target=None, **runtime) -> tuple[ModelConfig, dict, dict]:
    """Returns (ModelConfig, params, raw config dict). `target`: optional tree of ShapeDtypeStructs
    with shardings to restore directly into sharded arrays; default: every array whole on this
    process's first device, whatever mesh it was saved from (a checkpoint of an 8-chip run opens on a
    laptop)."""
    directory = os.path.abspath(directory)
    cfg_path = os.path.join(directory, "config.json")
    if not os.path.exists(cfg_path):
        raise PathNotFoundError(f"{directory} is not a params checkpoint: no config.json")
    if not os.path.isdir(os.path.join(directory, "params")):
        raise PathNotFoundError(f"{directory} is not a params checkpoint: no params/ folder")
    with open(cfg_path) as f:
        raw = json.load(f)
    cfg = ModelConfig.from_hf_dict(raw, **runtime)
    ckpt = ocp.StandardCheckpointer()
    path = os.path.join(directory, "params")
    if target is None:
        one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        saved = ckpt.metadata(path)
        saved = getattr(saved, "item_metadata", saved)
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=one), saved)
    params = ckpt.restore(path, target)
    return cfg, params, raw
