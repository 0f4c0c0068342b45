"""Every script in examples/ runs with tiny settings, so the examples never rot."""

import os
import subprocess
import sys

import pytest
from conftest import PROJECT_ROOT

EXAMPLES = PROJECT_ROOT / "examples"
# Each example with arguments small enough for a test run.
TINY_ARGUMENTS = {
    "train_synthetic.py": ["{tmp}", "--epochs", "1", "--clips-per-class", "20"],
}


def test_every_example_has_tiny_arguments():
    assert sorted(path.name for path in EXAMPLES.glob("*.py")) == sorted(TINY_ARGUMENTS)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(TINY_ARGUMENTS))
def test_example_runs(script, tmp_path):
    arguments = [argument.format(tmp=tmp_path / "out") for argument in TINY_ARGUMENTS[script]]
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *arguments],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "macro" in result.stdout.lower()
