"""Write a DCASE 2024 Task 1 submission: one system output file per training split and the
system meta information file.

DCASE 2024 Task 1 asks for five systems, one trained on each training split (5, 10, 25, 50
and 100 % of the development training set), run over the evaluation set. For a submission
label ``Lastname_INST_task1_1`` the package holds:

- ``Lastname_INST_task1_1.output.split_5.csv`` ... ``.output.split_100.csv``: one per split,
  tab-separated, a header ``filename  scene_label  airport  bus  ...  tram`` (the ten scene
  classes in alphabetical order), then one row per evaluation file: its name, the most
  probable scene and the probability of every class;
- ``Lastname_INST_task1_1.meta.yaml``: who submits (``submission``: label, name,
  abbreviation, authors), what the system is (``system``: description, complexity, external
  data, source code) and how it scored on the development-test split (``results``: per
  split, the accuracy and log loss overall, per class and per device).

:func:`write_submission` runs every split's system over a folder of evaluation WAVs in one
pass (each file is decoded once and classified by all five systems) and fills the meta
information with what keras-asc knows: parameters and MACs (``keras_asc.complexity``), the
parameter memory at the deployed precision (the int8 export's parameter bytes, or 4 bytes per
parameter for a float model), the RAM an int8 model needs on a microcontroller when its
export measured it (``tflite_micro.arena_bytes`` in ``NAME.json``), and the development-test
metrics, read from the ``eval-test/metrics.json`` that ``keras-asc evaluate`` wrote, or
computed now when ``data_dir`` is given. The rest (authors, institution, a description of
the data augmentation, ...) comes from the ``info`` mapping (``keras-asc submit --info
info.yaml``); fields nobody filled stay empty (``null``) and are listed by
:func:`empty_fields`.

Metrics in the meta information: ``accuracy`` is the macro class-wise accuracy overall (the
DCASE ranking metric) and the class or device accuracy elsewhere, in percent as in the DCASE
result tables; ``logloss`` is the mean cross-entropy of the predicted probabilities.

No library writes this format (it is specific to the challenge); the YAML itself is written
with PyYAML.

Example:
    >>> systems = {5: "runs/s5", 10: "runs/s10", 25: "runs/s25", 50: "runs/s50",
    ...            100: "runs/s100/int8/moflenet57.tflite"}
    >>> info = {"submission": {"label": "Doe_ACME_task1_1", "name": "MofleNet57 int8"}}
    >>> result = write_submission(systems, "/data/eval/audio", "submission", info=info)
    >>> result.paths
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import re

import numpy as np

from keras_asc.data.audio import AudioDecodeError, load_audio
from keras_asc.data.resampling import resampler_of
from keras_asc.data.tau22 import DEVICES, SCENE_LABELS, SPLIT_PERCENTAGES, normalize_split
from keras_asc.files import FINAL_MODEL, METRICS_JSON, atomic_path, write_text_atomic
from keras_asc.training.evaluation import (
    EvaluationResult,
    default_out_dir,
    evaluate,
    load_predictor,
    predict_logits,
    predictor_num_samples,
    read_run_config,
    softmax,
)
from keras_asc.training.inference import SAMPLING_RATE, split_windows

TASK = "task1"
# [Last name]_[institute abbreviation]_task1_[submission index 1-4].
LABEL_PATTERN = re.compile(r"^[^_\s./\\]+_[^_\s./\\]+_task1_[1-4]$")
MAX_ABBREVIATION = 10
OUTPUT_HEADER = ("filename", "scene_label", *SCENE_LABELS)
# Bytes per parameter of a float model as it is deployed (float32).
FLOAT_BYTES = 4
# Digits of the probabilities in the output files (the log loss is computed from them).
PROBABILITY_FORMAT = ".8g"


def output_filename(label, split):
    """``<label>.output.split_<split>.csv``, the output file of one training split."""
    return f"{label}.output.split_{normalize_split(split)}.csv"


def meta_filename(label):
    """``<label>.meta.yaml``, the meta information file."""
    return f"{label}.meta.yaml"


def check_label(label):
    """Return ``label`` when it has the form ``Lastname_INST_task1_N`` (N in 1-4), else raise
    ``ValueError`` saying what is expected."""
    if not isinstance(label, str) or not LABEL_PATTERN.match(label):
        raise ValueError(
            f"Submission label {label!r} must read [last name]_[institute abbreviation]_task1_"
            "[1-4], for example Doe_ACME_task1_1 (no other underscores, spaces or slashes)."
        )
    return label


# === Inputs ===


def read_info(path):
    """Read the user's submission information YAML (``--info``) as a dict.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not YAML, or not a mapping at the top.
    """
    import yaml

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Submission information file not found: {path!r}.")
    try:
        with open(path, encoding="utf-8") as handle:
            info = yaml.safe_load(handle)
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        reason = " ".join(str(error).split())
        raise ValueError(f"{path}: not valid YAML ({reason}).") from None
    if info is None:
        return {}
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a YAML mapping, received {type(info).__name__}.")
    return info


def normalize_systems(systems):
    """Map each training split to its system; refuse missing, repeated or unknown splits.

    Args:
        systems: a mapping split -> system (a run directory, a ``.keras`` or ``.tflite`` path,
            or a model/predictor object); splits in any spelling ``normalize_split`` accepts.

    Returns:
        A dict ``{5: ..., 10: ..., 25: ..., 50: ..., 100: ...}``.
    """
    normalized = {}
    for split, system in dict(systems).items():
        key = normalize_split(split)
        if key == "test":
            raise ValueError("A submission has systems for the training splits, not 'test'.")
        if key in normalized:
            raise ValueError(f"Split {key} is given twice.")
        normalized[key] = system
    missing = [s for s in SPLIT_PERCENTAGES if s not in normalized]
    if missing:
        raise ValueError(
            f"A DCASE 2024 Task 1 submission needs a system for every training split "
            f"{list(SPLIT_PERCENTAGES)}; missing: {missing}."
        )
    return {split: normalized[split] for split in SPLIT_PERCENTAGES}


def list_evaluation_files(eval_dir):
    """The WAV files to classify: those directly in ``eval_dir``, else in ``eval_dir/audio``.

    Returns:
        ``(paths, names)``: absolute paths and the names written in the output files (relative
        to ``eval_dir``, ``/``-separated), in numeric order when every file stem is a number
        (the DCASE evaluation set names its files ``0.wav`` ... ``135729.wav``), else
        alphabetically.
    """
    eval_dir = os.fspath(eval_dir)
    if not os.path.isdir(eval_dir):
        raise NotADirectoryError(f"Evaluation folder not found: {eval_dir!r}.")
    for folder, prefix in ((eval_dir, ""), (os.path.join(eval_dir, "audio"), "audio/")):
        if not os.path.isdir(folder):
            continue
        names = [
            entry.name
            for entry in os.scandir(folder)
            if entry.name.lower().endswith(".wav") and not entry.name.startswith(".")
        ]
        if names:
            numeric = all(os.path.splitext(n)[0].isdigit() for n in names)
            names.sort(key=(lambda n: int(os.path.splitext(n)[0])) if numeric else None)
            return [os.path.join(folder, n) for n in names], [prefix + n for n in names]
    raise ValueError(f"No .wav files in {eval_dir!r} or in its audio/ folder.")


# === Complexity ===


@dataclasses.dataclass(frozen=True)
class SystemComplexity:
    """The complexity figures of one system, as the meta information reports them.

    Args:
        precision: ``"int8"`` or ``"float32"``, the deployed precision.
        total_parameters: parameters (for an int8 export, those in the ``.tflite`` file:
            batch normalisation folded into the convolution biases).
        total_parameters_non_zero: parameters that are not exactly zero (``None`` when
            unknown).
        total_model_size: parameter memory in bytes at the deployed precision.
        macs: multiply-accumulate operations for one 1-s clip (``None`` when the float model
            is not found).
        memory_use: RAM in bytes the model needs on a microcontroller (the TFLite Micro
            tensor arena), ``None`` when not measured.
        subsystems: ensemble members (1 for a single model).
    """

    precision: str | None
    total_parameters: int | None
    total_parameters_non_zero: int | None
    total_model_size: int | None
    macs: int | None
    memory_use: int | None
    subsystems: int = 1

    def to_meta(self):
        return {
            "total_model_size": self.total_model_size,
            "total_parameters": self.total_parameters,
            "total_parameters_non_zero": self.total_parameters_non_zero,
            "memory_use": self.memory_use,
            "macs": self.macs,
        }


def _keras_model(predictor):
    import keras

    model = getattr(predictor, "model", None)
    return model if isinstance(model, keras.Model) else None


def _run_of_export(path):
    """The run folder of an int8 export: ``RUN`` for ``RUN/int8/NAME.tflite`` (``keras-asc
    quantize``), ``CELL/run`` for ``CELL/int8/NAME.tflite`` (``keras-asc reproduce``); ``None``
    when neither holds a ``model.keras``."""
    from keras_asc.training.reproduce import CELL_RUN_DIR

    above = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    for folder in (above, os.path.join(above, CELL_RUN_DIR)):
        if os.path.isfile(os.path.join(folder, FINAL_MODEL)):
            return folder
    return None


def _float_model_of_export(path, description):
    """The float Keras model an int8 export came from: the model of its run folder (see
    :func:`_run_of_export`), or the ensemble member of that run the file holds, else the
    registered model of that name; ``None`` if neither."""
    from keras_asc import registry
    from keras_asc.training.saving import load_model

    name = description.get("model")
    run = None if path is None else _run_of_export(path)
    if run is not None:
        model = load_model(os.path.join(run, FINAL_MODEL))
        # RUN/int8/MEMBER.tflite: the file of one member of an ensemble run.
        members = {member.name: member for member in getattr(model, "members", None) or ()}
        if model.name != name and name in members:
            return members[name]
        return model
    if not isinstance(name, str):
        return None
    try:
        return registry.build(name)
    except (ValueError, KeyError):  # not a registered name (a custom or renamed model)
        return None


def _nonzero_parameters(path, expected, frontend_in_file=False):
    """Parameters of a ``.tflite`` file that are not zero, read from its constant tensors;
    ``None`` when they cannot all be matched to the tensors the parameter count found."""
    from keras_asc.quantization.export import make_interpreter, parameter_bytes

    # The front-end's constants of a file with the front-end inside are not parameters.
    counted = parameter_bytes(path, skip_frontend=frontend_in_file)
    wanted = {t.name: t.size for t in counted.tensors if t.role != "structure"}
    interpreter = make_interpreter(model_path=path)
    interpreter.allocate_tensors()
    total, seen = 0, 0
    for detail in interpreter.get_tensor_details():
        if wanted.pop(detail["name"], None) is None:
            continue
        try:
            values = interpreter.get_tensor(detail["index"])
        except ValueError:  # not readable in this runtime
            return None
        total += int(np.count_nonzero(values))
        seen += int(np.size(values))
    return total if not wanted and seen == expected else None


def system_complexity(predictor, path=None):
    """Complexity figures of a loaded system (see :class:`SystemComplexity`).

    Args:
        predictor: what ``load_predictor`` returned for the system.
        path: the system's path when it was given as one (finds an int8 export's float run).
    """
    from keras_asc import complexity

    description = getattr(predictor, "description", None)
    if isinstance(description, dict) and "parameter_bytes" in description:
        counted = description["parameter_bytes"]
        parameters = sum(
            int(counted.get(key, 0)) for key in ("int8_weights", "int32_biases", "float_parameters")
        )
        micro = description.get("tflite_micro")
        arena = micro.get("arena_bytes") if isinstance(micro, dict) else None
        float_model = _float_model_of_export(path, description)
        macs = complexity.profile(float_model).macs if float_model is not None else None
        return SystemComplexity(
            precision="int8",
            total_parameters=parameters,
            total_parameters_non_zero=(
                _nonzero_parameters(
                    predictor.path, parameters, bool(description.get("frontend_in_file", False))
                )
                if isinstance(getattr(predictor, "path", None), str)
                else None
            ),
            total_model_size=int(counted["total"]),
            macs=macs,
            memory_use=int(arena) if isinstance(arena, int) else None,
            subsystems=max(1, len(description.get("members") or [])),
        )
    model = _keras_model(predictor)
    if model is None:
        return SystemComplexity(None, None, None, None, None, None)
    counted = complexity.profile(model)
    zeros = sum(int(np.size(w) - np.count_nonzero(np.asarray(w))) for w in model.trainable_weights)
    members = len(getattr(model, "members", None) or ()) or 1
    return SystemComplexity(
        precision="float32",
        total_parameters=counted.params,
        total_parameters_non_zero=counted.params - zeros,
        total_model_size=counted.params * FLOAT_BYTES,
        macs=counted.macs,
        memory_use=None,
        subsystems=members,
    )


# === Development-test results ===


def _check_trained_on(split, system):
    """Refuse a run directory (or an export inside one) whose run_config names another split."""
    if not isinstance(system, (str, os.PathLike)):
        return
    path = os.path.abspath(os.fspath(system))
    if os.path.isdir(path):
        folder = path
    elif path.endswith(".tflite"):  # RUN/int8/NAME.tflite or CELL/int8/NAME.tflite
        folder = _run_of_export(path) or os.path.dirname(os.path.dirname(path))
    else:  # RUN/model.keras
        folder = os.path.dirname(path)
    config = read_run_config(folder) if os.path.isdir(folder) else None
    if config and "split" in config:
        try:
            trained = normalize_split(config["split"])
        except ValueError:
            return
        if trained != split:
            raise ValueError(
                f"{os.fspath(system)} was trained on split {trained} (its run_config.json) but "
                f"is given as the system of split {split}."
            )


def development_result(system, predictor, data_dir=None, *, batch_size=64, on_error="raise"):
    """The development-test evaluation of one system.

    With ``data_dir``, the system is evaluated on its ``test`` split now. Without it, the
    ``metrics.json`` that ``keras-asc evaluate SYSTEM --data DIR`` wrote is read
    (``eval-test/`` in the run directory, or beside a model file), and it must be the
    evaluation of this model on the test split.
    """
    if data_dir is not None:
        return evaluate(
            predictor, data_dir, "test", batch_size=batch_size, verbose=False, on_error=on_error
        )
    if not isinstance(system, (str, os.PathLike)):
        raise ValueError(
            f"No development-test metrics for {getattr(predictor, 'name', system)!r}: give the "
            "dataset (data_dir / --data) to evaluate it."
        )
    path = os.path.join(default_out_dir(os.fspath(system), "test"), METRICS_JSON)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No development-test evaluation of {os.fspath(system)}: {path} does not exist. "
            f"Run `keras-asc evaluate {os.fspath(system)} --data DIR` first, or pass --data DIR."
        )
    result = EvaluationResult.load(path)
    name = getattr(predictor, "name", None)
    if result.split != "test" or (name is not None and result.model_name != name):
        raise ValueError(
            f"{path} holds the evaluation of {result.model_name!r} on split {result.split!r}, "
            f"not of {name!r} on 'test'. Re-run `keras-asc evaluate {os.fspath(system)} --data "
            "DIR`, or pass --data DIR."
        )
    if not result.device_log_loss or not result.class_log_loss:
        raise ValueError(
            f"{path} has no per-device log loss (written by an older keras-asc). Re-run "
            f"`keras-asc evaluate {os.fspath(system)} --data DIR`, or pass --data DIR."
        )
    return result


def _rounded_percent(value):
    return None if value is None else round(100.0 * float(value), 2)


def _rounded_loss(value):
    return None if value is None else round(float(value), 4)


def results_block(result):
    """The meta information of one split's development-test evaluation: overall, class-wise
    and device-wise accuracy (percent) and log loss."""
    return {
        "overall": {
            "accuracy": _rounded_percent(result.macro_accuracy),
            "logloss": _rounded_loss(result.log_loss),
        },
        "class_wise": {
            name: {
                "accuracy": _rounded_percent(result.class_accuracy.get(name)),
                "logloss": _rounded_loss(result.class_log_loss.get(name)),
            }
            for name in SCENE_LABELS
        },
        "device_wise": {
            device: {
                "accuracy": _rounded_percent(result.device_accuracy.get(device)),
                "logloss": _rounded_loss(result.device_log_loss.get(device)),
            }
            for device in DEVICES
        },
    }


# === Meta information ===


def _merge(base, update):
    """``base`` with ``update`` merged in, recursively for mappings; ``update`` wins."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _combined_complexity(complexities):
    """One complexity block for the five systems: the largest figure of each (every system
    must meet the limits), with the figures per split when they differ."""
    blocks = {split: c.to_meta() for split, c in complexities.items()}
    first = next(iter(blocks.values()))
    combined = {}
    for key in first:
        values = [b[key] for b in blocks.values()]
        known = [v for v in values if v is not None]
        combined[key] = max(known) if len(known) == len(values) else None
    if any(b != first for b in blocks.values()):
        combined["split_wise"] = {f"split_{s}": b for s, b in blocks.items()}
    return combined


