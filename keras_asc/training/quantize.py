"""Quantise a trained run: QAT fine-tuning (or post-training calibration) and int8 export.

``quantize_run`` is what ``keras-asc quantize RUN_DIR --data DIR`` does, as a library
function: load the run's float model, fine-tune it with quantisation-aware training (or, with
``ptq=True``, calibrate it), export the int8 TFLite file of the model and, for an ensemble, of
every member, and optionally evaluate the float models and the int8 files side by side.

The fine-tuning or calibration data is the run's own split (recorded in its
``run_config.json``); another split is refused, since a system trained on a DCASE 2024 subset
may use only that subset's clips. Every ``NAME.json`` records the split and its fingerprint.

Example:
    >>> from keras_asc.training import quantize_run
    >>> result = quantize_run("runs/moflenet57", "/data/tau22", evaluate_split="test")
    >>> print(result.summary())
    >>> print(result.evaluation_report())
"""

import dataclasses
import inspect
import itertools
import json
import os

import keras

from keras_asc import registry
from keras_asc.data.pipeline import make_dataset
from keras_asc.data.tau22 import Split, expand_path, normalize_split, split_title
from keras_asc.files import FINAL_MODEL, INT8_DIR, write_text_atomic
from keras_asc.quantization.export import export_int8
from keras_asc.quantization.interpreter import TFLiteClassifier, prediction_agreement
from keras_asc.quantization.qat import member_models, quantize_aware_train
from keras_asc.quantization.twin import to_tf_keras
from keras_asc.training.callbacks import progress_verbosity
from keras_asc.training.evaluation import evaluate, format_comparison
from keras_asc.training.recipes import QAT_RECIPE, RECIPES
from keras_asc.training.rundir import RunDir
from keras_asc.training.saving import load_model


def resolve_run(path):
    """``(model_path, default_out_dir)`` for a run directory or a ``.keras`` file.

    Example:
        >>> resolve_run("runs/moflenet57")
        ('runs/moflenet57/model.keras', 'runs/moflenet57/int8')
    """
    path = expand_path(path)
    if os.path.isdir(path):
        model_path = os.path.join(path, FINAL_MODEL)
        if not os.path.isfile(model_path):
            raise FileNotFoundError(
                f"{path!r} has no model.keras: expected a run directory written by "
                f"`keras-asc train` or `keras-asc ensemble`, or a .keras file."
            )
        return model_path, os.path.join(path, INT8_DIR)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No run directory or .keras file at {path!r}.")
    if not path.endswith(".keras"):
        raise ValueError(f"Expected a run directory or a .keras file. Received: {path!r}")
    return path, os.path.join(os.path.dirname(os.path.abspath(path)), INT8_DIR)


def load_float_model(model_path):
    """Load a trained ``.keras`` model for quantisation (without its training state).

    Example:
        >>> model = load_float_model("runs/moflenet57/model.keras")
    """
    # load_model registers the classes saved runs reference (plugins, the training schedule
    # of compiled runs). The optimizer state is not needed: QAT compiles its own.
    return load_model(model_path, compile=False)


@dataclasses.dataclass(frozen=True)
class QuantizeRunResult:
    """What ``quantize_run`` produced.

    Attributes:
        model: the float Keras 3 model of the run.
        exports: ``(tf_keras model exported, ExportResult)`` pairs: the model or ensemble
            first, then each ensemble member.
        quantization: ``"qat"`` or ``"ptq"``.
        evaluations: with an evaluation split, the ``EvaluationResult`` of the float model
            (and its members), then of every int8 file, in ``exports`` order; else empty.
        agreements: with an evaluation split, ``(int8 file name, agreement, clips)`` per
            export: the fraction of clips on which the int8 file predicts the class of the
            model it was exported from.
    """

    model: object
    exports: tuple
    quantization: str
    evaluations: tuple = ()
    agreements: tuple = ()

    def summary(self):
        """The table of files with their parameter and file bytes and TFLite Micro arena,
        then the files written."""
        lines = [
            f"{'file':<40} {'parameter bytes':>16} {'file bytes':>11} {'TFLM arena':>11}  "
            f"quantisation"
        ]
        for _, result in self.exports:
            lines.append(
                f"{os.path.basename(result.path):<40} {result.parameters.total:>16,} "
                f"{result.file_bytes:>11,} {_arena_text(result.tflite_micro):>11}  "
                f"{result.quantization}"
            )
        for _, result in self.exports:
            lines.append(
                f"wrote {result.path} (+ {os.path.basename(result.json_path)}, "
                f"{os.path.basename(result.frontend_path)})"
            )
        return "\n".join(lines)

    def evaluation_report(self):
        """The float and int8 results side by side, then each file's agreement ('' if none)."""
        if not self.evaluations:
            return ""
        reference = "float" if self.quantization == "ptq" else "QAT"
        lines = [format_comparison(list(self.evaluations))]
        for name, agreement, clips in self.agreements:
            lines.append(
                f"{name}: same class as the {reference} model on {100 * agreement:.2f} % "
                f"of {clips} clips"
            )
        return "\n".join(lines)


