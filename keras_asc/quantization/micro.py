"""Run exported int8 files under TensorFlow Lite for Microcontrollers and measure their arena.

TensorFlow Lite for Microcontrollers (TFLM) runs a ``.tflite`` file from one preallocated
buffer, the *tensor arena*: every activation, scratch buffer and the interpreter's own
structures live in it, so its size is the RAM a device must set aside for the model (the
weights stay in flash, inside the file). This module runs the files ``export_int8`` writes in
the reference interpreter of the PyPI ``tflite-micro`` package (the ``micro`` extra:
``pip install "keras-asc[micro]"`` from an index, ``pip install ".[micro]"`` from a
clone), the same kernels and memory planner a device build uses:

- ``micro_report`` opens a file, runs it once and returns the arena it needs;
- ``MicroInterpreter`` runs clips through it (TFLM runs batch 1: the exported files have a
  dynamic batch dimension, whose stored size 1 TFLM uses; the clips go one by one);
  ``interpreter.micro_agreement`` compares it with LiteRT clip by clip;
- ``check_micro`` raises a one-line error naming every op TFLM has no kernel for.

The arena figure is what TFLM's recording allocator reports after allocating the model:
``head`` (the planned activations and scratch buffers, reused between ops) plus ``tail``
(tensor structures, kernel state, quantisation data that persist for the model's lifetime).
It is measured, not estimated, and a buffer of that size runs the model (a device aligns
it to 16 bytes, or adds 15 bytes for TFLM to align its start). TFLM's Python wrapper prints
its allocation record and errors on the process's native stderr only; no library exposes
them as values, so they are read from a captured file descriptor here.
"""

import contextlib
import dataclasses
import os
import re
import sys
import tempfile

import numpy as np

# Generous enough for every keras-asc model; the measured figure is what counts.
_PROBE_ARENA = 64 * 1024 * 1024
_MISSING_OP = re.compile(r"Didn't find op for (?:builtin|custom) opcode '([^']+)'")
_ALLOCATION = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
# A placeholder every TFLM build has, put in place of a missing op to find the next one.
_ADD = 0


def _runtime():
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        raise ImportError(
            "Running TFLite Micro needs the tflite-micro package: pip install "
            '"keras-asc[micro]" (installed from an index) or pip install ".[micro]" (from a clone)'
        ) from None
    return runtime


def micro_available():
    """Whether the ``tflite-micro`` package (the TFLite Micro Python interpreter) is installed."""
    try:
        _runtime()
    except ImportError:
        return False
    return True


def micro_version():
    """Version string of the installed ``tflite-micro`` package."""
    _runtime()
    from tflite_micro.python.tflite_micro import _version

    return _version.__version__


