"""HF export of a Quiet-STaR model (backbone + thought rows + mixing head sidecar) and its inverse.

The independent reference is stock transformers loading the exported folder: its logits on normal text
must equal our plain model's, and on text containing thought tokens our model with thought embeddings.
"""

import json
import os
import warnings

import builders
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quietstar_jax.hf import CheckpointMismatchError, load_hf_folder, load_quietstar_hf, save_quietstar_hf
from quietstar_jax.hf.quietstar_export import CONFIG_NAME, SIDECAR_NAME
from quietstar_jax.model import param_shapes
from quietstar_jax.model.attention import StreamMask
from quietstar_jax.model.transformer import forward, lm_logits
from quietstar_jax.quietstar import QuietStarConfig
from quietstar_jax.quietstar.tokens import END_TOKEN, START_TOKEN, embed_with_thoughts

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.hf

V = 211
IDS = {"outside": (V, V + 1), "inside": (V - 2, V - 1), "gap_reversed": (V + 3, V + 1)}
VARIANTS = [(True, "outside"), (True, "inside"), (False, "outside"), (False, "inside"), (False, "gap_reversed"),
            (False, "last_bias")]
VARIANT_IDS = [f"{'tied' if t else 'untied'}-{m}" for t, m in VARIANTS]


def make(tied: bool, mode: str = "outside", vocab: int = V, hidden: int = 32, layers: int = 2, seed: int = 0,
         last_bias: bool = False):
    """Tiny random model with non-trivial norms/biases and a live (non-zero) mixing head."""
    cfg = builders.model_config(model_type="llama" if tied else "qwen2", vocab_size=vocab, hidden_size=hidden,
                                num_hidden_layers=layers, head_dim=hidden // 4, tie_word_embeddings=tied,
                                qkv_bias=not tied, max_position_embeddings=64)
    start, end = IDS[mode] if vocab == V else (vocab, vocab + 1)
    qs = QuietStarConfig(n_ahead=4, n_ahead_talk=2, start_id=start, end_id=end, mixing_head_last_bias=last_bias)
    rng = np.random.RandomState(seed)

    def init(path, sd):  # numpy (no compilation): N(0, 0.02) matrices, norms ~1, biases ~0.1
        name = jax.tree_util.keystr(path)
        x = rng.randn(*sd.shape).astype(np.float32)
        return 1 + 0.1 * x if "norm" in name else (0.1 if "bias" in name else 0.02) * x

    params = jax.tree_util.tree_map_with_path(init, param_shapes(cfg))
    H = hidden
    params["quietstar"] = {
        "thought_embeddings": (0.01 * rng.randn(2, H)).astype(np.float32),  # start != end
        "talk_head": {"0": {"weight": init((), np.zeros((H, 2 * H))), "bias": 0.1 * init((), np.zeros(H))},
                      "2": {"weight": init((), np.zeros((H, H))), "bias": 0.1 * init((), np.zeros(H))},
                      "4": {"weight": 10 * init((), np.zeros((1, H)))}}}
    if last_bias:
        params["quietstar"]["talk_head"]["4"]["bias"] = np.full((1,), 0.2, np.float32)
    return cfg, params, qs


def hf_model(folder):
    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                             attn_implementation="eager").eval()


def hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.tensor(np.asarray(tokens))).logits.numpy()


def ours_with_thoughts(params, cfg, qs, tokens):
    """Our base stream over tokens that may contain thought ids (thought embeddings substituted)."""

    @jax.jit
    def f(params, tokens):
        B, L = tokens.shape
        x = embed_with_thoughts(params, cfg, qs, tokens)
        pos = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
        h = forward(params, cfg, x[:, None], pos[:, None], StreamMask.causal(jnp.ones((B, L), jnp.int32)))
        return lm_logits(params, cfg, h[:, 0])

    return np.asarray(f(jax.tree.map(jnp.asarray, params), jnp.asarray(tokens)))


def text_tokens(qs, B=2, L=9, seed=0):
    toks = np.random.RandomState(seed).randint(3, V, (B, L))
    return np.where(np.isin(toks, [qs.start_id, qs.end_id]), 5, toks)


