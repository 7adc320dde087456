"""Parameter tree of the decoder: HF names and HF layouts, layers stacked on a leading axis for scan.

    params = {
      "model": {
        "embed_tokens": {"weight": (V, H)},
        "layers": {                                   # every leaf has a leading (n_layers,) axis
          "input_layernorm": {"weight": (nL, H)},
          "self_attn": {"q_proj": {"weight": (nL, Hq*D, H), ["bias": (nL, Hq*D)]},
                        "k_proj": {"weight": (nL, Hkv*D, H), ["bias"]},
                        "v_proj": {"weight": (nL, Hkv*D, H), ["bias"]},
                        "o_proj": {"weight": (nL, H, Hq*D), ["bias" (llama attention_bias)]}},
          "post_attention_layernorm": {"weight": (nL, H)},
          "mlp": {"gate_proj": {"weight": (nL, I, H)}, "up_proj": {"weight": (nL, I, H)},
                  "down_proj": {"weight": (nL, H, I)}}},
        "norm": {"weight": (H,)}},
      "lm_head": {"weight": (V, H)},                  # absent when tie_word_embeddings
    }

Weights keep torch's (out, in) layout so HF conversion is renaming + stacking, never a transpose.
`param_axes` gives the same tree with a logical axis name per dimension (mapped to mesh axes by the
sharding rules).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import traverse_util

from quietstar_jax.model.config import ModelConfig


def layer_spec(cfg: ModelConfig) -> dict:
    """{path: (shape without layer axis, logical axes, init kind)} for one decoder layer."""
    H, I, D = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    q, kv = cfg.num_attention_heads * D, cfg.num_key_value_heads * D
    spec = {
        ("input_layernorm", "weight"): ((H,), ("norm",), "ones"),
        ("self_attn", "q_proj", "weight"): ((q, H), ("q_heads", "embed"), "normal"),
        ("self_attn", "k_proj", "weight"): ((kv, H), ("kv_heads", "embed"), "normal"),
        ("self_attn", "v_proj", "weight"): ((kv, H), ("kv_heads", "embed"), "normal"),
        ("self_attn", "o_proj", "weight"): ((H, q), ("embed", "q_heads"), "normal"),
        ("post_attention_layernorm", "weight"): ((H,), ("norm",), "ones"),
        ("mlp", "gate_proj", "weight"): ((I, H), ("mlp", "embed"), "normal"),
        ("mlp", "up_proj", "weight"): ((I, H), ("mlp", "embed"), "normal"),
        ("mlp", "down_proj", "weight"): ((H, I), ("embed", "mlp"), "normal"),
    }
    if cfg.attention_bias or cfg.qkv_bias:
        spec[("self_attn", "q_proj", "bias")] = ((q,), ("q_heads",), "zeros")
        spec[("self_attn", "k_proj", "bias")] = ((kv,), ("kv_heads",), "zeros")
        spec[("self_attn", "v_proj", "bias")] = ((kv,), ("kv_heads",), "zeros")
    if cfg.attention_bias:
        spec[("self_attn", "o_proj", "bias")] = ((H,), ("embed",), "zeros")
    if cfg.mlp_bias:
        spec[("mlp", "gate_proj", "bias")] = ((I,), ("mlp",), "zeros")
        spec[("mlp", "up_proj", "bias")] = ((I,), ("mlp",), "zeros")
        spec[("mlp", "down_proj", "bias")] = ((H,), ("embed",), "zeros")
    return spec


def param_spec(cfg: ModelConfig) -> dict:
    """{path tuple: (shape, logical axes, init kind)} for the whole model: the one table the param
    tree, its logical axes, its init and the HF name mapping are derived from."""
    V, H, nL = cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers
    spec = {("model", "embed_tokens", "weight"): ((V, H), ("vocab", "embed"), "normal")}
    for path, (shape, axes, init) in layer_spec(cfg).items():
        spec[("model", "layers") + path] = ((nL,) + shape, ("layers",) + axes, init)
    spec[("model", "norm", "weight")] = ((H,), ("norm",), "ones")
    if not cfg.tie_word_embeddings:
        spec[("lm_head", "weight")] = ((V, H), ("vocab", "embed"), "normal")
    return spec


def path_string(path) -> str:
    """A key path of a params tree as "a/b/c" (what config regexes over param paths match)."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def paths_matching(tree, pattern: str) -> dict:
    """The same tree with True where the leaf's path fully matches the regex `pattern`, else False."""
    import re

    pat = re.compile(pattern)
    return jax.tree_util.tree_map_with_path(lambda path, _: bool(pat.fullmatch(path_string(path))), tree)


def unflatten(flat: dict) -> dict:
    """{path tuple: leaf} -> nested dicts (flax.traverse_util)."""
    return traverse_util.unflatten_dict(flat)


def param_axes(cfg: ModelConfig) -> dict:
    """Logical axis names, same tree as the params (tuples are leaves: use is_leaf on tuple)."""
    return unflatten({p: axes for p, (_, axes, _) in param_spec(cfg).items()})


def param_shapes(cfg: ModelConfig) -> dict:
    """ShapeDtypeStructs of the params, without allocating anything."""
    dt = jnp.dtype(cfg.param_dtype)
    return unflatten({p: jax.ShapeDtypeStruct(s, dt) for p, (s, _, _) in param_spec(cfg).items()})


def init_params(cfg: ModelConfig, key: jax.Array) -> dict:
    """HF-style init: N(0, initializer_range) for matrices, ones for norms, zeros for biases."""
    dt = jnp.dtype(cfg.param_dtype)
    spec = param_spec(cfg)
    keys = jax.random.split(key, len(spec))
    flat = {}
    for k, (path, (shape, _, init)) in zip(keys, sorted(spec.items())):
        if init == "normal":
            flat[path] = (cfg.initializer_range * jax.random.normal(k, shape, jnp.float32)).astype(dt)
        elif init == "ones":
            flat[path] = jnp.ones(shape, dt)
        else:
            flat[path] = jnp.zeros(shape, dt)
    return unflatten(flat)
