"""The decoder against HF PyTorch (independent reference), and the HF import/export round trip."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quietstar_jax.hf import CheckpointMismatchError, load_hf_folder, save_hf_folder
from quietstar_jax.model import ConfigError, ModelConfig
from quietstar_jax.model.transformer import causal_lm_logits

torch = pytest.importorskip("torch")
from hf_utils import build_hf_model, save_hf_model  # noqa: E402

pytestmark = pytest.mark.hf
TOKENS = np.random.RandomState(0).randint(3, 211, (2, 13))


def hf_logits(model, tokens, attention_mask=None):
    with torch.no_grad():
        am = None if attention_mask is None else torch.tensor(attention_mask)
        return model(torch.tensor(tokens), attention_mask=am).logits.numpy()


def ours(folder, tokens, segment_ids=None, **runtime):
    cfg, params, _ = load_hf_folder(folder, **runtime)
    seg = None if segment_ids is None else jnp.asarray(segment_ids)
    return np.asarray(jax.jit(causal_lm_logits, static_argnums=1)(params, cfg, jnp.asarray(tokens), seg))


VARIANTS = {
    "llama": ("llama", {}),
    "mistral_sliding": ("mistral", {}),
    "qwen2": ("qwen2", {}),
    "llama_tied_bias_llama3rope": ("llama", dict(
        tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8})),
    "qwen2_sliding_upper_layers": ("qwen2", dict(use_sliding_window=True, sliding_window=4,
                                                 max_window_layers=1)),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_logits_match_hf_pytorch(tmp_path, variant):
    model_type, overrides = VARIANTS[variant]
    model = build_hf_model(model_type, **overrides)
    folder = save_hf_model(model, str(tmp_path / "hf"))
    assert len([f for f in os.listdir(folder) if f.endswith(".safetensors")]) > 1  # sharded + index
    ref = hf_logits(model, TOKENS)
    got = ours(folder, TOKENS)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    if variant == "mistral_sliding":
        # The window must matter: without it the logits late in the sequence differ.
        cfg, params, _ = load_hf_folder(folder)
        full = causal_lm_logits(params, cfg.replace(layer_windows=(1 << 30,) * cfg.num_hidden_layers),
                                jnp.asarray(TOKENS))
        assert np.abs(np.asarray(full)[:, -1] - ref[:, -1]).max() > 1e-3


def test_right_padding_matches_hf_attention_mask(tmp_path):
    model = build_hf_model("llama")
    folder = save_hf_model(model, str(tmp_path / "hf"))
    am = np.ones_like(TOKENS)
    am[1, 9:] = 0
    ref = hf_logits(model, TOKENS, am)
    got = ours(folder, TOKENS, segment_ids=am)
    np.testing.assert_allclose(got[0], ref[0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got[1, :9], ref[1, :9], atol=1e-4, rtol=0)


def test_scan_remat_and_bf16_variants(tmp_path):
    model = build_hf_model("mistral")
    folder = save_hf_model(model, str(tmp_path / "hf"))
    ref = hf_logits(model, TOKENS)
    for runtime in (dict(scan_layers=False), dict(remat_policy="full"), dict(remat_policy="dots")):
        np.testing.assert_allclose(ours(folder, TOKENS, **runtime), ref, atol=1e-4, rtol=0)
    # bf16 compute with fp32 params: logits of this tiny random model are O(1); bf16 carries ~3
    # significant digits, so agreement to 5e-2 absolute is the stated tolerance.
    bf16 = ours(folder, TOKENS, dtype="bfloat16")
    np.testing.assert_allclose(bf16, ref, atol=5e-2, rtol=0)


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_export_loads_in_stock_transformers(tmp_path, model_type):
    import transformers

    model = build_hf_model(model_type, tie_word_embeddings=(model_type == "qwen2"))
    src = save_hf_model(model, str(tmp_path / "src"))
    cfg, params, raw = load_hf_folder(src)
    params = jax.tree.map(jnp.asarray, params)
    out = save_hf_folder(str(tmp_path / "out"), cfg, params, dtype="float32", max_shard_bytes=60_000,
                         base_config=raw)
    assert os.path.exists(os.path.join(out, "model.safetensors.index.json"))
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    np.testing.assert_array_equal(hf_logits(reloaded, TOKENS), hf_logits(model, TOKENS))


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_import_export_is_bit_exact(tmp_path, dtype):
    from safetensors.numpy import load_file

    model = build_hf_model("qwen2").to(getattr(torch, dtype))
    src = save_hf_model(model, str(tmp_path / "src"), max_shard_size="200MB")
    cfg, params, raw = load_hf_folder(src)
    out = save_hf_folder(str(tmp_path / "out"), cfg, params, dtype=dtype, base_config=raw)
    a = load_file(os.path.join(src, "model.safetensors"))
    b = load_file(os.path.join(out, "model.safetensors"))
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].tobytes() == b[name].tobytes(), name


def test_convert_cli_round_trip(tmp_path):
    from quietstar_jax import convert

    model = build_hf_model("mistral")
    src = save_hf_model(model, str(tmp_path / "src"))
    convert.hf_to_jax(src, str(tmp_path / "ckpt"))
    out = convert.jax_to_hf(str(tmp_path / "ckpt"), str(tmp_path / "out"), dtype="float32")
    import transformers

    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    assert reloaded.config.sliding_window == 5
    np.testing.assert_array_equal(hf_logits(reloaded, TOKENS), hf_logits(model, TOKENS))


# ----------------------------------------------------------------------------- bad input


@pytest.fixture
def good_folder(tmp_path):
    return save_hf_model(build_hf_model("llama"), str(tmp_path / "hf"), max_shard_size="200MB")


def _rewrite(folder, fn):
    from safetensors.numpy import load_file, save_file

    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    fn(tensors)
    save_file(tensors, path)


def test_missing_tensor_is_named(good_folder):
    _rewrite(good_folder, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointMismatchError, match=r"missing tensors.*model\.layers\.1\.mlp\.up_proj\.weight"):
        load_hf_folder(good_folder)


def test_unexpected_tensor_is_named(good_folder):
    _rewrite(good_folder, lambda t: t.update({"model.layers.0.self_attn.q_proj.bias": np.zeros(64, np.float32)}))
    with pytest.raises(CheckpointMismatchError, match=r"unexpected tensors.*q_proj\.bias"):
        load_hf_folder(good_folder)


def test_wrong_shape_is_named(good_folder):
    _rewrite(good_folder, lambda t: t.update({"model.norm.weight": np.ones(65, np.float32)}))
    with pytest.raises(CheckpointMismatchError, match=r"model\.norm\.weight: checkpoint has \(65,\), config implies \(64,\)"):
        load_hf_folder(good_folder)


def test_config_mismatch_is_named(good_folder):
    path = os.path.join(good_folder, "config.json")
    cfg = json.load(open(path))
    cfg["num_hidden_layers"] = 4
    json.dump(cfg, open(path, "w"))
    with pytest.raises(CheckpointMismatchError, match=r"missing tensors.*model\.layers\.3\."):
        load_hf_folder(good_folder)


def test_unsupported_architecture(good_folder):
    path = os.path.join(good_folder, "config.json")
    cfg = json.load(open(path))
    cfg["model_type"] = "gpt2"
    cfg["architectures"] = ["GPT2LMHeadModel"]
    json.dump(cfg, open(path, "w"))
    with pytest.raises(ConfigError, match=r"unsupported architecture: model_type='gpt2'.*GPT2LMHeadModel"):
        load_hf_folder(good_folder)


def test_missing_files(tmp_path, good_folder):
    with pytest.raises(FileNotFoundError, match="HF model folder not found"):
        load_hf_folder(str(tmp_path / "nope"))
    os.remove(os.path.join(good_folder, "model.safetensors"))
    with pytest.raises(FileNotFoundError, match=r"no \*\.safetensors files"):
        load_hf_folder(good_folder)
    os.remove(os.path.join(good_folder, "config.json"))
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_hf_folder(good_folder)


def test_missing_shard_named(tmp_path):
    folder = save_hf_model(build_hf_model("llama"), str(tmp_path / "hf"))
    shard = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))[0]
    os.remove(os.path.join(folder, shard))
    with pytest.raises(FileNotFoundError, match=shard):
        load_hf_folder(folder)


def test_bad_config_values():
    with pytest.raises(ConfigError, match="multiple of num_key_value_heads"):
        ModelConfig(num_attention_heads=4, num_key_value_heads=3)
    with pytest.raises(ConfigError, match="remat_policy"):
        ModelConfig(remat_policy="sometimes")
    with pytest.raises(ConfigError, match="rope_type 'yarn'"):
        ModelConfig(rope_scaling=(("factor", 2.0), ("rope_type", "yarn")))