@contextlib.contextmanager
def _native_stderr(lines):
    """Collect what native code writes to file descriptor 2 into ``lines``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines.extend(capture.read().decode("utf-8", "replace").splitlines())


def _content(model):
    if isinstance(model, (bytes, bytearray)):
        return bytes(model), "model"
    path = os.fspath(model)
    with open(path, "rb") as stream:
        return stream.read(), path


def _open(content, arena_size, lines):
    """A TFLM interpreter, or ``None`` when it cannot allocate (its messages go to ``lines``)."""
    runtime = _runtime()
    with _native_stderr(lines):
        try:
            return runtime.Interpreter.from_bytes(content, arena_size=int(arena_size))
        except RuntimeError:
            return None


class MicroUnsupportedError(ValueError):
    """TFLite Micro cannot run a model (an op without kernel, or an allocation failure)."""


def unsupported_ops(model):
    """The ops of a ``.tflite`` file that TFLite Micro has no kernel for, in file order.

    TFLM stops at the first op it cannot find; each one found is replaced by a placeholder in
    a copy of the file and the lookup is repeated, so every missing op is named.

    Args:
        model: ``.tflite`` path or flatbuffer bytes.

    Returns:
        A list of op names (empty when TFLM has every kernel).

    Example:
        >>> unsupported_ops("out/moflenet57.tflite")
        []
    """
    from tensorflow.lite.tools import flatbuffer_utils

    content, _ = _content(model)
    missing = []
    flatbuffer = None
    while True:
        lines = []
        if _open(content, _PROBE_ARENA, lines) is not None:
            return missing
        found = [m.group(1) for line in lines for m in [_MISSING_OP.search(line)] if m]
        if not found or found[0] in missing:
            return missing
        missing.append(found[0])
        if flatbuffer is None:
            flatbuffer = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
        for code in flatbuffer.operatorCodes:
            if _op_name(code) == found[0]:
                code.builtinCode = code.deprecatedBuiltinCode = _ADD
                code.customCode = None
        content = bytes(flatbuffer_utils.convert_object_to_bytearray(flatbuffer))


def _op_name(code):
    from tensorflow.lite.python import schema_py_generated as schema

    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == schema.BuiltinOperator.CUSTOM:
        return (code.customCode or b"").decode()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    return names.get(builtin, str(builtin))


def _open_or_raise(content, name, arena_size=_PROBE_ARENA):
    lines = []
    interpreter = _open(content, arena_size, lines)
    if interpreter is not None:
        return interpreter
    missing = unsupported_ops(content)
    if missing:
        raise MicroUnsupportedError(
            f"{name}: TFLite Micro cannot run op(s) {', '.join(missing)} (no kernel in "
            f"tflite-micro {micro_version()}); export without them to run on a microcontroller."
        )
    reason = next((line.strip() for line in lines if line.strip()), "allocation failed")
    raise MicroUnsupportedError(
        f"{name}: TFLite Micro cannot allocate the model in a {arena_size:,}-byte arena ({reason})."
    )


def check_micro(model):
    """Raise ``MicroUnsupportedError`` (one line naming the ops) if TFLM cannot run ``model``.

    Example:
        >>> check_micro("out/moflenet57.tflite")
    """
    content, name = _content(model)
    _open_or_raise(content, name)


@dataclasses.dataclass(frozen=True)
class MicroReport:
    """What TFLite Micro needs to run one file.

    Attributes:
        arena_bytes: tensor arena in bytes (``head_bytes + tail_bytes``): the RAM a device
            sets aside for the model, the weights staying in flash.
        head_bytes: the planned activations and scratch buffers (shared between ops).
        tail_bytes: what persists for the model's lifetime (tensor structures, kernel state
            such as per-channel quantisation multipliers).
        runs: whether the model ran once (on zeros) in a buffer of ``arena_bytes`` (plus
            up to 15 bytes for TFLM to align its start to 16 bytes).
        version: the ``tflite-micro`` package version.
    """

    arena_bytes: int
    head_bytes: int
    tail_bytes: int
    runs: bool
    version: str

    def as_json(self):
        return {
            "arena_bytes": self.arena_bytes,
            "arena_head_bytes": self.head_bytes,
            "arena_tail_bytes": self.tail_bytes,
            "runs": self.runs,
            "interpreter": f"tflite-micro {self.version}",
            "batch": 1,
        }

    def __str__(self):
        return (
            f"TFLite Micro tensor arena {self.arena_bytes:,} bytes ({self.head_bytes:,} "
            f"activations + {self.tail_bytes:,} persistent)"
        )


def _zeros(interpreter, index):
    detail = interpreter.get_input_details(index)
    return np.zeros(detail["shape"], detail["dtype"])


def _input_count(content):
    from tensorflow.lite.tools import flatbuffer_utils

    flatbuffer = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    return len(flatbuffer.subgraphs[0].inputs)


def _invoke_zeros(interpreter, inputs):
    for index in range(inputs):
        interpreter.set_input(_zeros(interpreter, index), index)
    interpreter.invoke()


def micro_report(model, name=None):
    """Open a ``.tflite`` file in TFLite Micro, run it once and measure its tensor arena.

    Args:
        model: ``.tflite`` path or flatbuffer bytes.
        name: the name error messages give the model (default: its path).

    Returns:
        ``MicroReport``.

    Raises:
        MicroUnsupportedError: TFLM has no kernel for some op (all are named) or cannot
            allocate the model.

    Example:
        >>> print(micro_report("out/moflenet57_cp_resnet59_v2.tflite").arena_bytes)
    """
    content, path = _content(model)
    name = name or path
    inputs = _input_count(content)
    interpreter = _open_or_raise(content, name)
    lines = []
    with _native_stderr(lines):
        _invoke_zeros(interpreter, inputs)
        interpreter.print_allocations()
    figures = {
        m.group(1): int(m.group(2)) for line in lines for m in [_ALLOCATION.search(line)] if m
    }
    if set(figures) != {"total", "head", "tail"}:
        raise RuntimeError(
            f"{name}: tflite-micro {micro_version()} printed no arena record "
            f"(received {lines[:3]}); this version is not supported."
        )
    # The arena TFLM is given starts anywhere; it aligns the start to 16 bytes first.
    exact = _open(content, figures["total"] + 15, [])
    runs = exact is not None
    if runs:
        with _native_stderr([]):
            _invoke_zeros(exact, inputs)
    return MicroReport(figures["total"], figures["head"], figures["tail"], runs, micro_version())


class MicroInterpreter:
    """A ``.tflite`` file in the TFLite Micro interpreter, with a batch ``predict``.

    Inputs are the interpreter's own: one array per input in the file's input order, of its
    dtype (float32 spectrograms, or int8 for a file exported with ``int8_io=True``). TFLM
    runs one clip at a time; ``predict`` loops over the batch.

    Args:
        model: ``.tflite`` path or flatbuffer bytes.
        arena_size: tensor arena bytes (default: enough for any keras-asc model).

    Example:
        >>> micro = MicroInterpreter("out/moflenet57.tflite")
        >>> logits = micro.predict([spectrograms])
    """

    def __init__(self, model, arena_size=_PROBE_ARENA):
        content, self.name = _content(model)
        self.inputs = _input_count(content)
        self.interpreter = _open_or_raise(content, self.name, arena_size)
        self.input_details = [self.interpreter.get_input_details(i) for i in range(self.inputs)]

    def predict(self, arrays):
        """Raw outputs (batch, classes) for a list of input batches, clip by clip."""
        if len(arrays) != self.inputs:
            raise ValueError(
                f"{self.name}: expected {self.inputs} input arrays, received {len(arrays)}."
            )
        rows = []
        for row in range(len(arrays[0])):
            for index, (array, detail) in enumerate(zip(arrays, self.input_details, strict=True)):
                self.interpreter.set_input(
                    np.ascontiguousarray(array[row : row + 1], dtype=detail["dtype"]), index
                )
            self.interpreter.invoke()
            rows.append(np.array(self.interpreter.get_output(0)))
        return np.concatenate(rows)
