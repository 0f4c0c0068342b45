"""Every fenced code block of README.md and docs/*.md runs as written or says what it needs.

The rules (also in docs/development.md, "Code blocks in the documentation"):

- a ``python`` or ``bash`` block runs as written, in a scratch folder (slow test);
- a block whose first line is ``# Needs: ...`` says what it needs, for the reader to see. When
  that is only an extra (``# Needs: the micro extra (pip install ".[micro]")...``) the block
  still runs, and is skipped where the extra is not installed (tox installs them all); any
  other need (TAU22, GPUs, the network) is not run;
- ``<!-- docs-test: not run: REASON -->`` right above a block: not run, for the reason given
  (it installs packages, it is a benchmark);
- a ``text`` block is printed output or a synopsis and carries
  ``<!-- docs-test: output: WHAT -->``;
- ``toml`` and ``yaml`` blocks are parsed;
- every ``keras-asc ...`` line of every ``bash`` block, run or not, is parsed by the real
  argument parser, and every ``python`` block compiles.
"""

import contextlib
import dataclasses
import io
import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml
from conftest import PROJECT_ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DOC_FILES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,})(?P<lang>[\w-]*)[ \t]*$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<kind>not run|output)\s*:\s*(?P<why>.*?)\s*-->\s*$")
_NEEDS = re.compile(r"^#\s*Needs:\s*(?P<what>.*)$")
# A need that is only an extra: the block runs where the extra's module is installed.
_EXTRA_NEED = re.compile(r'^the (?P<extra>\w+) extra \(pip install "\.\[(?P=extra)\]"\)')
_EXTRA_MODULES = {
    "torch": "torch",
    "jax": "jax",
    "plot": "matplotlib",
    "tensorboard": "tensorboard",
    "micro": "tflite_micro",
    "onnx": "onnxruntime",
}
_LANGUAGES = ("python", "bash", "toml", "yaml", "text")


@dataclasses.dataclass
class Block:
    path: object
    line: int
    lang: str
    code: str
    marker: tuple | None  # (kind, why) from a <!-- docs-test: ... --> line above the block

    @property
    def where(self):
        return f"{self.path.relative_to(PROJECT_ROOT)}:{self.line}"

    @property
    def needs(self):
        first = self.code.lstrip().splitlines()[0] if self.code.strip() else ""
        match = _NEEDS.match(first)
        return match.group("what").strip() if match else None

    @property
    def extra(self):
        match = _EXTRA_NEED.match(self.needs or "")
        return match.group("extra") if match else None

    @property
    def runs(self):
        """Whether the block is executed by the tests (where its extra, if any, is installed)."""
        if self.lang not in ("python", "bash") or self.marker is not None:
            return False
        return self.needs is None or self.extra is not None


def read_blocks(path):
    blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence = opening.group("indent"), opening.group("fence")
        previous = next((line for line in reversed(lines[:index]) if line.strip()), "")
        marker = _MARKER.match(previous)
        body, end = [], index + 1
        while end < len(lines) and lines[end].strip() != fence:
            body.append(lines[end][len(indent) :] if lines[end].startswith(indent) else lines[end])
            end += 1
        if end == len(lines):
            raise AssertionError(f"{path.relative_to(PROJECT_ROOT)}:{index + 1}: unclosed code block")
        blocks.append(
            Block(
                path,
                index + 1,
                opening.group("lang"),
                "\n".join(body) + "\n",
                (marker.group("kind"), marker.group("why")) if marker else None,
            )
        )
        index = end + 1
    return blocks


ALL_BLOCKS = [block for path in DOC_FILES for block in read_blocks(path)]


def _ids(blocks):
    return [block.where for block in blocks]


def test_the_pages_have_blocks_of_each_kind():
    assert {page.name for page in DOC_FILES} >= {
        "README.md",
        "index.md",
        "install.md",
        "models.md",
        "data.md",
        "training.md",
        "dcase.md",
        "quantization.md",
        "plugins.md",
        "cli.md",
        "api.md",
    }
    assert sum(block.runs for block in ALL_BLOCKS) >= 10
    assert sum(block.needs is not None and not block.runs for block in ALL_BLOCKS) >= 5


def test_every_block_is_run_or_says_what_it_needs():
    problems = []
    for block in ALL_BLOCKS:
        kind = block.marker[0] if block.marker else None
        why = block.marker[1] if block.marker else ""
        if block.lang not in _LANGUAGES:
            problems.append(f"{block.where}: language {block.lang!r}; expected one of {_LANGUAGES}")
        elif block.marker and not why:
            problems.append(f"{block.where}: a docs-test marker without its reason")
        elif block.lang == "text" and kind != "output":
            problems.append(f"{block.where}: a text block needs <!-- docs-test: output: WHAT --> above it")
        elif block.lang in ("python", "bash") and kind == "output":
            problems.append(f"{block.where}: a {block.lang} block is run or 'not run', not 'output'")
        elif block.lang in ("toml", "yaml") and block.marker:
            problems.append(f"{block.where}: {block.lang} blocks are parsed; drop the marker")
        elif block.needs == "":
            problems.append(f"{block.where}: '# Needs:' without what it needs")
        elif block.extra is not None and block.extra not in _EXTRA_MODULES:
            problems.append(f"{block.where}: unknown extra {block.extra!r}")
    assert not problems, "\n".join(problems)


