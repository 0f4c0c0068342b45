"""Faults at the command line: every exception a command raises becomes one line and a
documented exit code; --debug shows the traceback; TensorFlow's start-up noise stays off
stderr; the README's shell commands exist as written and its first command writes plots."""

import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import PROJECT_ROOT

from keras_asc import cli
from keras_asc.commands import summary as summary_command

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

README = PROJECT_ROOT / "README.md"


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def failing_summary(monkeypatch):
    """``keras-asc summary`` raising the exception the test puts in ``failing_summary.error``."""

    class Holder:
        error = None

    def run(args):
        raise Holder.error

    monkeypatch.setattr(summary_command, "run", run)
    monkeypatch.delenv("KERAS_ASC_DEBUG", raising=False)
    return Holder


# === the top-level handler ===


@pytest.mark.parametrize(
    "error, code, line",
    [
        (ValueError("bad value\n  on two lines"), 2, "error: bad value on two lines"),
        (FileNotFoundError("No model at 'x'"), 2, "error: No model at 'x'"),
        (FileExistsError("'out' exists"), 2, "error: 'out' exists"),
        (TypeError("unsupported layer"), 2, "error: unsupported layer"),
        (OSError(28, "No space left on device"), 1, "error: [Errno 28] No space left on device"),
        (RuntimeError("HTTP 404 for meta.zip"), 1, "error: HTTP 404 for meta.zip"),
        (ImportError("needs matplotlib"), 1, "error: needs matplotlib"),
        (
            ZeroDivisionError("division by zero"),
            1,
            "error: ZeroDivisionError: division by zero (run with --debug for the traceback)",
        ),
        (KeyError("x"), 1, "error: KeyError: 'x' (run with --debug for the traceback)"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_an_exception_in_a_command_is_one_line_and_an_exit_code(
    capsys, failing_summary, error, code, line
):
    failing_summary.error = error
    got, out, err = run_cli(capsys, "summary", "moflenet57")
    assert got == code
    assert out == ""
    assert err == f"keras-asc summary: {line}\n"


@pytest.mark.parametrize(
    "argv, env",
    [
        (["--debug", "summary", "m"], {}),
        (["summary", "m", "--debug"], {}),
        (["summary", "m"], {"KERAS_ASC_DEBUG": "1"}),
    ],
    ids=["flag-before", "flag-after", "environment"],
)
def test_debug_shows_the_traceback(capsys, failing_summary, monkeypatch, argv, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    failing_summary.error = ValueError("bad value")
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.startswith("Traceback (most recent call last):")
    assert "raise Holder.error" in err
    assert err.endswith("ValueError: bad value\nkeras-asc summary: error: bad value\n")


def test_usage_errors_exit_2_and_no_command_prints_help(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["summary"])  # missing MODEL
    assert exited.value.code == 2
    assert "keras-asc summary: error:" in capsys.readouterr().err
    code, out, _ = run_cli(capsys)
    assert code == 2 and "Exit codes: 0 success, 1 runtime failure" in out


def test_a_real_bad_input_is_one_line(capsys):
    code, out, err = run_cli(capsys, "summary", "no_such_model")
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("keras-asc summary: error: Unknown model 'no_such_model'")


def test_native_start_up_lines_are_filtered_and_other_output_kept(capfd):
    noise = (
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        b"I0000 00:00:1796030155.071586   25285 port.cc:153] oneDNN custom operations are on.\n"
        b"E0000 00:00:1796030160.562043   25285 cuda_platform.cc:52] failed call to cuInit: 303\n"
        b"To enable the following instructions: AVX2 FMA, in other operations, rebuild "
        b"TensorFlow with the appropriate compiler flags.\n"
    )
    with cli.native_stderr_filtered():
        os.write(2, noise + b"something real\n")
    assert capfd.readouterr().err == "something real\n"


# === TensorFlow start-up noise in a real process ===


@pytest.mark.parametrize(
    "backend", ["tensorflow", pytest.param("jax", marks=pytest.mark.slow)]
)
def test_summary_in_a_fresh_process_writes_nothing_to_stderr(backend):
    if backend == "jax":
        pytest.importorskip("jax")
    env = {key: value for key, value in os.environ.items() if not key.startswith("TF_CPP")}
    env.update(KERAS_BACKEND=backend, PYTHONPATH=str(PROJECT_ROOT))
    env.pop("KERAS_ASC_DEBUG", None)
    completed = subprocess.run(
        [sys.executable, "-m", "keras_asc", "summary", "moflenet57"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=PROJECT_ROOT,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "Total parameters: 60,440" in completed.stdout
    assert completed.stderr == ""


# === the README's shell commands ===


def _bash_commands():
    """Every command line of the README's bash blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", README.read_text(), re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                command, words = (
                    (words[: words.index("&&")], words[words.index("&&") + 1 :])
                    if "&&" in words
                    else (words, [])
                )
                commands.append(command)
    return commands


def _pyproject():
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


def test_readme_keras_asc_commands_parse():
    """Each ``keras-asc ...`` line names an existing command with flags it accepts (parsed
    exactly as the command line would be; nothing runs, so no data is needed)."""
    lines = [words[1:] for words in _bash_commands() if words[0] == "keras-asc"]
    assert len(lines) >= 10
    parser = cli.build_parser()
    for argv in lines:
        args = parser.parse_args(argv)
        assert args.func is not None, argv


def test_cli_page_command_synopsis_names_existing_commands_and_flags():
    """The block of docs/cli.md that lists every command: each command exists and takes its
    flags."""
    page = (PROJECT_ROOT / "docs" / "cli.md").read_text()
    (block,) = re.findall(r"^```text\n(keras-asc list.*?)^```", page, re.M | re.S)
    parser = cli.build_parser()
    (subparsers,) = [a for a in parser._actions if a.dest == "command"]
    listed = []
    for line in block.splitlines():
        command = line.split()[1]
        listed.append(command)
        options = {o for action in subparsers.choices[command]._actions for o in action.option_strings}
        for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", line):
            assert flag in options, (command, flag)
    assert sorted(set(listed)) == sorted(cli.COMMANDS)  # a command may have several forms


def test_readme_pip_commands_name_existing_extras():
    extras = set(_pyproject()["project"]["optional-dependencies"])
    installs = [words for words in _bash_commands() if words[:2] == ["pip", "install"]]
    assert installs
    for words in installs:
        for word in words[2:]:
            match = re.fullmatch(r"\.\[([\w,-]+)\]", word)
            if match:
                assert set(match.group(1).split(",")) <= extras, word
    assert (PROJECT_ROOT / "tox.ini").is_file()


def test_the_first_readme_command_installs_matplotlib_for_the_demo_plots():
    first = _bash_commands()[0]
    assert first[:2] == ["pip", "install"] and "keras-asc" not in first
    assert _bash_commands()[1] == ["keras-asc", "demo"]
    project = _pyproject()["project"]
    installed = list(project["dependencies"])
    for word in first[2:]:
        match = re.fullmatch(r"\.\[([\w,-]+)\]", word)
        for extra in match.group(1).split(",") if match else ():
            installed += project["optional-dependencies"][extra]
    assert any(re.match(r"matplotlib\b", requirement) for requirement in installed), first


@pytest.mark.slow
def test_the_demo_writes_png_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code = cli.main(
        ["demo", "--out", str(tmp_path / "demo"), "--epochs", "1", "--clips-per-class", "20"]
        + ["--test-clips-per-class", "9", "--verbose", "0"]
    )
    assert code == 0
    pngs = sorted(p.name for p in (tmp_path / "demo").rglob("*.png"))
    assert "confusion_matrix.png" in pngs and "device_accuracy.png" in pngs, pngs


@pytest.mark.slow
def test_train_prints_the_dcase_parameter_count(tmp_path, capsys):
    from keras_asc.data.synthetic import make_synthetic_tau22

    data = make_synthetic_tau22(tmp_path / "data", clips_per_class=20, test_clips_per_class=9)
    code = cli.main(
        ["train", "--model", "moflenet57", "--split", "100", "--data", str(data)]
        + ["--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "8", "--no-jit"]
        + ["--out", str(tmp_path / "run"), "--verbose", "2"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "batch 8, 60,440 params)" in out, out[:2000]