def assert_trees_bit_equal(a, b):
    fa, ta = jax.tree_util.tree_flatten_with_path(a)
    fb, tb = jax.tree_util.tree_flatten_with_path(b)
    assert ta == tb
    for (path, x), (_, y) in zip(fa, fb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype == np.float32, jax.tree_util.keystr(path)
        assert x.shape == y.shape and x.tobytes() == y.tobytes(), jax.tree_util.keystr(path)


# ----------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("tied,mode", VARIANTS, ids=VARIANT_IDS)
def test_round_trip_is_bit_exact(tmp_path, tied, mode):
    from safetensors.numpy import load_file

    last_bias = mode == "last_bias"
    cfg, params, qs = make(tied, "outside" if last_bias else mode, last_bias=last_bias)
    sharded = mode == "gap_reversed"  # also covers a multi-shard backbone (save_hf_folder writes the index)
    out = save_quietstar_hf(str(tmp_path / "out"), cfg, params, qs, dtype="float32", base_config={"foo": 1},
                            max_shard_bytes=20_000 if sharded else 2**30)
    shards = [f for f in os.listdir(out) if f.startswith("model") and f.endswith(".safetensors")]
    assert (len(shards) > 1) == sharded and os.path.exists(os.path.join(out, "model.safetensors.index.json"))
    V1 = max(V, qs.start_id + 1, qs.end_id + 1)
    raw_file = json.load(open(os.path.join(out, "config.json")))
    assert raw_file["vocab_size"] == V1 and raw_file["foo"] == 1
    meta = json.load(open(os.path.join(out, CONFIG_NAME)))
    assert (meta["original_vocab_size"], meta["vocab_size"]) == (V, V1)
    assert (meta["start_token"], meta["end_token"]) == (START_TOKEN, END_TOKEN)
    assert meta["quietstar"]["start_id"] == qs.start_id and meta["quietstar"]["n_ahead"] == 4
    side = load_file(os.path.join(out, SIDECAR_NAME))
    expected = {f"talk_head.0.{i}.{k}" for i in (0, 2, 4) for k in ("weight", "bias")} | {"thought_embeddings"}
    if not last_bias:  # the authors' layout: no bias on the last layer
        expected -= {"talk_head.0.4.bias"}
    if mode == "inside":
        expected |= {"original_rows.model.embed_tokens.weight"} | (set() if tied else {"original_rows.lm_head.weight"})
    assert set(side) == expected
    assert side["talk_head.0.0.weight"].shape == (32, 64)
    np.testing.assert_array_equal(side["talk_head.0.2.bias"], params["quietstar"]["talk_head"]["2"]["bias"])

    cfg2, params2, qs2, raw = load_quietstar_hf(out)
    assert cfg2 == cfg and qs2 == qs and raw["vocab_size"] == V and raw["foo"] == 1
    assert_trees_bit_equal(params2, params)
    # The export is also a plain HF folder for our own loader (the sidecar is not read as backbone).
    cfg3, params3, _ = load_hf_folder(out)
    assert cfg3.vocab_size == V1 and "quietstar" not in params3
    # Exporting what we loaded reproduces the same files.
    again = save_quietstar_hf(str(tmp_path / "again"), cfg2, params2, qs2, dtype="float32", base_config=raw)
    for fn in ("model.safetensors", SIDECAR_NAME) if not sharded else (SIDECAR_NAME,):
        a, b = load_file(os.path.join(out, fn)), load_file(os.path.join(again, fn))
        assert sorted(a) == sorted(b) and all(a[n].tobytes() == b[n].tobytes() for n in a), fn


def test_thought_adapters_round_trip_bit_exact(tmp_path):
    """Thought adapters travel in the sidecar under PEFT-style per-layer names and load back exactly;
    the backbone files are those of the same model without adapters (stock HF loads the base model)."""
    from safetensors.numpy import load_file

    cfg, params, qs = make(False, "outside")
    qs = qs.replace(adapter_rank=3, adapter_targets="q_proj,down_proj")
    rng = np.random.RandomState(4)
    nL, H, I = cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size
    params["quietstar"]["adapters"] = {
        "self_attn": {"q_proj": {"lora_A": rng.randn(nL, 3, H).astype(np.float32),
                                 "lora_B": rng.randn(nL, cfg.num_attention_heads * cfg.head_dim, 3).astype(np.float32)}},
        "mlp": {"down_proj": {"lora_A": rng.randn(nL, 3, I).astype(np.float32),
                              "lora_B": rng.randn(nL, H, 3).astype(np.float32)}}}
    out = save_quietstar_hf(str(tmp_path / "out"), cfg, params, qs, dtype="float32")
    side = load_file(os.path.join(out, SIDECAR_NAME))
    assert side["adapters.layers.1.mlp.down_proj.lora_B.weight"].shape == (H, 3)
    assert len([n for n in side if n.startswith("adapters.")]) == 2 * 2 * nL
    cfg2, params2, qs2, _ = load_quietstar_hf(out)
    assert qs2 == qs
    assert_trees_bit_equal(params2, params)
    del side["adapters.layers.0.self_attn.q_proj.lora_A.weight"]
    from safetensors.numpy import save_file
    save_file(side, os.path.join(out, SIDECAR_NAME))
    with pytest.raises(CheckpointMismatchError, match="missing tensors: adapters.layers.0.self_attn.q_proj.lora_A"):
        load_quietstar_hf(out)


# ----------------------------------------------------------------------------- stock transformers


@pytest.mark.parametrize("tied,mode", VARIANTS[:4], ids=VARIANT_IDS[:4])
def test_stock_transformers_matches_our_model(tmp_path, tied, mode):
    cfg, params, qs = make(tied, mode)
    out = save_quietstar_hf(str(tmp_path / "out"), cfg, params, qs, dtype="float32")
    model = hf_model(out)
    V1 = max(V, qs.start_id + 1, qs.end_id + 1)
    assert model.config.vocab_size == V1
    ids = [qs.start_id, qs.end_id]
    # Thought embeddings in the HF table are ours * scale, bit for bit (fp32 export).
    emb = model.get_input_embeddings().weight.detach().numpy()
    te = params["quietstar"]["thought_embeddings"]
    assert emb[ids].tobytes() == (te * np.float32(qs.embedding_scale)).astype(np.float32).tobytes()
    keep = [i for i in range(V) if i not in ids]  # columns our model keeps (inside ids are masked by it)

    # Normal text (rows 0-1) and text containing thought tokens (rows 2-3), in one call of our model:
    # on normal text it is the plain LM; with thought tokens, the base stream with the thought embeddings.
    toks = text_tokens(qs)
    toks_t = toks.copy()
    toks_t[:, 2], toks_t[:, 6], toks_t[0, 7] = qs.start_id, qs.end_id, qs.start_id
    got = ours_with_thoughts(params, cfg, qs, np.concatenate([toks, toks_t]))
    ref, ref_t = hf_logits(model, toks), hf_logits(model, toks_t)
    np.testing.assert_allclose(ref[..., keep], got[:2][..., keep], atol=1e-4, rtol=0)
    np.testing.assert_allclose(ref_t[..., keep], got[2:][..., keep], atol=1e-4, rtol=0)
    assert np.abs(ref_t[..., keep] - ref[..., keep]).max() > 1e-3  # the thought tokens did change things
    if tied:  # lm_head IS the embedding table: the thought columns are live logits h . (scale * te)
        assert np.abs(ref[..., ids]).min() > 0
    else:  # zero lm_head rows: logit exactly 0 whatever the input
        assert np.all(ref[..., ids] == 0) and np.all(ref_t[..., ids] == 0)

    # generate() never emits them: suppress_tokens -> -inf in the processed scores.
    gen = transformers.GenerationConfig.from_pretrained(out)
    assert gen.suppress_tokens == sorted(ids)
    res = model.generate(torch.tensor(toks[:1]), max_new_tokens=3, do_sample=False, output_scores=True,
                         return_dict_in_generate=True, generation_config=gen)
    for s in res.scores:
        assert torch.isinf(s[0, ids]).all() and (s[0, ids] < 0).all()


def test_bfloat16_export(tmp_path):
    from safetensors.numpy import load_file

    cfg, params, qs = make(tied=False, mode="inside")
    out = save_quietstar_hf(str(tmp_path / "out"), cfg, params, qs, dtype="bfloat16")
    assert str(load_file(os.path.join(out, "model.safetensors"))["model.norm.weight"].dtype) == "bfloat16"
    assert load_file(os.path.join(out, SIDECAR_NAME))["thought_embeddings"].dtype == np.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the thought rows agree with the sidecar up to bf16 rounding
        cfg2, params2, qs2, _ = load_quietstar_hf(out)
    assert cfg2 == cfg and qs2 == qs
    assert_trees_bit_equal(params2["quietstar"], params["quietstar"])  # sidecar: float32, exact
    import ml_dtypes

    bf = lambda x: np.asarray(x).astype(ml_dtypes.bfloat16).astype(np.float32)  # noqa: E731
    want = jax.tree.map(bf, {k: v for k, v in params.items() if k != "quietstar"})
    for path in (("model", "embed_tokens"), ("lm_head",)):  # overwritten rows come back from the fp32 sidecar
        src, dst = params, want
        for k in path:
            src, dst = src[k], dst[k]
        dst["weight"][[qs.start_id, qs.end_id]] = src["weight"][[qs.start_id, qs.end_id]]
    assert_trees_bit_equal({k: v for k, v in params2.items() if k != "quietstar"}, want)
    assert hf_model(out).config.vocab_size == V


# ----------------------------------------------------------------------------- tokenizer


def word_tokenizer(n_words: int):
    """A tiny offline WordLevel tokenizer: w0 .. w{n-1}, w0 doubling as unk."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(n_words)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0")


@pytest.mark.parametrize("mode,n_words", [("outside", V), ("inside", V - 2)])
def test_tokenizer_saved_with_thought_tokens(tmp_path, mode, n_words):
    cfg, params, qs = make(tied=True, mode=mode)
    tok = word_tokenizer(n_words)
    out = save_quietstar_hf(str(tmp_path / "out"), cfg, params, qs, tokenizer=tok, dtype="float32")
    assert START_TOKEN not in tok.get_vocab()  # the caller's tokenizer is not modified (a copy is)
    tok2 = transformers.AutoTokenizer.from_pretrained(out)
    assert tok2.convert_tokens_to_ids([START_TOKEN, END_TOKEN]) == [qs.start_id, qs.end_id]
    enc = tok2(f"w5 {START_TOKEN} w7 {END_TOKEN} w9", add_special_tokens=False)["input_ids"]
    assert enc == [5, qs.start_id, 7, qs.end_id, 9]
    assert tok2.decode(enc, skip_special_tokens=True).split() == ["w5", "w7", "w9"]
    # Stock HF end to end: tokenizer ids -> the thought embedding rows.
    emb = hf_model(out).get_input_embeddings().weight.detach().numpy()
    np.testing.assert_array_equal(emb[enc[1]], params["quietstar"]["thought_embeddings"][0] * np.float32(100.0))


def test_export_is_a_clean_folder_to_publish(tmp_path):
    """What a user pushes to a hub as it is: ordinary permissions (not mkdtemp's 0700), no fields naming
    the machine it was made on (a GGUF's _model_name_or_path, a loader's _name_or_path; a local
    tokenizer's is_local / local_files_only)."""
    cfg, params, qs = make(tied=True)
    local = str(tmp_path / "local_tok")
    word_tokenizer(V).save_pretrained(local)
    tok = transformers.AutoTokenizer.from_pretrained(local, local_files_only=True)
    base = {"_name_or_path": "/home/me/models/x", "_model_name_or_path": "Smollm2 135M 8k Lc100K Mix1 Ep2",
            "_commit_hash": "abc", "foo": 1}
    out = save_quietstar_hf(str(tmp_path / "out"), cfg, params, qs, tokenizer=tok, dtype="float32",
                            base_config=base)
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(out).st_mode & 0o777 == 0o777 & ~mask
    for name in os.listdir(out):
        assert os.stat(os.path.join(out, name)).st_mode & 0o777 == 0o666 & ~mask, name
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["foo"] == 1 and not [k for k in config if k.startswith("_")]
    tok_cfg = json.load(open(os.path.join(out, "tokenizer_config.json")))
    assert not {"is_local", "local_files_only", "name_or_path"} & set(tok_cfg)
    assert transformers.AutoTokenizer.from_pretrained(out).convert_tokens_to_ids(START_TOKEN) == qs.start_id


def test_tokenizer_id_mismatch_is_an_error_and_writes_nothing(tmp_path):
    cfg, params, qs = make(tied=False)
    qs = qs.replace(start_id=V + 5, end_id=V + 6)
    with pytest.raises(ValueError, match=r"maps '<\|startofthought\|>', '<\|endofthought\|>' to ids \[211, 212\].*"
                                         r"start_id=216, end_id=217"):
        save_quietstar_hf(str(tmp_path / "out"), cfg, params, qs, tokenizer=word_tokenizer(V))
    # A tokenizer with the thought tokens at the right (inside) ids but more tokens than the table has rows.
    from tokenizers import Tokenizer, models

    vocab = {f"w{i}": i for i in range(V + 4) if i not in (V - 2, V - 1)}
    vocab.update({START_TOKEN: V - 2, END_TOKEN: V - 1})
    big = transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="w0")))
    with pytest.raises(ValueError, match="tokenizer has 215 tokens but the exported embedding table has only 211"):
        save_quietstar_hf(str(tmp_path / "out"), cfg, params, qs.replace(start_id=V - 2, end_id=V - 1),
                          tokenizer=big)
    assert os.listdir(tmp_path) == []  # no folder, no staging leftovers


