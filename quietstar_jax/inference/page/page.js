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
    var a = Math.abs(x);
    if (a > 0 && a < 1e-3) {  // matches html.fmt_num: 4.5e-4
      var e = x.toExponential(1);
      return ((signed && x > 0) ? "+" + e : e).replace(/-/g, "\u2212");
    }
    var d = a < 1 ? 3 : a < 100 ? 2 : 1, s = x.toFixed(d);
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
