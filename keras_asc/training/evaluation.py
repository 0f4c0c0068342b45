"""Evaluate scene classifiers the DCASE way: class-wise (macro) accuracy, devices, log loss.

The primary DCASE Task 1 metric is the macro-averaged class-wise accuracy: the accuracy of each
scene class (its recall) averaged over the classes, so every class counts the same however
many clips it has. Beside it the result holds the overall accuracy, the accuracy per device
and per device group (real a/b/c, seen s1-s3, unseen s4-s6), the accuracy per class, the
multi-class log loss of ``softmax(logits)`` overall, per class, per device and per class and
device (what the DCASE submission meta information reports) and the confusion matrix.

``evaluate_predictions`` is pure NumPy and works on any logits; ``evaluate`` runs a model (a
Keras model, a run directory, a ``.keras`` or ``.tflite`` file, or any object with
``predict(waveforms) -> logits``) over a TAU22 split first.

Example:
    >>> result = evaluate("runs/moflenet57", "/data/tau22", split="test")
    >>> print(result)
    >>> result.save("runs/moflenet57/eval-test")  # metrics.json, metrics.txt, PNG plots

Reference:
    DCASE 2024 Task 1, "Data-Efficient Low-Complexity Acoustic Scene Classification"
    (metric: macro-averaged class-wise accuracy on the development test split).
"""

from __future__ import annotations

import dataclasses
import json
import os

import keras
import numpy as np

from keras_asc import registry
from keras_asc.data.tau22 import DEVICE_GROUPS, DEVICES, SCENE_LABELS, Split, expand_path
from keras_asc.files import FINAL_MODEL, METRICS_JSON, write_text_atomic
from keras_asc.text import format_table
from keras_asc.training import plots as plots_module
from keras_asc.training.rundir import RunDir
from keras_asc.training.saving import load_model

METRICS_TEXT = "metrics.txt"
# Waveform length every keras-asc model takes: one 1-s clip at 32 kHz.
DEFAULT_NUM_SAMPLES = 32000


