"""C sources for a device: the int8 model as a C array and a portable C99 log-mel front-end.

``export_c`` writes, for an int8 file from ``export_int8`` (or every file in a run's ``int8/``
folder), into one folder:

- ``NAME_model.c`` / ``NAME_model.h``: the ``.tflite`` bytes as a 16-byte aligned
  ``const unsigned char NAME_model[]`` with ``NAME_model_len`` (what a TensorFlow Lite for
  Microcontrollers application passes to ``tflite::GetModel``), and ``NAME_ARENA_BYTES``: the
  tensor arena TFLite Micro needs, from ``NAME.json``, rounded up to 16 bytes;
- ``NAME_frontend.c`` / ``NAME_frontend.h``: the front-end constants of every model input
  (window, sparse mel bank, hop, FFT length, pre-emphasis, log offset, normalisation, and the
  input's int8 scale and zero point) as ``kasc_logmel_config NAME_frontend[]``; float values
  are written as C99 hexadecimal literals, bit-exact;
- ``kasc_logmel.c`` / ``.h``: the log-mel in portable C99, with the FFT as a hook
  (``kasc_rfft_fn``: CMSIS-DSP's ``arm_rfft_fast_f32`` fits it as it is, 4096 points
  included), and ``kasc_rfft_reference.c`` / ``.h``: a plain FFT for hosts and tests.

``compile_frontend`` builds the front-end for this host with the system C compiler (``cc``)
and loads it with ``ctypes``: the tests check it against ``frontend.frontend_numpy``, and
``benchmarks/frontend_speed.py`` times it.

Example:
    >>> written = export_c("runs/v2/int8/moflenet57_cp_resnet59_v2.tflite", "device/")
    >>> frontend = compile_frontend("device/", "moflenet57_cp_resnet59_v2")
    >>> spectrograms = frontend(waveforms, 0)  # (batch, mel bins, frames, 1), input 0
"""

import ctypes
import glob
import importlib.resources
import json
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

from keras_asc.files import write_text_atomic
from keras_asc.quantization.frontend import load_frontend_params, num_frames

C_SOURCES = ("kasc_logmel.h", "kasc_logmel.c", "kasc_rfft_reference.h", "kasc_rfft_reference.c")
MODEL_ALIGNMENT = 16


def c_name(name):
    """A C identifier made from a model name (other characters become ``_``)."""
    identifier = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return f"m_{identifier}" if identifier[:1].isdigit() else identifier


def _float(value):
    value = float(np.float32(value))
    if not np.isfinite(value):
        raise ValueError(f"front-end constant {value} is not finite")
    return f"{value.hex()}f"


def _array(values, formatter, per_line):
    values = [formatter(v) for v in np.ravel(values)]
    lines = [", ".join(values[i : i + per_line]) for i in range(0, len(values), per_line)]
    return "\n".join(f"  {line}," for line in lines)


def _sources(tflite_path):
    """The int8 files a source names: a ``.tflite`` file, or those in ``RUN/int8``."""
    path = os.fspath(tflite_path)
    if os.path.isdir(path):
        folder = os.path.join(path, "int8") if os.path.isdir(os.path.join(path, "int8")) else path
        found = sorted(glob.glob(os.path.join(folder, "*.tflite")))
        if not found:
            raise FileNotFoundError(
                f"{path}: no .tflite file here or in its int8/ folder (run keras-asc quantize "
                f"first)."
            )
        return found
    if not path.endswith(".tflite") or not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: expected a .tflite file or a run directory.")
    return [path]


def _sidecars(path):
    stem = path[: -len(".tflite")]
    json_path, frontend_path = f"{stem}.json", f"{stem}.frontend.npz"
    for sidecar in (json_path, frontend_path):
        if not os.path.isfile(sidecar):
            raise FileNotFoundError(
                f"{path}: its {os.path.basename(sidecar)} is missing (export_int8 writes it "
                f"beside the .tflite file)."
            )
    with open(json_path, encoding="utf-8") as handle:
        description = json.load(handle)
    return description, load_frontend_params(frontend_path)


