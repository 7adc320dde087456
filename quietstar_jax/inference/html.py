"""A self-contained HTML page to look at a Quiet-STaR model's thoughts, token by token.

    render_page(title, tokens, mode, meta=None) -> str      (pure Python, no JAX)

`mode` is "generate" (a prompt, then generated tokens) or "score" (given text scored token by token).
Each token is a dict (missing optional keys count as None):

    text            str          the token exactly as decoded (spaces, newlines, <, &, unicode...)
    role            str          "prompt" | "generated" | "text"
    thought         str | None   the decoded thought that preceded predicting this token
    thought_tokens  list[str] | None   that thought, one string per thought token
    weight          float | None mixing weight w (how much the post-thought prediction is used)
    logp_base       float | None log p(token) before thinking      (score mode)
    logp_mixed      float | None log p(token) after thinking       (score mode)
    delta_logp      float | None logp_mixed - logp_base: > 0 means thinking helped

The page is one file: inline CSS and JS, no network, no external fonts. The token spans, their colours
and a plain `title` tooltip are rendered here in Python, so the text, the colours and the numbers are
there even with JavaScript off; the JS (tooltips, the pinned side panel, view toggles) only reads the
token data embedded as JSON in <script type="application/json" id="qs-data"> and never writes
token or meta text as HTML (textContent only), so nothing in them can inject markup.

Thoughts are shown *before* the token they precede (`prev ⟨thought⟩ token`): in Quiet-STaR the model
reads a token, thinks, then predicts the next one, so that is the order in which things happen.
"""

from __future__ import annotations

import html
import json
import math
from importlib import resources
from typing import Any

MODES = ("generate", "score")
ROLES = ("prompt", "generated", "text")
FIELDS = ("text", "role", "thought", "thought_tokens", "weight", "logp_base", "logp_mixed", "delta_logp")
_FLOAT_FIELDS = ("weight", "logp_base", "logp_mixed", "delta_logp")
DATA_FORMAT = "quietstar-thoughts/1"

# Diverging colours (ColorBrewer RdBu / PRGn ends), applied as rgba so they work on light and dark
# backgrounds. Blue = thinking helped (delta > 0), red = hurt; purple = w > 0, green = w < 0 (the
# mixing head is unbounded by default, so w can be negative).
_HELPED, _HURT = (33, 102, 172), (178, 24, 43)
_W_POS, _W_NEG = (118, 42, 131), (27, 120, 55)
_MAX_ALPHA = 0.8
# The colour range is the 95th percentile of |value| (nearest rank), not the maximum: one token that
# thinking helped by 8 nats would otherwise wash every other token out. Beyond it colours saturate;
# the legend says so and gives the observed min and max.
_RANGE_QUANTILE = 0.95


# ----------------------------------------------------------------------------------------- data ---

def _clean_str(s: str) -> str:
    """Lone surrogates (from a lossy decode) cannot be encoded as UTF-8: make them U+FFFD."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _as_float(x: Any, where: str) -> float | None:
    """float(x) for Python, numpy or 0-d JAX numbers; NaN/inf become None (JSON has no NaN)."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a number or None, got {x!r}") from None
    return v if math.isfinite(v) else None