# === Results ===


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """Metrics of one model on one set of clips.

    Accuracies are fractions in [0, 1]; a class, device or group without clips is absent from
    the per-device and per-group tables and has accuracy ``None`` in the per-class table (it
    is left out of the macro average).

    Args:
        macro_accuracy: mean of the per-class accuracies (the DCASE primary metric).
        accuracy: fraction of all clips classified correctly.
        log_loss: mean cross-entropy of ``softmax(logits)`` against the labels, probabilities
            clipped to ``[eps, 1 - eps]`` (``eps`` = float64 machine epsilon).
        num_clips: number of clips evaluated.
        class_names: the class names, index order.
        class_accuracy: class name -> accuracy (``None`` for a class without clips).
        class_counts: class name -> number of clips.
        device_accuracy: device -> accuracy, for devices with clips (canonical order).
        device_counts: device -> number of clips.
        group_accuracy: device group -> accuracy, for groups with clips.
        group_counts: device group -> number of clips.
        confusion_matrix: (classes, classes) integer counts; rows true class, columns predicted.
        model_name: name of the evaluated model, when known.
        split: name of the evaluated split, when known.
        class_log_loss: class name -> mean log loss of its clips (``None`` without clips).
        device_log_loss: device -> mean log loss of its clips, for devices with clips.
        class_device_log_loss: class name -> {device -> mean log loss of the clips of that
            class recorded by that device}, for the pairs with clips. Results saved before
            these three fields existed load with them empty.
    """

    macro_accuracy: float
    accuracy: float
    log_loss: float
    num_clips: int
    class_names: tuple
    class_accuracy: dict
    class_counts: dict
    device_accuracy: dict
    device_counts: dict
    group_accuracy: dict
    group_counts: dict
    confusion_matrix: np.ndarray
    model_name: str | None = None
    split: str | None = None
    class_log_loss: dict = dataclasses.field(default_factory=dict)
    device_log_loss: dict = dataclasses.field(default_factory=dict)
    class_device_log_loss: dict = dataclasses.field(default_factory=dict)

    def to_dict(self):
        """A JSON-serialisable dict of every field (the confusion matrix as nested lists)."""
        return {
            "model_name": self.model_name,
            "split": self.split,
            "num_clips": self.num_clips,
            "macro_accuracy": self.macro_accuracy,
            "accuracy": self.accuracy,
            "log_loss": self.log_loss,
            "class_names": list(self.class_names),
            "class_accuracy": dict(self.class_accuracy),
            "class_counts": dict(self.class_counts),
            "device_accuracy": dict(self.device_accuracy),
            "device_counts": dict(self.device_counts),
            "group_accuracy": dict(self.group_accuracy),
            "group_counts": dict(self.group_counts),
            "confusion_matrix": np.asarray(self.confusion_matrix).astype(int).tolist(),
            "class_log_loss": dict(self.class_log_loss),
            "device_log_loss": dict(self.device_log_loss),
            "class_device_log_loss": {k: dict(v) for k, v in self.class_device_log_loss.items()},
        }

    @classmethod
    def from_dict(cls, data):
        """Rebuild a result from :meth:`to_dict` output (for example a loaded ``metrics.json``)."""
        fields = {field.name for field in dataclasses.fields(cls)}
        required = {
            field.name
            for field in dataclasses.fields(cls)
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(data))
        if missing:
            raise ValueError(f"Evaluation metrics are missing the fields {missing}.")
        values = {name: data[name] for name in fields if name in data}
        values["class_names"] = tuple(values["class_names"])
        values["confusion_matrix"] = np.asarray(values["confusion_matrix"], dtype=np.int64)
        return cls(**values)

    @classmethod
    def load(cls, path):
        """Read a ``metrics.json`` written by :meth:`save` (a file or the folder holding it)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, METRICS_JSON)
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))

    def format(self):
        """The result as a readable text table (what ``keras-asc evaluate`` prints)."""
        return format_result(self)

    def __str__(self):
        return format_result(self)

    def save(self, out_dir, plots=True):
        """Write ``metrics.json``, ``metrics.txt`` and, when matplotlib is installed, PNG plots.

        Every file is written atomically (a temporary file in ``out_dir``, then renamed).

        Args:
            out_dir: folder for the files; created when absent.
            plots: also write ``confusion_matrix.png`` and ``device_accuracy.png``.

        Returns:
            The list of written paths. When ``plots`` is true but matplotlib is missing, the
            PNGs are skipped (check ``keras_asc.training.plots.matplotlib_available()``).
        """
        out_dir = expand_path(out_dir)
        out_dir = os.fspath(out_dir)
        os.makedirs(out_dir, exist_ok=True)
        json_path = os.path.join(out_dir, METRICS_JSON)
        text_path = os.path.join(out_dir, METRICS_TEXT)
        write_text_atomic(json_path, json.dumps(self.to_dict(), indent=2) + "\n")
        write_text_atomic(text_path, self.format() + "\n")
        written = [json_path, text_path]
        if plots and plots_module.matplotlib_available():
            written += plots_module.save_evaluation_plots(self, out_dir)
        return written


# === Metrics ===


def log_softmax(logits):
    """Numerically stable ``log(softmax(logits))`` over the last axis, in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits):
    """``softmax(logits)`` over the last axis, in float64."""
    return np.exp(log_softmax(logits))


def log_loss(logits, labels):
    """Multi-class cross-entropy of ``softmax(logits)``, probabilities clipped as sklearn does.

    ``-mean(log(clip(p[i, labels[i]], eps, 1 - eps)))`` with ``eps`` the float64 machine epsilon,
    so one confidently wrong clip costs at most ``-log(eps)`` (about 36) instead of infinity.

    Args:
        logits: (clips, classes) unnormalised scores.
        labels: (clips,) integer class indices.

    Example:
        >>> round(log_loss([[0.0, 0.0]], [1]), 4)  # -log(0.5)
        0.6931
    """
    logits, labels = _check_logits_and_labels(logits, labels, logits_shape_classes=None)
    return float(np.mean(_clip_losses(logits, labels)))


