"""A trained model for inference from whatever folder a user has:

  * a training workdir: its latest checkpoint (or, once the run is finished, its params export), the
    tokenizer of its HF export or of the model it started from;
  * an HF export with the Quiet-STaR extras (quietstar_config.json + quietstar.safetensors);
  * a plain HF model folder, for thinking off only (it has no thought embeddings or mixing head).

    model = load_for_inference("/tmp/quietstar_jax/cpu_default")
    model.cfg, model.params, model.qs, model.tokenizer, model.source
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np

from quietstar_jax.errors import CheckpointMismatchError, PathNotFoundError
from quietstar_jax.hf.quietstar_export import CONFIG_NAME as QUIETSTAR_CONFIG
from quietstar_jax.model.config import ModelConfig
from quietstar_jax.quietstar.config import QuietStarConfig

CONFIG = "config.json"


@dataclasses.dataclass
class InferenceModel:
    cfg: ModelConfig
    params: dict  # incl. params["quietstar"] (thought embeddings, mixing head)
    qs: QuietStarConfig
    tokenizer: object  # quietstar_jax.training.tokenizer.{HFTokenizer, ByteTokenizer}
    source: str  # one line: what was loaded
    has_extras: bool  # False: a plain HF model (thinking off only)
    step: int | None = None  # a workdir's training step (None: an export / HF folder)


def _is_workdir(path: str) -> bool:
    if not os.path.isfile(os.path.join(path, CONFIG)):
        return False
    with open(os.path.join(path, CONFIG)) as f:
        try:
            raw = json.load(f)
        except json.JSONDecodeError:
            return False
    return "quietstar" in raw and "model" in raw and "optimizer" in raw  # a run config, not an HF config


def load_for_inference(path: str, no_think: bool = False, **runtime) -> InferenceModel:
    """runtime: ModelConfig runtime fields (e.g. dtype="bfloat16"). Raises PathNotFoundError /
    CheckpointMismatchError with what to do."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(path):
        raise PathNotFoundError(f"--model={path} does not exist")
    if _is_workdir(path):
        return _from_workdir(path, runtime)
    if os.path.isfile(os.path.join(path, QUIETSTAR_CONFIG)):
        return _from_export(path, runtime)
    if os.path.isfile(os.path.join(path, CONFIG)):
        if not no_think:
            raise CheckpointMismatchError(f"{path} is an HF model without the Quiet-STaR extras ({QUIETSTAR_CONFIG}, "
                                          "quietstar.safetensors): it cannot think; pass --no_think to run it as a "
                                          "plain LM")
        return _plain_hf(path, runtime)
    raise PathNotFoundError(f"{path} is neither a training workdir, an HF export with the Quiet-STaR extras nor an "
                            "HF model folder (no config.json)")


def _from_export(path: str, runtime: dict) -> InferenceModel:
    from quietstar_jax.hf.quietstar_export import load_quietstar_hf
    from quietstar_jax.training.tokenizer import ByteTokenizer, HFTokenizer

    cfg, params, qs, _ = load_quietstar_hf(path, **runtime)
    with open(os.path.join(path, QUIETSTAR_CONFIG)) as f:
        byte_vocabulary = json.load(f).get("tokenizer") == "utf-8 bytes"
    if byte_vocabulary:
        tok = ByteTokenizer()
    else:
        tok = HFTokenizer(path)
        _check_ids(tok, qs, path)
    return InferenceModel(cfg, params, qs, tok, f"HF export {path}", True)


def _plain_hf(path: str, runtime: dict) -> InferenceModel:
    from quietstar_jax.hf.io import load_hf_folder
    from quietstar_jax.training.tokenizer import HFTokenizer

    cfg, params, _ = load_hf_folder(path, **runtime)
    tok = HFTokenizer(path)
    qs = QuietStarConfig(start_id=tok.start_id, end_id=tok.end_id)
    # Placeholders so the thought ids have embeddings; with thinking off they are never used.
    params["quietstar"] = {"thought_embeddings": np.zeros((2, cfg.hidden_size), np.float32),
                           "talk_head": None}
    return InferenceModel(cfg, params, qs, tok, f"HF model {path} (no Quiet-STaR extras: thinking off)", False)


