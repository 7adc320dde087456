"""Decoder configuration for the Llama family (Llama, Mistral, Qwen2), read from / written to HF config.json.

One frozen dataclass holds the architecture (HF field names) plus the runtime choices that do not change
the function the model computes (dtype, remat, scan). It is hashable, so it can be a static jit argument.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
ROPE_TYPES = ("default", "linear", "llama3")
# A window this large means "no sliding window" for a layer (keeps per-layer windows a dense int array).
NO_WINDOW = 1 << 30


from quietstar_jax.errors import ConfigError  # noqa: F401 - re-exported (model.ConfigError)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    model_type: str = "llama"
    vocab_size: int = 32000
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    head_dim: int = 64
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # Rope scaling as sorted (key, value) pairs (hashable); () means none. Keys follow HF rope_parameters.
    rope_scaling: tuple = ()
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # Llama: bias on q, k, v and o projections.
    qkv_bias: bool = False  # Qwen2: bias on q, k, v only.
    mlp_bias: bool = False
    # Per-layer sliding window (NO_WINDOW = full attention). Mistral: same window on every layer.
    layer_windows: tuple = ()
    initializer_range: float = 0.02
    bos_token_id: int | None = 1
    eos_token_id: Any = 2
    pad_token_id: int | None = None
    # ---- runtime (not part of the HF architecture) ----
    dtype: str = "float32"  # compute dtype; params stay float32 (master weights).
    param_dtype: str = "float32"
    remat_policy: str = "none"
    scan_layers: bool = True
    attention_impl: str = "stream"  # "dense": the reference's L x KL mask formulation (benchmarks)
    # No-grad decoding (the thought sampler) on a mesh: > 0 keeps one compute-dtype copy of the weights
    # for all decode passes, split over groups of this many consecutive fsdp devices (a divisor of the
    # fsdp axis; 1/decode_shards of the copy per chip), and moves activations instead of weights
    # (quietstar_jax.sharding.layout). 0: every pass gathers the fsdp-sharded weights layer by layer.
    decode_shards: int = 0

    def __post_init__(self):
        if not self.layer_windows:
            object.__setattr__(self, "layer_windows", (NO_WINDOW,) * self.num_hidden_layers)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        def need(cond, msg):
            if not cond:
                raise ConfigError(msg)

        need(self.model_type in SUPPORTED_MODEL_TYPES,
             f"model_type {self.model_type!r} is not supported (supported: {SUPPORTED_MODEL_TYPES})")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim"):
            v = getattr(self, name)
            need(isinstance(v, int) and v > 0, f"{name} must be a positive int, got {v!r}")
        need(self.num_attention_heads % self.num_key_value_heads == 0,
             f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
             f"num_key_value_heads ({self.num_key_value_heads})")
        need(len(self.layer_windows) == self.num_hidden_layers,
             f"layer_windows has {len(self.layer_windows)} entries for {self.num_hidden_layers} layers")
        need(all(int(w) > 0 for w in self.layer_windows), "sliding windows must be positive")
        need(self.remat_policy in REMAT_POLICIES,
             f"remat_policy {self.remat_policy!r} not in {REMAT_POLICIES}")
        need(self.attention_impl in ("stream", "dense"),
             f"attention_impl {self.attention_impl!r} not in ('stream', 'dense')")
        need(isinstance(self.decode_shards, int) and self.decode_shards >= 0,
             f"decode_shards must be an int >= 0, got {self.decode_shards!r}")
        need(self.dtype in ("float32", "bfloat16", "float16", "float64"), f"dtype {self.dtype!r} unsupported")
        need(self.param_dtype in ("float32", "bfloat16"), f"param_dtype {self.param_dtype!r} unsupported")
        rope = dict(self.rope_scaling)
        rtype = rope.get("rope_type", "default")
        need(rtype in ROPE_TYPES, f"rope_type {rtype!r} is not supported (supported: {ROPE_TYPES})")
        if rtype == "linear":
            need("factor" in rope, "linear rope scaling needs 'factor'")
        if rtype == "llama3":
            for k in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
                need(k in rope, f"llama3 rope scaling needs {k!r}")

    @property
    def num_groups(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)

    # ------------------------------------------------------------------ HF interop
    @classmethod
    def from_hf_dict(cls, d: dict, **runtime) -> "ModelConfig":
        """Builds a config from an HF config.json dict (transformers 4.x or 5.x layout)."""
        model_type = d.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            arch = d.get("architectures")
            raise ConfigError(f"unsupported architecture: model_type={model_type!r} architectures={arch!r}; "
                              f"supported model_type values: {SUPPORTED_MODEL_TYPES}")
        if d.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"hidden_act {d.get('hidden_act')!r} is not supported (only 'silu')")
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads"):
            if key not in d:
                raise ConfigError(f"config.json is missing required field {key!r}")
        n_heads = d["num_attention_heads"]
        head_dim = d.get("head_dim") or d["hidden_size"] // n_heads
        # transformers 5 puts theta + scaling in rope_parameters; 4.x had rope_theta + rope_scaling.
        rope = dict(d.get("rope_parameters") or {})
        legacy = d.get("rope_scaling") or {}
        rope = {**legacy, **rope}
        if "type" in rope and "rope_type" not in rope:
            rope["rope_type"] = rope.pop("type")
        theta = float(rope.pop("rope_theta", d.get("rope_theta", 10000.0)))
        rope.setdefault("rope_type", "default")
        rope_scaling = () if rope == {"rope_type": "default"} else tuple(sorted(rope.items()))
        n_layers = d["num_hidden_layers"]
        windows = [NO_WINDOW] * n_layers
        if model_type == "mistral" and d.get("sliding_window"):
            windows = [int(d["sliding_window"])] * n_layers
        if model_type == "qwen2" and d.get("use_sliding_window") and d.get("sliding_window"):
            types = d.get("layer_types") or [
                "sliding_attention" if i >= d.get("max_window_layers", n_layers) else "full_attention"
                for i in range(n_layers)]
            windows = [int(d["sliding_window"]) if t == "sliding_attention" else NO_WINDOW for t in types]
        return cls(
            model_type=model_type,
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            num_key_value_heads=d.get("num_key_value_heads") or n_heads,
            head_dim=head_dim,
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            rope_scaling=rope_scaling,
            max_position_embeddings=d.get("max_position_embeddings", 2048),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            attention_bias=bool(d.get("attention_bias", False)) and model_type == "llama",
            qkv_bias=model_type == "qwen2",
            mlp_bias=bool(d.get("mlp_bias", False)),
            layer_windows=tuple(windows),
            initializer_range=float(d.get("initializer_range", 0.02)),
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=d.get("eos_token_id"),
            pad_token_id=d.get("pad_token_id"),
            **runtime,
        )

    def to_hf_dict(self, dtype: str = "float32") -> dict:
        """The config.json dict stock transformers needs to rebuild this architecture."""
        arch = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
        rope = {"rope_theta": self.rope_theta, "rope_type": "default", **dict(self.rope_scaling)}
        d = {
            "architectures": [arch[self.model_type]],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": rope,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "initializer_range": self.initializer_range,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "dtype": dtype,
        }
        if self.model_type == "llama":
            d["attention_bias"] = self.attention_bias
            d["mlp_bias"] = self.mlp_bias
        windows = set(self.layer_windows)
        if self.model_type == "mistral":
            (w,) = windows if len(windows) == 1 else (None,)
            d["sliding_window"] = None if w in (None, NO_WINDOW) else w
        if self.model_type == "qwen2":
            sliding = [w for w in self.layer_windows if w != NO_WINDOW]
            d["use_sliding_window"] = bool(sliding)
            d["sliding_window"] = sliding[0] if sliding else None
            d["layer_types"] = ["full_attention" if w == NO_WINDOW else "sliding_attention"
                                for w in self.layer_windows]
            if sliding:
                d["max_window_layers"] = self.layer_windows.index(sliding[0])
        return d

    @classmethod
    def from_json_file(cls, path: str, **runtime) -> "ModelConfig":
        with open(path) as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path} is not valid JSON: {e}") from e
        return cls.from_hf_dict(d, **runtime)
