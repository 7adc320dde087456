"""Ahead-of-time compile for a Cloud TPU slice, on any host (no TPU needed): does the config fit, and
how fast would it run?

    python -m quietstar_jax.compile --config=configs/tpu_v4.py                 # the config's slice
    python -m quietstar_jax.compile --config=configs/tpu_v4.py --topology=v4:2x2x4 --config.mesh.fsdp=16
    python -m quietstar_jax.compile --config=configs/tpu_v4.py --program=generate --batch=8 \\
        --prompt_len=256 --max_new_tokens=256          # generation with thinking instead of training

Compiles the real train step with libtpu's compile-only client (quietstar_jax.tpu.aot) and prints
per-chip memory against usable HBM, FLOPs per step, an estimated step time, the collective bytes per
chip per step by kind and phase read off the compiled HLO, and a roofline step time (the max of
compute, HBM and ICI time). Only the model architecture is needed (model.preset, or model.path's
config.json); no weights, tokenizer or data are read.
Exit status: 0 fits, 1 does not fit (or compile failed), 2 bad config / topology / mesh.
"""

from __future__ import annotations

import os
import sys

import jax

from quietstar_jax import cli
from quietstar_jax.errors import QuietStarError
from quietstar_jax.tpu.aot import compile_train_step
from quietstar_jax.tpu.report import GIB, format_report
from quietstar_jax.tpu.topology import cpu_only_process


def _is_oom(e: Exception) -> bool:
    s = str(e)
    return "RESOURCE_EXHAUSTED" in s or "HbmOom" in s or "Ran out of memory" in s


def _compile_or_report_oom(compile_fn, topology: str, advice: str):
    """compile_fn()'s report, or None after saying DOES NOT FIT when the TPU compiler ran out of HBM."""
    try:
        return compile_fn()
    except QuietStarError:
        raise
    except Exception as e:  # noqa: BLE001 - the TPU compiler's errors are JaxRuntimeError
        if _is_oom(e):
            print(f"DOES NOT FIT on {topology}: the TPU compiler ran out of HBM.\n{str(e).strip()[:2000]}\n{advice}",
                  file=sys.stderr)
            return None
        raise


def _fit_status(r: dict, min_headroom_gib: float = 0.0) -> int:
    """Prints FITS / DOES NOT FIT for a compile report's memory per chip; the exit status (0 / 1)."""
    total, usable = r["memory"]["total"], r["usable_hbm"]
    if total > usable - min_headroom_gib * GIB:
        print(f"DOES NOT FIT: {total / GIB:.2f} GiB per chip > usable {usable / GIB:.2f} GiB"
              + (f" - required headroom {min_headroom_gib:g} GiB" if min_headroom_gib else ""), file=sys.stderr)
        return 1
    print(f"FITS: {total / GIB:.2f} GiB of {usable / GIB:.2f} GiB usable per chip", flush=True)
    return 0


def run(c, topology: str, mfu: float = 0.4, min_headroom_gib: float = 0.0, flops: bool = True,
        dump_hlo: str = "") -> int:
    """Compile, print the report, return the exit status (0 fits, 1 does not). Bad input raises a
    QuietStarError (the CLI prints it as one line, status 2)."""
    if not 0 < mfu <= 1:
        cli.fail(f"--mfu must be in (0, 1], got {mfu}")
    r = _compile_or_report_oom(
        lambda: compile_train_step(c, topology, flops=flops, log=lambda s: print(s, flush=True)), topology,
        "Try: a larger slice (--topology), more fsdp (--config.mesh.fsdp), "
        "--config.grad_accum_steps=<more micro-batches>, --config.model.remat_policy=full.")
    if r is None:
        return 1
    if dump_hlo:
        with open(dump_hlo, "w") as f:
            f.write(r["hlo_text"])
        print(f"optimized HLO (per-chip SPMD program) written to {dump_hlo}")
    print(format_report(r, mfu, tokens_per_step=c.global_batch_size * c.seq_len, steps=c.steps), flush=True)
    return _fit_status(r, min_headroom_gib)


