"""Generate text with a trained Quiet-STaR model, watching it think; or score a text token by token.

    python -m quietstar_jax.generate --model=/tmp/quietstar_jax/cpu_default --prompt="Q: 17 + 25 = ?" --show_thoughts
    python -m quietstar_jax.generate --model=DIR --prompt="..." --no_think            # plain decoding
    python -m quietstar_jax.generate --model=DIR --score_text="..." --html=thoughts.html

--model: a training workdir (its latest checkpoint), an HF export with the Quiet-STaR extras, or (with
--no_think) any HF model folder. Tokens stream as they are generated; --show_thoughts prints each
token's thought before it, dimmed, as ⟨thought⟩ (--show_weights adds the mixing weight w). The output
token is greedy by default (--temperature / --top_k / --top_p to sample); thoughts are sampled as in
training (--thought_temperature, --thought_tokens to change them). --html=FILE writes a page to look at
every token's thought (and, with --score_text, how much thinking changed the log-probability of the
true next token: the paper's per-token view). Errors are one line (exit status 2; --debug for the
traceback).
"""

from __future__ import annotations

import os
import sys

from absl import flags

from quietstar_jax import cli
from quietstar_jax.errors import ConfigError

FLAGS = flags.FLAGS
USAGE = "python -m quietstar_jax.generate --model=DIR (--prompt=TEXT | --score_text=TEXT) [--flag=VALUE ...]"


def define_flags() -> None:
    flags.DEFINE_string("model", None, "training workdir, HF export with the Quiet-STaR extras, or HF folder")
    flags.DEFINE_string("prompt", None, "the text to continue")
    flags.DEFINE_string("score_text", None, "score this text token by token instead of generating")
    flags.DEFINE_integer("max_new_tokens", 64, "tokens to generate (stops earlier at EOS)")
    flags.DEFINE_bool("show_thoughts", False, "print each token's thought before it, ⟨dimmed⟩")
    flags.DEFINE_bool("show_weights", False, "with the thoughts, the mixing weight w")
    flags.DEFINE_bool("no_think", False, "plain decoding: the model without its thoughts")
    flags.DEFINE_integer("seed", 0, "random seed (thoughts, and the output when sampling)")
    flags.DEFINE_float("temperature", 0.0, "output temperature; 0 = greedy")
    flags.DEFINE_integer("top_k", 0, "output top-k (0 = off)")
    flags.DEFINE_float("top_p", 1.0, "output nucleus top-p (1 = off)")
    flags.DEFINE_integer("thought_tokens", None, "tokens per thought (default: as trained, N - 3)")
    flags.DEFINE_float("thought_temperature", None, "thought sampling temperature (default: as trained)")
    flags.DEFINE_string("html", "", "write a page to look at the thoughts to this file")
    flags.DEFINE_enum("color", "auto", ["auto", "always", "never"], "dim the thoughts with ANSI colours")
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype")


def _styles(color: str, stream) -> tuple:
    on = color == "always" or (color == "auto" and stream.isatty())
    return ("\033[2;36m", "\033[0m") if on else ("", "")


def _thought_text(tok, ids) -> str:
    return tok.decode([int(i) for i in ids]).replace("\n", "⏎")


def _encode(tok, text: str, what: str) -> list[int]:
    ids = [int(i) for i in tok.encode(text)]
    if not ids:
        raise ConfigError(f"--{what} is empty after tokenisation: give some text")
    return ids


def run_generate(model, prompt: str, out=sys.stdout) -> dict:
    """Streams the continuation of `prompt` to `out`; returns the tokens, thoughts and weights."""
    import jax
    import numpy as np

    from quietstar_jax.inference.generate import GenerateConfig, Generator
    from quietstar_jax.inference.sampler import Sampler

    tok, cfg, qs = model.tokenizer, model.cfg, model.qs
    ids = _encode(tok, prompt, "prompt")
    gen = GenerateConfig(
        max_new_tokens=FLAGS.max_new_tokens, think=not FLAGS.no_think, thought_tokens=FLAGS.thought_tokens,
        output=Sampler(FLAGS.temperature, FLAGS.top_k, FLAGS.top_p),
        thought=None if FLAGS.thought_temperature is None else Sampler(FLAGS.thought_temperature, qs.top_k),
        eos_ids=() if tok.eos_id is None else (int(tok.eos_id),))
    T = gen.num_thought_tokens(qs)
    need = len(ids) + gen.max_new_tokens + (T + 2 if gen.think else 0)
    if need > cfg.max_position_embeddings:
        raise ConfigError(f"the prompt is {len(ids)} tokens; with --max_new_tokens={gen.max_new_tokens} (and the "
                          f"thoughts) that needs {need} positions, the model has {cfg.max_position_embeddings}: "
                          "shorten the prompt or lower --max_new_tokens")
    dim, reset = _styles(FLAGS.color, out)
    g = Generator(jax.tree.map(jax.numpy.asarray, model.params), cfg, qs, gen)
    out.write(prompt)
    out.flush()
    new, text, thoughts, weights, held = [], "", [], [], 0
    for s in g.stream(np.asarray([ids]), np.asarray([len(ids)]), jax.random.key(FLAGS.seed)):
        t = int(s["tokens"][0])
        if t in gen.eos_ids:
            break
        new.append(t)
        thoughts.append(s["thoughts"][0].tolist())
        weights.append(float(s["weights"][0]))
        if FLAGS.show_thoughts and gen.think:  # the thought comes before the token it leads to
            w = f" w={weights[-1]:+.2e}" if FLAGS.show_weights else ""
            out.write(f"{dim}⟨{_thought_text(tok, thoughts[-1])}{w}⟩{reset}")
        full = tok.decode(new)
        if full.endswith("\ufffd") and held < 4:  # half of a multi-byte character: wait for the rest
            held += 1
        else:
            out.write(full[len(text):])
            text, held = full, 0
        out.flush()
    out.write(tok.decode(new)[len(text):] + "\n")
    return {"prompt_ids": ids, "tokens": new, "thoughts": thoughts, "weights": weights, "think": gen.think}


