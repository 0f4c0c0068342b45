"""int8 TFLite export of keras-asc models, with the DCASE parameter-memory check.

``export_int8`` writes three files:

- ``NAME.tflite``: the int8 network. Weights are int8 (per output channel), activations int8
  (per tensor), biases int32 (batch normalisation folded into the convolutions); the layers
  that ``policy.QUANTIZATION_POLICY`` keeps in float (GRN, the logit pooling, an ensemble's
  weighted sum) run in float32 between a DEQUANTIZE and a QUANTIZE. Inputs and outputs are
  **float32**: the model starts with one QUANTIZE op per input and ends with a DEQUANTIZE, so
  a host feeds the front-end output as it is and reads float logits; the input scale and zero
  point are recorded in ``NAME.json`` for a device that prefers to quantise the spectrogram
  itself. The batch dimension is dynamic (resize the input tensors). An ensemble is one file
  with one spectrogram input per member and the weighted sum of the member logits (float32).
  With ``frontend_in_file=True`` the file starts with the float32 log-mel front-end instead
  (``frontend_tf``) and takes one waveform (batch, num_samples).
- ``NAME.frontend.npz``: the log-mel front-end of every input (window, dense and sparse mel
  filter bank, constants), computed outside the int8 model; ``frontend.frontend_numpy`` is the
  reference, and ``keras-asc export-c`` writes it as C for a device.
- ``NAME.json``: inputs (names, shapes, quantisation, front-end constants), output, members
  and weights, parameter bytes (``graph.parameter_bytes``), file size, and the tensor arena
  TensorFlow Lite for Microcontrollers needs to run the file (``"tflite_micro"``, see
  ``micro.micro_report``).

The work is split by concern: ``graph`` (reading the flatbuffer, parameter bytes),
``conversion`` (QAT and PTQ conversion), ``passes`` (shuffle fold, float pooling, int8 I/O,
low arena), ``low_arena`` (the blockwise GRN rewrite), ``frontend_tf`` (the front-end inside
the file); this module runs them in order and writes the files. The names those modules
define are importable from here too.
"""

import dataclasses
import json
import os
import warnings

import numpy as np
import tf_keras

from keras_asc.complexity import MAX_PARAM_BYTES
from keras_asc.files import atomic_path
from keras_asc.quantization import micro as micro_module
from keras_asc.quantization.conversion import (  # noqa: F401 (the public names of this module)
    DEFAULT_CALIBRATION_SAMPLES,
    _is_quantized,
    convert_int8,
)
from keras_asc.quantization.frontend import frontend_params, save_frontend_params, scalar_params
from keras_asc.quantization.frontend_tf import tf_frontend  # noqa: F401
from keras_asc.quantization.graph import (  # noqa: F401
    GraphOp,
    GraphTensor,
    ParameterBytes,
    ParameterTensor,
    TFLiteGraph,
    check_parameter_bytes,
    compact_flatbuffer,
    frontend_ops,
    make_interpreter,
    parameter_bytes,
    read_graph,
)
from keras_asc.quantization.low_arena import LOW_ARENA_GRN_BLOCKS, LOW_ARENA_MIN_BYTES  # noqa: F401
from keras_asc.quantization.passes import (  # noqa: F401
    float_average_pools,
    fold_channel_shuffles,
    output_interval,
    quantize_before_concatenation,
    with_int8_io,
)
from keras_asc.quantization.twin import to_tf_keras, twin_spec

EXPORT_FORMAT = "keras_asc.int8/1"


# === Export ===


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """Files and figures of one ``export_int8`` call."""

    path: str
    json_path: str
    frontend_path: str
    file_bytes: int
    parameters: ParameterBytes
    quantization: str
    tflite_micro: dict = None  # the "tflite_micro" entry of NAME.json (None: not checked)

    def __str__(self):
        text = f"{self.path}: {self.file_bytes:,} bytes on disk; {self.parameters}"
        if self.tflite_micro and self.tflite_micro.get("arena_bytes"):
            text += f"; TFLite Micro arena {self.tflite_micro['arena_bytes']:,} bytes"
        return text


