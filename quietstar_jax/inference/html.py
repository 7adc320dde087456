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
    1; no "-0.000"; None as an en dash."""
    if x is None:
        return "\u2013"
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

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="quietstar_jax.inference.html">
<title>{title}</title>
<style>{css}</style>
</head>
<body class="{body_cls}">
<header class="top-bar">
<div class="headline"><h1>{title}</h1><span class="badge" title="{mode_note}">{mode}</span></div>
{meta}
<div class="stats">{stats}</div>
<div class="view">{controls}<div class="legends">{legends}</div></div>
</header>
<main class="layout">
<article class="text" id="text" aria-label="tokens">{text}</article>
<aside class="panel" id="panel" aria-label="token details">
<h2>Token details</h2>
<div id="detail" aria-live="polite"><p class="hint js-only">Click a token (or Tab to it and press Enter) to pin its
thought and numbers here. Hover for a quick look. \u2190 / \u2192 move between tokens.</p></div>
<noscript><p class="hint">JavaScript is off: hover a token for its details (browser tooltip); the colours
and the lists below still work.</p></noscript>
{tops}
</aside>
</main>
<div class="tip" id="tip" role="tooltip" hidden></div>
<script type="application/json" id="qs-data">{data}</script>
<script>{js}</script>
</body>
</html>
"""

