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
THOUGHT_MODES = ("sample", "pause")
ADVANTAGE_NORMS = ("none", "batch", "group")
MIXING_WARMUP_MODES = ("fixed", "floor")
ADAPTER_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


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
    # ---- Stabilisers: opt-in departures from the authors' algorithm, each off by default (listed with
    # their reasons in docs/algorithm.md, "Stabilisers"). The loss is lm_term + thought_term:
    #   lm_term      = base_loss_weight * NLL_base + mix_loss_weight * NLL_mix
    #   thought_term = policy_weight * L_policy - entropy_bonus * H + kl_coef * KL
    # "sample": thoughts sampled from the model (authors); "pause": every thought token is <start> (no
    # content, no sampling, no policy term): the same extra positions without a thought in them.
    thought_mode: str = "sample"
    # H: mean entropy of the thought tokens' sampling distributions (masked thought ids, at
    # sample_temperature, full vocabulary), with its gradient. 0 = off.
    entropy_bonus: float = 0.0
    # KL: mean KL(p || p_init) of the same distributions against the initial params' (a frozen copy kept in
    # the train state). 0 = off.
    kl_coef: float = 0.0
    # Advantages before the clamp: "none" (authors), "batch": divided by the std of the baselined rewards
    # over the batch's rewarded positions, "group": by their std over the P thoughts of each position.
    advantage_norm: str = "none"
    # Regex over param paths ("a/b/c", e.g. "quietstar/.*"): the only params thought_term's gradient may
    # move (the others learn from lm_term alone). "" = every param (authors).
    policy_params: str = ""
    # In (0, 1): thought_term's gradient is scaled down, when needed, so that its norm is at most
    # share / (1 - share) x lm_term's (a bound on the policy's share of the update instead of trusting
    # the fixed policy_weight). 0 = off.
    policy_grad_max_share: float = 0.0
    # Mixing-weight warm-up for the first mixing_warmup_steps optimizer steps: "fixed" uses w =
    # mixing_warmup_value, "floor" uses max(w, value * (1 - step / steps)) (a floor that decays to 0).
    mixing_warmup_steps: int = 0
    mixing_warmup_mode: str = "fixed"
    mixing_warmup_value: float = 1.0
    # Thought adapters: rank-r low-rank adapters on adapter_targets of every layer, active only in the
    # thought and talk streams (never in the text's own stream). 0 = none. Scale alpha / rank
    # (adapter_alpha 0: alpha = rank).
    adapter_rank: int = 0
    adapter_alpha: float = 0.0
    adapter_targets: str = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    # The texts whose mean token embedding initialises the <start> and <end> embeddings (authors: "---"
    # for both, a neutral separator in natural text). Only the initial params depend on them.
    start_init_text: str = "---"
    end_init_text: str = "---"
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
        need(self.thought_mode in THOUGHT_MODES, f"thought_mode {self.thought_mode!r} not in {THOUGHT_MODES}")
        need(self.advantage_norm in ADVANTAGE_NORMS,
             f"advantage_norm {self.advantage_norm!r} not in {ADVANTAGE_NORMS}")
        need(self.mixing_warmup_mode in MIXING_WARMUP_MODES,
             f"mixing_warmup_mode {self.mixing_warmup_mode!r} not in {MIXING_WARMUP_MODES}")
        need(self.entropy_bonus >= 0 and self.kl_coef >= 0, "entropy_bonus and kl_coef must be >= 0")
        need(0 <= self.policy_grad_max_share < 1, f"policy_grad_max_share must be in [0, 1), got "
                                                  f"{self.policy_grad_max_share}")
        need(self.mixing_warmup_steps >= 0, f"mixing_warmup_steps must be >= 0, got {self.mixing_warmup_steps}")
        need(self.adapter_rank >= 0 and self.adapter_alpha >= 0, "adapter_rank and adapter_alpha must be >= 0")
        bad = [t for t in self.adapter_target_names if t not in ADAPTER_TARGETS]
        need(not bad and (self.adapter_target_names or not self.adapter_rank),
             f"adapter_targets {self.adapter_targets!r}: comma-separated names from {ADAPTER_TARGETS}")
        if self.policy_params:
            import re

            try:
                re.compile(self.policy_params)
            except re.error as e:
                need(False, f"policy_params {self.policy_params!r} is not a regular expression ({e})")
        if not self.enabled:
            return
        need(self.n_ahead >= 3, f"n_ahead must be >= 3 (base, <start>, >= 0 thought tokens, <end>) or 1 "
                                f"to disable thinking, got {self.n_ahead}")
        need(self.n_ahead_talk >= 1, f"n_ahead_talk must be >= 1, got {self.n_ahead_talk}")
        need(self.n_passes >= 1, f"n_passes must be >= 1, got {self.n_passes}")
        need(self.sample_temperature > 0 and self.policy_temperature > 0, "temperatures must be > 0")
        need(self.top_k >= 0, f"top_k must be >= 0, got {self.top_k}")
        need(self.embedding_scale > 0, "embedding_scale must be > 0")

    @property
    def adapter_target_names(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.adapter_targets.split(",") if t.strip())

    @property
    def adapter_scale(self) -> float:
        """alpha / rank: what the adapters' low-rank product is multiplied by."""
        return (self.adapter_alpha or self.adapter_rank) / max(self.adapter_rank, 1)

    @property
    def samples_thoughts(self) -> bool:
        """Thoughts are drawn from the model (not fixed pause tokens) and there are some."""
        return self.thought_mode == "sample" and self.num_thought_tokens > 0

    @property
    def routes_thought_gradient(self) -> bool:
        """thought_term's gradient is computed apart from lm_term's (policy_params or the share bound)."""
        return bool(self.policy_params) or self.policy_grad_max_share > 0

    def replace(self, **kw) -> "QuietStarConfig":
        return dataclasses.replace(self, **kw)