def run_score(model, text: str, out=sys.stdout) -> dict:
    """think_logprobs over `text`: per token, log p before and after thinking, the thought, w."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from quietstar_jax.inference.html import normalize_tokens, summarize
    from quietstar_jax.inference.think import think_logprobs

    tok, cfg, qs = model.tokenizer, model.cfg, model.qs
    if FLAGS.no_think or not model.has_extras:
        raise ConfigError("--score_text compares the model with and without thinking: it needs a model with the "
                          "Quiet-STaR extras and no --no_think")
    ids = _encode(tok, text, "score_text")
    if len(ids) < 2:
        raise ConfigError("--score_text needs at least two tokens (a token and the one it predicts)")
    T = qs.num_thought_tokens if FLAGS.thought_tokens is None else FLAGS.thought_tokens
    if len(ids) + T + 2 > cfg.max_position_embeddings:
        raise ConfigError(f"--score_text is {len(ids)} tokens, more than the model's {cfg.max_position_embeddings} "
                          "positions allow with the thoughts: shorten it")
    x = jnp.asarray([ids], jnp.int32)
    fn = jax.jit(lambda p, k: think_logprobs(p, cfg, qs, x, k, num_thought_tokens=T))
    o = jax.device_get(fn(jax.tree.map(jnp.asarray, model.params), jax.random.key(FLAGS.seed)))
    rows = []
    for p in range(len(ids) - 1):
        nxt = ids[p + 1]
        base, mixed = float(o.base_logprobs[0, p, nxt]), float(o.mixed_logprobs[0, p, nxt])
        rows.append({"position": p + 1, "token": nxt, "logp_base": base, "logp_mixed": mixed,
                     "delta_logp": mixed - base, "weight": float(o.mixing_weight[0, p]),
                     "thought": np.asarray(o.thoughts[0, p]).tolist()})
    result = {"ids": ids, "rows": rows}
    s = summarize(normalize_tokens(_page_tokens(tok, result, "score"), "score"), "score")  # the page's header
    out.write(f"{s['n_scored']} predictions: mean log p {s['mean_logp_base']:.4f} without thinking, "
              f"{s['mean_logp_mixed']:.4f} with; mean change {s['mean_delta']:+.2e}, thinking "
              f"helped {100 * s['frac_helped']:.0f}% of tokens; mean w {s['mean_weight']:+.2e}\n")
    for r in sorted(rows, key=lambda r: -r["delta_logp"])[:5]:
        out.write(f"  helped most: {tok.decode([r['token']])!r} after ⟨{_thought_text(tok, r['thought'])}⟩ "
                  f"{r['delta_logp']:+.3e}\n")
    return result


def _page_tokens(tok, result: dict, mode: str) -> list[dict]:
    if mode == "score":
        tokens = [{"text": tok.decode([result["ids"][0]]), "role": "text"}]
        for r in result["rows"]:
            tokens.append({"text": tok.decode([r["token"]]), "role": "text", "thought": _thought_text(tok, r["thought"]),
                           "thought_tokens": [tok.decode([t]) for t in r["thought"]], "weight": r["weight"],
                           "logp_base": r["logp_base"], "logp_mixed": r["logp_mixed"], "delta_logp": r["delta_logp"]})
        return tokens
    tokens = [{"text": tok.decode([t]), "role": "prompt"} for t in result["prompt_ids"]]
    for t, th, w in zip(result["tokens"], result["thoughts"], result["weights"]):
        think = result["think"]
        tokens.append({"text": tok.decode([t]), "role": "generated",
                       "thought": _thought_text(tok, th) if think else None,
                       "thought_tokens": [tok.decode([i]) for i in th] if think else None, "weight": w if think else None})
    return tokens


def main(argv) -> int:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}: the prompt goes in --prompt=\"...\"")
    if not FLAGS.model:
        cli.fail("--model is required: a training workdir, an HF export, or (with --no_think) an HF folder")
    if (FLAGS.prompt is None) == (FLAGS.score_text is None):
        cli.fail("give exactly one of --prompt=TEXT (generate) and --score_text=TEXT (score)")
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    from quietstar_jax.inference.loading import load_for_inference

    model = load_for_inference(FLAGS.model, no_think=FLAGS.no_think, dtype=FLAGS.dtype)
    print(f"model: {model.source}", file=sys.stderr, flush=True)
    mode = "score" if FLAGS.score_text is not None else "generate"
    result = run_score(model, FLAGS.score_text) if mode == "score" else run_generate(model, FLAGS.prompt)
    if FLAGS.html:
        from quietstar_jax.inference.html import render_page

        meta = {"model": model.source, "N (thought slots)": model.qs.n_ahead, "seed": FLAGS.seed,
                "thinking": "off" if FLAGS.no_think else "on"}
        page = render_page(f"Quiet-STaR thoughts ({mode})", _page_tokens(model.tokenizer, result, mode), mode, meta)
        with open(FLAGS.html, "w", encoding="utf-8") as f:
            f.write(page)
        print(f"wrote {os.path.abspath(FLAGS.html)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags=define_flags, usage=USAGE)