_CSS = r"""
:root{--bg:#fbfaf7;--paper:#fff;--ink:#1d1d1f;--ink2:#5f6368;--ink3:#9aa0a6;--line:#e3e1dc;--accent:#d9730d;
--tipbg:#202124;--tipink:#f1f3f4;--th:#7a6f99;--chip:#f1efe9;
--sans:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
--mono:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace}
@media (prefers-color-scheme:dark){:root{--bg:#18191b;--paper:#202124;--ink:#e8eaed;--ink2:#aeb3b8;
--ink3:#70757a;--line:#3c4043;--accent:#f29d49;--tipbg:#f1f3f4;--tipink:#202124;--th:#b3a7d6;--chip:#2d2f31}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 var(--sans)}
.top-bar{padding:16px 24px 12px;border-bottom:1px solid var(--line);background:var(--paper)}
.headline{display:flex;align-items:baseline;gap:12px;flex-wrap:wrap}
h1{font-size:20px;margin:0;font-weight:650;overflow-wrap:anywhere}
.badge{font-size:11px;text-transform:uppercase;letter-spacing:.08em;padding:2px 8px;border-radius:10px;
 border:1px solid var(--accent);color:var(--accent)}
.meta{display:flex;flex-wrap:wrap;gap:4px 18px;margin:8px 0 0;color:var(--ink2);font-size:12.5px}
.meta div{display:flex;gap:5px}.meta dt{color:var(--ink3)}.meta dt::after{content:":"}.meta dd{margin:0;
 font-family:var(--mono);font-size:12px;overflow-wrap:anywhere}
.stats{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0 4px}
.stat{background:var(--bg);border:1px solid var(--line);border-radius:8px;padding:6px 12px;min-width:110px;
 display:flex;flex-direction:column}
.stat .label{font-size:11px;color:var(--ink2);text-transform:uppercase;letter-spacing:.05em}
.stat b{font-size:18px;font-weight:600;font-variant-numeric:tabular-nums}
.stat .note{font-size:11px;color:var(--ink3)}
.view{display:flex;flex-wrap:wrap;gap:8px 28px;align-items:center;margin-top:8px}
.controls{display:none;gap:18px;flex-wrap:wrap}.js .controls{display:flex}
.controls fieldset{border:0;padding:0;margin:0;display:flex;gap:10px;align-items:center;flex-wrap:wrap}
.controls legend{float:left;font-size:11px;color:var(--ink2);text-transform:uppercase;letter-spacing:.05em;
 margin-right:4px}
.controls label{cursor:pointer;user-select:none;font-size:13px}
.legends{display:flex;flex-direction:column;gap:4px}
.legend{display:none;align-items:center;gap:8px;font-size:12px;color:var(--ink2);flex-wrap:wrap}
.c-delta .legend[data-for=delta],.c-weight .legend[data-for=weight],.legend.always{display:flex}
.ltitle{font-weight:600;color:var(--ink)}
.lbar-wrap{display:inline-flex;flex-direction:column;width:180px}
.lbar{height:10px;border-radius:3px;border:1px solid var(--line)}
.ticks{display:flex;justify-content:space-between;font-size:10.5px;font-variant-numeric:tabular-nums}
.lnote{color:var(--ink3);font-size:11px;flex-basis:100%}
.swatch{padding:0 5px;border-radius:3px;border:1px solid var(--line)}
.layout{display:grid;grid-template-columns:minmax(0,920px) 360px;justify-content:start;gap:24px;padding:20px 24px;
 align-items:start}
@media (max-width:900px){.layout{grid-template-columns:1fr}}
.text{background:var(--paper);border:1px solid var(--line);border-radius:10px;padding:22px 26px;
 white-space:pre-wrap;overflow-wrap:anywhere;font-size:17px;line-height:1.9;min-height:120px}
.mono .text{font-family:var(--mono);font-size:15px}
.tok{border-radius:3px;cursor:pointer;-webkit-box-decoration-break:clone;box-decoration-break:clone;
 outline-offset:0}
.c-delta .tok{background:var(--cd)}.c-weight .tok{background:var(--cw)}
.mode-generate .tok.r-prompt{color:var(--ink2)}
.tok:hover{outline:1px solid var(--ink3)}
.tok:focus{outline:none}.tok:focus-visible{outline:2px dashed var(--accent)}
.tok.sel{outline:2px solid var(--accent);outline-offset:1px}
.bounds .tok{box-shadow:inset -1px 0 0 var(--ink3)}
.nlm::before{content:""}.marks .nlm::before{content:"\21b5";color:var(--ink3);font-size:.75em}
.em::before{content:"\2205";color:var(--ink3);font-size:.75em}
.th{display:none;color:var(--th);font-size:.72em;font-style:italic;opacity:.85;white-space:pre-wrap;cursor:pointer;
 padding:0 2px;border-radius:3px;background:var(--chip)}
.inline .th{display:inline}
.boundary{display:inline-block;width:3px;height:1.1em;vertical-align:-.2em;background:var(--accent);
 border-radius:2px;margin:0 3px}
.panel{position:sticky;top:12px;background:var(--paper);border:1px solid var(--line);border-radius:10px;
 padding:14px 16px;max-height:calc(100vh - 24px);overflow:auto}
.panel h2{font-size:13px;margin:0 0 8px;text-transform:uppercase;letter-spacing:.06em;color:var(--ink2)}
.panel h3{font-size:12px;margin:14px 0 4px;color:var(--ink2);font-weight:600}
.hint{color:var(--ink3);font-size:12.5px;margin:0}
html:not(.js) .js-only{display:none}
.d-head{display:flex;align-items:center;gap:8px;flex-wrap:wrap}
.d-idx{color:var(--ink3);font-variant-numeric:tabular-nums}
.d-role{font-size:11px;padding:1px 6px;border-radius:8px;background:var(--chip);color:var(--ink2)}
.d-tok{font:16px var(--mono);white-space:pre;padding:2px 6px;border:1px solid var(--line);border-radius:4px;
 background:var(--bg);max-width:100%;overflow:auto}
.d-thought{margin:10px 0 6px;padding:8px 10px;border-left:3px solid var(--th);background:var(--chip);
 border-radius:0 6px 6px 0;white-space:pre-wrap;overflow-wrap:anywhere;font-size:14px}
.d-thought.none{color:var(--ink3);font-style:italic;border-left-color:var(--line)}
.chips{display:flex;flex-wrap:wrap;gap:3px;margin:4px 0 8px}
.chip{font:12px var(--mono);white-space:pre;background:var(--bg);border:1px solid var(--line);border-radius:3px;
 padding:0 3px}
.kv{display:grid;grid-template-columns:auto 1fr;gap:3px 12px;margin:8px 0;font-variant-numeric:tabular-nums}
.kv dt{color:var(--ink2)}.kv dd{margin:0;font-family:var(--mono);font-size:13px}
.wbar{display:inline-block;height:8px;width:120px;background:var(--chip);border-radius:4px;margin-left:8px;
 vertical-align:middle;overflow:hidden}.wbar i{display:block;height:100%;background:rgb(118,42,131)}
.good{color:rgb(33,102,172)}.bad{color:rgb(178,24,43)}
@media (prefers-color-scheme:dark){.good{color:#6baed6}.bad{color:#f4a582}}
.nav{display:flex;gap:6px;margin-top:8px}
.nav button{font:12px var(--sans);padding:3px 10px;border:1px solid var(--line);border-radius:5px;
 background:var(--bg);color:var(--ink);cursor:pointer}
.top ol{margin:0;padding-left:22px}.top li{margin:1px 0}
.top a{display:flex;justify-content:space-between;gap:8px;color:var(--ink);text-decoration:none;
 padding:1px 4px;border-radius:4px}
.top a:hover,.top a:focus-visible{background:var(--chip)}
.top code{font:12.5px var(--mono)}.top .num{font:12.5px var(--mono);color:var(--ink2)}
.tip{position:fixed;z-index:10;max-width:420px;background:var(--tipbg);color:var(--tipink);border-radius:7px;
 padding:8px 11px;font-size:13px;box-shadow:0 4px 18px rgba(0,0,0,.25);pointer-events:none}
.tip .t-th{white-space:pre-wrap;overflow-wrap:anywhere;font-size:14px;margin-bottom:4px}
.tip .t-none{opacity:.65;font-style:italic}
.tip .t-num{font-family:var(--mono);font-size:12px;display:flex;gap:14px;flex-wrap:wrap}
.tip .good{color:#92c5de}.tip .bad{color:#f4a582}
@media (prefers-color-scheme:dark){.tip .good{color:rgb(33,102,172)}.tip .bad{color:rgb(178,24,43)}}
.tip .t-foot{font-size:11px;opacity:.6;margin-top:3px}
"""