def _json_safe(x: Any) -> Any:
    """Meta values as JSON: numbers, strings, bools, None, lists and dicts; anything else as str()."""
    if x is None or isinstance(x, (bool, int, str)):
        return _clean_str(x) if isinstance(x, str) else x
    if isinstance(x, float):
        return x if math.isfinite(x) else str(x)
    if isinstance(x, dict):
        return {_clean_str(str(k)): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if hasattr(x, "tolist") and hasattr(x, "ndim"):  # numpy / JAX scalars and arrays
        return _json_safe(x.tolist())
    return _clean_str(str(x))


def normalize_tokens(tokens: list[dict], mode: str) -> list[dict]:
    """Validated copies of the token dicts with exactly FIELDS as keys (in that order): floats as
    Python floats (NaN/inf -> None), strings made UTF-8-safe. For ordinary input the result equals
    the input, which is what the page embeds."""
    default_role = "text" if mode == "score" else "generated"
    out = []
    for i, t in enumerate(tokens):
        if not isinstance(t, dict):
            raise ValueError(f"token {i}: expected a dict, got {type(t).__name__}")
        text = t.get("text")
        if not isinstance(text, str):
            raise ValueError(f"token {i}: 'text' must be a str, got {text!r}")
        role = t.get("role") or default_role
        if role not in ROLES:
            raise ValueError(f"token {i}: role must be one of {ROLES}, got {role!r}")
        thought = t.get("thought")
        if thought is not None and not isinstance(thought, str):
            raise ValueError(f"token {i}: 'thought' must be a str or None, got {thought!r}")
        tt = t.get("thought_tokens")
        if tt is not None:
            if not isinstance(tt, (list, tuple)) or not all(isinstance(s, str) for s in tt):
                raise ValueError(f"token {i}: 'thought_tokens' must be a list of str or None")
            tt = [_clean_str(s) for s in tt]
        row = {"text": _clean_str(text), "role": role,
               "thought": None if thought is None else _clean_str(thought), "thought_tokens": tt}
        for f in _FLOAT_FIELDS:
            row[f] = _as_float(t.get(f), f"token {i} {f!r}")
        out.append(row)
    return out


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def summarize(tokens: list[dict], mode: str) -> dict:
    """The header's numbers, from normalized tokens. Fractions and means are over the tokens that
    have the value (prompt tokens have no weight; unscored tokens no delta)."""
    weights = [t["weight"] for t in tokens if t["weight"] is not None]
    deltas = [t["delta_logp"] for t in tokens if t["delta_logp"] is not None]
    base = [t["logp_base"] for t in tokens if t["logp_base"] is not None]
    mixed = [t["logp_mixed"] for t in tokens if t["logp_mixed"] is not None]
    s = {
        "mode": mode,
        "n_tokens": len(tokens),
        "n_prompt": sum(t["role"] == "prompt" for t in tokens),
        "n_generated": sum(t["role"] == "generated" for t in tokens),
        "n_thoughts": sum(t["thought"] is not None for t in tokens),
        "n_weights": len(weights),
        "mean_weight": _mean(weights),
        "n_scored": len(deltas),
        "mean_delta": _mean(deltas),
        "frac_helped": (sum(d > 0 for d in deltas) / len(deltas)) if deltas else None,
        "frac_hurt": (sum(d < 0 for d in deltas) / len(deltas)) if deltas else None,
        "mean_logp_base": _mean(base),
        "mean_logp_mixed": _mean(mixed),
    }
    return s


def color_range(values: list[float]) -> float:
    """Half-width R of a diverging scale centred on 0: the 95th percentile of |v| (nearest rank),
    else max |v|, else 1 (all zero: every token is neutral anyway, as at initialisation where w = 0)."""
    mags = sorted(abs(v) for v in values)
    if not mags:
        return 1.0
    r = mags[max(0, math.ceil(_RANGE_QUANTILE * len(mags)) - 1)]
    return r if r > 0 else (mags[-1] if mags[-1] > 0 else 1.0)


def _rgba(v: float | None, r: float, pos: tuple, neg: tuple) -> str:
    if v is None:
        return "transparent"
    a = min(1.0, abs(v) / r) * _MAX_ALPHA
    if a < 0.005:
        return "transparent"
    c = pos if v > 0 else neg
    return f"rgba({c[0]},{c[1]},{c[2]},{a:.3f})"


# ------------------------------------------------------------------------------------ formatting ---

def fmt_num(x: float | None, signed: bool = False) -> str:
    """Numbers as the page shows them (the JS fmt() matches): 3 decimals below 1, 2 below 100, else
    1; below 0.001 (a mixing weight early in training is ~1e-4) two significant digits, 4.5e-4; no
    "-0.000"; None as an en dash."""
    if x is None:
        return "\u2013"
    if 0 < abs(x) < 1e-3:
        mant, exp = f"{x:.1e}".split("e")
        s = f"{'+' if signed and x > 0 else ''}{mant}e{int(exp)}"
        return s.replace("-", "\u2212")
    d = 3 if abs(x) < 1 else 2 if abs(x) < 100 else 1
    s = f"{x:+.{d}f}" if signed else f"{x:.{d}f}"
    if float(s) == 0:
        return f"{0:.{d}f}"
    return s.replace("-", "\u2212")


def _fmt_pct(x: float | None) -> str:
    return "\u2013" if x is None else f"{100 * x:.1f}%"


def _fmt_meta(v: Any) -> str:
    if v is None:
        return "\u2013"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


_CONTROL_PICTURES = {c: chr(0x2400 + c) for c in range(0x20) if chr(c) not in "\t\n\r"}
_CONTROL_PICTURES[0x7F] = "\u2421"


def _display(s: str) -> str:
    """Text for display: C0 control characters (other than tab/newline/CR) as their visible Control
    Pictures, since the HTML parser would drop or mangle them. The JSON keeps the original."""
    return s.translate(_CONTROL_PICTURES)


def _esc(s: str) -> str:
    return html.escape(_display(s), quote=True)


def _token_text_html(text: str) -> str:
    """The token's text, escaped; each newline preceded by an empty marker span whose CSS ::before
    draws a faint ↵ (pseudo-content: not part of the text, not copied), so newline tokens can be
    hovered too."""
    if text == "":
        return '<span class="em" aria-hidden="true"></span>'
    parts = text.split("\n")
    return '<span class="nlm" aria-hidden="true"></span>\n'.join(_esc(p) for p in parts)


def _title(i: int, t: dict, mode: str) -> str:
    """The plain tooltip (title attribute) for browsers without JS; the JS replaces it."""
    lines = []
    if t["thought"] is not None:
        lines.append(f"\u27e8{t['thought']}\u27e9")
    if t["weight"] is not None:
        lines.append(f"w = {fmt_num(t['weight'])}")
    if mode == "score" and (t["logp_base"] is not None or t["logp_mixed"] is not None):
        lines.append(f"log p {fmt_num(t['logp_base'])} \u2192 {fmt_num(t['logp_mixed'])}"
                     f"  (\u0394 {fmt_num(t['delta_logp'], signed=True)})")
    lines.append(f"#{i} \u00b7 {t['role']}")
    return "\n".join(lines)


def _inline_thought(thought: str) -> str:
    return "\u27e8" + thought.replace("\n", "\u21b5") + "\u27e9"


def _visible_token(text: str, limit: int = 24) -> str:
    """A token's text with its whitespace made visible, for lists (the spans keep the real text)."""
    s = text.replace("\n", "\u21b5").replace("\t", "\u21e5").replace(" ", "\u2423")
    s = s if s else "\u2205"
    return s if len(s) <= limit else s[: limit - 1] + "\u2026"


# ---------------------------------------------------------------------------------------- render ---

def _stat(label: str, value: str, note: str = "") -> str:
    n = f'<span class="note">{html.escape(note)}</span>' if note else ""
    return f'<div class="stat"><span class="label">{html.escape(label)}</span><b>{html.escape(value)}</b>{n}</div>'


def _legend(kind: str, r: float, values: list[float], caption: str, lo_label: str, hi_label: str,
            neg: tuple, pos: tuple, one_sided: bool = False) -> str:
    """A colour bar with its numbers. one_sided: only 0..R (no value is negative), so the bar does not
    show a colour nothing on the page has."""
    lo, hi = (min(values), max(values)) if values else (None, None)
    p = f"rgba({pos[0]},{pos[1]},{pos[2]},{_MAX_ALPHA})"
    if one_sided:
        grad = f"linear-gradient(to right, transparent, {p})"
        ticks = (fmt_num(0.0), fmt_num(r / 2), fmt_num(r))
    else:
        grad = f"linear-gradient(to right, rgba({neg[0]},{neg[1]},{neg[2]},{_MAX_ALPHA}), transparent, {p})"
        ticks = (fmt_num(-r, signed=True), "0", fmt_num(r, signed=True))
    observed = (f"observed {fmt_num(lo, signed=not one_sided)} to {fmt_num(hi, signed=not one_sided)}; colours "
                f"saturate beyond {'' if one_sided else chr(0xb1)}{fmt_num(r)} (95th percentile of |value|)"
                if values else "no values")
    tick_html = "".join(f"<span>{t}</span>" for t in ticks)
    return (
        f'<div class="legend" data-for="{kind}">'
        f'<span class="ltitle">{html.escape(caption)}</span>'
        f'<span class="lend">{html.escape(lo_label)}</span>'
        f'<span class="lbar-wrap"><span class="lbar" style="background:{grad}"></span>'
        f'<span class="ticks">{tick_html}</span></span>'
        f'<span class="lend">{html.escape(hi_label)}</span>'
        f'<span class="lnote">{html.escape(observed)}</span></div>'
    )


def _top_list(title: str, items: list[tuple[int, dict]], key: str, signed: bool) -> str:
    if not items:
        return ""
    lis = "".join(
        f'<li><a href="#t{i}" data-i="{i}"><code>{_esc(_visible_token(t["text"]))}</code>'
        f'<span class="num">{fmt_num(t[key], signed=signed)}</span></a></li>' for i, t in items)
    return f'<section class="top"><h3>{html.escape(title)}</h3><ol>{lis}</ol></section>'


def render_page(title: str, tokens: list[dict], mode: str, meta: dict | None = None) -> str:
    """The page as one HTML string (write it with encoding="utf-8"). See the module docstring for
    the token dicts. Raises ValueError on an unknown mode or a malformed token."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    toks = normalize_tokens(tokens, mode)
    meta_safe = _json_safe(dict(meta or {}))
    summary = summarize(toks, mode)
    deltas = [t["delta_logp"] for t in toks if t["delta_logp"] is not None]
    weights = [t["weight"] for t in toks if t["weight"] is not None]
    r_delta, r_weight = color_range(deltas), color_range(weights)

    # Default colouring: by delta in score mode, by weight in generate mode (if there are weights).
    colour = "delta" if mode == "score" and deltas else "weight" if weights else "none"

    # --- the text: one span per token, no whitespace between spans (the container is pre-wrap) ---
    out, first_gen_done = [], False
    for i, t in enumerate(toks):
        if mode == "generate" and t["role"] == "generated" and not first_gen_done:
            first_gen_done = True
            if i > 0:
                out.append('<span class="boundary" title="generation starts here" aria-hidden="true"></span>')
        if t["thought"] is not None:
            out.append(f'<span class="th" data-i="{i}">{_esc(_inline_thought(t["thought"]))}</span>')
        cls = ["tok", "r-" + t["role"]]
        if t["thought"] is not None:
            cls.append("has-th")
        style = (f"--cd:{_rgba(t['delta_logp'], r_delta, _HELPED, _HURT)};"
                 f"--cw:{_rgba(t['weight'], r_weight, _W_POS, _W_NEG)}")
        out.append(f'<span class="{" ".join(cls)}" id="t{i}" data-i="{i}" tabindex="0" role="button" '
                   f'aria-pressed="false" title="{_esc(_title(i, t, mode))}" style="{style}">'
                   f'{_token_text_html(t["text"])}</span>')
    text_html = "".join(out)

    # --- header: meta, summary, controls, legends ---
    meta_html = "".join(f'<div><dt>{_esc(str(k))}</dt><dd>{_esc(_fmt_meta(v))}</dd></div>'
                        for k, v in meta_safe.items())
    s = summary
    stats = []
    if mode == "generate":
        stats.append(_stat("tokens", str(s["n_tokens"]), f"{s['n_prompt']} prompt + {s['n_generated']} generated"))
    else:
        stats.append(_stat("tokens", str(s["n_tokens"]), f"{s['n_scored']} scored"))
    stats.append(_stat("thoughts", str(s["n_thoughts"])))
    stats.append(_stat("mean weight w", fmt_num(s["mean_weight"]), f"over {s['n_weights']} tokens"))
    if mode == "score":
        stats.append(_stat("mean \u0394 log p", fmt_num(s["mean_delta"], signed=True), "nats / token"))
        stats.append(_stat("helped", _fmt_pct(s["frac_helped"]), f"hurt {_fmt_pct(s['frac_hurt'])}"))
        stats.append(_stat("mean log p", f"{fmt_num(s['mean_logp_base'])} \u2192 {fmt_num(s['mean_logp_mixed'])}",
                           "before \u2192 after thinking"))

    legends = []
    if mode == "score":
        legends.append(_legend("delta", r_delta, deltas, "\u0394 log p", "thinking hurt", "thinking helped",
                               _HURT, _HELPED))
    if weights and min(weights) >= 0:
        legends.append(_legend("weight", r_weight, weights, "mixing weight w", "base prediction",
                               "more post-thought prediction", _W_NEG, _W_POS, one_sided=True))
    else:
        legends.append(_legend("weight", r_weight, weights, "mixing weight w", "w < 0", "w > 0", _W_NEG, _W_POS))
    if mode == "generate":
        legends.append('<div class="legend always" data-for="roles"><span class="swatch r-prompt">prompt</span>'
                       '<span class="boundary"></span><span class="swatch r-generated">generated</span></div>')

    radios = []
    for value, label in ((("delta", "\u0394 log p"),) if mode == "score" else ()) + (("weight", "weight w"),
                                                                                       ("none", "none")):
        checked = " checked" if value == colour else ""
        radios.append(f'<label><input type="radio" name="colour" value="{value}"{checked}> {label}</label>')
    checks = "".join(
        f'<label><input type="checkbox" name="{n}"{" checked" if on else ""}> {label}</label>'
        for n, label, on in (("inline", "thoughts inline", False), ("bounds", "token boundaries", False),
                             ("marks", "\u21b5 marks", True), ("mono", "monospace", False)))
    controls = (f'<form class="controls" id="controls" onsubmit="return false">'
                f'<fieldset><legend>colour by</legend>{"".join(radios)}</fieldset>'
                f'<fieldset><legend>show</legend>{checks}</fieldset></form>')

    # --- side panel: details (JS) and the tokens thinking helped / hurt most (links work without JS) ---
    scored = [(i, t) for i, t in enumerate(toks) if t["delta_logp"] is not None]
    weighted = [(i, t) for i, t in enumerate(toks) if t["weight"] is not None]
    if mode == "score":
        tops = (_top_list("thinking helped most", sorted([x for x in scored if x[1]["delta_logp"] > 0],
                                                          key=lambda x: -x[1]["delta_logp"])[:8], "delta_logp", True)
                + _top_list("thinking hurt most", sorted([x for x in scored if x[1]["delta_logp"] < 0],
                                                          key=lambda x: x[1]["delta_logp"])[:8], "delta_logp", True))
    else:
        by_w = sorted(weighted, key=lambda x: -x[1]["weight"])
        # With few tokens the two lists would repeat each other: then one list, all tokens by weight.
        tops = (_top_list("highest weight w", by_w[:8], "weight", False)
                + _top_list("lowest weight w", by_w[::-1][:8], "weight", False) if len(by_w) > 16
                else _top_list("by weight w", by_w, "weight", False))

    data = {"format": DATA_FORMAT, "title": _clean_str(str(title)), "mode": mode, "meta": meta_safe,
            "summary": summary, "scale": {"delta_range": r_delta, "weight_range": r_weight}, "tokens": toks}
    # Inside <script> only "</script" or "<!--" could end the block early; <, > and & occur in JSON
    # only inside strings, where \u escapes mean the same to JSON.parse.
    data_json = (json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
                 .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))

    mode_note = ("score: given text, each token's log-probability before and after thinking"
                 if mode == "score" else "generate: a prompt, then tokens the model generated while thinking")
    body_cls = f"mode-{mode} c-{colour} marks"
    return _PAGE.format(
        title=_esc(str(title)), css=_CSS, js=_JS, body_cls=body_cls, mode=mode, mode_note=html.escape(mode_note),
        meta=f'<dl class="meta">{meta_html}</dl>' if meta_html else "", stats="".join(stats),
        controls=controls, legends="".join(legends), text=text_html, tops=tops, data=data_json,
    )


# ---------------------------------------------------------------------------------------- assets ---
# The page's template, CSS and JS live beside this module (quietstar_jax/inference/page/) as ordinary
# files, read once.


def _asset(name: str) -> str:
    return (resources.files("quietstar_jax.inference") / "page" / name).read_text(encoding="utf-8")


_PAGE, _CSS, _JS = _asset("page.html"), _asset("page.css"), _asset("page.js")
