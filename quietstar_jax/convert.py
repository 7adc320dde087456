"""Checkpoint conversion between HF folders and our params checkpoints.

    python -m quietstar_jax.convert hf_to_jax --src=/path/hf_model --dst=/path/params_ckpt
    python -m quietstar_jax.convert jax_to_hf --src=/path/params_ckpt --dst=/path/hf_out --dtype=bfloat16

hf_to_jax reads config.json + safetensors (sharded or single) and writes an orbax params checkpoint;
jax_to_hf writes sharded safetensors + index + config.json that stock transformers loads. Tokenizer files
found next to the source are copied along.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from quietstar_jax.hf.io import load_hf_folder, save_hf_folder
from quietstar_jax.training.params_ckpt import load_params, save_params

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "generation_config.json", "chat_template.jinja")

FLAGS = flags.FLAGS
flags.DEFINE_string("src", None, "source folder")
flags.DEFINE_string("dst", None, "destination folder")
flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16", "float16"], "export dtype (jax_to_hf)")
flags.DEFINE_integer("max_shard_mb", 5000, "safetensors shard size in MB (jax_to_hf)")


def tokenizer_files(folder: str) -> dict[str, str]:
    return {n: os.path.join(folder, n) for n in TOKENIZER_FILES if os.path.exists(os.path.join(folder, n))}


def hf_to_jax(src: str, dst: str) -> str:
    _, params, raw = load_hf_folder(src)
    save_params(dst, params, raw)
    for name, path in tokenizer_files(src).items():
        with open(path, "rb") as fi, open(os.path.join(os.path.abspath(dst), name), "wb") as fo:
            fo.write(fi.read())
    return dst


def jax_to_hf(src: str, dst: str, dtype: str = "bfloat16", max_shard_mb: int = 5000) -> str:
    cfg, params, raw = load_params(src)
    return save_hf_folder(dst, cfg, params, dtype=dtype, max_shard_bytes=max_shard_mb * 2**20,
                          base_config=raw, extra_files=tokenizer_files(os.path.abspath(src)))


def main(argv):
    if len(argv) != 2 or argv[1] not in ("hf_to_jax", "jax_to_hf"):
        sys.exit("usage: python -m quietstar_jax.convert {hf_to_jax|jax_to_hf} --src=DIR --dst=DIR")
    if not FLAGS.src or not FLAGS.dst:
        sys.exit("--src and --dst are required")
    if argv[1] == "hf_to_jax":
        out = hf_to_jax(FLAGS.src, FLAGS.dst)
    else:
        out = jax_to_hf(FLAGS.src, FLAGS.dst, FLAGS.dtype, FLAGS.max_shard_mb)
    print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
