"""Text -> token ids: a small wrapper the pipeline tokenises with (HF tokenizer or UTF-8 bytes).

The pipeline needs more than ``encode``: the BOS/EOS ids it may add around documents, and a fingerprint
that names the tokenisation, because tokenised corpora are cached on disk under a key that includes it
(a different tokenizer must never reuse another tokenizer's cache).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import threading
from typing import Callable, Sequence

import numpy as np

# Text the fallback fingerprint encodes: letters, digits, spacing, punctuation, LaTeX, non-ASCII.
_PROBE = ("The 3 quick brown foxes jumped 12.5 m, then 4x+7=19 so x=3.\n\n  Let $f(n)=\\sum_{k=1}^n k^2$; "
          "f(10) = 385. Über café naïve 数学 λ≥0 → ∞ 🙂 <|endoftext|> #### 42")


@dataclasses.dataclass(frozen=True)
class TextEncoder:
    """encode(text) -> token ids WITHOUT special tokens; the pipeline adds BOS/EOS itself (data.add_bos /
    data.add_eos) so that every source and tokenizer is treated alike.

    fingerprint: names the tokenisation for the on-disk cache; None = derived from encoding a fixed
    probe text (safe for any deterministic encode, but give a real one when you have it).
    encode_batch: optional faster list version (used when preparing a corpus).
    """

    encode: Callable[[str], Sequence[int]]
    bos_id: int | None = None
    eos_id: int | None = None
    fingerprint: str | None = None
    encode_batch: Callable[[list[str]], list[Sequence[int]]] | None = None

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        """[n] texts -> n int32 arrays."""
        out = self.encode_batch(texts) if self.encode_batch is not None else [self.encode(t) for t in texts]
        return [np.asarray(ids, np.int32).reshape(-1) for ids in out]

    def cache_fingerprint(self) -> str:
        if self.fingerprint:
            return self.fingerprint
        ids = [int(i) for i in self.encode(_PROBE)]
        return "probe:" + hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:32]


def as_encoder(encoder) -> TextEncoder:
    """A TextEncoder from: a TextEncoder; a tokenizer object with ``encode`` and optional ``bos_id`` /
    ``eos_id`` / ``fingerprint`` (e.g. quietstar_jax.training.tokenizer's; one carrying an HF tokenizer
    in ``.hf`` is encoded through its Rust backend, see hf_encoder); or a plain encode(text) -> ids."""
    if isinstance(encoder, TextEncoder):
        return encoder
    if isinstance(getattr(encoder, "text_encoder", None), TextEncoder):
        return encoder.text_encoder  # training/tokenizer.py's classes already hold one
    if callable(getattr(encoder, "encode", None)):
        bos, eos = getattr(encoder, "bos_id", None), getattr(encoder, "eos_id", None)
        if getattr(encoder, "hf", None) is not None:
            return hf_encoder(encoder.hf, bos_id=bos, eos_id=eos)
        fp = getattr(encoder, "fingerprint", None)
        return TextEncoder(encode=encoder.encode, bos_id=bos, eos_id=eos,
                           fingerprint=f"{type(encoder).__name__}:{fp}" if fp else None)
    if callable(encoder):
        return TextEncoder(encode=encoder)
    raise TypeError(f"expected a TextEncoder, a tokenizer with .encode or an encode(text) -> ids callable, "
                    f"got {type(encoder).__name__}")


def _utf8_bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def byte_encoder(bos_id: int | None = None, eos_id: int | None = None) -> TextEncoder:
    """UTF-8 bytes as ids 0..255 (the tiny demo model's vocabulary). Bytes leave no id free for BOS/EOS:
    pass ids the model's vocabulary has (>= 256), else data.add_bos / add_eos add nothing."""
    return TextEncoder(encode=_utf8_bytes, bos_id=bos_id, eos_id=eos_id, fingerprint="utf8-bytes-v1")


def hf_encoder(tokenizer, *, bos_id: int | None = None, eos_id: int | None = None) -> TextEncoder:
    """An HF tokenizer (object, or a folder / hub name for AutoTokenizer) as a TextEncoder.

    bos_id / eos_id override the tokenizer's own (chat models often report chat markers: SmolLM2-Instruct
    says bos <|im_start|>, eos <|im_end|>; pretraining-style text may prefer <|endoftext|>).

    Uses the fast tokenizer's Rust backend directly when present: it is thread-safe for encoding (the
    Python ``tokenizer(text)`` call re-sets truncation/padding state on every call, which fails with
    "Already borrowed" when grain's reader threads tokenise concurrently) and batch-encodes in parallel.
    """
    if isinstance(tokenizer, str):
        import transformers

        tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        encode = functools.partial(_backend_encode, backend)
        encode_batch = functools.partial(_backend_encode_batch, backend)
        spec = backend.to_str()
    else:  # slow (pure Python) tokenizer: serialise calls
        encode = functools.partial(_locked_encode, tokenizer, threading.Lock())
        encode_batch = None
        spec = json.dumps(sorted(tokenizer.get_vocab().items()))
    fp = f"hf:{type(tokenizer).__name__}:" + hashlib.sha256(spec.encode()).hexdigest()[:32]
    return TextEncoder(encode=encode, bos_id=tokenizer.bos_token_id if bos_id is None else bos_id,
                       eos_id=tokenizer.eos_token_id if eos_id is None else eos_id,
                       fingerprint=fp, encode_batch=encode_batch)


def _backend_encode(backend, text: str) -> list[int]:
    return backend.encode(text, add_special_tokens=False).ids


def _backend_encode_batch(backend, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]


def _locked_encode(tokenizer, lock, text: str) -> list[int]:
    with lock:
        return tokenizer(text, add_special_tokens=False)["input_ids"]
