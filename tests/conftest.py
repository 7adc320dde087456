"""Test setup: 8 simulated CPU devices (must be set before JAX starts), offline HF, markers."""

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
