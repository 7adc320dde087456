"""Generation with thinking: KV-cached, batched, static shapes, one jitted program.

    out = generate(params, cfg, qs, GenerateConfig(max_new_tokens=64), prompts, lengths, key)  # jit it
    out.tokens (B, max_new)   out.lengths (B,)   out.thoughts (B, max_new, T)   out.weights (B, max_new)

Per generated token, for every row at once (quietstar_jax.model.decode):
  1. the thought: <start>, T sampled tokens, <end> run as decode steps in branch slots that see the
     text so far and the thought only (no earlier thought is ever in the cache, as in training);
  2. the mixing head mixes the hidden state at <end> with the last text token's: the next-token
     distribution after thinking (think.py computes the same thing for all positions at once);
  3. the chosen token is appended to the text's cache.
Tokens that do not wait for a sample share a decode step (one read of the weights): the chosen token
with the next thought's <start> (so the state carries the hidden state at <start>), the thought's last
token with <end>. A token thus costs T + 1 = N - 2 decode steps (N = T + 3 tokens pass through the
model) against 1 for plain decoding. think=False is plain decoding.
Prompts of different lengths share a batch (left-aligned internally, positions restart per row);
rows stop at an EOS id and are then padded with pad_id. The same `advance` function serves the
jitted while loop (`generate`) and token-by-token streaming (`Generator.stream`), so both agree.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from quietstar_jax.errors import ConfigError
from quietstar_jax.inference.sampler import Sampler, choose, draw
from quietstar_jax.model.config import ModelConfig
from quietstar_jax.model.decode import DecodeCache, cpu_decode_params, decode_step, params_for_decoding, prefill
from quietstar_jax.model.transformer import lm_logits
from quietstar_jax.quietstar.adapters import thought_adapters
from quietstar_jax.quietstar.config import QuietStarConfig
from quietstar_jax.quietstar.mixing import mixed_logits, mixing_weight
from quietstar_jax.quietstar.tokens import embed_with_thoughts, mask_thought_logits
from quietstar_jax.sharding.rules import under_mesh


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    max_new_tokens: int = 64
    think: bool = True  # False: plain decoding (the base model's distribution)
    thought_tokens: int | None = None  # T sampled tokens per thought; None: training's N - 3
    output: Sampler = Sampler()  # how the next token is chosen (default greedy)
    thought: Sampler | None = None  # how thought tokens are sampled; None: training's temperature / top-k
    eos_ids: tuple = ()  # a row stops after emitting one of these
    pad_id: int = 0  # what finished rows emit

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.thought_tokens is not None and self.thought_tokens < 0:
            raise ConfigError(f"thought_tokens must be >= 0, got {self.thought_tokens}")

    def num_thought_tokens(self, qs: QuietStarConfig) -> int:
        return qs.num_thought_tokens if self.thought_tokens is None else self.thought_tokens

    def thought_sampler(self, qs: QuietStarConfig) -> Sampler:
        return self.thought or Sampler(temperature=qs.sample_temperature, top_k=qs.top_k)


@struct.dataclass
class GenState:
    cache: DecodeCache
    h_last: jax.Array  # (B, H) final hidden state of the last text token
    h_start: jax.Array  # (B, H) final hidden state at the next thought's <start> (thinking only)
    pos_last: jax.Array  # (B,) its position id
    step: jax.Array  # () tokens generated so far
    done: jax.Array  # (B,) bool
    tokens: jax.Array  # (B, max_new) int32
    thoughts: jax.Array  # (B, max_new, T) int32
    weights: jax.Array  # (B, max_new) float32
    lengths: jax.Array  # (B,) int32 tokens generated up to and including EOS
    rows: jax.Array  # (B,) int32 row ids: whose random draws each row uses


@struct.dataclass
class GenerateOutput:
    tokens: jax.Array
    lengths: jax.Array
    thoughts: jax.Array
    weights: jax.Array


def left_align(prompts: jax.Array, lengths: jax.Array, padding: str) -> jax.Array:
    """(B, P) prompts padded on the `padding` side ("right" or "left") -> left-padded (real tokens end
    at column P - 1 in every row)."""
    if padding == "left":
        return prompts
    if padding != "right":
        raise ConfigError(f"padding must be 'left' or 'right', got {padding!r}")
    P = prompts.shape[1]
    src = (jnp.arange(P)[None, :] - (P - lengths[:, None])) % P
    return jnp.take_along_axis(prompts, src, axis=1)


def start(params: dict, cfg: ModelConfig, qs: QuietStarConfig, gen: GenerateConfig, prompts: jax.Array,
          lengths: jax.Array, padding: str = "right", rows: jax.Array | None = None) -> GenState:
    """Prefill: the prompts (B, P) with `lengths` (B,) real tokens (>= 1) -> the state before the first
    generated token. The cache has room for P + max_new_tokens text entries and N - 1 thought slots.
    rows (B,): each row's id for its random draws (default 0..B-1; a row generates the same text alone
    with rows=[i] as at index i of a batch)."""
    B, P = prompts.shape
    prompts = left_align(prompts, lengths, padding)
    pad = P - lengths[:, None]
    col = jnp.arange(P)[None, :]
    valid = col >= pad
    positions = jnp.maximum(col - pad, 0).astype(jnp.int32)
    x = embed_with_thoughts(params, cfg, qs, jnp.where(valid, prompts, 0))
    T = gen.num_thought_tokens(qs)
    hidden, cache = prefill(params, cfg, x, positions, valid, P + gen.max_new_tokens, num_slots=T + 2)
    h_last, pos_last = hidden[:, -1], positions[:, -1]
    if gen.think:  # the first thought's <start> (later ones ride with the chosen token)
        h_start, cache = _feed_thought(params, cfg, qs, jnp.full((B, 1), qs.start_id, jnp.int32), 0, pos_last, cache)
        h_start = h_start[:, 0]
    else:
        h_start = jnp.zeros_like(h_last)
    n = gen.max_new_tokens
    return GenState(cache, h_last, h_start, pos_last, jnp.zeros((), jnp.int32), jnp.zeros((B,), bool),
                    jnp.full((B, n), gen.pad_id, jnp.int32), jnp.zeros((B, n, T), jnp.int32),
                    jnp.zeros((B, n), jnp.float32), jnp.zeros((B,), jnp.int32),
                    jnp.arange(B, dtype=jnp.int32) if rows is None else jnp.asarray(rows, jnp.int32))


def _feed_thought(params, cfg, qs, ids, slot, pos_last, cache):
    """Thought tokens ids (B, c) into slots slot..slot + c - 1 of the thought of text position pos_last (B,)
    -> their hidden states (B, c, H) and the cache."""
    c = ids.shape[1]
    positions = pos_last[:, None] + 1 + slot + jnp.arange(c, dtype=jnp.int32)[None]
    return decode_step(params, cfg, embed_with_thoughts(params, cfg, qs, ids), positions, cache, slot=slot,
                       anchor=pos_last, adapters=thought_adapters(params, qs))


def _thought(params, cfg, qs, gen, cache, h_start, pos_last, key, step, rows):
    """T sampled tokens and <end> in the branch slots after the <start> whose hidden state is h_start
    (B, H) -> (h at <end> (B, H), thought (B, T), cache). The last sampled token and <end> share a step."""
    B = h_start.shape[0]
    T = gen.num_thought_tokens(qs)
    sampler = gen.thought_sampler(qs)
    end = jnp.full((B, 1), qs.end_id, jnp.int32)

    def sample(h, j):  # t_{j+1} from the hidden state of the token before it
        if qs.thought_mode == "pause":  # fixed thoughts (as trained): <start> tokens, nothing drawn
            return jnp.full((B,), qs.start_id, jnp.int32)
        logits = mask_thought_logits(lm_logits(params, cfg, h), qs)
        return choose(logits, draw(key, step, 1 + j, rows), sampler).astype(jnp.int32)

    if T == 0:
        h, cache = _feed_thought(params, cfg, qs, end, 1, pos_last, cache)
        return h[:, 0], jnp.zeros((B, 0), jnp.int32), cache

    def body(carry, j):
        h, cache = carry
        tok = sample(h, j)
        h, cache = _feed_thought(params, cfg, qs, tok[:, None], 1 + j, pos_last, cache)
        return (h[:, 0], cache), tok

    (h, cache), toks = jax.lax.scan(body, (h_start, cache), jnp.arange(T - 1))
    last = sample(h, T - 1)
    h, cache = _feed_thought(params, cfg, qs, jnp.concatenate([last[:, None], end], axis=1), T, pos_last, cache)
    thought = jnp.concatenate([jnp.moveaxis(toks, 0, 1).reshape(B, T - 1), last[:, None]], axis=1)
    return h[:, 1], thought, cache


def next_token_logits(params, cfg, qs, gen, state: GenState, key):
    """The distribution of the next token (B, V) (thought ids at -inf), the thought (B, T), the mixing
    weight (B,) and the cache with the thought's slots written."""
    cache = state.cache
    B = state.h_last.shape[0]
    if gen.think:
        h_end, thought, cache = _thought(params, cfg, qs, gen, cache, state.h_start, state.pos_last, key,
                                         state.step, state.rows)
        w = mixing_weight(params["quietstar"]["talk_head"], qs, state.h_last, h_end)  # (B, 1)
        logits = mixed_logits(params, cfg, qs, state.h_last, h_end, w)
        w = w[:, 0]
    else:
        thought = jnp.zeros((B, gen.num_thought_tokens(qs)), jnp.int32)
        logits, w = lm_logits(params, cfg, state.h_last), jnp.zeros((B,), jnp.float32)
    return mask_thought_logits(logits.astype(jnp.float32), qs), thought, w.astype(jnp.float32), cache