def _clip_losses(logits, labels):
    """Per-clip ``-log(clip(p[i, labels[i]], eps, 1 - eps))`` of checked float64 logits."""
    eps = np.finfo(np.float64).eps
    probabilities = softmax(logits)[np.arange(len(labels)), labels]
    return -np.log(np.clip(probabilities, eps, 1.0 - eps))


def _check_logits_and_labels(logits, labels, logits_shape_classes):
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2:
        raise ValueError(
            f"logits must have shape (clips, classes). Received shape {tuple(logits.shape)}."
        )
    classes = logits.shape[1] if logits_shape_classes is None else logits_shape_classes
    if logits.shape[1] != classes:
        raise ValueError(
            f"logits have {logits.shape[1]} columns but {classes} class names were given."
        )
    if labels.ndim != 1 or len(labels) != len(logits):
        raise ValueError(
            f"labels must have shape ({len(logits)},) to match the logits. "
            f"Received shape {tuple(labels.shape)}."
        )
    if len(labels) == 0:
        raise ValueError("Nothing to evaluate: received 0 clips.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices. Received dtype {labels.dtype}.")
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(
            f"labels must lie in [0, {classes}). Received values from {labels.min()} to "
            f"{labels.max()}."
        )
    if not np.all(np.isfinite(logits)):
        raise ValueError("logits contain NaN or infinite values; the model output is broken.")
    return logits, labels.astype(np.int64)


def _decode_devices(devices, count):
    if devices is None:
        return None
    devices = np.asarray(devices)
    if devices.shape != (count,):
        raise ValueError(
            f"devices must have shape ({count},) to match the logits. "
            f"Received shape {devices.shape}."
        )
    return np.array(
        [d.decode("utf-8") if isinstance(d, bytes) else str(d) for d in devices.tolist()],
        dtype=object,
    )


def evaluate_predictions(
    logits, labels, devices=None, class_names=SCENE_LABELS, *, model_name=None, split=None
):
    """Compute every DCASE metric from model outputs (pure NumPy).

    Args:
        logits: (clips, classes) logits (or any scores whose softmax is the prediction).
        labels: (clips,) integer class indices.
        devices: optional (clips,) device names (``str`` or ``bytes``), for example ``"a"`` or
            ``"s4"``; without them the device and group tables are empty. Devices outside
            ``DEVICES`` are reported after the known ones and belong to no group.
        class_names: one name per logit column.
        model_name: recorded in the result.
        split: recorded in the result.

    Returns:
        An :class:`EvaluationResult`.

    Example:
        >>> result = evaluate_predictions([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]], [0, 1, 1],
        ...                               class_names=("a", "b"))
        >>> result.accuracy, result.macro_accuracy  # 2/3 overall, (1 + 1/2) / 2 per class
        (0.6666666666666666, 0.75)
    """
    class_names = tuple(class_names)
    logits, labels = _check_logits_and_labels(logits, labels, len(class_names))
    devices = _decode_devices(devices, len(labels))
    num_classes = len(class_names)
    predictions = logits.argmax(axis=1)
    correct = predictions == labels
    losses = _clip_losses(logits, labels)

    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    class_counts = confusion.sum(axis=1)
    class_accuracy, class_log_loss = {}, {}
    for index, name in enumerate(class_names):
        count = int(class_counts[index])
        class_accuracy[name] = float(confusion[index, index] / count) if count else None
        class_log_loss[name] = float(losses[labels == index].mean()) if count else None
    present = [value for value in class_accuracy.values() if value is not None]

    device_accuracy, device_counts, group_accuracy, group_counts = {}, {}, {}, {}
    device_log_loss, class_device_log_loss = {}, {}
    if devices is not None:
        known = [d for d in DEVICES if np.any(devices == d)]
        unknown = sorted(set(devices.tolist()) - set(DEVICES))
        for device in known + unknown:
            mask = devices == device
            device_counts[device] = int(mask.sum())
            device_accuracy[device] = float(correct[mask].mean())
            device_log_loss[device] = float(losses[mask].mean())
        for index, name in enumerate(class_names):
            row = {}
            for device in known + unknown:
                mask = (labels == index) & (devices == device)
                if mask.any():
                    row[device] = float(losses[mask].mean())
            if row:
                class_device_log_loss[name] = row
        for group, members in DEVICE_GROUPS.items():
            mask = np.isin(devices, members)
            if mask.any():
                group_counts[group] = int(mask.sum())
                group_accuracy[group] = float(correct[mask].mean())

    return EvaluationResult(
        macro_accuracy=float(np.mean(present)),
        accuracy=float(correct.mean()),
        log_loss=log_loss(logits, labels),
        num_clips=int(len(labels)),
        class_names=class_names,
        class_accuracy=class_accuracy,
        class_counts={name: int(c) for name, c in zip(class_names, class_counts, strict=True)},
        device_accuracy=device_accuracy,
        device_counts=device_counts,
        group_accuracy=group_accuracy,
        group_counts=group_counts,
        confusion_matrix=confusion,
        model_name=model_name,
        split=None if split is None else str(split),
        class_log_loss=class_log_loss,
        device_log_loss=device_log_loss,
        class_device_log_loss=class_device_log_loss,
    )


