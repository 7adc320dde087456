"""Quiet-STaR training entry point.

    python -m quietstar_jax.train                                   # the embedded CPU default
    python -m quietstar_jax.train --config=configs/tpu_v4.py --workdir=gs://bucket/run \\
        --config.model.path=/mnt/disks/mistral-7b --config.steps=100

--config.a.b=v overrides any field (unknown fields are an error). Re-running the same command resumes
from the workdir's latest checkpoint; re-running a finished run only says so. Errors are one line
(exit status 2); --debug adds the traceback.
"""

from __future__ import annotations

import os
import sys

from absl import flags, logging
from ml_collections import config_flags

from quietstar_jax import cli

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                               "default.py")
FLAGS = flags.FLAGS
USAGE = "python -m quietstar_jax.train [--config=FILE] [--config.FIELD=VALUE ...] [--workdir=DIR] [--debug]"


def define_flags() -> None:
    config_flags.DEFINE_config_file(
        "config", _DEFAULT_CONFIG,
        "the run's config: a Python file whose get_config() returns it (configs/*.py; the default is the CPU "
        "run of SmolLM2-135M-Instruct). Any field can then be set with --config.FIELD=VALUE, e.g. "
        "--config.steps=24 --config.quietstar.n_ahead=8 --config.model.path=/data/model; an unknown field is an "
        "error. The fields are defined, with comments, in quietstar_jax/training/config.py; the Quiet-STaR ones "
        "are documented in docs/algorithm.md; --helpfull lists every field with its default",
        lock_config=True)
    flags.DEFINE_string("workdir", None, "output directory (local absolute/relative path or gs://); "
                                         "default: /tmp/quietstar_jax/<run_name>")


def run_training(config, workdir: str) -> dict:
    """Runs (or resumes) the configured training with the evaluation hooks `config.eval` asks for.
    Returns Trainer.run()'s result."""
    from quietstar_jax.evaluation.train_hooks import add_config_hooks
    from quietstar_jax.training.trainer import Trainer

    trainer = Trainer(config, workdir)
    add_config_hooks(trainer)
    return trainer.run()


def main(argv) -> int:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}: options are --config=FILE, --config.a.b=VALUE, --workdir=DIR")
    # orbax logs every checkpoint file operation at INFO; keep the console to our progress lines.
    if not any(a.startswith(("--verbosity", "-v")) for a in sys.argv[1:]):
        logging.set_verbosity(logging.WARNING)
    c = cli.loaded_config(FLAGS.config)
    workdir = FLAGS.workdir or os.path.join("/tmp/quietstar_jax", c.run_name)
    run_training(c, workdir)
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags=define_flags, usage=USAGE)
