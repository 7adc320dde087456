"""Thought tokens: <|startofthought|> / <|endofthought|> in the tokenizer and as trainable embeddings.

The two embeddings live outside the vocabulary table, in params["quietstar"]["thought_embeddings"]
(2, H), stored divided by `embedding_scale` and multiplied back when used: with Adam this gives them an
`embedding_scale` times larger effective learning rate (the reference's trick). The ids themselves come
from the tokenizer; when they fall inside the vocab (a padded embedding table) their logits are masked
so they are never sampled or predicted.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from quietstar_jax.model.config import ModelConfig
from quietstar_jax.model.transformer import embed
from quietstar_jax.quietstar.config import QuietStarConfig

START_TOKEN = "<|startofthought|>"
END_TOKEN = "<|endofthought|>"
INIT_TEXT = "---"


def add_thought_tokens(tokenizer) -> tuple[int, int, list[int]]:
    """Adds the two special tokens to an HF tokenizer (idempotent).

    Returns (start_id, end_id, ids of "---" used to initialise both embeddings)."""
    tokenizer.add_special_tokens({"additional_special_tokens": [START_TOKEN, END_TOKEN]},
                                 replace_extra_special_tokens=False)
    start, end = tokenizer.convert_tokens_to_ids([START_TOKEN, END_TOKEN])
    init = tokenizer(INIT_TEXT, add_special_tokens=False)["input_ids"]
    if not init:
        raise ValueError(f"tokenizer maps {INIT_TEXT!r} to no tokens")
    return int(start), int(end), [int(i) for i in init]


def init_thought_embeddings(params: dict, qs: QuietStarConfig, init_ids) -> jax.Array:
    """(2, H) float32: the mean embedding of `init_ids` for both start and end (a list of ids), or of
    init_ids[0] for start and init_ids[1] for end (a pair of lists), stored / scale."""
    table = jnp.asarray(params["model"]["embed_tokens"]["weight"], jnp.float32)
    pair = isinstance(init_ids, tuple) and len(init_ids) == 2 and not isinstance(init_ids[0], int)
    start_ids, end_ids = init_ids if pair else (init_ids, init_ids)
    mean = lambda ids: jnp.mean(jnp.take(table, jnp.asarray(ids), axis=0), axis=0)  # noqa: E731
    return jnp.stack([mean(start_ids), mean(end_ids)]) / qs.embedding_scale


def thought_init_ids(tokenizer, qs: QuietStarConfig):
    """What init_thought_embeddings starts from: the tokenizer's ids of "---" (the authors'), or the pair
    (ids of qs.start_init_text, ids of qs.end_init_text) when either differs."""
    if qs.start_init_text == INIT_TEXT and qs.end_init_text == INIT_TEXT:
        return tokenizer.init_ids
    ids = tuple(list(tokenizer.encode(t)) for t in (qs.start_init_text, qs.end_init_text))
    if not all(ids):
        raise ValueError(f"quietstar: start_init_text {qs.start_init_text!r} / end_init_text {qs.end_init_text!r} "
                         "encode to no tokens")
    return ids


def embed_with_thoughts(params: dict, cfg: ModelConfig, qs: QuietStarConfig, tokens: jax.Array) -> jax.Array:
    """tokens (...) -> (..., H): vocabulary embeddings, with start/end ids replaced by the trainable
    thought embeddings (times embedding_scale). Ids outside the table are only ever thought ids."""
    x = embed(params, cfg, jnp.clip(tokens, 0, cfg.vocab_size - 1))
    te = (params["quietstar"]["thought_embeddings"] * qs.embedding_scale).astype(x.dtype)
    x = jnp.where((tokens == qs.start_id)[..., None], te[0], x)
    return jnp.where((tokens == qs.end_id)[..., None], te[1], x)


def thought_ids_in_vocab(qs: QuietStarConfig, vocab_size: int) -> tuple[int, ...]:
    """The start/end ids that fall inside a vocabulary of `vocab_size` (a padded embedding table)."""
    return tuple(i for i in (qs.start_id, qs.end_id) if 0 <= i < vocab_size)


def mask_thought_logits(logits: jax.Array, qs: QuietStarConfig) -> jax.Array:
    """Sets the logits of the start/end ids to -inf where they are inside the vocabulary."""
    ids = np.array(thought_ids_in_vocab(qs, logits.shape[-1]), np.int32)
    if ids.size == 0:
        return logits
    return logits.at[..., ids].set(-jnp.inf)
