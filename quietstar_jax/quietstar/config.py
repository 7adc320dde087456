"""Quiet-STaR hyper-parameters. Defaults reproduce the authors' reference implementation.

Notation: N = n_ahead (thought slots incl. start/end), M = n_ahead_talk (teacher-forced true tokens
after a thought, incl. the one predicted right after <end>), P = n_passes (thoughts per position).
Streams per row: K = N + M - 1 = [base | start | N-3 thought tokens | end | M-1 true tokens].
N = M = P = 1 disables thinking (plain continued pretraining, the baseline).
"""

from __future__ import annotations

import dataclasses

from quietstar_jax.model.config import ConfigError

MIXERS = ("hidden", "logit")


@dataclasses.dataclass(frozen=True)
class QuietStarConfig:
    n_ahead: int = 12
    n_ahead_talk: int = 4
    n_passes: int = 2
    sample_temperature: float = 1.0  # thoughts are sampled at this temperature (hard Gumbel-max)
    top_k: int = 0  # 0 = full vocabulary
    policy_temperature: float = 3.0  # log-probs for REINFORCE are recomputed at this temperature
    base_loss_weight: float = 0.5
    mix_loss_weight: float = 0.5
    policy_weight: float = 1e6
    clamp_advantage: bool = True  # clamp(A, min=0): only better-than-average thoughts get credit
    embedding_scale: float = 100.0  # thought embeddings stored / scale, used * scale (lr multiplier)
    mixer: str = "hidden"  # mix hidden states, or (equivalently, more compute) logits
    mixer_bounded: bool = False  # sigmoid on the mixing weight (reference: unbounded, w = 0 at init)
    # Reference quirk: positions p > L - 2 - M get no reward (one more than needed). Kept by default.
    drop_last_reward_position: bool = True
    start_id: int = -1  # <|startofthought|>; set from the tokenizer
    end_id: int = -1  # <|endofthought|>

    def __post_init__(self):
        self.validate()

    @property
    def enabled(self) -> bool:
        return not (self.n_ahead == 1 and self.n_ahead_talk == 1 and self.n_passes == 1)

    @property
    def num_streams(self) -> int:
        return self.n_ahead + self.n_ahead_talk - 1

    @property
    def num_thought_tokens(self) -> int:
        """Sampled tokens between <start> and <end>."""
        return self.n_ahead - 3

    def validate(self) -> None:
        def need(cond, msg):
            if not cond:
                raise ConfigError(f"quietstar: {msg}")

        if not self.enabled:
            return
        need(self.n_ahead >= 3, f"n_ahead must be >= 3 (start, >=0 thought tokens, end) or 1 to "
                                f"disable thinking, got {self.n_ahead}")
        need(self.n_ahead_talk >= 1, f"n_ahead_talk must be >= 1, got {self.n_ahead_talk}")
        need(self.n_passes >= 1, f"n_passes must be >= 1, got {self.n_passes}")
        need(self.sample_temperature > 0 and self.policy_temperature > 0, "temperatures must be > 0")
        need(self.top_k >= 0, f"top_k must be >= 0, got {self.top_k}")
        need(self.embedding_scale > 0, "embedding_scale must be > 0")
        need(self.mixer in MIXERS, f"mixer {self.mixer!r} not in {MIXERS}")

    def replace(self, **kw) -> "QuietStarConfig":
        return dataclasses.replace(self, **kw)
