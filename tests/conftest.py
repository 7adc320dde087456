"""Test setup: 8 simulated CPU devices (must be set before JAX starts), offline HF, markers."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

# One persistent compilation cache per test session: tests that build the same program again (several
# runs of one tiny config, the CLIs' subprocesses) compile it once.
import tempfile  # noqa: E402

_CACHE = tempfile.mkdtemp(prefix="quietstar-jax-test-cache-")
os.environ.setdefault("QS_TEST_JAX_CACHE", _CACHE)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
