"""The thoughts page (quietstar_jax.inference.html): content checks on the HTML string (fast), and the
page in a real headless Chromium (slow; skipped where no chromium binary is installed)."""

from __future__ import annotations

import html
import json
import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from quietstar_jax.inference.html import color_range, fmt_num, normalize_tokens, render_page, summarize

NASTY = ["<script>alert(1)</script>", "a & b", "\n", ' "q" \'s\'', "<img src=x onerror=\"window.__pwned=1\">",
         "</script><script>window.__pwned=1</script>", "é漢字🙂", "  two spaces", "end\n\nnext", ""]


def _tok(text, role, thought=None, weight=None, base=None, mixed=None):
    return {"text": text, "role": role, "thought": thought,
            "thought_tokens": None if thought is None else [thought[:3], thought[3:]], "weight": weight,
            "logp_base": base, "logp_mixed": mixed, "delta_logp": None if base is None else mixed - base}


def score_tokens():
    """Every NASTY text, with thoughts that are nasty too; deltas of both signs with known extremes."""
    toks = []
    deltas = [0.5, -1.25, 2.0, 0.0, -0.1, 0.25, 1.0, -0.5, 0.75, 0.125, -0.25, 0.375]
    for i, d in enumerate(deltas):
        text = NASTY[i % len(NASTY)] if i < len(NASTY) else f" word{i}"
        thought = f" thought {i} <b>&amp;</b>\n" if i % 2 == 0 else f" think {i}"
        toks.append(_tok(text, "text", thought, 0.1 * (i % 9), -2.0 - 0.1 * i, -2.0 - 0.1 * i + d))
    return toks


def generate_tokens():
    prompt = [_tok(t, "prompt") for t in NASTY]
    gen = [_tok(t, "generated", f" step {i} <i>", 0.05 + 0.1 * i) for i, t in enumerate([" 4", ".", "\n", " </script>"])]
    return prompt + gen


META = {"model": "SmolLM2 <tiny> & co", "N": 2, "thought length": 12, "seed": 0, "temperature": 0.7,
        "mean delta": np.float32(0.125)}


