"""Running the package's command lines in the tests, and the front door's contract for bad input.

    out = run_cli("quietstar_jax.generate", "--model=...", "--prompt=hi")   # CompletedProcess
    line = assert_one_error_line(out.returncode, out.stderr, "does not exist")
"""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(module: str, *args, env: dict | None = None, keep_xla_flags: bool = False, timeout: int = 300):
    """python -m module args from the repository root, on CPU, offline; the session's XLA_FLAGS (8 simulated
    devices) dropped unless keep_xla_flags; env added last."""
    full = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1")
    if not keep_xla_flags:
        full.pop("XLA_FLAGS", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", module, *args], env=full, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def assert_one_error_line(returncode: int, stderr: str, want: str = "", context=None) -> str:
    """Bad input: exit status 2, exactly one line starting "error: " (containing `want`), no traceback.
    Returns that line."""
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert returncode == 2, (context, returncode, stderr[-2000:])
    assert len(errors) == 1 and want in errors[0], (context, stderr[-2000:])
    assert "Traceback" not in stderr, (context, stderr[-2000:])
    return errors[0]