def build_meta(info, complexities, results):
    """Assemble the meta information dict.

    Args:
        info: the user's mapping (``submission`` and ``system`` blocks); it wins over every
            generated value except ``results``, which it may not hold.
        complexities: split -> :class:`SystemComplexity`.
        results: split -> development-test :class:`EvaluationResult`.
    """
    info = dict(info or {})
    if "results" in info:
        raise ValueError(
            "The submission information must not hold 'results': keras-asc computes them from "
            "the development-test evaluation."
        )
    precisions = sorted({c.precision for c in complexities.values() if c.precision})
    subsystems = max(c.subsystems for c in complexities.values())
    generated = {
        "submission": {"label": None, "name": None, "abbreviation": None, "authors": []},
        "system": {
            "description": {
                "input_sampling_rate": "32kHz",
                "acoustic_features": "log-mel energies",
                "embeddings": None,
                "data_augmentation": None,
                "machine_learning_method": "CNN",
                "ensemble_method_subsystem_count": subsystems,
                "decision_making": "weighted logit average" if subsystems > 1 else None,
                "external_data_usage": None,
                "complexity_management": "int8 quantization" if "int8" in precisions else None,
                "pipeline": None,
                "framework": "keras-asc (Keras 3)",
            },
            "complexity": {
                **_combined_complexity(complexities),
                "precision": "/".join(precisions) or None,
            },
            "external_datasets": [],
            "source_code": None,
        },
    }
    meta = _merge(generated, info)
    meta["results"] = {
        "development_dataset": {
            f"split_{split}": results_block(result) for split, result in results.items()
        }
    }
    submission = meta["submission"]
    check_label(submission.get("label"))
    if submission.get("name") is None:
        submission["name"] = submission["label"]
    abbreviation = submission.get("abbreviation")
    if abbreviation is not None and len(str(abbreviation)) > MAX_ABBREVIATION:
        raise ValueError(
            f"submission.abbreviation {abbreviation!r} is longer than {MAX_ABBREVIATION} "
            "characters."
        )
    return meta