def _arena_text(entry):
    """The arena column: bytes, or '-' when TFLite Micro did not run the file."""
    return f"{entry['arena_bytes']:,}" if entry and entry.get("arena_bytes") else "-"


def recipe_spectrogram_augmentations(run, model, seed=0):
    """The spectrogram-stage augmentation layers the run was trained with, for QAT.

    Saved models hold no training-only layers, so QAT fine-tuning rebuilds them: from the
    ``augmentations`` recorded in the run's ``run_config.json`` when there is one (a list of
    layers), otherwise from the recipe of the model, or of each ensemble member (a dict of
    lists by member name). Names without a recipe get none.

    Example:
        >>> layers = recipe_spectrogram_augmentations("runs/moflenet57", model)
        >>> [type(layer).__name__ for layer in layers]
        ['FreqMixStyle']
    """
    path = expand_path(run)
    config = RunDir(path).read_config() if os.path.isdir(path) else None
    if config is not None and config.augmentations is not None:
        return _spectrogram_layers(config.augmentations, seed)
    members = getattr(model, "members", None)
    if members is None:
        return _spectrogram_layers(_recipe_augmentations(model.name), seed)
    return {
        member.name: _spectrogram_layers(_recipe_augmentations(member.name), seed)
        for member in members
    }


def _recipe_augmentations(name):
    if name not in RECIPES:
        return []
    return [
        {
            "name": augmentation,
            "stage": registry.get_augmentation(augmentation).stage,
            "config": dict(config),
        }
        for augmentation, config in RECIPES[name].augmentations
    ]


def _spectrogram_layers(described, seed):
    layers = []
    for offset, entry in enumerate(described):
        if entry.get("stage") != "spectrogram":
            continue
        augmentation = registry.get_augmentation(entry["name"]).augmentation
        config = dict(entry.get("config") or {})
        if "seed" in inspect.signature(augmentation).parameters:
            config.setdefault("seed", seed + offset)
        layers.append(augmentation(**config))
    return layers


def _check_positive(name, value):
    if value is not None and (int(value) != value or value < 1):
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value}")


def _run_config(run):
    """The :class:`RunConfig` of the run a path belongs to (a run folder, or a ``.keras`` file
    inside one), else ``None``."""
    path = expand_path(run)
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    return RunDir(folder).read_config()


def quantization_split(run, data_dir, split=None):
    """The :class:`~keras_asc.data.tau22.Split` a run is fine-tuned or calibrated on: its own.

    Args:
        run: a run directory, an ensemble folder or a ``.keras`` file (inside one or not).
        data_dir: the dataset folder.
        split: ``None`` (the run's split), or a split, which must be the run's own; required
            for a ``.keras`` file outside a run folder, which records no split.

    Raises:
        ValueError: one line naming both splits when ``split`` is not the run's, or when the
            split's clips differ from those the run recorded; a bare ``.keras`` file without
            ``split``.
    """
    config = _run_config(run)
    trained = None if config is None else config.split
    if trained is None:
        if split is None:
            raise ValueError(
                f"{os.fspath(run)!r} records no training split (no run_config.json with one): "
                "give the split it was trained on (--split)."
            )
        return Split.load(data_dir, split)
    if split is not None and normalize_split(split) != trained:
        raise ValueError(
            f"{os.fspath(run)!r} was trained on {split_title(trained)}, but --split asks for "
            f"{split_title(normalize_split(split))}: DCASE 2024 Task 1 allows a system only the "
            f"clips of its training split; leave --split out to use {split_title(trained)}."
        )
    resolved = Split.load(data_dir, trained)
    recorded = config.split_fingerprint
    if recorded is not None and recorded != resolved.fingerprint:
        raise ValueError(
            f"{os.fspath(run)!r} was trained on {split_title(trained)} with clip fingerprint "
            f"{recorded[:12]}, but {resolved.source} now gives {resolved.fingerprint[:12]}: "
            "the split file changed; use the split files the run was trained with."
        )
    return resolved


