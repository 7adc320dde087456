"""Reading an answer out of generated text, and the majority vote over samples.

    last_number("so 1,200 + 3 = 1,203.")   -> "1203"     GSM8K greedy: the last number, commas removed
    first_number(" 18 dollars")             -> "18"       GSM8K after "Therefore, the answer ... is"
    first_letter(" (B) library")            -> "B"        CSQA: the first standalone letter A-E
    majority(["18", None, "17", "18"])      -> "18"       most frequent; ties: the one seen first

Numbers are normalised so that equal values compare equal: commas dropped, "18.0" -> "18", "-3" keeps its
sign, "0.50" -> "0.5".
"""

from __future__ import annotations

import collections
import decimal
import re

# A number: optional minus, digits with optional thousands groups, optional decimals.
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
_LETTER = re.compile(r"(?<![A-Za-z])([A-E])(?![A-Za-z])")


def normalize_number(text: str) -> str | None:
    """"1,000" -> "1000", " 18.0" -> "18", "-3" -> "-3", "0.50" -> "0.5"; None if `text` is no number."""
    s = text.strip().replace(",", "").rstrip(".")
    try:
        d = decimal.Decimal(s)
    except decimal.InvalidOperation:
        return None
    if not d.is_finite():
        return None
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def _numbers(text: str) -> list[str]:
    out = []
    for m in _NUMBER.finditer(text):
        s = m.group()
        if s.startswith("-") and m.start() > 0 and text[m.start() - 1].isalnum():  # "5-3": a minus, not a sign
            s = s[1:]
        out.append(normalize_number(s))
    return [n for n in out if n is not None]


def last_number(text: str) -> str | None:
    nums = _numbers(text)
    return nums[-1] if nums else None


def first_number(text: str) -> str | None:
    nums = _numbers(text)
    return nums[0] if nums else None


def first_letter(text: str) -> str | None:
    m = _LETTER.search(text)
    return m.group(1) if m else None


def majority(answers: list) -> str | None:
    """The most frequent non-None answer; a tie goes to the answer whose first vote came earliest (so the
    result depends only on the votes' order, never on hashing). None when every vote is None."""
    votes = [a for a in answers if a is not None]
    if not votes:
        return None
    counts = collections.Counter(votes)
    first = {}
    for i, a in enumerate(votes):
        first.setdefault(a, i)
    return min(counts, key=lambda a: (-counts[a], first[a]))