def empty_fields(meta):
    """Dotted names of the ``submission`` and ``system`` fields still ``null`` or empty."""
    empty = []

    def walk(value, name):
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{name}.{key}")
        elif value is None or value == [] or value == "":
            empty.append(name)

    for block in ("submission", "system"):
        walk(meta.get(block, {}), block)
    return empty


# === Writing ===


@dataclasses.dataclass(frozen=True)
class SubmissionResult:
    """What :func:`write_submission` wrote.

    Args:
        paths: the five output files (split order), then the meta information file.
        meta: the meta information as written.
        num_files: evaluation files classified (rows per output file).
        skipped: ``(file, reason)`` for files left out with ``on_error="skip"``.
        results: split -> development-test :class:`EvaluationResult`.
    """

    paths: tuple
    meta: dict
    num_files: int
    skipped: tuple = ()
    results: dict = dataclasses.field(default_factory=dict)


def _load_systems(systems):
    """Load each distinct system once; split -> predictor."""
    loaded, by_key = {}, {}
    for split, system in systems.items():
        key = (
            os.path.abspath(os.fspath(system))
            if isinstance(system, (str, os.PathLike))
            else id(system)
        )
        if key not in by_key:
            by_key[key] = load_predictor(system)
        loaded[split] = by_key[key]
    return loaded


