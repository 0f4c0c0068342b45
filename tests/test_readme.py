"""The README's Python code blocks run as written (those that need no real TAU22 data)."""

import os
import re
import subprocess
import sys

import pytest
from conftest import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
# Blocks under these headings need the real TAU22 download; every other Python block runs.
NEEDS_REAL_DATA = ("## Data, training and evaluation",)


def _python_blocks():
    blocks, heading = [], None
    for match in re.finditer(r"^(#{2,3} [^\n]+)$|^```python\n(.*?)^```", README.read_text(), re.M | re.S):
        if match.group(1):
            heading = match.group(1)
        elif heading not in NEEDS_REAL_DATA:
            blocks.append(pytest.param(match.group(2), id=heading.lstrip("# ").split()[0].lower()))
    return blocks


def test_readme_has_runnable_blocks():
    assert len(_python_blocks()) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("code", _python_blocks())
def test_readme_python_block_runs(code, tmp_path):
    if "import torch" in code:
        pytest.importorskip("torch")
    # Blocks are written for the repository root; run them in a scratch copy of that view.
    os.symlink(PROJECT_ROOT / "benchmarks", tmp_path / "benchmarks")
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