def embedded_json(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="qs-data">(.*?)</script>', page, re.S)
    assert m, "no embedded JSON block"
    return json.loads(m.group(1))


class TokenSpans(HTMLParser):
    """The text inside each <span class="tok ..."> (child spans included), and the tags seen."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.texts, self.attrs, self.tags, self._depth = [], [], [], 0

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if self._depth:
            self._depth += tag == "span"
        elif tag == "span" and "tok" in dict(attrs).get("class", "").split():
            self._depth = 1
            self.texts.append("")
            self.attrs.append(dict(attrs))

    def handle_endtag(self, tag):
        if self._depth and tag == "span":
            self._depth -= 1

    def handle_data(self, data):
        if self._depth:
            self.texts[-1] += data


def parse(page: str) -> TokenSpans:
    p = TokenSpans()
    p.feed(page)
    return p


@pytest.mark.parametrize("mode", ["score", "generate"])
def test_page_is_self_contained_escaped_utf8_and_embeds_the_tokens(mode):
    toks = score_tokens() if mode == "score" else generate_tokens()
    page = render_page(f"{mode} <title> & \"x\"", toks, mode, META)
    page.encode("utf-8")  # valid UTF-8 (would raise on lone surrogates)
    assert page.startswith("<!DOCTYPE html>")

    # Every token is one span whose text is exactly the token's text (the parser unescapes).
    spans = parse(page)
    assert spans.texts == [t["text"] for t in toks]
    assert [int(a["data-i"]) for a in spans.attrs] == list(range(len(toks)))
    assert all(a["tabindex"] == "0" and a["role"] == "button" for a in spans.attrs)

    # No injection: exactly our two <script> elements, no tag from token text, meta or title.
    assert [a.get("type") for t, a in spans.tags if t == "script"] == ["application/json", None]
    assert not any(t in ("img", "tiny") for t, _ in spans.tags)
    assert "&lt;b&gt;&amp;amp;&lt;/b&gt;" in page or "&lt;i&gt;" in page  # thoughts' markup, escaped
    assert "<b>&amp;amp;</b>" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert "a &amp; b" in page
    assert "<title>" + html.escape(f"{mode} <title> & \"x\"") + "</title>" in page
    assert html.escape("SmolLM2 <tiny> & co") in page

    # Self-contained: no network URL, no external resource of any kind.
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", page, re.I)
    assert not any("src" in a or t in ("link", "iframe", "object", "embed", "base") for t, a in spans.tags)
    css = page.split("<style>", 1)[1].split("</style>", 1)[0]
    assert "@import" not in css and "url(" not in css and "@font-face" not in css
    assert all(a["href"].startswith("#") for t, a in spans.tags if "href" in a)

    # The embedded JSON parses back to the input.
    data = embedded_json(page)
    assert data["tokens"] == toks and data["mode"] == mode
    assert data["meta"]["mean delta"] == pytest.approx(0.125) and data["meta"]["model"] == META["model"]

    # Thoughts and weights reach the no-JS tooltips too (title attributes).
    for t, a in zip(toks, spans.attrs):
        if t["thought"] is not None:
            assert "\u27e8" + t["thought"] + "\u27e9" in a["title"]
        if t["weight"] is not None:
            assert f"w = {fmt_num(t['weight'])}" in a["title"]


def test_score_mode_colours_legend_and_summary():
    toks = score_tokens()
    page = render_page("score", toks, "score", META)
    deltas = [t["delta_logp"] for t in toks]
    r = color_range(deltas)
    # nearest-rank 95th percentile of |delta| over 12 values = the 12th smallest = the largest here
    assert r == pytest.approx(2.0)
    legend = re.search(r'<div class="legend" data-for="delta">(.*?)</div>', page, re.S).group(1)
    for number in (fmt_num(-r, signed=True), fmt_num(r, signed=True), fmt_num(min(deltas), signed=True),
                   fmt_num(max(deltas), signed=True)):
        assert number in legend
    assert "\u22121.25" in legend and "+2.00" in legend  # the observed min and max, as shown

    s = summarize(normalize_tokens(toks, "score"), "score")
    assert s["mean_delta"] == pytest.approx(sum(deltas) / len(deltas))
    assert s["frac_helped"] == pytest.approx(sum(d > 0 for d in deltas) / len(deltas))
    assert f"{100 * s['frac_helped']:.1f}%" in page and fmt_num(s["mean_delta"], signed=True) in page
    assert fmt_num(s["mean_weight"]) in page

    spans = parse(page).attrs
    styles = [a["style"] for a in spans]
    assert "--cd:rgba(33,102,172,0.800)" in styles[2]  # delta +2.0 = +R: full "helped" blue
    assert "--cd:rgba(178,24,43,0.500)" in styles[1]   # delta -1.25: 1.25 / 2 of full "hurt" red
    assert "--cd:transparent" in styles[3]              # delta 0
    assert 'class="mode-score c-delta' in page          # coloured by delta by default, JS or not
    assert "thinking helped most" in page and "thinking hurt most" in page


def test_generate_mode_marks_prompt_and_colours_by_weight():
    toks = generate_tokens()
    page = render_page("gen", toks, "generate")
    spans = parse(page)
    classes = [a["class"].split() for a in spans.attrs]
    assert [("r-prompt" in c, "r-generated" in c) for c in classes] == [(t["role"] == "prompt", t["role"] == "generated")
                                                                        for t in toks]
    assert page.count('class="boundary"') == 2  # one in the text (before the first generated token), one in the legend
    assert 'class="mode-generate c-weight' in page
    assert "10 prompt + 4 generated" in page
    # weights all >= 0: a one-sided weight legend 0 .. R
    r = color_range([t["weight"] for t in toks if t["weight"] is not None])
    legend = re.search(r'<div class="legend" data-for="weight">(.*?)</div>', page, re.S).group(1)
    assert fmt_num(0.0) in legend and fmt_num(r) in legend and "\u2212" not in legend
    assert "mean \u0394 log p" not in page and 'data-for="delta"' not in page  # nothing scored in this mode


def test_inputs_are_normalized_not_trusted():
    weird = [{"text": "x\ud800y", "role": "text", "weight": np.float32(0.5), "logp_base": float("nan"),
              "logp_mixed": -1.0, "delta_logp": float("-inf"), "thought": "t\x00", "thought_tokens": ["t", "\x00"]},
             {"text": "\x1b[31m", "role": "text"}]
    page = render_page("w", weird, "score", {"arr": np.arange(3), "obj": object.__new__(type("X", (), {}))})
    assert embedded_json(page)["meta"]["arr"] == [0, 1, 2]
    page.encode("utf-8")
    data = embedded_json(page)
    t0 = data["tokens"][0]
    assert t0["text"] == "x\ufffdy" and t0["weight"] == 0.5 and t0["logp_base"] is None and t0["delta_logp"] is None
    assert data["tokens"][1]["thought"] is None and data["tokens"][1]["weight"] is None
    assert "\x1b" not in page.split('<script type="application/json"')[0]  # shown as a control picture
    assert "\u241b[31m" in page
    with pytest.raises(ValueError, match="mode"):
        render_page("x", [], "chat")
    with pytest.raises(ValueError, match="token 0: role"):
        render_page("x", [{"text": "a", "role": "assistant"}], "score")
    with pytest.raises(ValueError, match="token 0: 'text'"):
        render_page("x", [{"text": 3}], "score")
    empty = render_page("empty", [], "score")  # no tokens: still a page
    assert embedded_json(empty)["tokens"] == [] and "no values" in empty


def test_numbers_format_without_negative_zero():
    assert fmt_num(-0.0) == "0.000" and fmt_num(-0.0004, signed=True) == "\u22124.0e\u22124"
    assert fmt_num(4.4e-4) == "4.4e\u22124"  # a weight of 4.4e-4 is not shown as 0.000
    assert fmt_num(-1.25) == "\u22121.25" and fmt_num(0.5, signed=True) == "+0.500"
    assert fmt_num(123.456) == "123.5" and fmt_num(None) == "\u2013"
    assert color_range([]) == 1.0 and color_range([0.0, 0.0]) == 1.0
    assert color_range(list(range(1, 21))) == 19  # ceil(0.95 * 20) = 19th smallest
    assert math.isclose(color_range([-3.0]), 3.0)


# ------------------------------------------------------------------------------------- browser ---

@pytest.mark.slow
@pytest.mark.parametrize("mode", ["score", "generate"])
def test_page_in_headless_chromium(mode, tmp_path):
    from headless_chromium import Chromium, find_chromium

    exe = find_chromium()
    if exe is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium); the fast tests cover the HTML")
    toks = score_tokens() if mode == "score" else generate_tokens()
    path = tmp_path / f"thoughts_{mode}.html"
    path.write_text(render_page(f"Quiet-STaR thoughts: {mode}", toks, mode, META), encoding="utf-8")

    with Chromium(exe) as b:
        b.navigate(path.as_uri())
        assert b.eval("document.documentElement.classList.contains('js')"), "the page's script did not run"
        # One element per token, whose text is the token's text; no markup from the data ran.
        texts = b.eval("Array.from(document.querySelectorAll('#text .tok'), s => s.textContent)")
        assert texts == [t["text"] for t in toks]
        assert b.eval("window.__pwned === undefined")
        assert b.eval("document.querySelectorAll('#text .tok[title]').length") == 0  # JS tooltip replaced them

        def centre(i):
            return b.eval(f"(r => [r.left + r.width / 2, r.top + r.height / 2])"
                          f"(document.getElementById('t{i}').getClientRects()[0])")

        # Click the first token with a thought: the side panel shows it and its numbers.
        first = next(i for i, t in enumerate(toks) if t["thought"] is not None)
        b.mouse("click", *centre(first))
        detail = b.eval("document.getElementById('detail').textContent")
        assert f"#{first}" in detail and toks[first]["thought"] in detail and fmt_num(toks[first]["weight"]) in detail
        assert b.eval(f"document.getElementById('t{first}').getAttribute('aria-pressed')") == "true"

        # Keyboard: focus a token, Enter pins it, ArrowRight moves to the next one.
        k = len(toks) - 2
        b.eval(f"document.getElementById('t{k}').focus()")
        b.key("Enter", 13)
        assert b.eval("document.querySelector('#detail .d-idx').textContent") == f"#{k}"
        b.key("ArrowRight", 39)
        assert b.eval("document.querySelector('#detail .d-idx').textContent") == f"#{k + 1}"
        assert b.eval("document.activeElement.id") == f"t{k + 1}"

        # The inline-thoughts toggle shows one ⟨thought⟩ per thought-bearing token.
        n_thoughts = sum(t["thought"] is not None for t in toks)
        assert b.eval("document.querySelectorAll('#text .th').length") == n_thoughts
        assert b.eval("getComputedStyle(document.querySelector('#text .th')).display") == "none"
        b.eval("document.querySelector('input[name=inline]').click()")
        assert b.eval("getComputedStyle(document.querySelector('#text .th')).display") == "inline"
        b.eval("document.querySelector('input[name=inline]').click()")

        # Colour toggle: "none" clears the token backgrounds.
        b.eval("document.querySelector('input[name=colour][value=none]').click()")
        assert b.eval(f"getComputedStyle(document.getElementById('t{first}')).backgroundColor") == "rgba(0, 0, 0, 0)"
        b.eval(f"document.querySelector('input[name=colour][value={'delta' if mode == 'score' else 'weight'}]').click()")

        # Hover shows the tooltip with the thought; then a screenshot of the page as a person sees it.
        b.mouse("click", *centre(first))
        b.mouse("move", *centre(first))
        assert b.eval("document.getElementById('tip').hidden") is False
        assert toks[first]["thought"] in b.eval("document.getElementById('tip').textContent")
        shot = tmp_path / f"thoughts_{mode}.png"
        b.screenshot(str(shot))

        assert b.errors() == []
        assert all(u.startswith(("file:", "data:", "about:")) for u in b.requested_urls()), b.requested_urls()
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
