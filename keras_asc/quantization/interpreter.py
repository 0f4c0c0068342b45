"""Run an exported int8 model like a Keras model: waveforms in, float logits out."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import zipfile

import numpy as np

from keras_asc.finite import check_finite
from keras_asc.quantization import micro
from keras_asc.quantization.export import EXPORT_FORMAT, make_interpreter, sidecar_paths
from keras_asc.quantization.frontend import frontend_numpy, load_frontend_params, num_frames
from keras_asc.quantization.frontend_shared import shared_frontends
from keras_asc.quantization.graph import native_output_captured

# Run in a child process: the LiteRT interpreter trusts the flatbuffer it is given, and a
# damaged file can make it read out of bounds and kill the process (SIGSEGV, SIGABRT). The
# child opens the model, allocates its tensors and runs it once on zeros; only a file that
# survives that is opened in this process.
_PROBE = """
import sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
interpreter = Interpreter(model_path=sys.argv[1])
interpreter.allocate_tensors()
for detail in interpreter.get_input_details():
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
interpreter.invoke()
"""
_PROBE_TIMEOUT = 300


def verify_tflite(path, timeout=_PROBE_TIMEOUT):
    """Check that a ``.tflite`` file is a TFLite flatbuffer the interpreter can run, without
    risking this process.

    Checks the file identifier (``TFL3``) here, then opens, allocates and runs the model once
    on zeros in a child process, so a damaged file that would crash the interpreter gives an
    error instead.

    Raises:
        ValueError: the file is not a usable TFLite model; the one-line message names it.
    """
    path = os.fspath(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise ValueError(
            f"{path}: not a TFLite model (file identifier {head[4:8]!r}, expected b'TFL3'); "
            "the file is damaged or of another kind."
        )
    try:
        result = subprocess.run(
            [sys.executable, "-c", _PROBE, path],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
    except subprocess.TimeoutExpired:
        raise ValueError(
            f"{path}: the TFLite interpreter did not finish opening the model within {timeout} s; "
            "the file is probably damaged."
        ) from None
    if result.returncode < 0:
        name = signal.Signals(-result.returncode).name
        raise ValueError(
            f"{path}: the file is damaged: the TFLite interpreter crashed ({name}) opening it."
        )
    if result.returncode:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {result.returncode}"
        raise ValueError(f"{path}: the TFLite interpreter cannot run this file ({reason}).")


def _read_description(json_path):
    try:
        with open(json_path, encoding="utf-8") as handle:
            description = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{json_path}: not valid JSON ({error}).") from None
    if not isinstance(description, dict):
        raise ValueError(
            f"{json_path}: expected a JSON object describing the export, received "
            f"{type(description).__name__}."
        )
    return description


def _read_frontends(frontend_path):
    try:
        return load_frontend_params(frontend_path)
    except ValueError as error:
        if str(error).startswith(frontend_path):
            raise
        raise ValueError(f"{frontend_path}: unreadable front-end constants ({error}).") from None
    except (OSError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"{frontend_path}: unreadable front-end constants ({type(error).__name__}: {error})."
        ) from None


class TFLiteClassifier:
    """An exported ``.tflite`` keras-asc model with ``predict(waveforms) -> logits``.

    The front-end runs in NumPy outside the interpreter (``frontend_numpy`` with the constants
    exported beside the model), so the classifier takes the same (batch, samples) waveforms as
    the Keras model and can be evaluated side by side with it
    (``keras_asc.training.evaluate``). It also takes spectrograms: one (batch, mel bins,
    frames, 1) array for a single model, or a list with one array per input (in the order of
    ``input_names``) for an ensemble. A file exported with ``frontend_in_file=True``
    (``"frontend_in_file": true`` in its JSON) computes the log-mels itself: it is fed the
    waveforms directly and takes no spectrograms.

    Uses the LiteRT interpreter (``ai_edge_litert``) when installed, else ``tf.lite``. A file
    exported with int8 input and output (``export_int8(..., int8_io=True)``) is fed the
    spectrograms quantised with each input's recorded scale and zero point, and its int8
    logits are dequantised: ``predict`` returns float logits either way.

    Args:
        path: the ``.tflite`` file written by ``export_int8``; its ``.json`` and
            ``.frontend.npz`` must lie beside it.
        num_threads: interpreter threads (``None``: the interpreter's default).
        batch_size: clips per interpreter call; larger batches are split.

    Example:
        >>> classifier = TFLiteClassifier("runs/moflenet57/int8/moflenet57.tflite")
        >>> logits = classifier.predict(np.zeros((2, 32000), "float32"))
    """

    def __init__(self, path, num_threads=None, batch_size=32):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No TFLite model at {path!r}.")
        json_path, frontend_path = sidecar_paths(path)
        for sidecar in (json_path, frontend_path):
            if not os.path.isfile(sidecar):
                raise FileNotFoundError(
                    f"{path!r} needs {sidecar!r} beside it (written by "
                    f"keras_asc.quantization.export_int8)."
                )
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(
                f"batch_size must be a positive integer. Received: batch_size={batch_size}"
            )
        self.description = _read_description(json_path)
        if self.description.get("format") != EXPORT_FORMAT:
            raise ValueError(
                f"{json_path}: format {self.description.get('format')!r} is not {EXPORT_FORMAT!r}."
            )
        missing = [key for key in ("model", "inputs") if key not in self.description]
        if missing:
            raise ValueError(f"{json_path}: missing {', '.join(missing)}; the file is damaged.")
        self.path = path
        self.name = self.description["model"] + "_int8"
        self.batch_size = int(batch_size)
        self.frontends = _read_frontends(frontend_path)
        verify_tflite(path)
        self.interpreter = make_interpreter(model_path=path, num_threads=num_threads)
        self._inputs = self.interpreter.get_input_details()
        self._output = self.interpreter.get_output_details()[0]
        # With the front-end in the file, one waveform input; the front-ends (model input
        # order) serve model_inputs() only.
        self.frontend_in_file = bool(self.description.get("frontend_in_file", False))
        if self.frontend_in_file:
            _check_waveform_input(path, self._inputs)
        elif len(self._inputs) != len(self.frontends):
            raise ValueError(
                f"{path}: {len(self._inputs)} model inputs but {len(self.frontends)} front-ends in "
                f"{frontend_path}."
            )
        self.input_names = [entry["name"] for entry in self.description["inputs"]]
        self.num_samples = self.description.get("num_samples")
        self._batch = None

    @property
    def input_shapes(self):
        """(mel bins, frames, 1) of every input, in ``input_names`` order ((num_samples,) for
        a file with the front-end inside)."""
        return [tuple(int(d) for d in detail["shape_signature"][1:]) for detail in self._inputs]

    def spectrograms(self, waveforms):
        """The input spectrograms of a waveform batch, one array per model input."""
        waveforms = np.asarray(waveforms, dtype="float32")
        for params, shape in zip(self.frontends, self.input_shapes, strict=True):
            frames = num_frames(waveforms.shape[-1], params)
            if frames != shape[1]:
                raise ValueError(
                    f"{self.name}: waveforms of {waveforms.shape[-1]} samples give {frames} "
                    f"frames; the model takes {shape[1]} (num_samples={self.num_samples})."
                )
        # An ensemble's members share their framing and FFTs where their settings allow
        # (the same values as frontend_numpy per input, fewer FFTs).
        return shared_frontends(waveforms, self.frontends)

    def model_inputs(self, waveforms):
        """The spectrograms of a waveform batch in the order of the tf_keras model's inputs.

        The TFLite converter may order the inputs of an ensemble differently from the twin or
        QAT model it came from; this is the order to feed that model.
        """
        if self.frontend_in_file:
            waveforms = np.asarray(waveforms, dtype="float32")
            return [frontend_numpy(waveforms, params) for params in self.frontends]
        spectrograms = self.spectrograms(waveforms)
        ordered = [None] * len(spectrograms)
        for entry, spectrogram in zip(self.description["inputs"], spectrograms, strict=True):
            ordered[entry["model_input"]] = spectrogram
        return ordered

    def _resize(self, batch):
        if batch == self._batch:
            return
        for detail, shape in zip(self._inputs, self.input_shapes, strict=True):
            self.interpreter.resize_tensor_input(detail["index"], (batch, *shape))
        # LiteRT applies its XNNPACK delegate here and announces it on the native stderr.
        with native_output_captured():
            self.interpreter.allocate_tensors()
        self._batch = batch

    def _run(self, arrays):
        self._resize(arrays[0].shape[0])
        for detail, array in zip(self._inputs, self.interpreter_inputs(arrays), strict=True):
            self.interpreter.set_tensor(detail["index"], array)
        self.interpreter.invoke()
        return self.output_logits(self.interpreter.get_tensor(self._output["index"]))

    def interpreter_inputs(self, spectrograms):
        """The arrays the file takes for float spectrograms (one per input, ``input_names``
        order): the spectrograms themselves, or for a file with int8 inputs
        (``export_int8(..., int8_io=True)``) the spectrograms quantised with each input's
        scale and zero point."""
        return [
            quantize_array(array, detail)
            for array, detail in zip(spectrograms, self._inputs, strict=True)
        ]

    def output_logits(self, output):
        """Float logits of the file's raw output (dequantised when the output is int8)."""
        return dequantize_array(output, self._output)

    def as_spectrograms(self, x):
        """The float arrays the file takes, one per input, from waveforms or spectrograms
        (see the class doc): spectrograms, or, for a file with the front-end inside
        (``frontend_in_file``), the (batch, num_samples) waveforms themselves."""
        return self._as_inputs(x)

    def _as_inputs(self, x):
        if self.frontend_in_file:
            return [self._as_waveforms(x)]
        if isinstance(x, (list, tuple)):
            arrays = [np.asarray(a, dtype="float32") for a in x]
        else:
            x = np.asarray(x, dtype="float32")
            if x.ndim in (1, 2):
                return self.spectrograms(x if x.ndim == 2 else x[None])
            arrays = [x]
        if len(arrays) != len(self._inputs) or any(
            a.shape[1:] != shape for a, shape in zip(arrays, self.input_shapes, strict=True)
        ):
            raise ValueError(
                f"{self.name}: expected waveforms (batch, samples) or spectrograms of shapes "
                f"{[(None, *s) for s in self.input_shapes]} ({self.input_names}). Received: "
                f"{[a.shape for a in arrays]}"
            )
        return arrays

    def _as_waveforms(self, x):
        x = np.asarray(x, dtype="float32") if not isinstance(x, (list, tuple)) else None
        expected = self.input_shapes[0][0]
        if x is not None and x.ndim == 1:
            x = x[None]
        if x is None or x.ndim != 2 or x.shape[1] != expected:
            raise ValueError(
                f"{self.name}: this file computes its log-mels itself (front-end in the file) "
                f"and takes waveforms (batch, {expected}). Received: "
                f"{'a list' if x is None else x.shape}"
            )
        return x

    def predict(self, x):
        """Float logits (batch, classes) of waveforms or spectrograms (see the class doc).

        Raises:
            keras_asc.finite.NonFiniteError: a spectrogram or a logit is NaN or infinite (an
                int8 input would quantise it to a normal-looking value)."""
        arrays = self._as_inputs(x)
        for array in arrays:
            check_finite(array, self.name, what="inputs")
        count = arrays[0].shape[0]
        outputs = [
            self._run([np.ascontiguousarray(a[start : start + self.batch_size]) for a in arrays])
            for start in range(0, count, self.batch_size)
        ]
        logits = (
            np.concatenate(outputs)
            if outputs
            else np.zeros((0, self._output["shape"][-1]), "float32")
        )
        return check_finite(logits, self.name)

    def __repr__(self):
        return f"TFLiteClassifier({self.path!r}, inputs={self.input_names})"


def _check_waveform_input(path, inputs):
    """A file with the front-end inside has one float32 (batch, num_samples) input."""
    if len(inputs) != 1 or len(inputs[0]["shape_signature"]) != 2:
        raise ValueError(
            f"{path}: its JSON says the front-end is in the file, so one (batch, num_samples) "
            f"waveform input is expected; the file has inputs of shapes "
            f"{[tuple(int(d) for d in i['shape_signature']) for i in inputs]}."
        )


def quantize_array(array, detail):
    """``array`` in the dtype of an interpreter tensor (``detail``: its interpreter details):
    unchanged for float32, quantised with the tensor's scale and zero point for int8."""
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return np.ascontiguousarray(array, dtype="float32")
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    quantized = np.round(np.asarray(array, "float32") / scale) + zero_point
    return np.clip(quantized, info.min, info.max).astype(dtype)


def dequantize_array(array, detail):
    """Float values of an interpreter tensor's raw ``array`` (int8 dequantised)."""
    array = np.asarray(array)
    if array.dtype == np.float32:
        return np.array(array)
    scale, zero_point = detail["quantization"]
    return ((array.astype("float32") - zero_point) * scale).astype("float32")


def prediction_agreement(classifier, reference, batches):
    """Fraction of clips on which an int8 file and a tf_keras model predict the same class.

    Args:
        classifier: a ``TFLiteClassifier``.
        reference: the tf_keras model it was exported from (QAT model or float twin).
        batches: iterable of waveform batches, or of (waveforms, labels[, devices]) tuples.

    Returns:
        ``(agreement, clips)``.
    """
    agree = total = 0
    for batch in batches:
        waveforms = np.asarray(batch[0] if isinstance(batch, tuple) else batch, dtype="float32")
        inputs = classifier.model_inputs(waveforms)
        expected = reference.predict_on_batch(inputs if len(inputs) > 1 else inputs[0])
        predicted = classifier.predict(waveforms)
        agree += int(np.sum(np.asarray(expected).argmax(1) == predicted.argmax(1)))
        total += len(waveforms)
    if not total:
        raise ValueError("prediction_agreement: the batches held no clips.")
    return agree / total, total


@dataclasses.dataclass(frozen=True)
class MicroAgreement:
    """TFLite Micro next to LiteRT on the same clips.

    Attributes:
        same_class: fraction of clips with the same top class.
        clips: clips compared.
        max_logit_difference: largest absolute difference of the (float) logits.
    """

    same_class: float
    clips: int
    max_logit_difference: float

    def __str__(self):
        return (
            f"TFLite Micro and LiteRT: same class on {100 * self.same_class:.2f} % of "
            f"{self.clips} clips; largest logit difference {self.max_logit_difference:.4g}"
        )


def micro_agreement(path, x):
    """Run clips through TFLite Micro and LiteRT and compare their classes and logits.

    Args:
        path: a ``.tflite`` file written by ``export_int8`` (its ``.json`` and
            ``.frontend.npz`` beside it).
        x: waveforms (batch, samples), or spectrograms as ``TFLiteClassifier.predict`` takes
            them.

    Returns:
        ``MicroAgreement``.

    Example:
        >>> print(micro_agreement("out/moflenet57.tflite", waveforms))
    """
    classifier = TFLiteClassifier(path)
    spectrograms = classifier.as_spectrograms(x)
    litert = classifier.predict(spectrograms)
    on_micro = micro.MicroInterpreter(path)
    logits = classifier.output_logits(on_micro.predict(classifier.interpreter_inputs(spectrograms)))
    if not len(litert):
        raise ValueError("micro_agreement: no clips to compare.")
    return MicroAgreement(
        float(np.mean(logits.argmax(1) == litert.argmax(1))),
        len(litert),
        float(np.max(np.abs(logits - litert))),
    )