def _atomic_write(path, data):
    """Write bytes (or ``data(stream)``) to ``path`` atomically, with the user's umask."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as temporary, open(temporary, "wb") as stream:
        if callable(data):
            data(stream)
        else:
            stream.write(data)


def sidecar_paths(path):
    """``(json_path, frontend_path)`` that belong beside a ``.tflite`` path."""
    stem = (
        os.fspath(path)[: -len(".tflite")]
        if os.fspath(path).endswith(".tflite")
        else os.fspath(path)
    )
    return f"{stem}.json", f"{stem}.frontend.npz"


def _input_quantization(interpreter, graph):
    """Scale and zero point of the QUANTIZE op that follows each float input."""
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    result = {}
    for op in graph.ops:
        if op.name == "QUANTIZE" and op.inputs[0] in graph.inputs:
            scale, zero_point = details[op.outputs[0]]["quantization"]
            result[op.inputs[0]] = {"scale": float(scale), "zero_point": int(zero_point)}
    return result


def _describe(content, spec, frontends, counted, quantization, frontend_in_file=False):
    interpreter = make_interpreter(model_content=content)
    quant = _input_quantization(interpreter, read_graph(content))
    inputs = []
    for detail in interpreter.get_input_details():
        inputs.append(
            {
                "name": detail["name"],
                "shape": [int(d) for d in detail["shape_signature"]],
                "dtype": np.dtype(detail["dtype"]).name,
                "int8_quantization": quant.get(detail["index"]),
            }
        )
    # Each input's front-end, matched by name (the converter may reorder the inputs).
    names = _input_names(spec)
    for entry in inputs if frontend_in_file else ():
        entry["frontends"] = [scalar_params(params) for params in frontends]
    for entry in () if frontend_in_file else inputs:
        index = _match_input(entry["name"], names)
        entry["model_input"] = index
        entry["frontend"] = scalar_params(frontends[index])
    output = interpreter.get_output_details()[0]
    return {
        "format": EXPORT_FORMAT,
        "model": spec.name,
        "members": list(spec.member_names),
        "member_weights": list(spec.member_weights),
        "num_samples": spec.num_samples,
        "quantization": quantization,
        "frontend_in_file": bool(frontend_in_file),
        "inputs": inputs,
        "output": {
            "name": output["name"],
            "shape": [int(d) for d in output["shape_signature"]],
            "dtype": np.dtype(output["dtype"]).name,
            "meaning": "logits (no softmax)",
        },
        "parameter_bytes": {
            "total": counted.total,
            "storage_bytes": counted.storage_bytes,
            "int8_weights": counted.int8_weights,
            "int32_biases": counted.int32_biases,
            "float_parameters": counted.float_parameters,
            "limit": MAX_PARAM_BYTES,
        },
        "file_bytes": len(content),
    }


def _input_names(spec):
    if spec.member_names:
        return [f"{name}_spectrogram" for name in spec.member_names]
    return ["spectrogram"]


def _match_input(tflite_name, names):
    """Index of the model input whose name the TFLite input name contains (longest match)."""
    matches = [i for i, name in enumerate(names) if name in tflite_name]
    if not matches:
        raise ValueError(f"TFLite input {tflite_name!r} matches none of the model inputs {names}.")
    return max(matches, key=lambda i: len(names[i]))


def export_int8(
    model,
    representative_dataset,
    path,
    qat=False,
    *,
    max_param_bytes=MAX_PARAM_BYTES,
    max_calibration_samples=DEFAULT_CALIBRATION_SAMPLES,
    frontend_in_file=False,
    int8_io=False,
    micro=None,
    low_arena=True,
    fold_shuffle=True,
):
    """Export an int8 TFLite model, its front-end constants and a JSON description.

    Args:
        model: with ``qat=True``, the tf_keras model from ``quantize_aware_train``;
            with ``qat=False`` (post-training quantisation, no fine-tuning), a trained Keras 3
            keras-asc model or ensemble, or its tf_keras twin.
        representative_dataset: ``qat=False`` only (pass ``None`` with ``qat=True``): an
            iterable of calibration batches, each a waveform batch (B, samples), one
            spectrogram batch (B, mel bins, frames, 1), a list with one spectrogram batch
            per model input (a list, in the model's input order), or an (inputs,
            labels[, devices]) tuple of any of these (a tuple is always read this way, as
            tf.data yields it). Waveforms are turned into spectrograms with each input's
            inference front-end.
        path: the ``.tflite`` file to write; ``.json`` and ``.frontend.npz`` go beside it.
        qat: whether ``model`` is a quantisation-aware model.
        max_param_bytes: the parameter-memory limit (128,000 bytes, DCASE); ``None`` skips
            the check.
        max_calibration_samples: clips used for post-training calibration.
        frontend_in_file: with ``True`` the file holds the log-mel front-end too, as float32
            builtin ops (reflect padding, framing, window, RFFT2D, power, the non-zero blocks
            of the mel bank, log, normalisation) ahead of the first QUANTIZE: it takes one
            float32 waveform (batch, num_samples), shared by all members of an ensemble
            (each computes its own spectrogram), and gives the logits, so an app needs the
            one file. ``NAME.json`` says ``"frontend_in_file": true``; the calibration
            batches must then be waveforms. The front-end's constants are not counted in the
            parameter bytes. Cannot be combined with ``int8_io``.
        int8_io: int8 input spectrograms and int8 output logits instead of float32 (no
            QUANTIZE/DEQUANTIZE at the ends: a device quantises its front-end output
            itself); the scales and zero points are recorded in ``NAME.json`` under
            ``inputs[i]["int8_quantization"]`` and ``output["int8_quantization"]``. The
            output range bounds every logit the model can produce.
        micro: run the file once in TensorFlow Lite for Microcontrollers (the
            ``tflite-micro`` package) and record its tensor arena in ``NAME.json`` under
            ``"tflite_micro"`` (``keras_asc.quantization.micro.micro_report``). A model TFLM
            cannot run is still written, with the reason recorded and a warning. ``None``
            (the default): ``True``, except with ``frontend_in_file=True``, whose RFFT2D
            TFLite Micro has no kernel for: the run is skipped and ``"tflite_micro"`` says
            why (``"runs": false``), without a warning. ``True`` runs it anyway.
        low_arena: ``True`` (the default): the file for a small TFLite Micro tensor arena,
            the same int8 values. GRN (kept in float) is computed in
            ``low_arena.LOW_ARENA_GRN_BLOCKS`` blocks along axis 1, the mel axis (a graph
            rewrite of a copy of the model, ``low_arena.with_blockwise_grn``), each block
            quantised before the blocks are joined (``passes.quantize_before_concatenation``),
            so the largest float tensors are a quarter of their size; the shortcuts' average
            pooling stays int8 (TFLite Micro has an int8 kernel for it). ``False``: GRN
            whole and the pooling in float32 (``passes.float_average_pools``), which LiteRT's
            XNNPACK delegate runs: for phones and hosts, with a larger arena. Recorded in
            ``NAME.json`` as ``"low_arena"``.
        fold_shuffle: fold every channel shuffle into the weights of the layers after it
            (``fold_channel_shuffles``): the same int8 logits, bit for bit, without the
            GATHER ops. ``False`` keeps the shuffles in the file.

    Returns:
        ``ExportResult`` (paths, file size, parameter bytes, TFLite Micro arena).

    Raises:
        BudgetExceededError: the int8 parameters exceed ``max_param_bytes``; nothing is
            written.

    Example:
        >>> result = export_int8(qat_model, None, "out/moflenet57.tflite", qat=True)
        >>> print(result)
    """
    path = os.fspath(path)
    if not path.endswith(".tflite"):
        raise ValueError(f"path must end with .tflite. Received: path={path!r}")
    if qat:
        if not isinstance(model, tf_keras.Model) or not _is_quantized(model):
            raise TypeError(
                f"qat=True needs the tf_keras model returned by quantize_aware_train. Received: "
                f"{type(model).__name__} {getattr(model, 'name', '')!r}"
            )
        twin = model
    else:
        twin = model if isinstance(model, tf_keras.Model) else to_tf_keras(model)
        if _is_quantized(twin):
            raise ValueError(
                f"{twin.name!r} is a quantisation-aware model: export it with qat=True (and "
                f"representative_dataset=None)."
            )
    spec = twin_spec(twin)
    if int8_io and frontend_in_file:
        raise ValueError(
            "int8_io=True and frontend_in_file=True cannot be combined: a file with the "
            "front-end inside takes float32 waveforms."
        )
    content = convert_int8(
        twin,
        None if qat else representative_dataset,
        max_calibration_samples=max_calibration_samples,
        frontend_in_file=frontend_in_file,
        low_arena=low_arena,
    )
    if fold_shuffle:
        content = fold_channel_shuffles(content)
    if low_arena:
        # A microcontroller build keeps the int8 pooling (TFLite Micro has an int8
        # AVERAGE_POOL_2D kernel): the float pooling's tensors, four times the int8 ones,
        # would raise the arena.
        content = quantize_before_concatenation(content)
    else:
        content = float_average_pools(content)
    if int8_io:
        content = with_int8_io(content)
    counted = parameter_bytes(content, skip_frontend=frontend_in_file)
    check_parameter_bytes(counted, spec.name, max_param_bytes)
    frontends = [frontend_params(config) for config in spec.frontends]
    description = _describe(
        content, spec, frontends, counted, "qat" if qat else "ptq", frontend_in_file
    )
    description = _io_quantization(description, content)
    description["low_arena"] = bool(low_arena)
    if micro is None and frontend_in_file:
        description["tflite_micro"] = {"runs": False, "reason": MICRO_SKIPPED_IN_FILE_FRONTEND}
    elif micro is None or micro:
        description["tflite_micro"] = _micro_description(content, os.path.basename(path))
    # The front-end sidecar follows the TFLite input order, like the JSON (with the front-end
    # in the file: the model's input order, the order of ``inputs[0]["frontends"]``).
    ordered = (
        frontends
        if frontend_in_file
        else [frontends[entry["model_input"]] for entry in description["inputs"]]
    )
    json_path, frontend_path = sidecar_paths(path)
    _atomic_write(frontend_path, lambda stream: save_frontend_params(stream, ordered))
    _atomic_write(json_path, (json.dumps(description, indent=2) + "\n").encode())
    _atomic_write(path, content)
    return ExportResult(
        path,
        json_path,
        frontend_path,
        len(content),
        counted,
        description["quantization"],
        description.get("tflite_micro"),
    )



def _io_quantization(description, content):
    """Record the scale and zero point of int8 inputs and output in the description."""
    interpreter = make_interpreter(model_content=content)
    by_name = {d["name"]: d for d in interpreter.get_input_details()}
    for entry in description["inputs"]:
        detail = by_name[entry["name"]]
        if np.dtype(detail["dtype"]) == np.int8:
            scale, zero_point = detail["quantization"]
            entry["int8_quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
    output = interpreter.get_output_details()[0]
    if np.dtype(output["dtype"]) == np.int8:
        scale, zero_point = output["quantization"]
        description["output"]["int8_quantization"] = {
            "scale": float(scale),
            "zero_point": int(zero_point),
        }
        description["output"]["meaning"] = "int8 logits (no softmax): (q - zero_point) * scale"
    return description


# === TFLite Micro ===


MICRO_INSTALL_HINT = (
    "tflite-micro is not installed, so the TFLite Micro arena of the int8 files is not "
    'measured: pip install "keras-asc[micro]" (installed from an index) or '
    'pip install ".[micro]" (from a clone).'
)


class MicroNotInstalledWarning(UserWarning):
    """The TFLite Micro arena could not be measured: ``tflite-micro`` is not installed."""


_HINTED = []


def _micro_hint_once():
    """Say once per process, in one line without a source line, that TFLM is not installed."""
    if _HINTED:
        return
    _HINTED.append(True)
    with warnings.catch_warnings():
        warnings.simplefilter("always", MicroNotInstalledWarning)
        previous = warnings.formatwarning
        warnings.formatwarning = lambda message, *args, **kwargs: f"keras-asc: {message}\n"
        try:
            warnings.warn(MICRO_INSTALL_HINT, MicroNotInstalledWarning, stacklevel=4)
        finally:
            warnings.formatwarning = previous


def _micro_description(content, name):
    """The ``"tflite_micro"`` entry of the description: the arena, or why it was not measured."""
    if not micro_module.micro_available():
        _micro_hint_once()
        return {"runs": None, "reason": "tflite-micro is not installed"}
    try:
        return micro_module.micro_report(content, name=name).as_json()
    except micro_module.MicroUnsupportedError as error:
        warnings.warn(str(error), stacklevel=3)
        return {
            "runs": False,
            "reason": str(error),
            "interpreter": f"tflite-micro {micro_module.micro_version()}",
        }


# Why export_int8 does not run a file with the front-end inside in TFLite Micro by default.
MICRO_SKIPPED_IN_FILE_FRONTEND = (
    "not run: the file holds the front-end, whose RFFT2D TFLite Micro has no kernel for "
    "(micro=True runs it anyway)"
)


