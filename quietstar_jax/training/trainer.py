"""The training loop: model + data + sharded state + jitted step + checkpoints + logging + HF export.

    setup = build_setup(config)            # mesh, model config, tokenizer, optimizer, jitted step
    result = train(config, workdir)        # the whole run (resumes from workdir's latest checkpoint)

Everything a step computes is a function of (state, step): data rows [s*B, (s+1)*B) of the seeded
stream, RNG fold_in(seed key, s). So a run killed at any point and restarted with the same command ends
with bit-identical params.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from quietstar_jax.model.config import ConfigError, ModelConfig
from quietstar_jax.quietstar.config import QuietStarConfig
from quietstar_jax.quietstar.sampling import sample_thoughts
from quietstar_jax.sharding import batch_sharding, make_mesh
from quietstar_jax.training import config as config_lib
from quietstar_jax.training.optimizer import make_optimizer
from quietstar_jax.training.state import (abstract_state, init_state, init_state_from_params, place_params,
                                          random_params_fn, state_shardings)
from quietstar_jax.training.step import make_train_step

BATCH_KEYS = ("tokens", "positions", "segment_ids")


def runtime_options(c) -> dict:
    m = c.model
    return dict(dtype=m.dtype, param_dtype=m.param_dtype, remat_policy=m.remat_policy,
                scan_layers=m.scan_layers, attention_impl=m.attention_impl)


def model_config_only(c) -> tuple[ModelConfig, dict | None]:
    """The architecture without loading weights: from model.path's config.json, the preset, or tiny."""
    rt = runtime_options(c)
    if c.model.source == "tiny":
        return ModelConfig(model_type="llama", **dict(c.model.tiny), **rt), None
    if c.model.path and os.path.exists(os.path.join(c.model.path, "config.json")):
        from quietstar_jax.hf.io import read_hf_config

        raw = read_hf_config(c.model.path)
    elif c.model.preset:
        from quietstar_jax.model.presets import preset_config

        raw = preset_config(c.model.preset)
    elif c.model.source == "smollm2":
        from quietstar_jax.model.presets import preset_config

        raw = preset_config("smollm2-135m")
    else:
        raise ConfigError("config.model: set model.path (an HF folder) or model.preset")
    return ModelConfig.from_hf_dict(raw, **rt), raw


def load_model(c):
    """-> (ModelConfig, host params (numpy) or None for random init, raw config.json or None, tokenizer,
    label). Heavy: reads weights."""
    from quietstar_jax.training.tokenizer import ByteTokenizer, HFTokenizer

    source, path = c.model.source, c.model.path
    if source == "smollm2":
        from quietstar_jax.hf.smollm2 import materialize_smollm2

        try:
            path = materialize_smollm2()
        except Exception as e:  # noqa: BLE001 - any failure to build the offline model
            if not c.model.fallback_to_tiny:
                raise
            print(f"SmolLM2 unavailable ({type(e).__name__}: {e}); falling back to the TINY RANDOM model")
            source = "tiny"
    if source == "tiny":
        cfg, _ = model_config_only(c)
        tok = ByteTokenizer()
        if cfg.vocab_size < tok.vocab_size:
            raise ConfigError(f"config.model.tiny.vocab_size must be >= {tok.vocab_size} (byte vocabulary)")
        return cfg, None, None, tok, "TINY RANDOM MODEL (byte vocabulary; demo / fallback only)"
    from quietstar_jax.hf.io import load_hf_folder

    cfg, params, raw = load_hf_folder(path, **runtime_options(c))
    tok = HFTokenizer(path)
    return cfg, params, raw, tok, f"{path} ({cfg.model_type}, {cfg.num_hidden_layers} layers, " \
                                  f"hidden {cfg.hidden_size}, vocab {cfg.vocab_size})"