def test_real_smollm2_tokenizer(tmp_path, smollm2_folder):
    from quietstar_jax.quietstar.tokens import add_thought_tokens

    tok = transformers.AutoTokenizer.from_pretrained(smollm2_folder)
    n = len(tok)
    start, end, _ = add_thought_tokens(tok)
    assert (start, end) == (n, n + 1)
    cfg, params, qs = make(tied=True, vocab=n, hidden=16, layers=1)
    out = save_quietstar_hf(str(tmp_path / "out"), cfg, params, qs, tokenizer=tok, dtype="float32")
    tok2 = transformers.AutoTokenizer.from_pretrained(out)
    assert tok2.convert_tokens_to_ids([START_TOKEN, END_TOKEN]) == [start, end]
    ids = tok2(f"2+2{START_TOKEN}so{END_TOKEN}=4", add_special_tokens=False)["input_ids"]
    assert start in ids and end in ids
    model = hf_model(out)
    assert model.config.vocab_size == n + 2
    emb = model.get_input_embeddings().weight.detach().numpy()
    np.testing.assert_array_equal(emb[[start, end]], params["quietstar"]["thought_embeddings"] * np.float32(100))


# ----------------------------------------------------------------------------- convert CLI


def test_convert_cli_quietstar_round_trip(tmp_path):
    from quietstar_jax import convert
    from quietstar_jax.hf.quietstar_export import quietstar_config_to_dict
    from quietstar_jax.training.params_ckpt import load_params, save_params

    cfg, params, qs = make(tied=True)
    ckpt = str(tmp_path / "ckpt")
    raw = {**cfg.to_hf_dict(), "quietstar": quietstar_config_to_dict(qs)}
    save_params(ckpt, jax.tree.map(jnp.asarray, params), raw)
    word_tokenizer(V).save_pretrained(ckpt)  # the base tokenizer, without the thought tokens
    out = convert.jax_to_hf(ckpt, str(tmp_path / "hf"), dtype="float32", quietstar=True)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok.convert_tokens_to_ids([START_TOKEN, END_TOKEN]) == [qs.start_id, qs.end_id]
    assert "quietstar" not in json.load(open(os.path.join(out, "config.json")))
    convert.hf_to_jax(out, str(tmp_path / "ckpt2"), quietstar=True)
    cfg2, params2, raw2 = load_params(str(tmp_path / "ckpt2"))
    assert cfg2 == cfg and QuietStarConfig(**raw2["quietstar"]) == qs
    assert_trees_bit_equal(jax.tree.map(np.asarray, params2), params)
    save_params(str(tmp_path / "plain"), jax.tree.map(jnp.asarray, params), cfg.to_hf_dict())
    with pytest.raises(ValueError, match="has no 'quietstar' section"):
        convert.jax_to_hf(str(tmp_path / "plain"), str(tmp_path / "hf2"), quietstar=True)