def _check_ids(tok, qs: QuietStarConfig, where: str) -> None:
    if (tok.start_id, tok.end_id) != (qs.start_id, qs.end_id):
        raise CheckpointMismatchError(f"{where}: the tokenizer's thought ids ({tok.start_id}, {tok.end_id}) differ from "
                                      f"the model's ({qs.start_id}, {qs.end_id}): was the tokenizer replaced?")


def _workdir_tokenizer(path: str, run: dict):
    """The tokenizer a run trained with: its HF export's, else the model it started from."""
    from quietstar_jax.training.export import HF_EXPORT
    from quietstar_jax.training.tokenizer import ByteTokenizer, HFTokenizer

    export = os.path.join(path, HF_EXPORT)
    if os.path.isfile(os.path.join(export, "tokenizer_config.json")):
        return HFTokenizer(export)
    source = run["model"]["source"]
    if source == "tiny":
        return ByteTokenizer()
    if source == "smollm2":
        from quietstar_jax.assets.smollm2 import materialize_smollm2

        return HFTokenizer(materialize_smollm2())
    return HFTokenizer(run["model"]["path"])


def _from_workdir(path: str, runtime: dict) -> InferenceModel:
    """The latest checkpoint's params; the params export when the run is finished (the same params,
    without reading the optimizer state)."""
    import ml_collections

    from quietstar_jax.training import setup as setup_lib
    from quietstar_jax.training.checkpoint import Checkpointer
    from quietstar_jax.training.export import PARAMS_EXPORT
    from quietstar_jax.training.params_ckpt import load_params
    from quietstar_jax.training.workdir import final_metrics

    with open(os.path.join(path, CONFIG)) as f:
        run = json.load(f)
    config = ml_collections.ConfigDict(run)
    tok = _workdir_tokenizer(path, run)
    ckpt_dir = os.path.join(path, "checkpoints")
    ckpt = Checkpointer(ckpt_dir, config.checkpoint, meta={}) if os.path.isdir(ckpt_dir) else None
    latest = ckpt.latest_step() if ckpt else None
    final = (final_metrics(path) or {}).get("step")
    export = os.path.join(path, PARAMS_EXPORT)
    if os.path.isdir(export) and (latest is None or final == latest):
        if ckpt:
            ckpt.close()
        cfg, params, raw = load_params(export, **runtime)
        from quietstar_jax.hf.quietstar_export import quietstar_config_from_dict

        qs = quietstar_config_from_dict(raw["quietstar"], f"{export}/config.json")
        _check_ids(tok, qs, path)
        return InferenceModel(cfg, params, qs, tok, f"workdir {path} (finished run, step {final})", True, final)
    if latest is None:
        raise PathNotFoundError(f"{path} is a training workdir with no checkpoint and no params export yet")
    for key, value in runtime.items():
        config.model[key] = value
    cfg, _ = setup_lib.model_config_only(config)
    qs = setup_lib.quietstar_config(config, tok)
    # One device: the params come to the host anyway, and this machine's device count need not match
    # the training mesh.
    from quietstar_jax.sharding import make_mesh

    mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    setup = setup_lib.build_setup(config, cfg, qs, tok.init_ids, mesh=mesh)
    import orbax.checkpoint as ocp

    state = ckpt.manager.restore(latest, args=ocp.args.Composite(state=ocp.args.StandardRestore(
        setup.abstract_state())))["state"]
    ckpt.close()
    params = jax.device_get(state["params"])
    return InferenceModel(cfg, params, qs, tok, f"workdir {path} (checkpoint at step {latest})", True, int(latest))