def test_the_rules_classify_a_page():
    page = PROJECT_ROOT / "docs" / "install.md"
    blocks = read_blocks(page)
    # The set-up commands install packages: marked, not run.
    assert blocks[0].lang == "bash" and blocks[0].marker[0] == "not run" and not blocks[0].runs
    extra = Block(page, 1, "python", '# Needs: the onnx extra (pip install ".[onnx]").\nimport onnx\n', None)
    tau22 = Block(page, 1, "bash", "# Needs: TAU22 in ~/data/tau22.\nkeras-asc list\n", None)
    plain = Block(page, 1, "python", "print(1)\n", None)
    assert (extra.extra, extra.runs) == ("onnx", True)
    assert (tau22.needs, tau22.extra, tau22.runs) == ("TAU22 in ~/data/tau22.", None, False)
    assert plain.runs and plain.needs is None


def _keras_asc_commands(code):
    """The argument lists of the ``keras-asc`` commands in a bash block."""
    code = code.replace("\\\n", " ")
    commands = []
    for line in code.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        segment = []
        tokens = list(lexer) + [";"]
        skip_next = False
        for token in tokens:
            if skip_next:  # the target of a redirection
                skip_next = False
                continue
            if ">" in token or "<" in token:  # a redirection, its file descriptor and target
                if segment and segment[-1].isdigit():
                    segment.pop()
                skip_next = True
                continue
            if set(token) <= set(";&|()"):
                while segment and re.fullmatch(r"[A-Za-z_]\w*=.*|\d", segment[0]):
                    segment.pop(0)  # VAR=value before the command
                if segment and segment[0] == "keras-asc":
                    commands.append(segment[1:])
                segment = []
                continue
            segment.append(token)
    return commands


def test_command_lines_are_split_as_bash_would():
    code = (
        "for gpu in 0 1; do\n"
        "  CUDA_VISIBLE_DEVICES=$gpu keras-asc list --debug \\\n"
        "      > log$gpu.txt 2>&1 &\n"
        "done\n"
        'pip install ".[plot]" && keras-asc demo   # comment\n'
    )
    assert _keras_asc_commands(code) == [["list", "--debug"], ["demo"]]


BASH_BLOCKS = [block for block in ALL_BLOCKS if block.lang == "bash"]


@pytest.mark.parametrize("block", BASH_BLOCKS, ids=_ids(BASH_BLOCKS))
def test_command_lines_parse(block):
    from keras_asc.cli import build_parser

    parser = build_parser()
    for arguments in _keras_asc_commands(block.code):
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            try:
                parser.parse_args(arguments)
            except SystemExit as exit_:
                assert exit_.code == 0, (
                    f"{block.where}: keras-asc {shlex.join(arguments)}\n{stderr.getvalue()}"
                )


def test_every_bash_block_with_a_command_is_checked():
    assert sum(bool(_keras_asc_commands(block.code)) for block in BASH_BLOCKS) >= 10


PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.lang == "python"]


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=_ids(PYTHON_BLOCKS))
def test_python_blocks_compile(block):
    compile(block.code, block.where, "exec")


DATA_BLOCKS = [block for block in ALL_BLOCKS if block.lang in ("toml", "yaml")]


@pytest.mark.parametrize("block", DATA_BLOCKS, ids=_ids(DATA_BLOCKS))
def test_toml_and_yaml_blocks_parse(block):
    parsed = tomllib.loads(block.code) if block.lang == "toml" else yaml.safe_load(block.code)
    assert isinstance(parsed, dict) and parsed


RUN_BLOCKS = [block for block in ALL_BLOCKS if block.runs]


@pytest.mark.slow
@pytest.mark.parametrize("block", RUN_BLOCKS, ids=_ids(RUN_BLOCKS))
def test_block_runs(block, tmp_path):
    if block.extra is not None:
        pytest.importorskip(_EXTRA_MODULES[block.extra], reason=f"needs the {block.extra} extra")
    # Blocks are written for the root of a clone: give the scratch folder that view.
    for name in ("benchmarks", "examples", "plugins"):
        os.symlink(PROJECT_ROOT / name, tmp_path / name)
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    command = bin_dir / "keras-asc"
    command.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m keras_asc "$@"\n')
    command.chmod(0o755)
    env = {
        **os.environ,
        "KERAS_BACKEND": "tensorflow",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    if block.lang == "python":
        argv = [sys.executable, "-c", block.code]
    else:
        argv = ["bash", "-e", "-o", "pipefail", "-c", block.code]
    result = subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, timeout=1800, env=env
    )
    assert result.returncode == 0, f"{block.where}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


def test_every_extra_named_by_a_block_is_a_package_extra():
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    for block in ALL_BLOCKS:
        if block.extra is not None:
            assert block.extra in extras, block.where