# ----------------------------------------------------------------------------- errors


@pytest.fixture
def export(tmp_path):
    cfg, params, qs = make(tied=False, mode="inside")
    return save_quietstar_hf(str(tmp_path / "out"), cfg, params, qs, dtype="float32")


def _rewrite_sidecar(folder, fn):
    from safetensors.numpy import load_file, save_file

    path = os.path.join(folder, SIDECAR_NAME)
    tensors = load_file(path)
    fn(tensors)
    save_file(tensors, path)


def test_missing_files_are_named(export, tmp_path):
    os.remove(os.path.join(export, "model.safetensors.index.json"))
    load_quietstar_hf(export)  # without the index: model.safetensors only, the sidecar is not backbone
    os.remove(os.path.join(export, SIDECAR_NAME))
    with pytest.raises(FileNotFoundError, match=r"sidecar quietstar\.safetensors .* is missing"):
        load_quietstar_hf(export)
    os.remove(os.path.join(export, CONFIG_NAME))
    with pytest.raises(FileNotFoundError, match=r"has no quietstar_config\.json: not a Quiet-STaR export"):
        load_quietstar_hf(export)


def test_sidecar_shape_mismatch_is_named(export):
    _rewrite_sidecar(export, lambda t: t.update({"talk_head.0.2.weight": np.zeros((32, 31), np.float32)}))
    with pytest.raises(CheckpointMismatchError, match=r"talk_head\.0\.2\.weight: sidecar has \(32, 31\), "
                                                      r"expected \(32, 32\)"):
        load_quietstar_hf(export)