def advance(params: dict, cfg: ModelConfig, qs: QuietStarConfig, gen: GenerateConfig, state: GenState,
            key: jax.Array) -> GenState:
    """One generated token for every row (finished rows emit pad_id)."""
    B = state.h_last.shape[0]
    t = state.step
    logits, thought, w, cache = next_token_logits(params, cfg, qs, gen, state, key)
    tok = choose(logits, draw(key, t, 0, state.rows), gen.output)
    tok = jnp.where(state.done, gen.pad_id, tok)
    eos = jnp.isin(tok, jnp.asarray(gen.eos_ids, jnp.int32)) if gen.eos_ids else jnp.zeros((B,), bool)
    put = lambda buf, val: jax.lax.dynamic_update_index_in_dim(buf, val, t, axis=1)  # noqa: E731
    P = cache.max_len - gen.max_new_tokens
    pos = state.pos_last + 1
    if gen.think:  # the token and the next thought's <start> in one step
        ids = jnp.stack([tok, jnp.full((B,), qs.start_id, jnp.int32)], axis=1)
        positions = pos[:, None] + jnp.arange(2, dtype=jnp.int32)[None]
        h, cache = decode_step(params, cfg, embed_with_thoughts(params, cfg, qs, ids), positions, cache,
                               text_index=P + t, slot=0, adapters=thought_adapters(params, qs))
        h_last, h_start = h[:, 0], h[:, 1]
    else:
        h, cache = decode_step(params, cfg, embed_with_thoughts(params, cfg, qs, tok[:, None]), pos[:, None], cache,
                               text_index=P + t)
        h_last, h_start = h[:, 0], state.h_start
    return GenState(cache, h_last, h_start, pos, t + 1, state.done | eos, put(state.tokens, tok),
                    put(state.thoughts, thought), put(state.weights, w), state.lengths + (~state.done).astype(jnp.int32),
                    state.rows)


