"""HF tensor names <-> our param tree. Pure renaming plus stacking of per-layer tensors (no transposes:
params keep torch's (out, in) layout, see quietstar_jax.model.params).

    model.embed_tokens.weight                 <-> params["model"]["embed_tokens"]["weight"]
    model.layers.{i}.self_attn.q_proj.weight  <-> params["model"]["layers"]["self_attn"]["q_proj"]["weight"][i]
    model.norm.weight                         <-> params["model"]["norm"]["weight"]
    lm_head.weight                            <-> params["lm_head"]["weight"]   (absent when tied)
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Mapping

import numpy as np
from flax import traverse_util

from quietstar_jax.errors import CheckpointMismatchError  # noqa: F401 - re-exported
from quietstar_jax.model.config import ModelConfig
from quietstar_jax.model.params import param_spec, unflatten

# Tensors some checkpoints carry that hold no parameters (buffers recomputed from the config).
IGNORED = re.compile(r".*rotary_emb\.inv_freq$")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")




def hf_names(cfg: ModelConfig) -> dict[str, tuple[tuple, tuple, int | None]]:
    """{hf tensor name: (param path, expected HF shape, layer index or None)}."""
    out = {}
    for path, (shape, _, _) in param_spec(cfg).items():
        if path[:2] == ("model", "layers"):
            for i in range(cfg.num_hidden_layers):
                out[f"model.layers.{i}." + ".".join(path[2:])] = (path, shape[1:], i)
        else:
            out[".".join(path)] = (path, shape, None)
    return out


def check_names_and_shapes(cfg: ModelConfig, available: Mapping[str, tuple]) -> None:
    """Raises CheckpointMismatchError naming every missing, unexpected or mis-shaped tensor.

    available: {hf name: shape}. A tied model may carry a redundant lm_head.weight (ignored).
    """
    expected = hf_names(cfg)
    missing = sorted(n for n in expected if n not in available)
    extra = sorted(n for n in available
                   if n not in expected and not IGNORED.match(n)
                   and not (cfg.tie_word_embeddings and n == "lm_head.weight"))
    bad_shape = [f"{n}: checkpoint has {tuple(available[n])}, config implies {tuple(expected[n][1])}"
                 for n in sorted(expected) if n in available and tuple(available[n]) != tuple(expected[n][1])]
    problems = []
    if missing:
        problems.append(f"missing tensors ({len(missing)}): {', '.join(missing[:10])}"
                        + (" ..." if len(missing) > 10 else ""))
    if extra:
        problems.append(f"unexpected tensors ({len(extra)}): {', '.join(extra[:10])}"
                        + (" ..." if len(extra) > 10 else "") + " (wrong architecture or config?)")
    if bad_shape:
        problems.append("wrong shapes: " + "; ".join(bad_shape[:10]))
    if problems:
        raise CheckpointMismatchError(f"checkpoint does not match config ({cfg.model_type}, "
                                      f"{cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}): "
                                      + " | ".join(problems))


def hf_to_params(cfg: ModelConfig, get: Callable[[str], np.ndarray], dtype=np.float32,
                 place: Callable[[tuple, np.ndarray], object] | None = None) -> dict:
    """Builds the param tree by reading one HF tensor at a time.

    get(name) -> np.ndarray in HF layout. place(path, array) may move each finished leaf to devices
    (e.g. jax.device_put with its sharding) so the host holds at most one stacked leaf at a time.
    """
    flat: dict[tuple, object] = {}
    spec = param_spec(cfg)
    for path, (shape, _, _) in spec.items():
        if path[:2] == ("model", "layers"):
            name = ".".join(path[2:])
            arr = np.empty(shape, dtype)
            for i in range(cfg.num_hidden_layers):
                arr[i] = get(f"model.layers.{i}.{name}")
        else:
            arr = np.asarray(get(".".join(path))).astype(dtype)
        flat[path] = place(path, arr) if place else arr
    return unflatten(flat)


def params_to_hf(cfg: ModelConfig, params: dict, dtype) -> Iterable[tuple[str, np.ndarray]]:
    """Yields (hf name, array in `dtype`) one tensor at a time, in HF's natural order."""
    flat = traverse_util.flatten_dict(params)
    names = hf_names(cfg)

    def order(name):
        m = _LAYER.match(name)
        return (1, int(m.group(1)), m.group(2)) if m else ((0 if "embed" in name else 2), 0, name)

    for name in sorted(names, key=order):
        path, _, layer = names[name]
        arr = np.asarray(flat[path][layer] if layer is not None else flat[path])
        yield name, arr.astype(dtype)