# === Text ===


def _percent(value):
    return "    -" if value is None else f"{100 * value:6.2f}"


def _loss(value):
    return "     -" if value is None else f"{value:6.3f}"


def format_result(result):
    """Render an :class:`EvaluationResult` as text: headline metrics, per class, per device
    and group, and the confusion matrix (rows true class, columns predicted)."""
    title = f"Model: {result.model_name or '?'}"
    if result.split is not None:
        title += f"   split: {result.split}"
    title += f"   clips: {result.num_clips:,}"
    lines = [
        title,
        f"macro class-wise accuracy: {100 * result.macro_accuracy:6.2f} %   (DCASE primary metric)",
        f"overall accuracy:          {100 * result.accuracy:6.2f} %",
        f"log loss:                  {result.log_loss:8.4f}",
        "",
    ]
    lines += format_table(
        ("class", "clips", "accuracy %", "log loss"),
        [
            (
                name,
                result.class_counts[name],
                _percent(result.class_accuracy[name]),
                _loss(result.class_log_loss.get(name)),
            )
            for name in result.class_names
        ],
    )
    if result.device_accuracy:
        lines.append("")
        rows = [
            (
                f"device {d}",
                result.device_counts[d],
                _percent(result.device_accuracy[d]),
                _loss(result.device_log_loss.get(d)),
            )
            for d in result.device_accuracy
        ]
        rows += [
            (
                f"{g} ({', '.join(DEVICE_GROUPS[g])})",
                result.group_counts[g],
                _percent(result.group_accuracy[g]),
                "",
            )
            for g in result.group_accuracy
        ]
        lines += format_table(("device / group", "clips", "accuracy %", "log loss"), rows)
    if result.class_device_log_loss:
        devices = list(result.device_accuracy)
        lines.append("")
        lines.append("log loss per class (rows) and device (columns)")
        lines += format_table(
            ("class", *devices),
            [
                (name, *(_loss(result.class_device_log_loss.get(name, {}).get(d)) for d in devices))
                for name in result.class_names
            ],
        )
    lines.append("")
    lines.append("confusion matrix (rows: true class, columns: predicted; column k = class k)")
    confusion = np.asarray(result.confusion_matrix)
    width = max(len(str(int(confusion.max()))), len(str(len(result.class_names) - 1)))
    label_width = max(len(name) for name in result.class_names) + 5
    lines.append(
        " " * label_width + " ".join(str(k).rjust(width) for k in range(len(result.class_names)))
    )
    for index, name in enumerate(result.class_names):
        lines.append(
            f"{index:>2}  {name}".ljust(label_width)
            + " ".join(str(int(v)).rjust(width) for v in confusion[index])
        )
    return "\n".join(lines)


def format_comparison(results):
    """Render several results side by side: macro and overall accuracy, log loss and the
    device groups, one row per model.

    Args:
        results: a dict name -> :class:`EvaluationResult`, or a list of results (named by
            their ``model_name``).
    """
    if not isinstance(results, dict):
        results = {r.model_name or f"model {i}": r for i, r in enumerate(results)}
    groups = [g for g in DEVICE_GROUPS if any(g in r.group_accuracy for r in results.values())]
    header = ("model", "macro acc %", "accuracy %", "log loss", *(f"{g} %" for g in groups))
    rows = [
        (
            name,
            _percent(r.macro_accuracy),
            _percent(r.accuracy),
            f"{r.log_loss:.4f}",
            *(_percent(r.group_accuracy.get(g)) for g in groups),
        )
        for name, r in results.items()
    ]
    return "\n".join(format_table(header, rows))