def _format_row(name, probabilities):
    scene = SCENE_LABELS[int(np.argmax(probabilities))]
    values = "\t".join(format(float(p), PROBABILITY_FORMAT) for p in probabilities)
    return f"{name}\t{scene}\t{values}\n"


def _read_batch(paths, names, on_error, skipped, resamplers):
    """``({resampler: waveforms}, kept names)``: each file resampled as each system's
    front-end records (one decode per resampler in use, usually one)."""
    waveforms, kept = {resampler: [] for resampler in resamplers}, []
    for path, name in zip(paths, names, strict=True):
        try:
            loaded = {
                resampler: load_audio(
                    path, sampling_rate=SAMPLING_RATE, mono=True, resampler=resampler
                )
                for resampler in resamplers
            }
        except (AudioDecodeError, FileNotFoundError, OSError) as error:
            if on_error == "raise":
                raise
            skipped.append((name, " ".join(str(error).split())))
            continue
        for resampler, waveform in loaded.items():
            waveforms[resampler].append(waveform)
        kept.append(name)
    return waveforms, kept


def _batch_probabilities(predictor, waveforms, windows_cache):
    """Mean softmax probabilities of ``predictor`` over each waveform's 1-s windows."""
    length = predictor_num_samples(predictor)
    if length not in windows_cache:
        parts = [split_windows(w, length) for w in waveforms]
        windows_cache[length] = (np.concatenate(parts), [len(p) for p in parts])
    windows, counts = windows_cache[length]
    probabilities = softmax(predict_logits(predictor, windows))
    if probabilities.shape[1] != len(SCENE_LABELS):
        raise ValueError(
            f"{getattr(predictor, 'name', predictor)} returns {probabilities.shape[1]} scores "
            f"per clip; a DCASE submission needs the {len(SCENE_LABELS)} scene classes."
        )
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.add.reduceat(probabilities, starts, axis=0) / np.asarray(counts)[:, None]


