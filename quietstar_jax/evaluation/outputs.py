"""What an evaluation leaves on disk:

    <out>/<task>.<mode>.jsonl   one line per example: question, gold answer, every metric's details (the
                                scored text and its score; the generated text, prediction and correctness;
                                the CoT votes; the thoughts when asked)
    <out>/summary.json          the numbers, the settings, the model and data, wall times
    <out>/tensorboard/          the numbers as scalars eval/<task>/<metric>_<mode> at the model's step
"""

from __future__ import annotations

import dataclasses
import json
import os

from quietstar_jax.evaluation.runner import EvalSettings, Results, flat_scalars


def write_records(out_dir: str, results: Results) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for (task, mode), rows in results.records.items():
        path = os.path.join(out_dir, f"{task}.{mode}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        paths.append(path)
    return paths


def write_summary(out_dir: str, results: Results, settings: EvalSettings, meta: dict) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "summary.json")
    doc = {**meta, "results": results.summary, "settings": dataclasses.asdict(settings), "seconds": results.seconds}
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
    return path


def write_tensorboard(logdir: str, results: Results, step: int, prefix: str = "eval") -> str:
    from quietstar_jax.training.logger import summary_writer_class  # tensorboardX without torch's start-up

    writer = summary_writer_class()(logdir)
    for k, v in flat_scalars(results.summary).items():
        writer.add_scalar(f"{prefix}/{k}", float(v), step)
    writer.close()
    return logdir