# === Models ===


class _KerasPredictor:
    """``predict(waveforms) -> logits`` for a Keras model, one batch per call."""

    def __init__(self, model):
        self.model = model
        self.name = model.name
        shape = tuple(model.input_shape) if hasattr(model, "input_shape") else ()
        if len(shape) != 2:
            raise ValueError(
                f"Model {model.name!r} must take (batch, num_samples) waveforms (a classifier "
                f"with its own front-end, not a backbone). Received input shape: {shape}"
            )
        self.num_samples = shape[1] or DEFAULT_NUM_SAMPLES
        self._batch_size = 0

    def predict(self, waveforms):
        waveforms = np.asarray(waveforms, dtype=np.float32)
        count = len(waveforms)
        # Compiled predict functions (TensorFlow graphs, JAX jit) are traced once per batch
        # shape, which costs seconds; padding smaller batches to the largest size seen so far
        # (a last partial batch, a short file) keeps it to one trace per growth.
        self._batch_size = max(count, self._batch_size)
        if count < self._batch_size:
            padding = np.zeros((self._batch_size - count, *waveforms.shape[1:]), np.float32)
            waveforms = np.concatenate([waveforms, padding])
        return np.asarray(self.model.predict_on_batch(waveforms))[:count]


def read_run_config(run_dir):
    """The ``run_config.json`` of a run directory as a dict, or ``None`` when it has none
    (``RunDir(run_dir).read_config()``; a corrupt file raises a ``ValueError`` naming it)."""
    config = RunDir(run_dir).read_config()
    return None if config is None else config.data


def run_model_name(run_dir):
    """The model (preset) name a run directory records in ``run_config.json``, else ``None``."""
    config = RunDir(run_dir).read_config()
    return None if config is None else config.model


def resolve_model_path(path):
    """Map a run directory to the ``model.keras`` inside it; check that a model file exists.

    Returns:
        ``(model_path, run_dir)``; ``run_dir`` is ``None`` unless ``path`` is a folder.
    """
    path = expand_path(path)
    if os.path.isdir(path):
        model_path = os.path.join(path, FINAL_MODEL)
        if not os.path.isfile(model_path):
            raise FileNotFoundError(
                f"{path!r} is a folder without {FINAL_MODEL}: expected a run directory "
                f"written by `keras-asc train` or `keras-asc ensemble`."
            )
        return model_path, path
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No model at {path!r}: expected a run directory, a .keras or a .tflite file."
        )
    if not path.endswith((".keras", ".tflite")):
        raise ValueError(
            f"Cannot load a model from {path!r}: accepted are a run directory (with "
            f"{FINAL_MODEL}), a .keras file or a .tflite file."
        )
    return path, None


def load_predictor(model_or_path):
    """Turn a model or a path into an object with ``predict(waveforms) -> logits``.

    Args:
        model_or_path: a Keras model taking (batch, samples) waveforms; a run directory (its
            ``model.keras`` is loaded); a ``.keras`` file; a ``.tflite`` file (loaded with
            ``keras_asc.quantization.TFLiteClassifier``); or any object with a
            ``predict(waveforms) -> logits`` method, used as it is.

    Returns:
        An object with ``predict``, ``name`` and ``num_samples`` attributes.
    """
    if isinstance(model_or_path, keras.Model):
        return _KerasPredictor(model_or_path)
    if isinstance(model_or_path, (str, os.PathLike)):
        model_path, run_dir = resolve_model_path(model_or_path)
        if model_path.endswith(".tflite"):
            try:
                # TensorFlow-only (TFLite): loaded for .tflite files alone.
                from keras_asc.quantization import TFLiteClassifier
            except ImportError as error:
                raise ImportError(
                    f"Evaluating {model_path!r} needs keras_asc.quantization.TFLiteClassifier, "
                    f"which this installation does not provide ({error})."
                ) from error
            return TFLiteClassifier(model_path)
        predictor = _KerasPredictor(load_model(model_path))
        if run_dir is not None:
            predictor.name = run_model_name(run_dir) or predictor.name
        return predictor
    if callable(getattr(model_or_path, "predict", None)):
        return model_or_path
    raise TypeError(
        "model_or_path must be a Keras model, a run directory, a .keras or .tflite path, or an "
        f"object with a predict(waveforms) -> logits method. Received: {model_or_path!r}"
    )


