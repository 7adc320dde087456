"""Checkpoint conversion between HF folders and our params checkpoints.

Commands:
  hf_to_jax   an HF folder (config.json + safetensors) -> an orbax params checkpoint
  jax_to_hf   a params checkpoint -> an HF folder that stock transformers loads

    python -m quietstar_jax.convert hf_to_jax --src=/path/hf_model --dst=/path/params_ckpt
    python -m quietstar_jax.convert jax_to_hf --src=/path/params_ckpt --dst=/path/hf_out --dtype=bfloat16
    python -m quietstar_jax.convert jax_to_hf --quietstar --src=/path/params_ckpt --dst=/path/hf_out
    python -m quietstar_jax.convert hf_to_jax --quietstar --src=/path/hf_out --dst=/path/params_ckpt

hf_to_jax reads config.json + safetensors (sharded or single) and writes an orbax params checkpoint;
jax_to_hf writes sharded safetensors + index + config.json that stock transformers loads. Tokenizer files
found next to the source are copied along.

--quietstar: the params checkpoint also holds params["quietstar"] (thought embeddings + mixing head) and
its config.json a "quietstar" section (QuietStarConfig fields incl. start_id/end_id). jax_to_hf then writes
the export of quietstar_jax.hf.quietstar_export (thought rows in the vocab, quietstar.safetensors sidecar,
quietstar_config.json, tokenizer with the thought tokens); hf_to_jax reads such an export back.
"""

from __future__ import annotations

import os

from absl import flags

from quietstar_jax import cli
from quietstar_jax.errors import CheckpointMismatchError, PathNotFoundError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "generation_config.json", "chat_template.jinja")

FLAGS = flags.FLAGS


def define_flags() -> None:
    # Defined when the command runs, not at import: importing the conversion functions defines no flags.
    flags.DEFINE_string("src", None, "source folder")
    flags.DEFINE_string("dst", None, "destination folder")
    flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16", "float16"], "export dtype (jax_to_hf)")
    flags.DEFINE_integer("max_shard_mb", 5000, "safetensors shard size in MB (jax_to_hf)")
    flags.DEFINE_bool("quietstar", False, "include the thought embeddings + mixing head (see above)")


def tokenizer_files(folder: str) -> dict[str, str]:
    return {n: os.path.join(folder, n) for n in TOKENIZER_FILES if os.path.exists(os.path.join(folder, n))}


def hf_to_jax(src: str, dst: str, quietstar: bool = False) -> str:
    # (jax / orbax / transformers are imported where they are used: --help stays instant)
    from quietstar_jax.hf.io import load_hf_folder
    from quietstar_jax.training.params_ckpt import save_params

    if quietstar:
        from quietstar_jax.hf.quietstar_export import load_quietstar_hf, quietstar_config_to_dict

        _, params, qs, raw = load_quietstar_hf(src)
        raw["quietstar"] = quietstar_config_to_dict(qs)
    else:
        _, params, raw = load_hf_folder(src)
    save_params(dst, params, raw)
    for name, path in tokenizer_files(src).items():
        with open(path, "rb") as fi, open(os.path.join(os.path.abspath(dst), name), "wb") as fo:
            fo.write(fi.read())
    return dst


def jax_to_hf(src: str, dst: str, dtype: str = "bfloat16", max_shard_mb: int = 5000,
              quietstar: bool = False) -> str:
    from quietstar_jax.hf.io import save_hf_folder
    from quietstar_jax.training.params_ckpt import load_params

    cfg, params, raw = load_params(src)
    if quietstar:
        return _jax_to_hf_quietstar(src, dst, dtype, max_shard_mb, cfg, params, raw)
    return save_hf_folder(dst, cfg, params, dtype=dtype, max_shard_bytes=max_shard_mb * 2**20,
                          base_config=raw, extra_files=tokenizer_files(os.path.abspath(src)))


def _jax_to_hf_quietstar(src, dst, dtype, max_shard_mb, cfg, params, raw) -> str:
    from quietstar_jax.hf.quietstar_export import quietstar_config_from_dict, save_quietstar_hf

    src = os.path.abspath(src)
    if "quietstar" not in raw:
        raise CheckpointMismatchError(f"{src}/config.json has no 'quietstar' section (QuietStarConfig fields incl. start_id, "
                         "end_id): not a Quiet-STaR checkpoint; drop --quietstar to export the backbone only")
    qs = quietstar_config_from_dict(raw["quietstar"], f"{src}/config.json 'quietstar'")
    files = tokenizer_files(src)
    tokenizer = None
    if "tokenizer.json" in files or "tokenizer.model" in files:
        import transformers

        tokenizer = transformers.AutoTokenizer.from_pretrained(src)
    base = {k: v for k, v in raw.items() if k != "quietstar"}
    return save_quietstar_hf(dst, cfg, params, qs, tokenizer=tokenizer, dtype=dtype, base_config=base,
                             max_shard_bytes=max_shard_mb * 2**20, extra_files=files)


USAGE = "python -m quietstar_jax.convert {hf_to_jax|jax_to_hf} --src=DIR --dst=DIR [--quietstar] [--dtype=...]"


def main(argv) -> int:
    if len(argv) != 2 or argv[1] not in ("hf_to_jax", "jax_to_hf"):
        cli.fail(f"usage: {USAGE} (--help explains)")
    if not FLAGS.src or not FLAGS.dst:
        cli.fail(f"--src and --dst are required; usage: {USAGE}")
    if not FLAGS.src.startswith("gs://") and not os.path.exists(FLAGS.src):
        raise PathNotFoundError(f"--src={FLAGS.src} does not exist")
    if argv[1] == "hf_to_jax":
        out = hf_to_jax(FLAGS.src, FLAGS.dst, quietstar=FLAGS.quietstar)
    else:
        out = jax_to_hf(FLAGS.src, FLAGS.dst, FLAGS.dtype, FLAGS.max_shard_mb, quietstar=FLAGS.quietstar)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags=define_flags, usage=USAGE)
