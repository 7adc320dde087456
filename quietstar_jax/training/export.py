"""What a finished run leaves behind for use outside training: a params-only orbax export and an HF
folder (backbone + thought tokens + mixing head) that stock transformers loads.

Every process calls these (gathering sharded arrays is collective); process 0 writes.
"""

from __future__ import annotations

import os

from quietstar_jax.hf.quietstar_export import quietstar_config_to_dict, save_quietstar_hf
from quietstar_jax.training.params_ckpt import save_params

PARAMS_EXPORT = "params_export"
HF_EXPORT = "hf_export"


def export_params(workdir: str, setup, params, raw: dict | None) -> str:
    """<workdir>/params_export: orbax params (no optimizer state) + config.json with a "quietstar"
    section; what `convert jax_to_hf --quietstar`, generation and evaluation start from, restorable
    sharded on any mesh."""
    hf_cfg = dict(raw or {}, **setup.cfg.to_hf_dict(), quietstar=quietstar_config_to_dict(setup.qs))
    return save_params(os.path.join(workdir, PARAMS_EXPORT), params, hf_cfg)


def export_hf_folder(workdir: str, run_name: str, setup, params, tokenizer, raw: dict | None, dtype: str) -> str:
    """<workdir>/hf_export. HF folders are written with local file operations: a gs:// run exports to
    /tmp/quietstar_jax/<run_name>/hf_export (copy it with gsutil); checkpoints and the params export
    live in the bucket."""
    local = workdir if not workdir.startswith("gs://") else os.path.join("/tmp/quietstar_jax", run_name)
    return save_quietstar_hf(os.path.join(local, HF_EXPORT), setup.cfg, params, setup.qs, tokenizer=tokenizer.hf,
                             dtype=dtype, base_config=raw, byte_tokenizer=tokenizer.hf is None)