def test_sidecar_missing_and_unexpected_tensors_are_named(export):
    _rewrite_sidecar(export, lambda t: (t.pop("original_rows.lm_head.weight"), t.update({"junk": np.zeros(1)})))
    with pytest.raises(CheckpointMismatchError, match=r"missing tensors: original_rows\.lm_head\.weight \| "
                                                      r"unexpected tensors: junk"):
        load_quietstar_hf(export)


def test_export_from_before_the_last_bias_field_keeps_its_bias(export):
    """Exports written before QuietStarConfig.mixing_head_last_bias existed always carry the bias: the
    loader turns the field on, so the exported function is unchanged."""
    path = os.path.join(export, CONFIG_NAME)
    meta = json.load(open(path))
    del meta["quietstar"]["mixing_head_last_bias"]
    json.dump(meta, open(path, "w"))
    _rewrite_sidecar(export, lambda t: t.update({"talk_head.0.4.bias": np.full((1,), 0.3, np.float32)}))
    _, params, qs, _ = load_quietstar_hf(export)
    assert qs.mixing_head_last_bias
    np.testing.assert_array_equal(params["quietstar"]["talk_head"]["4"]["bias"], np.full(1, 0.3, np.float32))


def test_last_bias_disagreeing_with_the_config_is_named(export):
    _rewrite_sidecar(export, lambda t: t.update({"talk_head.0.4.bias": np.zeros((1,), np.float32)}))
    with pytest.raises(CheckpointMismatchError, match=r"unexpected tensors: talk_head\.0\.4\.bias"):
        load_quietstar_hf(export)