_JS = r"""
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var data;
  try {
    data = JSON.parse(document.getElementById("qs-data").textContent);
  } catch (e) {
    console.error("thoughts page: cannot read the embedded token data", e);
    return;
  }
  var toks = data.tokens, score = data.mode === "score";
  var text = document.getElementById("text"), tip = document.getElementById("tip");
  var detail = document.getElementById("detail"), body = document.body;
  var spans = [], selected = -1;
  Array.prototype.forEach.call(text.querySelectorAll(".tok"), function (s) {
    spans[+s.getAttribute("data-i")] = s;
    s.removeAttribute("title");  // the JS tooltip replaces the no-JS one
  });

  // Numbers as the Python side formats them (fmt_num).
  function fmt(x, signed) {
    if (x === null || x === undefined) return "\u2013";
    var a = Math.abs(x), d = a < 1 ? 3 : a < 100 ? 2 : 1, s = x.toFixed(d);
    if (parseFloat(s) === 0) return (0).toFixed(d);
    if (signed && x > 0) s = "+" + s;
    return s.replace("-", "\u2212");
  }
  function prob(lp) {
    if (lp === null || lp === undefined) return "";
    var p = Math.exp(lp) * 100;
    return "p " + (p >= 10 ? p.toFixed(1) : p >= 0.1 ? p.toFixed(2) : p.toExponential(1)) + "%";
  }
  function visible(s) {
    return s === "" ? "\u2205" : s.replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5");
  }
  function el(tag, cls, txt) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (txt !== undefined) e.textContent = txt;
    return e;
  }
  function indexOf(node) {
    var n = node && node.closest ? node.closest("[data-i]") : null;
    return n ? +n.getAttribute("data-i") : -1;
  }

  // ---- tooltip ----
  function fillTip(i) {
    var t = toks[i];
    tip.textContent = "";
    if (t.thought !== null) tip.appendChild(el("div", "t-th", "\u27e8" + t.thought + "\u27e9"));
    else tip.appendChild(el("div", "t-th t-none", t.role === "prompt" ? "prompt token: no thought" : "no thought"));
    var nums = el("div", "t-num");
    if (t.weight !== null) nums.appendChild(el("span", "", "w " + fmt(t.weight)));
    if (score && (t.logp_base !== null || t.logp_mixed !== null))
      nums.appendChild(el("span", "", "log p " + fmt(t.logp_base) + " \u2192 " + fmt(t.logp_mixed)));
    if (score && t.delta_logp !== null)
      nums.appendChild(el("span", t.delta_logp > 0 ? "good" : t.delta_logp < 0 ? "bad" : "", "\u0394 " + fmt(t.delta_logp, true)));
    if (nums.childNodes.length) tip.appendChild(nums);
    tip.appendChild(el("div", "t-foot", "#" + i + " \u201c" + visible(t.text) + "\u201d \u00b7 " + t.role + " \u00b7 click to pin"));
  }
  function showTip(i, anchor) {
    if (i < 0) return;
    fillTip(i);
    tip.hidden = false;
    var rects = anchor.getClientRects(), r = rects.length ? rects[0] : anchor.getBoundingClientRect();
    var w = tip.offsetWidth, h = tip.offsetHeight;
    var top = r.bottom + 6;
    if (top + h > window.innerHeight - 4) top = Math.max(4, r.top - h - 6);
    var left = Math.min(Math.max(4, r.left), window.innerWidth - w - 4);
    tip.style.top = top + "px";
    tip.style.left = Math.max(4, left) + "px";
  }
  function hideTip() { tip.hidden = true; }

  // ---- side panel ----
  function kv(dl, k, v, cls) {
    dl.appendChild(el("dt", "", k));
    var dd = el("dd", cls || "");
    if (typeof v === "string") dd.textContent = v; else dd.appendChild(v);
    dl.appendChild(dd);
  }
  function select(i, opts) {
    opts = opts || {};
    if (i < 0 || i >= toks.length) return;
    if (selected >= 0 && spans[selected]) {
      spans[selected].classList.remove("sel");
      spans[selected].setAttribute("aria-pressed", "false");
    }
    selected = i;
    var s = spans[i], t = toks[i];
    s.classList.add("sel");
    s.setAttribute("aria-pressed", "true");
    detail.textContent = "";
    var head = el("div", "d-head");
    head.appendChild(el("span", "d-idx", "#" + i));
    head.appendChild(el("span", "d-tok", visible(t.text)));
    head.appendChild(el("span", "d-role", t.role));
    detail.appendChild(head);
    if (t.thought !== null) detail.appendChild(el("div", "d-thought", "\u27e8" + t.thought + "\u27e9"));
    else detail.appendChild(el("div", "d-thought none", t.role === "prompt" ? "prompt token: no thought" : "no thought"));
    if (t.thought_tokens && t.thought_tokens.length) {
      var chips = el("div", "chips");
      t.thought_tokens.forEach(function (x) { chips.appendChild(el("span", "chip", visible(x))); });
      detail.appendChild(el("div", "hint", t.thought_tokens.length + " thought tokens"));
      detail.appendChild(chips);
    }
    var dl = el("dl", "kv");
    if (t.weight !== null) {
      var wv = el("span", "", fmt(t.weight)), bar = el("span", "wbar"), fill = el("i");
      fill.style.width = Math.max(0, Math.min(1, t.weight)) * 100 + "%";
      bar.appendChild(fill); wv.appendChild(bar);
      kv(dl, "mixing weight w", wv);
    }
    if (t.logp_base !== null) kv(dl, "log p before", fmt(t.logp_base) + "  " + prob(t.logp_base));
    if (t.logp_mixed !== null) kv(dl, "log p after", fmt(t.logp_mixed) + "  " + prob(t.logp_mixed));
    if (t.delta_logp !== null)
      kv(dl, "\u0394 log p", fmt(t.delta_logp, true) +
         (t.delta_logp > 0 ? "  thinking helped" : t.delta_logp < 0 ? "  thinking hurt" : ""),
         t.delta_logp > 0 ? "good" : t.delta_logp < 0 ? "bad" : "");
    if (dl.childNodes.length) detail.appendChild(dl);
    var nav = el("div", "nav"), prev = el("button", "", "\u2190 previous"), next = el("button", "", "next \u2192");
    prev.type = next.type = "button";
    prev.disabled = i === 0; next.disabled = i === toks.length - 1;
    prev.addEventListener("click", function () { select(selected - 1, {focus: true, scroll: true}); });
    next.addEventListener("click", function () { select(selected + 1, {focus: true, scroll: true}); });
    nav.appendChild(prev); nav.appendChild(next);
    detail.appendChild(nav);
    if (opts.scroll) s.scrollIntoView({block: "nearest"});
    if (opts.focus) s.focus({preventScroll: true});
    try { history.replaceState(null, "", "#t" + i); } catch (e) { /* file:// in some browsers */ }
  }

  // ---- events: one set of listeners on the text (delegation), not one per token ----
  text.addEventListener("mouseover", function (e) {
    var i = indexOf(e.target);
    if (i >= 0) showTip(i, spans[i]); else hideTip();
  });
  text.addEventListener("mouseleave", hideTip);
  text.addEventListener("click", function (e) {
    var i = indexOf(e.target);
    if (i >= 0) select(i);
  });
  text.addEventListener("focusin", function (e) {
    var i = indexOf(e.target);
    if (i >= 0) showTip(i, spans[i]);
  });
  text.addEventListener("focusout", hideTip);
  function step(e, j) { e.preventDefault(); select(j, {focus: true, scroll: true}); }
  text.addEventListener("keydown", function (e) {
    var i = indexOf(e.target);
    if (i < 0) return;
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); select(i); }
    else if (e.key === "ArrowRight" && i + 1 < toks.length) step(e, i + 1);
    else if (e.key === "ArrowLeft" && i > 0) step(e, i - 1);
    else if (e.key === "Escape") hideTip();
  });
  document.getElementById("panel").addEventListener("click", function (e) {
    var a = e.target.closest ? e.target.closest(".top a[data-i]") : null;
    if (!a) return;
    e.preventDefault();
    select(+a.getAttribute("data-i"), {focus: true, scroll: true});
  });
  window.addEventListener("scroll", hideTip, {passive: true});

  // ---- view controls: body classes (the CSS does the rest) ----
  var form = document.getElementById("controls");
  function applyView() {
    ["c-delta", "c-weight", "c-none", "inline", "bounds", "marks", "mono"].forEach(function (c) {
      body.classList.remove(c);
    });
    var c = form.querySelector("input[name=colour]:checked");
    body.classList.add("c-" + (c ? c.value : "none"));
    Array.prototype.forEach.call(form.querySelectorAll("input[type=checkbox]"), function (x) {
      if (x.checked) body.classList.add(x.name);
    });
  }
  form.addEventListener("change", applyView);
  applyView();

  function fromHash() {
    var m = /^#t(\d+)$/.exec(location.hash);
    if (m) select(+m[1], {scroll: true});
  }
  window.addEventListener("hashchange", fromHash);
  fromHash();
})();
"""
