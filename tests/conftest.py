import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The grading fixtures are misbehaving submissions, graded by tests; they are not
# notebooks for nbval to run.
collect_ignore_glob = ["grading_fixtures/*"]


@pytest.fixture(scope="session")
def html(tmp_path_factory):
    """The HTML book, built once per test session with warnings as errors."""
    out = tmp_path_factory.mktemp("book")
    jb = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jb) if jb.exists() else shutil.which("jupyter-book"), "build", str(ROOT),
           "--path-output", str(out), "-W", "--all"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out / "_build" / "html"