def run_generate(c, topology: str, batch: int, prompt_len: int, max_new_tokens: int, think: bool) -> int:
    """--program=generate: compile generation, print its memory, return the exit status."""
    from quietstar_jax.tpu.aot_generate import compile_generate, format_generate_report

    r = _compile_or_report_oom(
        lambda: compile_generate(c, topology, batch=batch, prompt_len=prompt_len, max_new_tokens=max_new_tokens,
                                 think=think, log=lambda s: print(s, flush=True)), topology,
        "Try: a smaller --batch, a larger slice, more fsdp / tensor.")
    if r is None:
        return 1
    print(format_generate_report(r), flush=True)
    return _fit_status(r)


def main(argv=None):
    # A dedicated process: JAX on the CPU (the TPU compiler needs no TPU), libtpu in compile-only mode.
    if not os.environ.get("JAX_PLATFORMS"):
        os.environ["JAX_PLATFORMS"] = "cpu"
        jax.config.update("jax_platforms", "cpu")  # jax read the environment at import
    if not cpu_only_process():
        print(f"note: JAX_PLATFORMS={os.environ['JAX_PLATFORMS']!r} includes tpu; compiling with the default "
              "libtpu settings", file=sys.stderr)
    from absl import flags
    from ml_collections import config_flags

    def define_flags():
        config_flags.DEFINE_config_file(
            "config", None, "required: the config to compile, a Python file whose get_config() returns it "
            "(configs/*.py); --config.FIELD=VALUE sets any field (fields: quietstar_jax/training/config.py, "
            "docs/algorithm.md)", lock_config=True)
        flags.DEFINE_string("topology", None, "TPU slice, e.g. v4:2x2x2 or v4-16 (default: the config's "
                                              "tpu_topology field)")
        flags.DEFINE_float("mfu", 0.4, "assumed model FLOP utilisation for the step-time estimate")
        flags.DEFINE_float("min_headroom_gib", 0.0, "fail unless this much HBM per chip stays free")
        flags.DEFINE_bool("flops", True, "count FLOPs on the step's jaxpr (traces the step twice; seconds)")
        flags.DEFINE_string("dump_hlo", "", "write the compiled (optimized, partitioned) HLO text to this file")
        flags.DEFINE_enum("program", "train", ["train", "generate"], "the train step, or generation with thinking")
        flags.DEFINE_integer("batch", 8, "generate: prompts per batch")
        flags.DEFINE_integer("prompt_len", 256, "generate: prompt tokens")
        flags.DEFINE_integer("max_new_tokens", 256, "generate: tokens to generate")
        flags.DEFINE_bool("think", True, "generate: with thinking (False: plain decoding)")

    def _main(args) -> int:
        if len(args) > 1:
            cli.fail(f"unexpected arguments {args[1:]}: options are --config=FILE, --topology=NAME, ...")
        FLAGS = flags.FLAGS
        if not any(a == "--config" or a.startswith("--config=") for a in sys.argv[1:]):
            cli.fail("--config is required (e.g. --config=configs/tpu_v4.py)")
        c = cli.loaded_config(FLAGS.config)
        topology = FLAGS.topology or c.get("tpu_topology")
        if not topology:
            cli.fail("no topology: pass --topology=v4:2x2x2 (or set tpu_topology in the config)")
        if FLAGS.program == "generate":
            return run_generate(c, topology, FLAGS.batch, FLAGS.prompt_len, FLAGS.max_new_tokens, FLAGS.think)
        return run(c, topology, FLAGS.mfu, FLAGS.min_headroom_gib, FLAGS.flops, FLAGS.dump_hlo)

    cli.run(_main, argv, define_flags=define_flags,
            usage="python -m quietstar_jax.compile --config=FILE [--config.FIELD=VALUE ...] [--topology=NAME] "
                  "[--program=train|generate] [--flag=VALUE ...]")


if __name__ == "__main__":
    main()