def load_or_build_model(name_or_path):
    """A Keras model from a saved run or file, else built from the registry by name.

    Args:
        name_or_path: an existing run directory or ``.keras`` file (loaded with
            :func:`~keras_asc.training.saving.load_model`), otherwise a registered model
            or ensemble name (``keras_asc.build``).

    Raises:
        FileNotFoundError: a folder without ``model.keras``.
        ValueError: a path that is not a ``.keras`` model, or an unknown name.
    """
    if os.path.exists(expand_path(name_or_path)):
        model_path, _ = resolve_model_path(name_or_path)
        if not model_path.endswith(".keras"):
            raise ValueError(f"summary reads Keras models; {model_path!r} is not a .keras file.")
        return load_model(model_path)
    return registry.build(name_or_path)


def predictor_num_samples(predictor):
    """The waveform length a predictor takes (``num_samples``, else its ``input_shape``)."""
    num_samples = getattr(predictor, "num_samples", None)
    if num_samples is None:
        shape = getattr(predictor, "input_shape", None)
        if shape is not None and len(shape) == 2 and shape[1]:
            num_samples = shape[1]
    return int(num_samples or DEFAULT_NUM_SAMPLES)


def predict_logits(predictor, waveforms):
    """Call ``predictor.predict`` and check that it returned (batch, classes) logits."""
    logits = np.asarray(predictor.predict(waveforms))
    if logits.ndim != 2 or logits.shape[0] != len(waveforms):
        raise ValueError(
            f"{getattr(predictor, 'name', type(predictor).__name__)}.predict returned shape "
            f"{logits.shape} for {len(waveforms)} waveforms; expected (batch, classes) logits."
        )
    return logits


