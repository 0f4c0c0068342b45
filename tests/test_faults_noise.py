"""Quiet by default, fast to start: the Python API, the examples and the command line print
no TensorFlow start-up, absl, deprecation or retracing line on stderr (unless KERAS_ASC_DEBUG=1
asks for them), keras-asc's own warnings are one line without a source line, once per run,
and ``--help`` imports nothing heavy. Everything runs in a fresh process, as a user runs it."""

import os
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import PROJECT_ROOT

from keras_asc.logs import NATIVE_LOG_LINE

EXAMPLES = sorted((PROJECT_ROOT / "examples").glob("*.py"))
# What a user must not see unless they asked for it.
_NOISE = re.compile(
    r"absl|deprecat|retracing|cuInit|oneDNN|cuda|WARNING:tensorflow|XNNPACK"
    r"|^\s*\S+\.py:\d+: \w*Warning:",  # a Python warning with its source line
    re.IGNORECASE,
)
# Modules that take seconds to import: none of them before the arguments are parsed.
HEAVY_MODULES = ("tensorflow", "keras", "jax", "torch", "scipy", "tf_keras", "matplotlib")


def noise_lines(stderr):
    """The lines of ``stderr`` a user did not ask for (TensorFlow's start-up log, absl,
    deprecation and retracing warnings, Python warnings with a source line)."""
    return [
        line for line in stderr.splitlines() if NATIVE_LOG_LINE.match(line) or _NOISE.search(line)
    ]


def user_environment(**extra):
    """os.environ as a user has it: no TF_CPP_* log level, no KERAS_ASC_DEBUG, this checkout
    first on the path."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TF_CPP") and key != "KERAS_ASC_DEBUG"
    }
    env.update(PYTHONPATH=str(PROJECT_ROOT), KERAS_BACKEND="tensorflow", **extra)
    return env


def _run(argv, timeout=600, **env):
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=user_environment(**env),
        cwd=PROJECT_ROOT,
    )


_API = textwrap.dedent("""
    import warnings
    import keras_asc
    from keras_asc import logs

    model = keras_asc.build("moflenet57")
    print(keras_asc.complexity.summary(model).splitlines()[-1])
    logs.warn("first   warning\\n on two lines")
    logs.warn("first warning on two lines")  # the same text: shown once
    warnings.warn("a library's deprecation", DeprecationWarning)
    warnings.warn("a library's future change", FutureWarning)
""")


def test_the_python_api_is_quiet_and_warns_in_one_line_once():
    result = _run([sys.executable, "-c", _API])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MACs: 12,944,468 (limit 30,000,000): ok" in result.stdout
    assert result.stderr == "keras-asc: warning: first warning on two lines\n"


def test_keras_asc_debug_shows_what_is_hidden():
    result = _run([sys.executable, "-c", _API], KERAS_ASC_DEBUG="1")
    assert result.returncode == 0, result.stderr[-3000:]
    # Python's own display: the source file and line of each warning, every category.
    assert "KerasAscWarning: first warning on two lines" in result.stderr
    assert "DeprecationWarning: a library's deprecation" in result.stderr  # shown in __main__
    assert "FutureWarning: a library's future change" in result.stderr
    # TensorFlow's start-up log is no longer filtered (its lines differ with the machine).
    assert NATIVE_LOG_LINE.search(result.stderr) or "absl" in result.stderr, result.stderr


def test_cli_debug_flag_turns_the_filter_off():
    result = _run([sys.executable, "-m", "keras_asc", "--debug", "summary", "moflenet57"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert noise_lines(result.stderr), result.stderr  # TensorFlow's start-up log is back


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda path: path.name)
def test_example_help_imports_nothing_heavy_and_prints_nothing_on_stderr(script):
    result = _run([sys.executable, "-X", "importtime", str(script), "--help"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage:")
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert not imported & set(HEAVY_MODULES), sorted(imported & set(HEAVY_MODULES))
    other = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert other == []


@pytest.mark.parametrize(
    "argv", [["--help"], ["quantize", "--help"], ["download", "--help"]], ids=" ".join
)
def test_cli_help_imports_nothing_heavy(argv):
    result = _run([sys.executable, "-X", "importtime", "-m", "keras_asc", *argv])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage: keras-asc")
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert not imported & set(HEAVY_MODULES), sorted(imported & set(HEAVY_MODULES))


def test_noise_lines_catches_what_it_must():
    stderr = "\n".join(
        [
            "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
            "E0000 00:00:1796688003.574892   13139 cuda_platform.cc:52] failed call to cuInit: 303",
            "WARNING:tensorflow:5 out of the last 5 calls to <function f> triggered tf.function "
            "retracing.",
            "/x/keras/src/trainers/epoch_iterator.py:74: UserWarning: `shuffle=True` was passed",
            "keras-asc train: note: TensorBoard logs skipped: the tensorboard package is not "
            "installed.",
            "keras-asc: warning: plugin 'x' failed to load and is skipped",
        ]
    )
    assert len(noise_lines(stderr)) == 4


_SIX_MODELS = textwrap.dedent("""
    import sys
    import keras_asc
    from keras_asc.data.synthetic import make_synthetic_tau22

    data = make_synthetic_tau22(sys.argv[1], clips_per_class=20, test_clips_per_class=9)
    for _ in range(6):  # as quantize (an ensemble and its members) and reproduce do
        result = keras_asc.evaluate(keras_asc.build("moflenet57"), data, verbose=False)
    print(f"evaluated {result.num_clips} clips")
""")


@pytest.mark.slow
def test_evaluating_several_models_in_one_process_prints_no_retracing_warning(tmp_path):
    # Every Keras model traces its own predict function once; TensorFlow counts the traces of
    # all of them together (one code object) and calls five of them "retracing". Quiet by
    # default keeps TensorFlow's logger at errors; KERAS_ASC_DEBUG=1 shows the warning.
    quiet = _run([sys.executable, "-c", _SIX_MODELS, str(tmp_path / "quiet")], timeout=1200)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert "evaluated 90 clips" in quiet.stdout
    assert quiet.stderr == ""
    debug = _run(
        [sys.executable, "-c", _SIX_MODELS, str(tmp_path / "debug")],
        timeout=1200,
        KERAS_ASC_DEBUG="1",
    )
    assert debug.returncode == 0, debug.stderr[-3000:]
    assert "triggered tf.function retracing" in debug.stderr
