"""What a run keeps in its workdir besides checkpoints: the config it started with, later changes of
harmless fields, and whether it finished.

    <workdir>/config.json            the run config at the first start (never rewritten)
    <workdir>/config_history.jsonl   one line per resume that changed harmless fields
    <workdir>/final_metrics.json     written once, when the last step is done

Resuming with a change to a field that changes what is trained (model, Quiet-STaR settings, sequence
length, batch, data, optimizer, seed) is an error naming the fields: use a new --workdir for a new
run. Other fields (steps, logging, checkpoint cadence, export, mesh) may change between restarts;
each change is appended to the history.
"""

from __future__ import annotations

import json
import time

from etils import epath
from flax import traverse_util

from quietstar_jax.errors import ConfigError

CONFIG_NAME = "config.json"
HISTORY_NAME = "config_history.jsonl"
FINAL_METRICS_NAME = "final_metrics.json"
# Top-level config fields whose change alters what the run trains (resume would mix two runs).
MATTERS = ("model", "quietstar", "seq_len", "global_batch_size", "grad_accum_steps", "seed", "data", "optimizer")


def config_dict(config) -> dict:
    """The run config as the JSON-able dict written to config.json."""
    return json.loads(config.to_json_best_effort())


def config_changes(old: dict, new: dict) -> dict[str, tuple]:
    """{"a.b": (old value, new value)} for every leaf that differs (missing = None)."""
    fo = traverse_util.flatten_dict(old, sep=".")
    fn = traverse_util.flatten_dict(new, sep=".")
    return {k: (fo.get(k), fn.get(k)) for k in sorted(set(fo) | set(fn)) if fo.get(k) != fn.get(k)}


def _matters(key: str) -> bool:
    return key.split(".")[0] in MATTERS


def check_config(workdir: str, config) -> dict[str, tuple]:
    """The harmless changes of `config` against the workdir's recorded run config ({} for a new run).
    Raises ConfigError naming the fields if one that matters changed."""
    path = epath.Path(workdir) / CONFIG_NAME
    if not path.exists():
        return {}
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); it records this workdir's run config: restore it "
                          "or use a new --workdir") from None
    changes = config_changes(old, config_dict(config))
    bad = {k: v for k, v in changes.items() if _matters(k)}
    if bad:
        listed = "; ".join(f"{k}: {o!r} -> {n!r}" for k, (o, n) in list(bad.items())[:8])
        more = f" (+{len(bad) - 8} more)" if len(bad) > 8 else ""
        raise ConfigError(f"{workdir} holds a run with a different config ({listed}{more}); resuming would mix "
                          f"two runs. Use a new --workdir, or the original values.")
    return changes


def record_config(workdir: str, config, changes: dict, step: int, is_writer: bool = True) -> None:
    """First start: write config.json. Later starts with harmless `changes` (from check_config): append
    them to the history, leaving config.json as the run began."""
    if not is_writer:
        return
    root = epath.Path(workdir)
    path = root / CONFIG_NAME
    if not path.exists():
        path.write_text(json.dumps(config_dict(config), indent=2))
    elif changes:
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "resumed_at_step": step,
                           "changes": {k: {"old": o, "new": n} for k, (o, n) in changes.items()}})
        history = root / HISTORY_NAME
        previous = history.read_text() if history.exists() else ""
        history.write_text(previous + line + "\n")


def final_metrics(workdir: str) -> dict | None:
    """The finished run's final metrics, or None if it has not finished."""
    path = epath.Path(workdir) / FINAL_METRICS_NAME
    return json.loads(path.read_text()) if path.exists() else None


def write_final_metrics(workdir: str, metrics: dict) -> str:
    path = epath.Path(workdir) / FINAL_METRICS_NAME
    path.write_text(json.dumps(metrics, indent=2))
    return str(path)
