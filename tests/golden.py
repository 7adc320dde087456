"""Reading the authors' golden fixture (tests/fixtures/reference_golden/, see its README and
PROVENANCE.md) into our configs, params and batches, and our gradients back into the authors' names.

A case folder holds case.json (HF config + the authors' Quiet-STaR attributes + inputs),
weights.safetensors / grads.safetensors (HF Mistral names plus start_embedding, end_embedding,
talk_head.0.*), expected.safetensors (every pass's tokens, NLLs, rewards, log-likelihoods, ...) and
expected.json (scalars, float64 gradient statistics).
"""

from __future__ import annotations

import json
import os

import numpy as np
from safetensors.numpy import load_file

from quietstar_jax.hf.mapping import hf_to_params, params_to_hf
from quietstar_jax.model.config import ModelConfig
from quietstar_jax.quietstar.config import QuietStarConfig

FIXTURE_DIR = os.path.join(os.path.dirname(__file__), "fixtures", "reference_golden")

# The authors' switches that select the algorithm we implement. A case with any other value uses a
# code path of theirs we do not model, so the comparison would be meaningless: fail loudly instead.
REQUIRED_FLAGS = {
    "first_and_last_mode": True, "trice_mode": True, "use_policy_loss": True, "include_policy_loss": True,
    "use_start_thought_token": True, "use_end_thought_token": True, "use_thought_prefix": False,
    "use_reparam_for_thought_embeddings": False, "gumbel_detach": True, "use_concat_talk_head": True,
    "use_shallow_talk": False, "use_complex_talk_head": True, "use_weighted_talk_head": True,
    "merged_lm_and_talk_heads": False, "residual_think_head": False, "cumulative_residual": False,
    "clever_residual": False, "skip_residual": False, "no_residual": True, "comparison_mode": False,
    "original_mode": False, "base_original_mode": False, "final_only_mode": False, "first_only": False,
    "subtract_mean_reward": False, "train_only_thinking_embedding": False, "use_upper_triangular": False,
}


def golden_root() -> str:
    return os.environ.get("QUIETSTAR_GOLDEN_DIR") or FIXTURE_DIR


def no_case_message(root: str) -> str | None:
    """None when `root` holds a case; else one line naming the folder and what to do."""
    if case_names(root):
        return None
    what = "does not exist" if not os.path.isdir(root) else "holds no case (a folder with case.json)"
    fix = ("set QUIETSTAR_GOLDEN_DIR to a folder of cases, or unset it to use the repository's fixture"
           if os.environ.get("QUIETSTAR_GOLDEN_DIR") else "restore tests/fixtures/reference_golden from git")
    return f"no golden case: {root} {what}; {fix}"


def case_names(root: str | None = None) -> list[str]:
    root = root or golden_root()
    if not os.path.isdir(root):
        return []
    return sorted(n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n, "case.json")))


