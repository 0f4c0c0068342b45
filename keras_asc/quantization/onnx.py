"""ONNX export of the float model, checked against Keras with onnxruntime.

A second deployment route beside int8 TFLite: ``export_onnx`` writes an ``AudioClassifier``
with Keras' own exporter (``model.export(path, format="onnx")``) and the log-mel front-end
constants beside it (``NAME.frontend.npz``, as for int8 files; ``frontend.frontend_numpy`` is
the reference). What the file takes depends on the Keras backend:

- PyTorch backend: the **waveform** (batch_size, num_samples), front-end included (ONNX
  ``STFT``, opset 20), through PyTorch's dynamo exporter (needs onnxscript). The batch size is
  fixed in the file: with a free batch dimension Keras falls back to PyTorch's TorchScript
  exporter, which cannot export the complex STFT.
- TensorFlow backend: **spectrograms** (batch, mel bins, frames, 1), the network only, batch
  free. Keras converts through tf2onnx, which (1.17, with TensorFlow 2.21) converts an RFFT
  only when a ComplexAbs consumes it, while the front-end reads the real and imaginary parts
  (``keras.ops.stft``); and its RFFT conversion is a dense DFT matrix (4096 x 2049 x 2 floats,
  67 MB).

Requires the ``onnx`` extra: ``pip install "keras-asc[onnx]"`` (onnx, onnxruntime, tf2onnx,
onnxscript).

Example:
    >>> result = export_onnx(model, "out/moflenet57.onnx", waveforms)
    >>> result.max_abs_diff < 1e-4
    True
"""

import dataclasses
import os
import shutil
import tempfile

import keras
import numpy as np

from keras_asc.quantization.frontend import frontend_params, save_frontend_params

DEFAULT_TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class OnnxExportResult:
    """Files and the check of one ``export_onnx`` call."""

    path: str
    frontend_path: str
    max_abs_diff: float
    clips: int
    input: str  # "waveform" (front-end in the file) or "spectrogram"

    def __str__(self):
        return (
            f"{self.path}: {self.input} in, logits out; max abs diff to Keras "
            f"{self.max_abs_diff:.2e} on {self.clips} clips (front-end: {self.frontend_path})"
        )


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            'ONNX export needs onnx, onnxruntime and tf2onnx: pip install "keras-asc[onnx]"'
        ) from None
    return onnxruntime


def export_onnx(model, path, waveforms=None, *, tolerance=DEFAULT_TOLERANCE, batch_size=1):
    """Export an ``AudioClassifier`` to ONNX, check it with onnxruntime, then write it.

    On the PyTorch backend the file takes waveforms (front-end included, ``batch_size`` clips
    per call); on the TensorFlow backend it takes spectrograms (see the module doc).

    Args:
        model: a keras-asc ``AudioClassifier`` (waveform in, logits out).
        path: the ``.onnx`` file to write; ``NAME.frontend.npz`` goes beside it.
        waveforms: (batch, num_samples) clips for the check; ``None``: 4 clips of noise.
        tolerance: largest max abs difference of the ONNX logits to the Keras logits.
        batch_size: clips per call of a waveform-input file (PyTorch backend).

    Returns:
        ``OnnxExportResult``.

    Raises:
        ValueError: the ONNX logits are more than ``tolerance`` from Keras; nothing is written.

    Example:
        >>> print(export_onnx(keras_asc.build("moflenet57"), "out/moflenet57.onnx"))
    """
    onnxruntime = _import_onnxruntime()
    path = os.fspath(path)
    if not path.endswith(".onnx"):
        raise ValueError(f"path must end with .onnx. Received: path={path!r}")
    if not (hasattr(model, "frontend") and hasattr(model, "backbone")):
        raise TypeError(
            f"export_onnx takes an AudioClassifier (front-end + backbone). Received: "
            f"{type(model).__name__} {getattr(model, 'name', '')!r}"
        )
    if waveforms is None:
        waveforms = np.random.default_rng(0).normal(0, 0.1, (4, model.num_samples))
    waveforms = np.asarray(waveforms, dtype="float32")
    if waveforms.ndim != 2 or waveforms.shape[1] != model.num_samples:
        raise ValueError(
            f"waveforms must be (batch, {model.num_samples}). Received shape {waveforms.shape}"
        )
    spectrograms = keras.ops.convert_to_numpy(model.frontend(waveforms, training=False))
    expected = keras.ops.convert_to_numpy(model(waveforms, training=False))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    staging = tempfile.mkdtemp(dir=directory, prefix=".tmp-onnx-")
    try:
        staged = os.path.join(staging, os.path.basename(path))
        waveform_input = keras.backend.backend() == "torch"
        if waveform_input:
            signature = [keras.InputSpec(shape=(int(batch_size), model.num_samples))]
            model.export(staged, format="onnx", verbose=False, input_signature=signature)
            inputs = waveforms
        else:
            model.backbone.export(staged, format="onnx", verbose=False)
            inputs = spectrograms
        session = onnxruntime.InferenceSession(staged, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        step = int(batch_size) if waveform_input else len(inputs)
        logits = np.concatenate(
            [
                session.run(None, {name: _padded(inputs[i : i + step], step)})[0][
                    : len(inputs[i : i + step])
                ]
                for i in range(0, len(inputs), step)
            ]
        )
        difference = float(np.abs(logits - expected).max())
        if not difference <= tolerance:
            raise ValueError(
                f"{path}: the ONNX logits are {difference:.2e} from Keras (tolerance "
                f"{tolerance:.0e}); nothing written."
            )
        frontend_path = path[: -len(".onnx")] + ".frontend.npz"
        staged_frontend = os.path.join(staging, os.path.basename(frontend_path))
        save_frontend_params(staged_frontend, [frontend_params(model.frontend)])
        os.replace(staged_frontend, frontend_path)
        os.replace(staged, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return OnnxExportResult(
        path,
        frontend_path,
        difference,
        len(waveforms),
        "waveform" if waveform_input else "spectrogram",
    )


def _padded(array, rows):
    """``array`` with zero rows appended up to ``rows`` (a fixed-batch file's last call)."""
    if len(array) == rows:
        return array
    return np.concatenate([array, np.zeros((rows - len(array), *array.shape[1:]), array.dtype)])