def test_backbone_mismatches_are_named(export):
    path = os.path.join(export, "config.json")
    raw = json.load(open(path))
    json.dump({**raw, "vocab_size": V + 2}, open(path, "w"))
    with pytest.raises(CheckpointMismatchError, match=r"config\.json vocab_size is 213 but quietstar_config\.json "
                                                      r"records an export with 211 rows"):
        load_quietstar_hf(export)
    json.dump({**raw, "num_hidden_layers": 3}, open(path, "w"))
    with pytest.raises(CheckpointMismatchError, match=r"missing tensors.*model\.layers\.2\."):
        load_quietstar_hf(export)


def test_changed_thought_rows_warn(export):
    from safetensors.numpy import load_file, save_file

    path = os.path.join(export, "model.safetensors")
    t = load_file(path)
    t["model.embed_tokens.weight"][V - 1] += 1.0
    save_file(t, path)
    with pytest.warns(UserWarning, match="embedding rows of the thought ids differ"):
        load_quietstar_hf(export)


def test_save_errors_are_named(tmp_path):
    cfg, params, qs = make(tied=True)
    dst = str(tmp_path / "out")
    with pytest.raises(ValueError, match="start_id/end_id are unset"):
        save_quietstar_hf(dst, cfg, params, QuietStarConfig())
    with pytest.raises(ValueError, match="start_id and end_id are both 211"):
        save_quietstar_hf(dst, cfg, params, qs.replace(end_id=V))
    with pytest.raises(ValueError, match=r'params has no "quietstar" subtree'):
        save_quietstar_hf(dst, cfg, {k: v for k, v in params.items() if k != "quietstar"}, qs)
    bad = jax.tree.map(lambda x: x, params)
    bad["quietstar"]["talk_head"]["2"]["weight"] = np.zeros((32, 16), np.float32)
    bad["quietstar"]["thought_embeddings"] = np.zeros((1, 32), np.float32)
    with pytest.raises(ValueError, match=r'\["thought_embeddings"\] has shape \(1, 32\), expected \(2, 32\).*'
                                         r'\["talk_head"\]\["2"\]\["weight"\] has shape \(32, 16\), '
                                         r'expected \(32, 32\)'):
        save_quietstar_hf(dst, cfg, bad, qs)
    with pytest.raises(ValueError, match="export dtype 'int8'"):
        save_quietstar_hf(dst, cfg, params, qs, dtype="int8")
    assert not os.path.exists(dst)