class Case:
    """One case folder, read into our terms."""

    def __init__(self, folder: str):
        self.folder = folder
        with open(os.path.join(folder, "case.json")) as f:
            self.case = json.load(f)
        with open(os.path.join(folder, "expected.json")) as f:
            self.expected = json.load(f)
        self.arrays = load_file(os.path.join(folder, "expected.safetensors"))
        self.weights = load_file(os.path.join(folder, "weights.safetensors"))
        self.grads = load_file(os.path.join(folder, "grads.safetensors"))
        q = self.case["quietstar"]
        bad = {k: q.get(k) for k, v in REQUIRED_FLAGS.items() if q.get(k) != v}
        if bad:
            raise ValueError(f"{folder}: the authors' flags {bad} select code paths quietstar_jax does not "
                             f"implement (expected {({k: REQUIRED_FLAGS[k] for k in bad})})")
        self.N, self.M, self.P = q["n_ahead"], q["n_ahead_talk"], q["n_passes"]
        self.K = self.N + self.M - 1
        der = self.case["derived"]
        self.B, self.L = der["B"], der["L"]
        self.R = self.B * self.P
        self.Lr = self.L - 1 - self.M

    def model_config(self, dtype: str = "float64") -> ModelConfig:
        raw = dict(self.case["config"], model_type="mistral")
        return ModelConfig.from_hf_dict(raw, dtype=dtype)

    def case_settings(self) -> dict:
        """The QuietStarConfig fields the case sets: the authors' hyper-parameters and token ids it ran with."""
        q, tk = self.case["quietstar"], self.case["tokens"]
        w0, beta = q["original_loss_weight"], q["base_loss_beta"]
        return dict(
            n_ahead=self.N, n_ahead_talk=self.M, n_passes=self.P,
            sample_temperature=float(q["gumbel_temperature"]), policy_temperature=float(q["reinforce_temperature"]),
            base_loss_weight=w0 * beta, mix_loss_weight=(1 - w0) * beta, policy_weight=q["policy_loss_beta"],
            clamp_advantage=bool(q["remove_negative_rewards"]), embedding_scale=q["embedding_scale"],
            start_id=tk["start_thought_id"], end_id=tk["end_thought_id"], pad_id=tk["pad_id"])

    def quietstar_config(self, **overrides) -> QuietStarConfig:
        return QuietStarConfig(**{**self.case_settings(), **overrides})

    def params(self, cfg: ModelConfig, dtype=np.float64) -> dict:
        """Our param tree from the fixture's weights (stored float32, exact in float64)."""
        w = self.weights
        params = hf_to_params(cfg, lambda n: w[n], dtype=dtype)
        head = {}
        for name in w:
            if name.startswith("talk_head.0."):
                layer, kind = name.split(".")[2:4]
                head.setdefault(layer, {})[kind] = w[name].astype(dtype)
        # Row 0 of each (2, H) table is the embedding the authors use (row 1 only with their
        # reparametrisation, which is off); our (2, H) table is [start; end].
        te = np.stack([w["start_embedding"][0], w["end_embedding"][0]]).astype(dtype)
        params["quietstar"] = {"thought_embeddings": te, "talk_head": head}
        return params

    def batch(self) -> dict:
        inp = self.case["inputs"]
        ids = np.asarray(inp["input_ids"], np.int32)
        return {"tokens": ids, "segment_ids": np.asarray(inp["attention_mask"], np.int32),
                "positions": np.broadcast_to(np.arange(self.L, dtype=np.int32), ids.shape).copy()}

    def thoughts(self) -> np.ndarray:
        """(R, L, T) the sampled thought tokens the authors fed at passes 2..N-2."""
        return np.moveaxis(self.arrays["tokens_per_pass"][2:self.N - 1], 0, -1).astype(np.int32)

    def grads_to_hf(self, cfg: ModelConfig, grads: dict) -> dict:
        """Our gradient tree -> {authors' name: float64 array} with the fixture's shapes."""
        out = {name: np.asarray(a, np.float64) for name, a in params_to_hf(cfg, grads, np.float64)}
        q = grads["quietstar"]
        te = np.asarray(q["thought_embeddings"], np.float64)
        zero = np.zeros_like(te[0])
        out["start_embedding"] = np.stack([te[0], zero])
        out["end_embedding"] = np.stack([te[1], zero])
        for layer, d in q["talk_head"].items():
            for kind, a in d.items():
                out[f"talk_head.0.{layer}.{kind}"] = np.asarray(a, np.float64)
        return out


def grad_stats(g: np.ndarray) -> dict:
    """The fixture's per-tensor statistics: sum, sumsq, absmax, dot_cos = sum_i g_i cos(i) over the
    C-order flat index."""
    x = np.asarray(g, np.float64).ravel()
    return {"sum": float(x.sum()), "sumsq": float((x * x).sum()), "absmax": float(np.abs(x).max()),
            "dot_cos": float(x @ np.cos(np.arange(x.size, dtype=np.float64)))}
