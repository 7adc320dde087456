"""Quiet-STaR hyper-parameters. Defaults reproduce the authors' code (ezelikman/quiet-star @ 892446b),
checked number for number against their float64 outputs (tests/test_golden.py).

Notation: N = n_ahead, M = n_ahead_talk, P = n_passes. A row is run as K = N + M - 1 streams (the
authors' "passes"):

    stream 0           the text x_p                      (base)
    stream 1           <|startofthought|>
    streams 2..N-2     T = N - 3 sampled thought tokens
    stream N-1         <|endofthought|>
    streams N..K-1     x_{p+1..p+M-1} teacher-forced     (extended teacher forcing)

so N counts the base stream, <start>, the T thought tokens and <end>. Talk step s = 0..M-1 reads stream
N-1+s and predicts x_{p+s+1}. N = M = P = 1 disables thinking (plain continued pretraining, the
baseline). Every field that deliberately departs from the authors' code is listed with its reason in
docs/algorithm.md.
"""

from __future__ import annotations

import dataclasses

from quietstar_jax.model.config import ConfigError

MIXERS = ("hidden", "logit")
POLICY_REDUCTIONS = ("mean", "sum")
POLICY_DENOMINATORS = ("all", "valid")
MIXING_HEAD_INITS = ("normal", "uniform")


@dataclasses.dataclass(frozen=True)
class QuietStarConfig:
    n_ahead: int = 12
    n_ahead_talk: int = 4
    n_passes: int = 2
    sample_temperature: float = 1.0  # thoughts are sampled at this temperature
    top_k: int = 0  # 0 = full vocabulary
    policy_temperature: float = 3.0  # log-probs for REINFORCE are recomputed at this temperature
    base_loss_weight: float = 0.5
    mix_loss_weight: float = 0.5
    policy_weight: float = 1e6
    clamp_advantage: bool = True  # clamp(A, min=0): only better-than-average thoughts get credit
    # Policy loss = mean over the T thought tokens ("mean", authors) or their sum ("sum": T x heavier).
    policy_reduction: str = "mean"
    # Denominator of each token's policy loss: every row x reward position, padding and zero advantages
    # included ("all", authors), or only the positions that get a reward ("valid").
    policy_denominator: str = "all"
    # Authors: a position near a document's end gets the sum of the reward terms whose targets exist.
    # True: only positions with all M targets get a reward.
    reward_needs_all_targets: bool = False
    # Authors: positions p > L - 2 - M of a row get no reward (their slice drops one position more
    # than the targets require).
    drop_last_reward_position: bool = True
    # Authors: the NLL softmax runs over every logit, the thought tokens' included (they are masked
    # only for sampling and the policy log-probs). True: masked in the NLL too.
    mask_thought_logits_in_nll: bool = False
    embedding_scale: float = 100.0  # thought embeddings stored / scale, used * scale (lr multiplier)
    mixer: str = "hidden"  # mix hidden states, or (equivalently, more compute) logits
    mixer_bounded: bool = False  # sigmoid on the mixing weight (authors: unbounded, w = 0 at init)
    # Mixing head init: "normal" = hidden layers N(0, initializer_range), zero biases (the authors'
    # HF _init_weights); "uniform" = torch nn.Linear's default. The last layer is zero either way.
    mixing_head_init: str = "normal"
    mixing_head_last_bias: bool = False  # authors: the last layer has no bias
    start_id: int = -1  # <|startofthought|>; set from the tokenizer
    end_id: int = -1  # <|endofthought|>
    # Token fed to the teacher-forced streams past the end of a row (the authors feed their pad id).
    # Only predictions without a target ever see it.
    pad_id: int = 0

    def __post_init__(self):
        self.validate()

    @property
    def enabled(self) -> bool:
        return not (self.n_ahead == 1 and self.n_ahead_talk == 1 and self.n_passes == 1)

    @property
    def num_streams(self) -> int:
        """K = N + M - 1 streams per row (base, <start>, T thoughts, <end>, M - 1 teacher-forced)."""
        return self.n_ahead + self.n_ahead_talk - 1

    @property
    def num_thought_tokens(self) -> int:
        """T = N - 3 sampled tokens between <start> and <end>."""
        return self.n_ahead - 3

    def validate(self) -> None:
        def need(cond, msg):
            if not cond:
                raise ConfigError(f"quietstar: {msg}")

        need(self.policy_reduction in POLICY_REDUCTIONS,
             f"policy_reduction {self.policy_reduction!r} not in {POLICY_REDUCTIONS}")
        need(self.policy_denominator in POLICY_DENOMINATORS,
             f"policy_denominator {self.policy_denominator!r} not in {POLICY_DENOMINATORS}")
        need(self.mixing_head_init in MIXING_HEAD_INITS,
             f"mixing_head_init {self.mixing_head_init!r} not in {MIXING_HEAD_INITS}")
        need(self.mixer in MIXERS, f"mixer {self.mixer!r} not in {MIXERS}")
        if not self.enabled:
            return
        need(self.n_ahead >= 3, f"n_ahead must be >= 3 (base, <start>, >= 0 thought tokens, <end>) or 1 "
                                f"to disable thinking, got {self.n_ahead}")
        need(self.n_ahead_talk >= 1, f"n_ahead_talk must be >= 1, got {self.n_ahead_talk}")
        need(self.n_passes >= 1, f"n_passes must be >= 1, got {self.n_passes}")
        need(self.sample_temperature > 0 and self.policy_temperature > 0, "temperatures must be > 0")
        need(self.top_k >= 0, f"top_k must be >= 0, got {self.top_k}")
        need(self.embedding_scale > 0, "embedding_scale must be > 0")

    def replace(self, **kw) -> "QuietStarConfig":
        return dataclasses.replace(self, **kw)
