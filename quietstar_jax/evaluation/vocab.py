"""The token ids the evaluation needs, derived from the tokenizer in use (never hard-coded).

    valid = ValidTokens.derive(tokenizer)
    valid.digits    the ids a number's digits are written with after "A: " (Mistral-7B: the 10 ids 28734 ("0"),
                    28740 ("1"), ..., exactly the authors' list)
    valid.letters   A-E as they appear after "A: " (Mistral-7B: "▁A"=330, "▁B"=365, "▁C"=334, "▁D"=384,
                    "▁E"=413)
    valid.newline   the id(s) of the newline that ends an answer (Mistral-7B: 13, "<0x0A>")

Each set is read off real encodings: the token holding the last character of "\\nA: 7", "\\nA: 17" and
"\\nA: 1,7" (a first digit, a digit after a digit, a digit after a thousands comma), of "\\nA: B", and of
"\\nA: 7\\n" / "\\nA: B\\n". So byte-fallback ids that merely decode to a digit (Mistral's "<0x37>") are
not included, and a tokenizer that writes " 7" as one token contributes that token as well. A tokenizer
that merges several digits (or a letter with more text) into one token cannot be scored the authors'
way: ConfigError.

encode_default(tok, text): the tokenizer's default encode, special tokens included (Mistral adds BOS),
as the authors' evaluation tokenises.
"""

from __future__ import annotations

import dataclasses

from quietstar_jax.errors import ConfigError

DIGITS = "0123456789"
LETTERS = "ABCDE"


def encode_default(tok, text: str) -> list[int]:
    """The tokenizer's default encode (an HF tokenizer adds its special tokens, e.g. Mistral's BOS; the
    byte tokenizer has none)."""
    hf = getattr(tok, "hf", None)
    if hf is not None:
        return [int(i) for i in hf(text)["input_ids"]]
    return [int(i) for i in tok.encode(text)]


def encode_plain(tok, text: str) -> list[int]:
    """Without special tokens."""
    return [int(i) for i in tok.encode(text)]


def _last_token(tok, text: str, want: str) -> int:
    """The id of the token that ends `text`, which must decode to `want` (optionally after a space)."""
    ids = encode_plain(tok, text)
    last = ids[-1]
    shown = tok.decode([last])
    if shown not in (want, " " + want):
        raise ConfigError(f"the tokenizer writes the end of {text!r} as token {last} = {shown!r}, not {want!r} "
                          f"alone: the authors' metric needs single-character answer tokens; use the "
                          f"generation metrics (greedy, cot_maj) with this tokenizer")
    return last


@dataclasses.dataclass(frozen=True)
class ValidTokens:
    digits: tuple[int, ...]
    letters: tuple[int, ...]
    newline: tuple[int, ...]

    @property
    def numeric(self) -> tuple[int, ...]:
        """The set a numeric answer is renormalised over (the authors' valid_number_tokens)."""
        return tuple(sorted(set(self.digits) | set(self.newline)))

    @property
    def choice(self) -> tuple[int, ...]:
        """The set a letter answer is renormalised over (the authors' valid_letter_tokens)."""
        return tuple(sorted(set(self.letters) | set(self.newline)))

    @classmethod
    def derive(cls, tok) -> "ValidTokens":
        digits = {_last_token(tok, f"\nA: {ctx}{d}", d) for d in DIGITS for ctx in ("", "1", "1,")}
        letters = [_last_token(tok, f"\nA: {c}", c) for c in LETTERS]
        newline = {_last_token(tok, f"\nA: {a}\n", "\n") for a in ("7", "B")}
        if len(set(letters)) != len(LETTERS) or len(digits) < len(DIGITS):
            raise ConfigError(f"the tokenizer does not give distinct answer tokens (digits {sorted(digits)}, "
                              f"letters {letters})")
        return cls(tuple(sorted(digits)), tuple(letters), tuple(sorted(newline)))


def ids_containing(tok, vocab_size: int, text: str) -> tuple[int, ...]:
    """Every id < vocab_size whose decoded text contains `text` (e.g. the newline-bearing ids generation
    stops at)."""
    hf = getattr(tok, "hf", None)
    ids = list(range(vocab_size))
    shown = hf.batch_decode([[i] for i in ids]) if hf is not None else [tok.decode([i]) for i in ids]
    return tuple(i for i, s in zip(ids, shown) if text in s)
