"""REINFORCE is what makes thinking pay: a short run of the stabilised recipe on the multi-hop task
(quietstar_jax.data.multihop) against the same run with the advantage zeroed.

The jobs are the thinking study's own (benchmarks/thinking_study.py --job=...), so the test measures
exactly what the README's study reports, with fewer steps and held-out documents. Each job runs in its
own process (one CPU device, not the suite's eight). The pretrained base model (6000 plain-LM steps,
~14 min here) is kept in the asset cache ($QUIETSTAR_CACHE or ~/.cache/quietstar_jax) and reused; the
two arms then take ~10 min each alone (the study's recipe: 570 s), ~21 min each beside another job.

The measure is the model's own: on held-out query documents, the accuracy of its prediction of every
answer token with a thought (what inference does) minus its accuracy without one. The base model cannot
compose two lookups in one pass (about 1 in 5 right); a written intermediate step makes the answer one
lookup away. With REINFORCE the recipe learns to write it (the study's seed 0, think vs base accuracy:
0.26 vs 0.20 after 100 steps, 0.74 after 125, 0.89 vs 0.20 after 150); with the advantage zeroed
(policy weight 0: the thought embeddings, the mixing head and the LM still learn from the NLL, the
entropy bonus still acts) nothing rewards a useful thought.
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = os.path.join(REPO, "benchmarks", "thinking_study.py")
STEPS = 150  # the study's own length: the recipe's thoughts start to pay after ~100 steps here
HELDOUT_DOCS = 500
# The margin (think minus base accuracy, held-out answer tokens) that the recipe must reach and the run
# with the advantage zeroed must not: under half of what the study's recipe reached at this step (0.69).
MARGIN = 0.3


def _job(work: str, spec: str) -> dict:
    out = os.path.join(work, spec, "result.json")
    if not os.path.exists(out):
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
        proc = subprocess.run([sys.executable, STUDY, f"--job={spec}", f"--work={work}",
                               f"--multihop_steps={STEPS}", f"--multihop_heldout_docs={HELDOUT_DOCS}"],
                              env=env, capture_output=True, text=True, timeout=3600)
        assert proc.returncode == 0, f"{spec} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    with open(out) as f:
        return json.load(f)


@pytest.mark.slow
def test_reinforce_makes_the_models_own_thinking_beat_its_base_prediction(tmp_path):
    from quietstar_jax.assets.wheels import cache_root

    shared = os.path.join(cache_root(), "multihop_study_pretrain")
    _job(shared, "multihop/pretrain/seed0")  # cached between runs: the arms below read it from here
    work = str(tmp_path)
    os.makedirs(os.path.join(work, "multihop"), exist_ok=True)
    os.symlink(os.path.join(shared, "multihop", "pretrain"), os.path.join(work, "multihop", "pretrain"))
    margins = {}
    for arm in ("recipe", "recipe_no_reinforce"):
        ans = _job(work, f"multihop/{arm}/seed0")["final"]["answer"]
        assert ans["n"] > 1000
        margins[arm] = ans["think_acc"] - ans["base_acc"]
    assert margins["recipe"] >= MARGIN, margins
    assert margins["recipe_no_reinforce"] < MARGIN, margins