def check_batch_layout(c, mesh) -> None:
    """The global batch must split evenly over hosts, micro-batches and the batch mesh axes."""
    n_batch = mesh.shape["data"] * mesh.shape["fsdp"]
    micro = c.global_batch_size // c.grad_accum_steps
    if micro % n_batch:
        raise ConfigError(
            f"config.global_batch_size: {c.global_batch_size} / grad_accum_steps {c.grad_accum_steps} = "
            f"{micro} rows per micro-batch, not divisible by the data x fsdp mesh size {n_batch} "
            f"(mesh {dict(mesh.shape)})")
    if c.global_batch_size % jax.process_count():
        raise ConfigError(f"config.global_batch_size {c.global_batch_size} is not divisible by the "
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


def build_setup(c, cfg: ModelConfig, qs: QuietStarConfig, init_ids, mesh=None, tx=None) -> Setup:
    """Everything needed to compile the step; allocates nothing large. tx: optional optimizer override
    (tests); default from config.optimizer."""
    mesh = make_mesh(dict(c.mesh)) if mesh is None else mesh
    check_batch_layout(c, mesh)
    params_shape = jax.eval_shape(random_params_fn(cfg, qs, 0, init_ids))
    if tx is None:
        tx, sched = make_optimizer(c.optimizer, params_shape, c.steps)
    else:
        sched = optax.constant_schedule(jnp.nan)
    abstract = abstract_state(params_shape, tx)
    sh = state_shardings(cfg, qs, tx, abstract, mesh)
    b_sh = batch_sharding(mesh)
    replicated = NamedSharding(mesh, P())
    inner = make_train_step(cfg, qs, tx, sched, c.grad_accum_steps)

    def step(state, batch, key):
        # Trace under the mesh so the model's activation constraints (constrain_batch) apply.
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return inner(state, batch, key)

    step_fn = jax.jit(step, in_shardings=(sh, {k: b_sh for k in BATCH_KEYS}, replicated),
                      out_shardings=(sh, replicated), donate_argnums=(0,))
    return Setup(mesh, cfg, qs, tx, sched, abstract, sh, b_sh, step_fn)


def abstract_batch(c, setup: Setup) -> dict:
    shape = (c.global_batch_size, c.seq_len)
    return {k: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=setup.batch_sharding) for k in BATCH_KEYS}


def _with_shardings(abstract, shardings):
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