def evaluate(
    model_or_path,
    data_dir,
    split="test",
    *,
    batch_size=64,
    cache_dir=None,
    class_names=SCENE_LABELS,
    verbose=True,
    on_error="raise",
):
    """Run a model over a TAU22 split and compute every DCASE metric.

    Args:
        model_or_path: anything :func:`load_predictor` accepts: a Keras model, a run
            directory, a ``.keras``/``.tflite`` file, or an object with ``predict``.
        data_dir: TAU22-layout dataset root (``audio/`` and the split files), or a
            :class:`~keras_asc.data.tau22.Split` (then ``split`` is not used).
        split: ``"test"`` (default) or a training split (5, 10, 25, 50, 100).
        batch_size: clips per prediction batch.
        cache_dir: optional folder for the pipeline's decoded-audio cache.
        class_names: one name per logit column.
        verbose: print a progress line per 10 % of the batches.
        on_error: ``"raise"`` (default): a missing or undecodable clip stops with an error
            naming the file; ``"skip"``: such clips are left out of the metrics, and a line
            says how many and which.

    Returns:
        An :class:`EvaluationResult` (``model_name`` and ``split`` filled in).

    Example:
        >>> result = evaluate("runs/cp_resnet59", "/data/tau22")
        >>> print(f"{100 * result.macro_accuracy:.2f} %")
    """
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(
            f"batch_size must be a positive integer. Received: batch_size={batch_size}"
        )
    predictor = load_predictor(model_or_path)
    # tf.data: TensorFlow loads with the first pipeline, not with keras_asc.training.
    from keras_asc.data.pipeline import decode_failure, make_dataset

    data = make_dataset(
        data_dir,
        None if isinstance(data_dir, Split) else split,
        batch_size=int(batch_size),
        training=False,
        shuffle=False,
        cache_dir=cache_dir,
        include_device=True,
        on_error=on_error,
    )
    dataset = data.dataset
    total = int(dataset.cardinality())
    logits, labels, devices = [], [], []
    batches = dataset.as_numpy_iterator()
    step = -1
    while True:
        try:
            waveforms, batch_labels, batch_devices = next(batches)
        except StopIteration:
            break
        except Exception as error:
            # tf.data reports an unreadable clip in many lines; re-raise the one-line error.
            failure = decode_failure(error)
            if failure is None:
                raise
            raise failure from None
        step += 1
        logits.append(predict_logits(predictor, waveforms))
        batch_labels = np.asarray(batch_labels)
        if batch_labels.ndim == 2:
            # One-hot (or mixed) label rows: the scored class is the largest entry.
            batch_labels = batch_labels.argmax(axis=1)
        labels.append(batch_labels.astype(np.int64))
        devices.extend(np.asarray(batch_devices).reshape(-1).tolist())
        if verbose and total > 0 and ((step + 1) * 10 // total > step * 10 // total):
            print(f"evaluate: {step + 1}/{total} batches", flush=True)
    if not logits:
        raise ValueError(f"{data.split.title} of {data.split.root!r} yielded no clips.")
    skipped = data.skipped
    if len(skipped):
        print(f"keras-asc evaluate: {skipped.summary()}", flush=True)
    return evaluate_predictions(
        np.concatenate(logits),
        np.concatenate(labels),
        devices,
        class_names,
        model_name=getattr(predictor, "name", None),
        split=data.split.name,
    )


def default_out_dir(model, split):
    """``<run dir>/eval-<split>``, or ``<folder of the model file>/eval-<split>``."""
    model = expand_path(model)
    folder = model if os.path.isdir(model) else os.path.dirname(os.path.abspath(model))
    return os.path.join(folder, f"eval-{split}")


def report_result(result, out_dir, plots=True, command="evaluate"):
    """Print a result's table, save it in ``out_dir`` and print what was written.

    Args:
        result: an :class:`EvaluationResult`.
        out_dir: folder for ``metrics.json``, ``metrics.txt`` and the PNG plots.
        plots: write the PNG plots (skipped, with a note, when matplotlib is missing).
        command: the ``keras-asc`` command named in that note.

    Returns:
        The written paths.
    """
    print(result.format())
    written = result.save(out_dir, plots=plots)
    if plots and not plots_module.matplotlib_available():
        print(
            f"keras-asc {command}: matplotlib is not installed, PNG plots skipped "
            "(pip install 'keras-asc[plot]')"
        )
    for path in written:
        print(f"wrote {path}")
    return written


def evaluate_and_report(
    model,
    data_dir,
    split="test",
    *,
    out_dir=None,
    batch_size=64,
    cache_dir=None,
    plots=True,
    on_error="raise",
):
    """:func:`evaluate`, then :func:`report_result`: what ``keras-asc evaluate`` does.

    Args:
        model: a run directory, ``.keras`` or ``.tflite`` file (anything :func:`evaluate`
            takes).
        data_dir: TAU22-layout dataset root.
        split: the split to evaluate.
        out_dir: folder for the metrics and plots (default :func:`default_out_dir`: eval-<split>
            inside the run directory, or beside the model file).
        batch_size: clips per prediction batch.
        cache_dir: optional folder for the decoded-audio cache.
        plots: write PNG plots.
        on_error: ``"raise"`` or ``"skip"`` unreadable clips (see :func:`evaluate`).

    Returns:
        The :class:`EvaluationResult`.
    """
    result = evaluate(
        model,
        data_dir,
        split=split,
        batch_size=batch_size,
        cache_dir=cache_dir,
        on_error=on_error,
    )
    report_result(result, out_dir or default_out_dir(model, split), plots=plots)
    return result


__all__ = [
    "EvaluationResult",
    "default_out_dir",
    "evaluate",
    "evaluate_and_report",
    "evaluate_predictions",
    "format_comparison",
    "format_result",
    "load_or_build_model",
    "load_predictor",
    "log_loss",
    "report_result",
    "softmax",
]