def _model_files(name, content, description):
    micro = description.get("tflite_micro") or {}
    arena = micro.get("arena_bytes")
    guard = f"{name.upper()}_MODEL_H"
    lines = [
        f"/* The int8 model {description.get('model', name)!s} as a C array (written by keras-asc "
        f"export-c). */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        f"#define {name.upper()}_MODEL_ALIGNMENT {MODEL_ALIGNMENT}",
    ]
    if arena:
        rounded = -(-int(arena) // MODEL_ALIGNMENT) * MODEL_ALIGNMENT
        lines += [
            f"/* TFLite Micro tensor arena ({arena} bytes measured by tflite-micro "
            f"{micro.get('interpreter', '')}), rounded up to {MODEL_ALIGNMENT}; give the",
            f" * arena buffer {MODEL_ALIGNMENT}-byte alignment. */",
            f"#define {name.upper()}_ARENA_BYTES {rounded}",
        ]
    else:
        lines.append(
            f"/* No TFLite Micro arena recorded in {name}.json: {micro.get('reason', 'not run')}. */"
        )
    lines += [
        "",
        f"extern const unsigned char {name}_model[];",
        f"extern const unsigned int {name}_model_len;",
        "",
        f"#endif /* {guard} */",
        "",
    ]
    header = "\n".join(lines)
    source = "\n".join(
        [
            f'#include "{name}_model.h"',
            "",
            "#if defined(__GNUC__) || defined(__clang__)",
            f"#define KASC_ALIGNED __attribute__((aligned({MODEL_ALIGNMENT})))",
            "#elif defined(_MSC_VER)",
            f"#define KASC_ALIGNED __declspec(align({MODEL_ALIGNMENT}))",
            "#else",
            "#define KASC_ALIGNED",
            "#endif",
            "",
            f"KASC_ALIGNED const unsigned char {name}_model[] = {{",
            _array(np.frombuffer(content, np.uint8), lambda b: f"0x{int(b):02x}", 16),
            "};",
            f"const unsigned int {name}_model_len = {len(content)}u;",
            "",
        ]
    )
    return header, source


def _frontend_files(name, description, frontends):
    inputs = description["inputs"]
    count = len(frontends)
    num_samples = description.get("num_samples")
    guard = f"{name.upper()}_FRONTEND_H"
    header = [
        f"/* Log-mel front-end constants of {description.get('model', name)!s}, one config per "
        f"model input (keras-asc export-c). */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        '#include "kasc_logmel.h"',
        "",
        f"#define {name.upper()}_FRONTEND_COUNT {count}",
    ]
    if num_samples:
        header.append(f"#define {name.upper()}_NUM_SAMPLES {int(num_samples)}")
    source = [f'#include "{name}_frontend.h"', ""]
    configs = []
    for index, params in enumerate(frontends):
        prefix = f"{name}_input{index}"
        frames = num_frames(num_samples, params) if num_samples else None
        header.append(
            f"#define {prefix.upper()}_MEL_BINS {int(params['num_mel_bins'])}"
        )
        if frames:
            header.append(f"#define {prefix.upper()}_FRAMES {frames}")
        entry = inputs[index] if index < len(inputs) and not description.get("frontend_in_file") else None
        quantization = (entry or {}).get("int8_quantization")
        if quantization:
            header += [
                f"#define {prefix.upper()}_SCALE {_float(quantization['scale'])}",
                f"#define {prefix.upper()}_ZERO_POINT {int(quantization['zero_point'])}",
            ]
        source += [
            f"static const float {prefix}_window[{len(params['window'])}] = {{",
            _array(params["window"], _float, 6),
            "};",
            f"static const int32_t {prefix}_band_start[{len(params['mel_band_start'])}] = {{",
            _array(params["mel_band_start"], lambda v: str(int(v)), 16),
            "};",
            f"static const int32_t {prefix}_band_length[{len(params['mel_band_length'])}] = {{",
            _array(params["mel_band_length"], lambda v: str(int(v)), 16),
            "};",
            f"static const float {prefix}_band_weights[{len(params['mel_band_weights'])}] = {{",
            _array(params["mel_band_weights"], _float, 6),
            "};",
            "",
        ]
        configs.append(
            "  {"
            f"{int(params['sampling_rate'])}, {int(params['fft_length'])}, "
            f"{int(params['hop_length'])}, {int(params['num_mel_bins'])}, "
            f"{_float(params['pre_emphasis'] or 0.0)}, {_float(params['log_offset'])}, "
            f"{_float(params['normalize_offset'])}, {_float(params['normalize_scale'])}, "
            f"{prefix}_window, {prefix}_band_start, {prefix}_band_length, {prefix}_band_weights}},"
        )
    header += [
        "",
        f"extern const kasc_logmel_config {name}_frontend[{count}];",
        "",
        f"#endif /* {guard} */",
        "",
    ]
    source += [f"const kasc_logmel_config {name}_frontend[{count}] = {{", *configs, "};", ""]
    return "\n".join(header), "\n".join(source)


def export_c(source, out_dir):
    """Write the C sources of an int8 file (or of every file in a run's ``int8/``) to ``out_dir``.

    Args:
        source: a ``.tflite`` file from ``export_int8`` (its ``.json`` and ``.frontend.npz``
            beside it), a run directory (its ``int8/`` files) or a folder of int8 files.
        out_dir: the folder to write into (created if needed).

    Returns:
        The paths written, sorted.

    Raises:
        FileNotFoundError: no int8 file at ``source``, or a sidecar is missing.
    """
    out_dir = os.fspath(out_dir)
    paths = _sources(source)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for path in paths:
        description, frontends = _sidecars(path)
        name = c_name(os.path.basename(path)[: -len(".tflite")])
        with open(path, "rb") as handle:
            content = handle.read()
        files = dict(
            zip((f"{name}_model.h", f"{name}_model.c"), _model_files(name, content, description), strict=True)
        )
        files.update(
            zip(
                (f"{name}_frontend.h", f"{name}_frontend.c"),
                _frontend_files(name, description, frontends),
                strict=True,
            )
        )
        for file_name, text in files.items():
            target = os.path.join(out_dir, file_name)
            write_text_atomic(target, text)
            written.append(target)
    written += _write_c_sources(out_dir)
    return sorted(written)


def _write_c_sources(out_dir):
    package = importlib.resources.files("keras_asc.quantization") / "c_src"
    written = []
    for file_name in C_SOURCES:
        target = os.path.join(out_dir, file_name)
        write_text_atomic(target, (package / file_name).read_text(encoding="utf-8"))
        written.append(target)
    return written


def export_frontend_c(frontends, name, out_dir, *, num_samples=None):
    """Write only the front-end: ``NAME_frontend.c/.h`` for ``frontends`` and the C99 sources.

    Args:
        frontends: one ``frontend.frontend_params`` dict per model input.
        name: the C name prefix.
        out_dir: the folder to write into (created if needed).
        num_samples: clip length, for the ``NAME_NUM_SAMPLES`` and frame-count defines.

    Returns:
        The paths written, sorted.

    Example:
        >>> export_frontend_c([frontend_params(model.frontend)], "moflenet57", "device/")
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    name = c_name(name)
    description = {"model": name, "num_samples": num_samples, "inputs": []}
    header, source = _frontend_files(name, description, list(frontends))
    written = []
    for file_name, text in ((f"{name}_frontend.h", header), (f"{name}_frontend.c", source)):
        target = os.path.join(out_dir, file_name)
        write_text_atomic(target, text)
        written.append(target)
    return sorted(written + _write_c_sources(out_dir))


_HOST_HARNESS = """#include <stdlib.h>
#include "{name}_frontend.h"
#include "kasc_rfft_reference.h"

/* Host entry points for ctypes: the output shape, and clips one after the other (mel-major). */
int kasc_host_shape(int input, int num_samples, int *mel_bins, int *frames) {{
  if (input < 0 || input >= {upper}_FRONTEND_COUNT) return -1;
  *mel_bins = {name}_frontend[input].num_mel_bins;
  *frames = kasc_logmel_frames(&{name}_frontend[input], num_samples);
  return 0;
}}


int kasc_host_logmel(int input, const float *waveforms, int clips, int num_samples, float *out) {{
  const kasc_logmel_config *config = &{name}_frontend[input];
  kasc_rfft_reference *plan = kasc_rfft_reference_new(config->fft_length);
  float *work = (float *)malloc(sizeof(float) * 2 * (size_t)config->fft_length);
  int status = (plan == NULL || work == NULL) ? -2 : 0;
  const long size = (long)config->num_mel_bins * kasc_logmel_frames(config, num_samples);
  for (int c = 0; c < clips && status == 0; ++c) {{
    status = kasc_logmel(config, waveforms + (long)c * num_samples, num_samples, out + c * size,
                         work, kasc_rfft_reference_run, plan);
  }}
  free(work);
  kasc_rfft_reference_free(plan);
  return status;
}}
"""


def c_compiler():
    """The system C compiler (``$CC``, ``cc``, ``gcc`` or ``clang``), or ``None``."""
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


class CompiledFrontend:
    """The exported C front-end compiled for this host (``compile_frontend``)."""

    def __init__(self, library_path, name):
        self._library = ctypes.CDLL(library_path)
        self._function = self._library.kasc_host_logmel
        self._function.restype = ctypes.c_int
        self._shape = self._library.kasc_host_shape
        self._shape.restype = ctypes.c_int
        self.name = name

    def __call__(self, waveforms, input_index=0):
        """float32 (batch, mel bins, frames, 1) spectrograms of (batch, samples) waveforms."""
        x = np.ascontiguousarray(np.atleast_2d(waveforms), dtype=np.float32)
        mel_bins, frames = ctypes.c_int(), ctypes.c_int()
        if self._shape(int(input_index), x.shape[1], ctypes.byref(mel_bins), ctypes.byref(frames)):
            raise ValueError(f"{self.name}: no model input {input_index}.")
        out = np.empty((x.shape[0], mel_bins.value, frames.value), np.float32)
        pointer = ctypes.POINTER(ctypes.c_float)
        status = self._function(
            int(input_index),
            x.ctypes.data_as(pointer),
            x.shape[0],
            x.shape[1],
            out.ctypes.data_as(pointer),
        )
        if status != 0:
            raise ValueError(
                f"{self.name}: the C front-end refused the clips (status {status}; clips must "
                f"be longer than fft_length // 2 samples)."
            )
        return out[..., None]


def compile_frontend(out_dir, name, *, build_dir=None, optimization="-O2"):
    """Compile the front-end ``export_c`` wrote for ``name`` into a host library and load it.

    Args:
        out_dir: the folder ``export_c`` wrote.
        name: the model's file name without ``.tflite``.
        build_dir: where the library goes (default: a new temporary folder).
        optimization: the compiler's optimisation flags (one string, split at spaces).

    Returns:
        ``CompiledFrontend``.

    Raises:
        RuntimeError: no C compiler, or the compilation failed (with the compiler's message).
    """
    compiler = c_compiler()
    if compiler is None:
        raise RuntimeError("no C compiler found (set CC, or install cc, gcc or clang).")
    name = c_name(name)
    build_dir = build_dir or tempfile.mkdtemp(prefix="kasc_c_")
    harness = os.path.join(build_dir, f"{name}_host.c")
    with open(harness, "w", encoding="utf-8") as handle:
        handle.write(_HOST_HARNESS.format(name=name, upper=name.upper()))
    library = os.path.join(build_dir, f"lib{name}_frontend.so")
    command = [
        compiler, "-std=c99", *optimization.split(), "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
        f"-I{out_dir}", harness, os.path.join(out_dir, f"{name}_frontend.c"),
        os.path.join(out_dir, "kasc_logmel.c"), os.path.join(out_dir, "kasc_rfft_reference.c"),
        "-o", library, "-lm",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"compiling the C front-end failed: {result.stderr.strip()}")
    return CompiledFrontend(library, name)
