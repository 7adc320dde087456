"""What CI (.ci/run) promises: it runs exactly the README's test command, and the run ends by saying how
many tests were skipped and why."""

import os
import re
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_run_ends_with_the_skipped_tests_and_their_reasons(tmp_path):
    shutil.copy(os.path.join(REPO, "tests", "conftest.py"), tmp_path)
    (tmp_path / "test_some.py").write_text(
        "import pytest\n\n"
        "def test_runs(): pass\n\n"
        "def test_tool(): pytest.skip('frobnicate not installed')\n\n"
        "def test_tool_again(): pytest.skip('frobnicate not installed')\n\n"
        "@pytest.mark.skipif(True, reason='no data')\n"
        "def test_data(): pass\n\n"
        "def test_left_out(): pass\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not left_out",
                          str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[-4:] == [
        "skipped: 3 tests:",
        "  2 x frobnicate not installed (test_some.py)",
        "  1 x no data (test_some.py)",
        "deselected: 1 tests (by -k 'not left_out')"], out.stdout


def test_ci_runs_the_readme_test_command():
    readme = open(os.path.join(REPO, "README.md")).read()
    ci = open(os.path.join(REPO, ".ci", "run")).read()
    documented = re.search(r'pip install -e "\.\[test\]" && (python -m pytest[^\n]*)', readme).group(1)
    assert re.search(r'^pip install -q -e "\.\[test\]" && (python -m pytest.*)$', ci, re.M).group(1) == documented