def _record_split(export, split, ptq):
    """Add the split the file was fine-tuned or calibrated on to its ``NAME.json``."""
    with open(export.json_path, encoding="utf-8") as handle:
        description = json.load(handle)
    description["split"] = split.name
    description["split_fingerprint"] = split.fingerprint
    description["split_use"] = "post-training calibration" if ptq else "QAT fine-tuning"
    write_text_atomic(export.json_path, json.dumps(description, indent=2) + "\n")


def _say(message):
    print(f"keras-asc quantize: {message}", flush=True)


def quantize_run(
    run,
    data_dir,
    *,
    split=None,
    epochs=QAT_RECIPE.epochs,
    learning_rate=QAT_RECIPE.peak_learning_rate,
    batch_size=QAT_RECIPE.batch_size,
    steps_per_epoch=None,
    ptq=False,
    calibration_clips=256,
    int8_io=False,
    low_arena=False,
    micro=None,
    out_dir=None,
    seed=0,
    cache_dir=None,
    evaluate_split=None,
    verbose=1,
    frontend_in_file=False,
):
    """Quantise a trained run and export its int8 TFLite files.

    QAT (the default) fine-tunes the float model with ``quantize_aware_train`` and the report's
    recipe (``keras_asc.training.QAT_RECIPE``: 24 epochs, peak learning rate 5e-5 decaying
    linearly to 10 % by epoch 16) on the training split; ``ptq=True`` calibrates the float model on ``calibration_clips`` clips of
    it instead. An ensemble is exported as one file and one file per member, each beside its
    ``.json`` and ``.frontend.npz``.

    Args:
        run: a run directory (with ``model.keras``) or a ``.keras`` file.
        data_dir: TAU22-layout dataset folder.
        split: ``None`` (default): the split the run was trained on, from its
            ``run_config.json``; another split is refused (see :func:`quantization_split`).
            Required for a ``.keras`` file outside a run folder.
        epochs: QAT epochs.
        learning_rate: peak QAT learning rate.
        batch_size: clips per batch.
        steps_per_epoch: QAT batches per epoch (``None``: the whole split).
        ptq: post-training quantisation only (calibration, no QAT; any Keras backend).
        calibration_clips: clips for post-training calibration.
        int8_io: int8 input spectrograms and int8 output logits (``export_int8``).
        low_arena: a smaller TFLite Micro tensor arena, same logits (``export_int8``).
        micro: record each file's TFLite Micro tensor arena in its ``.json``
            (``export_int8``; ``None``: except with ``frontend_in_file``, whose RFFT2D
            TFLite Micro cannot run).
        out_dir: output folder (default: ``int8`` inside the run directory).
        seed: seed of the data order.
        cache_dir: cache decoded audio here (reused by later runs).
        evaluate_split: afterwards, evaluate the float model and every int8 file on this
            split (e.g. ``"test"``); see ``evaluate_exports``.
        verbose: Keras progress output of the QAT fine-tuning (0, 1 or 2; ``None``: a bar
            on a terminal, one line per epoch otherwise); with 0 no progress lines either.
        frontend_in_file: put the float32 log-mel front-end into every ``.tflite`` file,
            which then takes waveforms (``export_int8(frontend_in_file=True)``).

    Returns:
        ``QuantizeRunResult``.

    Raises:
        FileNotFoundError: no run directory or ``.keras`` file at ``run``.
        ValueError: ``int8_io`` with ``frontend_in_file``, ``frontend_in_file`` for a
            model that takes spectrograms, or a split that is not the run's (checked before
            any training).
        BudgetExceededError: an int8 file would exceed 128,000 parameter bytes.

    Example:
        >>> result = quantize_run("runs/moflenet57", "/data/tau22", ptq=True)
        >>> print(result.summary())
    """
    for name, value in (
        ("epochs", epochs),
        ("batch_size", batch_size),
        ("steps_per_epoch", steps_per_epoch),
        ("calibration_clips", calibration_clips),
    ):
        _check_positive(name, value)
    if int8_io and frontend_in_file:
        raise ValueError(
            "int8_io and frontend_in_file cannot be combined: a file with the front-end "
            "inside takes float32 waveforms."
        )
    if not ptq and keras.backend.backend() != "tensorflow":
        raise ValueError(
            "quantisation-aware training needs KERAS_BACKEND=tensorflow (received "
            f"{keras.backend.backend()!r}); ptq=True works on any backend."
        )
    model_path, default_out = resolve_run(run)
    out_dir = expand_path(out_dir) or default_out
    verbose = progress_verbosity(verbose)
    cache_dir = expand_path(cache_dir)
    say = _say if verbose else lambda message: None
    say(f"loading {model_path}")
    model = load_float_model(model_path)
    if frontend_in_file and len(model.inputs[0].shape) != 2:
        raise ValueError(
            f"{model_path}: frontend_in_file needs a model that takes waveforms (batch, "
            f"samples); {model.name!r} takes spectrograms {tuple(model.inputs[0].shape)}."
        )
    split = quantization_split(run, data_dir, split)
    say(f"{'calibration' if ptq else 'QAT fine-tuning'} on {split.title} of {split.root}")

    if ptq:
        say(f"calibration data: {calibration_clips} clips of {split.title}")
        calibration = make_dataset(
            split,
            batch_size=batch_size,
            training=False,
            shuffle=True,
            seed=seed,
            cache_dir=cache_dir,
        )
        batches = -(-calibration_clips // batch_size)
        calibration = [
            waveforms
            for waveforms, *_ in itertools.islice(calibration.dataset.as_numpy_iterator(), batches)
        ]
        quantized = to_tf_keras(model)
    else:
        train_dataset = make_dataset(
            split,
            batch_size=batch_size,
            training=True,
            seed=seed,
            cache_dir=cache_dir,
        )
        say(
            f"QAT preparation of {model.name} (quantisation-aware copy, activation ranges "
            f"calibrated on {split.title}), then {epochs} epoch(s) of fine-tuning"
        )
        quantized = quantize_aware_train(
            model,
            train_dataset.dataset,
            epochs=epochs,
            peak_learning_rate=learning_rate,
            decay_epochs=QAT_RECIPE.decay_epochs,
            final_factor=QAT_RECIPE.final_factor,
            steps_per_epoch=steps_per_epoch,
            spectrogram_augmentations=recipe_spectrogram_augmentations(run, model, seed),
            verbose=verbose,
        )
        calibration = None
    members = member_models(quantized)
    targets = [quantized] + (members if len(members) > 1 else [])
    exports = []
    for target in targets:
        path = os.path.join(out_dir, f"{target.name}.tflite")
        say(
            f"converting {target.name} to int8 TFLite"
            + (" (with calibration)" if ptq else "")
            + (
                ", then the TFLite Micro check"
                if micro or (micro is None and not frontend_in_file)
                else ""
            )
        )
        result = export_int8(
            target,
            calibration,
            path,
            qat=not ptq,
            max_calibration_samples=calibration_clips,
            frontend_in_file=frontend_in_file,
            int8_io=int8_io,
            low_arena=low_arena,
            micro=micro,
        )
        _record_split(result, split, ptq)
        exports.append((target, result))
    result = QuantizeRunResult(model, tuple(exports), "ptq" if ptq else "qat")
    if evaluate_split is not None:
        result = evaluate_exports(result, data_dir, evaluate_split, cache_dir=cache_dir)
    return result


def evaluate_exports(result, data_dir, split="test", *, cache_dir=None):
    """Evaluate the float model and every int8 file of a ``quantize_run`` on a split.

    Each int8 file is also compared clip by clip with the tf_keras model it was exported
    from (the QAT model, or the float twin after post-training quantisation).

    Args:
        result: the ``QuantizeRunResult`` to evaluate.
        data_dir: TAU22-layout dataset folder.
        split: the split to evaluate on (e.g. ``"test"``).
        cache_dir: cache decoded audio here.

    Returns:
        A copy of ``result`` with ``evaluations`` and ``agreements`` filled in.

    Example:
        >>> print(evaluate_exports(result, "/data/tau22", "test").evaluation_report())
    """
    split = Split.load(data_dir, split)
    cache_dir = expand_path(cache_dir)
    floats = [result.model, *getattr(result.model, "members", [])]
    classifiers = [TFLiteClassifier(export.path) for _, export in result.exports]
    evaluations = [
        evaluate(predictor, split, cache_dir=cache_dir, verbose=False)
        for predictor in floats + classifiers
    ]
    dataset = make_dataset(split, batch_size=64, training=False, cache_dir=cache_dir).dataset
    agreements = []
    for (target, _), classifier in zip(result.exports, classifiers, strict=True):
        agreement, clips = prediction_agreement(classifier, target, dataset.as_numpy_iterator())
        agreements.append((classifier.name, agreement, clips))
    return dataclasses.replace(result, evaluations=tuple(evaluations), agreements=tuple(agreements))