class _Preemption:
    """SIGTERM (what Cloud TPU / GCE send before preempting) -> save at the next step boundary, exit."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread (e.g. inside some test runners)
            self._old = None
        return self

    def _handler(self, signum, frame):
        del signum, frame
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)

    def should_stop(self, step: int) -> bool:
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            return bool(multihost_utils.reached_preemption_sync_point(step)) or self.requested
        return self.requested


def _global_batch(local: dict, setup: Setup, c) -> dict:
    shape = (c.global_batch_size, c.seq_len)
    return {k: jax.make_array_from_process_local_data(setup.batch_sharding, np.asarray(local[k], np.int32), shape)
            for k in BATCH_KEYS}


def show_thoughts(params, setup: Setup, tok, batch_row: dict, key, positions=(8, 24, 40), context=16) -> str:
    """A few sampled thoughts in context, as text. batch_row: one row, (1, L) numpy arrays."""
    cfg, qs = setup.cfg, setup.qs
    if not qs.enabled or qs.num_thought_tokens == 0:
        return ""
    fn = jax.jit(lambda p, t, pos, s, k: sample_thoughts(p, cfg, qs, t, pos, s, k)[0])
    rep = NamedSharding(setup.mesh, P())
    arrs = [jax.device_put(jnp.asarray(batch_row[k]), rep) for k in BATCH_KEYS]
    th = np.asarray(jax.device_get(fn(params, *arrs, key)))[0]
    toks, seg = np.asarray(batch_row["tokens"][0]), np.asarray(batch_row["segment_ids"][0])
    lines = []
    for p in positions:
        if p >= len(toks) or seg[p] == 0:
            continue
        lo = max(0, p + 1 - context)
        lines.append(f"  ...{tok.decode(toks[lo:p + 1])!r} <|startofthought|>{tok.decode(th[p])!r}"
                     f"<|endofthought|> -> {tok.decode(toks[p + 1:p + 4])!r}")
    return "sampled thoughts:\n" + "\n".join(lines)


def maybe_initialize_distributed(mode: str) -> None:
    if mode == "off":
        return
    # Multi-host signals: an explicit coordinator, a TPU worker list with several hosts, or a multislice
    # (Megascale) coordinator. "on" always calls it (Cloud TPU slices: configs set distributed="on").
    multi = bool(os.environ.get("JAX_COORDINATOR_ADDRESS")) or "," in os.environ.get("TPU_WORKER_HOSTNAMES", "") \
        or bool(os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"))
    if mode == "on" or multi:
        jax.distributed.initialize()


def meta_of(cfg: ModelConfig, qs: QuietStarConfig, tok) -> dict:
    return {"model": cfg.to_hf_dict(), "quietstar": dataclasses.asdict(qs), "tokenizer": tok.fingerprint}


def train(c, workdir: str) -> dict:
    """Runs (or resumes) the configured training. Returns {"final_step", "metrics", "export", ...}."""
    config_lib.validate(c)
    maybe_initialize_distributed(c.distributed)
    if not workdir.startswith("gs://"):
        workdir = os.path.abspath(workdir)
        os.makedirs(workdir, exist_ok=True)
    mesh = make_mesh(dict(c.mesh))
    check_batch_layout(c, mesh)
    cfg, host_params, raw, tok, label = load_model(c)
    qs = config_lib.quietstar_config(c, tok.start_id, tok.end_id)
    setup = build_setup(c, cfg, qs, tok.init_ids, mesh=mesh)
    from quietstar_jax.data import make_batch_source

    data = make_batch_source(c.data, tok, seq_len=c.seq_len, global_batch_size=c.global_batch_size,
                             process_index=jax.process_index(), process_count=jax.process_count(),
                             cache_dir=None)  # shared token cache, keyed by corpus + tokenizer
    if jax.process_index() == 0:
        print(f"model: {label}\nmesh: {dict(mesh.shape)} over {jax.device_count()} {jax.devices()[0].platform} "
              f"devices, {jax.process_count()} processes\nquietstar: N={qs.n_ahead} M={qs.n_ahead_talk} "
              f"P={qs.n_passes} (enabled={qs.enabled}); batch {c.global_batch_size} x L {c.seq_len}, "
              f"accum {c.grad_accum_steps}, steps {c.steps}", flush=True)
        _write_text(os.path.join(workdir, "config.json"), c.to_json_best_effort(indent=2))

    from quietstar_jax.training.checkpoint import Checkpointer
    from quietstar_jax.training.metrics import Logger, peak_flops_per_device, step_flops

    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), c.checkpoint, meta_of(cfg, qs, tok)) \
        if c.checkpoint.enabled else None
    start = ckpt.latest_step() if (ckpt and c.checkpoint.resume) else None
    if start is not None:
        state = ckpt.restore(_with_shardings(setup.abstract, setup.shardings), start)
        print(f"resumed from {ckpt.directory}/{start}", flush=True)
    elif host_params is None:
        state = init_state(random_params_fn(cfg, qs, c.seed, tok.init_ids), setup.tx, setup.shardings)
    else:
        from quietstar_jax.quietstar import init_quietstar_params

        qs_params = init_quietstar_params(host_params, cfg, qs, jax.random.key(c.seed + 1), tok.init_ids)
        host_params = dict(host_params, quietstar=jax.tree.map(np.asarray, qs_params))
        params = place_params(host_params, setup.shardings["params"])
        del host_params
        state = init_state_from_params(params, setup.tx, setup.shardings)
    start = int(start or 0)

    base_key = jax.device_put(jax.random.key(c.seed + 2), NamedSharding(mesh, P()))
    t0 = time.time()
    abstract_args = (_with_shardings(setup.abstract, setup.shardings), abstract_batch(c, setup), base_key)
    traced = setup.step_fn.trace(*abstract_args)  # one trace: lowered here, FLOP-counted for MFU below
    compiled = traced.lower().compile()
    if jax.process_index() == 0:
        print(f"compiled the train step in {time.time() - t0:.1f}s", flush=True)
    tokens_per_step = c.global_batch_size * c.seq_len
    logger = Logger(workdir, c.steps, tokens_per_step, step_flops(traced.jaxpr),
                    peak_flops_per_device(c.peak_flops_per_device))
    metrics, host_m = None, {}
    stopped_early = False
    with _Preemption() as pre:
        for step in range(start, c.steps):
            local = data.batch_at(step)
            state, metrics = compiled(state, _global_batch(local, setup, c), base_key)
            done = step + 1
            if c.log_every and (done % c.log_every == 0 or done == c.steps or done == start + 1):
                host_m = jax.device_get(metrics)
                logger.log(done, host_m)
            if c.nan_policy == "stop":
                finite = float(jax.device_get(metrics["finite"]))
                if finite < 1.0:
                    # The state kept the last good params, but we do not save: the latest checkpoint
                    # stays the last one written from finite steps.
                    if ckpt:
                        ckpt.close()
                    raise FloatingPointError(f"non-finite loss or gradients at step {done} "
                                             f"(nan_policy=stop); latest checkpoint left intact")
            if c.sample_every and done % c.sample_every == 0:
                logger.text("thoughts", show_thoughts(state["params"], setup, tok, _first_row(data, step),
                                                      jax.random.key(done)), done)
            saved = bool(ckpt) and ckpt.save(done, state, force=(done == c.steps))
            if pre.should_stop(done) and done < c.steps:
                if ckpt:
                    if not saved:
                        ckpt.save(done, state, force=True)
                    ckpt.wait()
                print(f"preemption signal: saved step {done}, exiting", flush=True)
                stopped_early = True
                break
    if ckpt:
        ckpt.close()
    result = {"final_step": int(jax.device_get(state["step"])), "metrics": host_m, "workdir": workdir,
              "stopped_early": stopped_early}
    if stopped_early:
        return result
    text = show_thoughts(state["params"], setup, tok, _first_row(data, 0), jax.random.key(c.seed + 3))
    if text:
        logger.text("thoughts", text, c.steps)
    # Params-only orbax export (no optimizer state): what `convert jax_to_hf --quietstar` and
    # inference start from; restorable sharded on any mesh.
    from quietstar_jax.hf.quietstar_export import quietstar_config_to_dict
    from quietstar_jax.training.params_ckpt import save_params

    hf_cfg = dict(raw or {}, **cfg.to_hf_dict(), quietstar=quietstar_config_to_dict(setup.qs))
    result["params"] = save_params(os.path.join(workdir, "params_export"), state["params"], hf_cfg)
    if c.export_hf:
        # HF folders are written with local file operations: a gs:// run exports to local disk
        # (copy it with gsutil); checkpoints and the params export above live in the bucket.
        local = workdir if not workdir.startswith("gs://") else os.path.join("/tmp/quietstar_jax", c.run_name)
        result["export"] = export_hf(os.path.join(local, "hf_export"), setup, state["params"], tok, raw,
                                     c.export_dtype)
        if jax.process_index() == 0:
            print(f"HF export: {result['export']}", flush=True)
    logger.close()
    if jax.process_index() == 0:
        _write_text(os.path.join(workdir, "final_metrics.json"),
                    json.dumps({k: float(np.asarray(v)) for k, v in host_m.items()}, indent=2))
    return result


def _write_text(path: str, text: str) -> None:
    from etils import epath  # local paths and gs:// alike

    epath.Path(path).write_text(text)


def _first_row(data, step: int) -> dict:
    b = data.batch_at(step)
    return {k: np.asarray(b[k][:1]) for k in BATCH_KEYS}


def export_hf(folder: str, setup: Setup, params, tok, raw, dtype: str) -> str:
    """Backbone + thought tokens + mixing head as an HF folder (stock transformers loads it)."""
    try:
        from quietstar_jax.hf.quietstar_export import save_quietstar_hf
    except ImportError:
        save_quietstar_hf = None
    if save_quietstar_hf is not None:
        return save_quietstar_hf(folder, setup.cfg, params, setup.qs, tokenizer=tok.hf, dtype=dtype,
                                 base_config=raw)
    from quietstar_jax.hf.io import save_hf_folder

    backbone = {k: v for k, v in params.items() if k != "quietstar"}
    return save_hf_folder(folder, setup.cfg, backbone, dtype=dtype, base_config=raw)