def write_submission(
    systems,
    eval_dir,
    out_dir,
    *,
    info=None,
    data_dir=None,
    batch_size=64,
    on_error="raise",
    verbose=True,
):
    """Write the five system output files and the meta information of a DCASE 2024 Task 1
    submission into ``out_dir``.

    Args:
        systems: split -> system, for all five training splits (5, 10, 25, 50, 100): a run
            directory (with ``model.keras``; an ensemble folder too), a ``.keras`` file, an
            int8 ``.tflite`` export (its ``NAME.json`` and ``NAME.frontend.npz`` beside it),
            or a model/predictor object. One system may serve several splits.
        eval_dir: folder of the evaluation WAVs (or a folder whose ``audio/`` holds them).
        out_dir: folder for the files (created when absent). Each file is written atomically
            (the outputs only when every evaluation file is classified), so an interrupted
            run leaves the folder as it was; re-running overwrites the files.
        info: the submission information: a mapping with a ``submission`` block (``label``
            required, ``name``, ``abbreviation``, ``authors``: a list of mappings with
            ``lastname``, ``firstname``, ``email``, ``affiliation``, ``corresponding``) and
            optionally ``system`` values (``description``, ``external_datasets``,
            ``source_code``, or complexity figures to replace the computed ones).
        data_dir: a TAU22-layout development set; when given, every system is evaluated on
            its test split for the ``results``; else each system's saved ``eval-test``
            evaluation is read.
        batch_size: evaluation files classified per batch.
        on_error: ``"raise"`` (default): an evaluation file that cannot be read stops with an
            error naming it; ``"skip"``: it is left out of the outputs and reported (a
            submission must then be completed by hand).
        verbose: print progress.

    Returns:
        A :class:`SubmissionResult`.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip'. Received: on_error={on_error!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(
            f"batch_size must be a positive integer. Received: batch_size={batch_size}"
        )
    systems = normalize_systems(systems)
    label = check_label(((info or {}).get("submission") or {}).get("label"))
    paths, names = list_evaluation_files(eval_dir)
    for split, system in systems.items():
        _check_trained_on(split, system)
    predictors = _load_systems(systems)
    # Each system hears the files through the resampler its front-end records.
    resamplers = {split: resampler_of(predictors[split]) for split in systems}
    # A system given for several splits is evaluated and profiled once.
    results, complexities, done = {}, {}, {}
    for split, system in systems.items():
        predictor = predictors[split]
        if id(predictor) not in done:
            path = system if isinstance(system, (str, os.PathLike)) else None
            done[id(predictor)] = (
                development_result(
                    system, predictor, data_dir, batch_size=batch_size, on_error=on_error
                ),
                system_complexity(predictor, path),
            )
        results[split], complexities[split] = done[id(predictor)]
    meta = build_meta(info, complexities, results)

    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    output_paths = [os.path.join(out_dir, output_filename(label, split)) for split in systems]
    skipped, written = [], 0
    total = (len(paths) + batch_size - 1) // batch_size
    with contextlib.ExitStack() as stack:
        handles = []
        for path in output_paths:
            temporary = stack.enter_context(atomic_path(path))
            handle = stack.enter_context(open(temporary, "w", encoding="utf-8", newline=""))
            handle.write("\t".join(OUTPUT_HEADER) + "\n")
            handles.append(handle)
        for step, start in enumerate(range(0, len(paths), batch_size)):
            waveforms, kept = _read_batch(
                paths[start : start + batch_size],
                names[start : start + batch_size],
                on_error,
                skipped,
                sorted(set(resamplers.values())),
            )
            if not kept:
                continue
            windows_cache, by_predictor = {}, {}
            for handle, split in zip(handles, systems, strict=True):
                predictor = predictors[split]
                if id(predictor) not in by_predictor:
                    by_predictor[id(predictor)] = _batch_probabilities(
                        predictor,
                        waveforms[resamplers[split]],
                        windows_cache.setdefault(resamplers[split], {}),
                    )
                handle.writelines(
                    _format_row(name, row)
                    for name, row in zip(kept, by_predictor[id(predictor)], strict=True)
                )
            written += len(kept)
            if verbose and (step + 1) * 10 // total > step * 10 // total:
                print(f"submit: {step + 1}/{total} batches", flush=True)
        if not written:
            raise ValueError(f"None of the {len(paths)} evaluation files could be read.")
    import yaml

    meta_path = os.path.join(out_dir, meta_filename(label))
    write_text_atomic(meta_path, yaml.safe_dump(meta, sort_keys=False, allow_unicode=True))
    return SubmissionResult(
        paths=(*output_paths, meta_path),
        meta=meta,
        num_files=written,
        skipped=tuple(skipped),
        results=results,
    )


__all__ = [
    "OUTPUT_HEADER",
    "SubmissionResult",
    "SystemComplexity",
    "build_meta",
    "check_label",
    "development_result",
    "empty_fields",
    "list_evaluation_files",
    "meta_filename",
    "normalize_systems",
    "output_filename",
    "read_info",
    "results_block",
    "system_complexity",
    "write_submission",
]
