"""Quiet-STaR continued pretraining entry point (single process, CPU default).

    python -m quietstar_jax.train                         # CPU demo: tiny model, synthetic arithmetic text
    python -m quietstar_jax.train --hf_model=DIR --data=corpus.jsonl --steps=100 --workdir=/abs/out

STATUS: this is the first, single-host version of the training loop (issue 4 delivers configs,
sharding, orbax checkpoint/resume and tfds/grain data). It runs real Quiet-STaR steps: the loss of
quietstar_jax.quietstar.objective, AdamW with warmup and clipping, a progress line, sampled thoughts
shown in context, and an HF export of the backbone at the end.

With no --hf_model it uses a clearly-labelled TINY RANDOM MODEL (hidden 64, 2 layers) and a byte-level
vocabulary over SYNTHETIC arithmetic sentences, so it runs anywhere in about a minute.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from quietstar_jax.hf.io import load_hf_folder, save_hf_folder
from quietstar_jax.model import ModelConfig, init_params
from quietstar_jax.quietstar import QuietStarConfig, init_quietstar_params, quietstar_loss, sample_thoughts

FLAGS = flags.FLAGS
flags.DEFINE_string("hf_model", None, "HF model folder (config.json + safetensors + tokenizer)")
flags.DEFINE_string("data", None, "jsonl file with a 'text' field (default: synthetic arithmetic text)")
flags.DEFINE_string("workdir", "/tmp/quietstar_jax_demo", "output folder (absolute)")
flags.DEFINE_integer("steps", 30, "optimizer steps")
flags.DEFINE_integer("batch_size", 2, "examples per step")
flags.DEFINE_integer("seq_len", 32, "tokens per example")
flags.DEFINE_integer("n_ahead", 6, "thought slots N (incl. start/end)")
flags.DEFINE_integer("n_ahead_talk", 3, "teacher-forced tokens M")
flags.DEFINE_integer("n_passes", 2, "thoughts per position P")
flags.DEFINE_float("learning_rate", 1e-3, "AdamW peak learning rate")
flags.DEFINE_integer("seed", 0, "seed")


def synthetic_texts(n: int, seed: int) -> list[str]:
    """SYNTHETIC arithmetic sentences (a stand-in corpus for the offline demo)."""
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(1, 50, 2)
        out.append(f"Q: {a} plus {b}? A: {a + b}. Q: {a} times 2? A: {2 * a}.")
    return out


def byte_tokenize(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def load_texts(path: str | None, seed: int) -> list[str]:
    if path is None:
        return synthetic_texts(512, seed)
    if not os.path.exists(path):
        raise FileNotFoundError(f"--data file not found: {path}")
    texts = []
    with open(path) as f:
        for i, line in enumerate(f):
            try:
                texts.append(json.loads(line)["text"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{i + 1}: expected a JSON object with a 'text' field ({e})") from e
    if not texts:
        raise ValueError(f"{path} holds no records")
    return texts


def batch_for_step(token_rows: list[list[int]], step: int, B: int, L: int, seed: int) -> dict:
    """Deterministic in the step: example (step*B + i) of a seeded permutation, cropped/padded to L."""
    perm = np.random.RandomState(seed).permutation(len(token_rows))
    toks = np.zeros((B, L), np.int32)
    seg = np.zeros((B, L), np.int32)
    for i in range(B):
        row = token_rows[perm[(step * B + i) % len(perm)]][:L]
        toks[i, :len(row)] = row
        seg[i, :len(row)] = 1
    pos = np.broadcast_to(np.arange(L, dtype=np.int32), (B, L))
    return {"tokens": jnp.asarray(toks), "positions": jnp.asarray(pos), "segment_ids": jnp.asarray(seg)}


def main(argv):
    del argv
    workdir = os.path.abspath(FLAGS.workdir)
    os.makedirs(workdir, exist_ok=True)
    texts = load_texts(FLAGS.data, FLAGS.seed)
    if FLAGS.hf_model:
        import transformers

        from quietstar_jax.quietstar.tokens import add_thought_tokens

        cfg, params, raw = load_hf_folder(FLAGS.hf_model)
        tok = transformers.AutoTokenizer.from_pretrained(FLAGS.hf_model)
        start_id, end_id, init_ids = add_thought_tokens(tok)
        encode, decode = (lambda t: tok(t)["input_ids"]), (lambda ids: tok.decode(ids))
        print(f"model: {FLAGS.hf_model} ({cfg.model_type}, {cfg.num_hidden_layers} layers)")
    else:
        print("model: TINY RANDOM MODEL (demo; pass --hf_model for a real one), byte vocabulary, "
              "SYNTHETIC arithmetic text")
        cfg = ModelConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16)
        params, raw = init_params(cfg, jax.random.key(FLAGS.seed)), None
        start_id, end_id, init_ids = 256, 257, byte_tokenize("---")
        encode = byte_tokenize
        decode = lambda ids: "".join({start_id: "<start>", end_id: "<end>"}.get(i, chr(i) if 32 <= i < 127 else "?")
                                     for i in ids)  # noqa: E731
    qs = QuietStarConfig(n_ahead=FLAGS.n_ahead, n_ahead_talk=FLAGS.n_ahead_talk, n_passes=FLAGS.n_passes,
                         start_id=start_id, end_id=end_id)
    params = jax.tree.map(jnp.asarray, params)
    params["quietstar"] = init_quietstar_params(params, cfg, qs, jax.random.key(FLAGS.seed + 1), init_ids)
    rows = [encode(t) for t in texts]
    sched = optax.warmup_cosine_decay_schedule(0.0, FLAGS.learning_rate, max(1, FLAGS.steps // 10), FLAGS.steps)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=1e-3))
    opt = tx.init(params)
    base_key = jax.random.key(FLAGS.seed + 2)

    @jax.jit
    def step_fn(params, opt, batch, step):
        key = jax.random.fold_in(base_key, step)
        (_, m), g = jax.value_and_grad(lambda p: quietstar_loss(p, cfg, qs, batch, key), has_aux=True)(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, m

    B, L = FLAGS.batch_size, FLAGS.seq_len
    t0 = time.time()
    for step in range(FLAGS.steps):
        batch = batch_for_step(rows, step, B, L, FLAGS.seed)
        params, opt, m = step_fn(params, opt, batch, step)
        if step % 5 == 0 or step == FLAGS.steps - 1:
            m = jax.device_get(m)
            el = time.time() - t0
            tps = (step + 1) * B * L / max(el, 1e-9)
            eta = el / (step + 1) * (FLAGS.steps - step - 1)
            print(f"step {step:4d} loss {m['loss']:.4f} nll_base {m['nll_base']:.4f} "
                  f"nll_mix {m.get('nll_mix', np.nan):.4f} reward {m.get('reward_mean', np.nan):+.2e} "
                  f"w {m.get('mixing_weight', np.nan):+.3f} tok/s {tps:.0f} ETA {eta:.0f}s", flush=True)
    if qs.enabled and qs.num_thought_tokens > 0:
        batch = batch_for_step(rows, 0, 1, L, FLAGS.seed)
        th, _ = sample_thoughts(params, cfg, qs, batch["tokens"], batch["positions"], batch["segment_ids"],
                                jax.random.key(123))
        toks = np.asarray(batch["tokens"][0])
        for p in (4, 10, 16):
            if p < L:
                print(f"  ...{decode(toks[max(0, p - 12):p + 1].tolist())!r} "
                      f"<start>{decode(np.asarray(th[0, p]).tolist())!r}<end>")
    backbone = {k: v for k, v in params.items() if k != "quietstar"}
    out = save_hf_folder(os.path.join(workdir, "hf_export"), cfg, backbone, dtype="float32", base_config=raw)
    print(f"done in {time.time() - t0:.0f}s; HF export of the backbone: {out}")


if __name__ == "__main__":
    app.run(main)