def generate(params: dict, cfg: ModelConfig, qs: QuietStarConfig, gen: GenerateConfig, prompts: jax.Array,
             lengths: jax.Array, key: jax.Array, padding: str = "right", rows: jax.Array | None = None
             ) -> GenerateOutput:
    """All tokens in one program (jit it; cfg, qs, gen and padding are static): a while loop over
    generated tokens that stops when every row is done or max_new_tokens are out."""
    state = start(params, cfg, qs, gen, prompts, lengths, padding, rows)
    state = jax.lax.while_loop(lambda s: (s.step < gen.max_new_tokens) & ~jnp.all(s.done),
                               lambda s: advance(params, cfg, qs, gen, s, key), state)
    return GenerateOutput(state.tokens, state.lengths, state.thoughts, state.weights)


class Generator:
    """Jitted generation for one model: `generate` for whole batches, `stream` for token-by-token output
    (a Python loop over the same jitted `advance`). mesh: the params' mesh (e.g. the training mesh: params
    fsdp / tensor sharded as in training, prompts sharded over the batch axes); None on one device.
    cpu_layout: decode from a copy of the params in the CPU layout (model.decode.cpu_decode_params:
    per-layer (in, out) weights); default on CPU, where it makes a decode step ~1.7x faster, off on TPU."""

    def __init__(self, params: dict, cfg: ModelConfig, qs: QuietStarConfig, gen: GenerateConfig,
                 padding: str = "right", mesh=None, cpu_layout: bool | None = None):
        if cpu_layout is None:
            params = params_for_decoding(params, mesh)
        elif cpu_layout:
            params = cpu_decode_params(params)
        self.params, self.cfg, self.qs, self.gen, self.padding = params, cfg, qs, gen, padding
        self._generate = jax.jit(under_mesh(lambda p, x, n, k, r: generate(p, cfg, qs, gen, x, n, k, padding, r),
                                            mesh))
        self._start = jax.jit(under_mesh(lambda p, x, n, r: start(p, cfg, qs, gen, x, n, padding, r), mesh))
        self._advance = jax.jit(under_mesh(lambda p, s, k: advance(p, cfg, qs, gen, s, k), mesh),
                                donate_argnums=(1,))

    def generate(self, prompts, lengths, key, rows=None) -> GenerateOutput:
        return self._generate(self.params, _ints(prompts), _ints(lengths), key, self._rows(prompts, rows))

    @staticmethod
    def _rows(prompts, rows):
        return jnp.arange(len(prompts), dtype=jnp.int32) if rows is None else jnp.asarray(rows, jnp.int32)

    def stream(self, prompts, lengths, key, rows=None) -> Iterator[dict]:
        """Yields, per generated token, host arrays {"step", "tokens" (B,), "thoughts" (B, T), "weights"
        (B,), "done" (B,)} until every row is done."""
        state = self._start(self.params, _ints(prompts), _ints(lengths), self._rows(prompts, rows))
        for t in range(self.gen.max_new_tokens):
            state = self._advance(self.params, state, key)
            out = jax.device_get((state.tokens[:, t], state.thoughts[:, t], state.weights[:, t], state.done))
            yield {"step": t, "tokens": np.asarray(out[0]), "thoughts": np.asarray(out[1]),
                   "weights": np.asarray(out[2]), "done": np.asarray(out[3])}
            if bool(np.all(out[3])):
                return


def _ints(x):
    """int32, keeping a sharded jax.Array's layout."""
    return x.astype(jnp.int32) if isinstance(x, jax.Array) else jnp.asarray(x, jnp.int32)
