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

:func:`write_submission` first checks, for every split, that the system's records show it
used only that split's clips (:mod:`keras_asc.training.submission_provenance`: the float run,
the quantisation data and the teachers) and that the submission information names every field
only the user can know (:data:`USER_FIELDS`; all missing ones in one error). It then runs
every split's system over a folder of evaluation WAVs in one pass (each file is decoded once
and classified by all five systems), writes the files into ``OUT/task1/<label>/`` (the zip's
layout) and checks them against the challenge's rules
(:mod:`keras_asc.training.submission_check`).

What keras-asc fills in: the sampling rate, features, framework and complexity management of
``system.description``; the parameters and MACs (``keras_asc.complexity``: the DCASE counting
rule on the float architecture, the figures ``keras-asc summary`` prints, also for an int8
export); the parameter memory at the deployed precision (1 byte per parameter at int8, 4 at
float32); the RAM an int8 model needs on a microcontroller when its export measured it
(``memory_use``, from ``tflite_micro.arena_bytes`` in ``NAME.json``); and the
development-test metrics, read from the ``eval-test/metrics.json`` that ``keras-asc
evaluate`` wrote, or computed now when ``data_dir`` is given.

Metrics in the meta information: ``accuracy`` is the macro class-wise accuracy overall (the
DCASE ranking metric) and the class or device accuracy elsewhere, in percent as in the DCASE
result tables; ``logloss`` is the mean cross-entropy of the predicted probabilities.

No library writes this format (it is specific to the challenge); the YAML itself is written
with PyYAML.

Example:
    >>> systems = {5: "runs/s5", 10: "runs/s10", 25: "runs/s25", 50: "runs/s50",
    ...            100: "runs/s100/int8/moflenet57.tflite"}
    >>> info = read_info("info.yaml")  # submission and system.description fields
    >>> result = write_submission(systems, "/data/eval", "submission", info=info)
    >>> result.paths[-1], result.problems
    ('.../submission/task1/Doe_ACME_task1_1/Doe_ACME_task1_1.meta.yaml', ())
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
    softmax,
)
from keras_asc.training.inference import SAMPLING_RATE, split_windows
from keras_asc.training.submission_check import (
    AUTHOR_FIELDS,
    EXTERNAL_DATASET_FIELDS,
    MAX_ABBREVIATION,
    OUTPUT_HEADER,
    TASK,
)

# [Last name]_[institute abbreviation]_task1_[submission index 1-4], also a file name.
LABEL_PATTERN = re.compile(r"^[^_\s./\\]+_[^_\s./\\]+_task1_[1-4]$")
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


def expected_evaluation_files(eval_dir):
    """The WAV file names of an evaluation folder (or of its ``audio/``): what the rows of a
    package made from it must list (``keras-asc submit --check PACKAGE EVAL_DIR``)."""
    _, names = list_evaluation_files(eval_dir)
    return {name.rsplit("/", 1)[-1] for name in names}


# === Complexity ===


@dataclasses.dataclass(frozen=True)
class SystemComplexity:
    """The complexity figures of one system, as the meta information reports them.

    Args:
        precision: ``"int8"`` or ``"float32"``, the deployed precision.
        total_parameters: parameters under the DCASE 2024 counting rule, from the float
            architecture (``keras_asc.complexity``, the figure ``keras-asc summary`` prints):
            every trainable parameter, batch normalisation as 2 per channel, GRN scalars
            included, moving statistics excluded. Splits of one architecture get one figure.
        total_model_size: parameter memory in bytes at the deployed precision
            (``total_parameters`` x 1 byte at int8, x 4 bytes at float32).
        macs: multiply-accumulate operations for one 1-s clip.
        memory_use: RAM in bytes the model needs on a microcontroller (the TFLite Micro
            tensor arena), ``None`` when not measured.
        subsystems: ensemble members (1 for a single model).
        quantization: ``"qat"`` or ``"ptq"`` for an int8 export, else ``None``.
    """

    precision: str
    total_parameters: int
    total_model_size: int
    macs: int
    memory_use: int | None = None
    subsystems: int = 1
    quantization: str | None = None

    def to_meta(self):
        return {
            "total_model_size": self.total_model_size,
            "total_parameters": self.total_parameters,
            "macs": self.macs,
            "memory_use": self.memory_use,
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


def system_complexity(predictor, path=None):
    """Complexity figures of a loaded system (see :class:`SystemComplexity`).

    The parameters are always counted on the float architecture. An int8 ``.tflite`` file
    holds fewer constants (each batch normalisation is folded into the convolution before it,
    its 2 parameters per channel becoming 1 bias per channel, and the converter shares equal
    constant buffers), so a count read from the file would differ from ``keras-asc summary``
    and could differ between two trainings of one architecture.

    Args:
        predictor: what ``load_predictor`` returned for the system.
        path: the system's path when it was given as one (finds an int8 export's float run).
    """
    from keras_asc import complexity

    description = getattr(predictor, "description", None)
    if isinstance(description, dict) and "parameter_bytes" in description:
        float_model = _float_model_of_export(path, description)
        if float_model is None:
            raise ValueError(
                f"{path or getattr(predictor, 'name', predictor)}: the float model of this int8 "
                "file is not found (expected RUN/int8/NAME.tflite beside RUN/model.keras), so "
                "its parameters and MACs cannot be counted."
            )
        counted = complexity.profile(float_model)
        micro = description.get("tflite_micro")
        arena = micro.get("arena_bytes") if isinstance(micro, dict) else None
        return SystemComplexity(
            precision="int8",
            total_parameters=counted.params,
            total_model_size=counted.param_bytes(bits=8),
            macs=counted.macs,
            memory_use=int(arena) if isinstance(arena, int) else None,
            subsystems=max(1, len(description.get("members") or [])),
            quantization=description.get("quantization"),
        )
    model = _keras_model(predictor)
    if model is None:
        raise ValueError(
            f"{path or getattr(predictor, 'name', predictor)}: not a Keras model or an int8 "
            "export, so its parameters and MACs cannot be counted."
        )
    counted = complexity.profile(model)
    return SystemComplexity(
        precision="float32",
        total_parameters=counted.params,
        total_model_size=counted.param_bytes(bits=8 * FLOAT_BYTES),
        macs=counted.macs,
        subsystems=len(getattr(model, "members", None) or ()) or 1,
    )


# === Development-test results ===


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


# Fields of the meta information only the user can know: they must be in the information
# file (or given by --label, --name, --abbreviation). The others keras-asc fills in.
USER_FIELDS = (
    "submission.label",
    "submission.name",
    "submission.abbreviation",
    "submission.authors",
    "system.description.data_augmentation",
    "system.description.external_data_usage",
    "system.description.pipeline",
    "system.description.split_adaptations",
    "system.description.system_adaptations",
    "system.source_code",
)


def _lookup(mapping, dotted):
    value = mapping
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def missing_information(info):
    """The fields the submission information still lacks, as dotted names (``[]``: none).

    Besides :data:`USER_FIELDS`: each author's ``lastname``, ``firstname``, ``email`` and
    ``affiliation``; exactly one author marked ``corresponding: true`` when there are several
    (a sole author is marked automatically); ``name``, ``url`` and ``total_audio_length`` of
    each ``system.external_datasets`` entry.
    """
    info = info or {}
    missing = []
    for field in USER_FIELDS:
        value = _lookup(info, field)
        if value is None or (isinstance(value, (str, list)) and not value):
            missing.append(field)
    authors = _lookup(info, "submission.authors")
    if isinstance(authors, list):
        for index, author in enumerate(authors):
            author = author if isinstance(author, dict) else {}
            missing += [
                f"submission.authors[{index}].{key}"
                for key in AUTHOR_FIELDS
                if author.get(key) in (None, "")
            ]
        corresponding = sum(isinstance(a, dict) and a.get("corresponding") is True for a in authors)
        if len(authors) > 1 and corresponding != 1:
            missing.append("submission.authors: exactly one with corresponding: true")
    datasets = _lookup(info, "system.external_datasets") or []
    for index, dataset in enumerate(datasets if isinstance(datasets, list) else [{}]):
        dataset = dataset if isinstance(dataset, dict) else {}
        missing += [
            f"system.external_datasets[{index}].{key}"
            for key in EXTERNAL_DATASET_FIELDS
            if dataset.get(key) in (None, "")
        ]
    return missing


def check_information(info):
    """Refuse submission information that lacks a field only the user can know, naming every
    missing field in one line; check the label and the abbreviation's length."""
    missing = missing_information(info)
    if missing:
        raise ValueError(
            f"The submission information lacks {len(missing)} required field(s): "
            f"{', '.join(missing)}. Give them in the information file (--info INFO.yaml)."
        )
    submission = info["submission"]
    check_label(submission["label"])
    if len(str(submission["abbreviation"])) > MAX_ABBREVIATION:
        raise ValueError(
            f"submission.abbreviation {submission['abbreviation']!r} is longer than "
            f"{MAX_ABBREVIATION} characters."
        )
    if "results" in info:
        raise ValueError(
            "The submission information must not hold 'results': keras-asc computes them from "
            "the development-test evaluation."
        )


def _complexity_management(complexities):
    methods = {
        "qat": "int8 quantisation-aware training",
        "ptq": "int8 post-training quantisation",
    }
    used = sorted(
        {
            methods.get(c.quantization, "int8 quantisation")
            for c in complexities.values()
            if c.precision == "int8"
        }
    )
    if len(used) < len(complexities) and any(c.precision != "int8" for c in complexities.values()):
        used.append("float32 parameters")
    return ", ".join(used)


def build_meta(info, complexities, results):
    """Assemble the meta information dict.

    Args:
        info: the user's mapping (see :func:`missing_information` for what it must hold); its
            values win over every generated one except ``results``, which it may not hold.
        complexities: split -> :class:`SystemComplexity`.
        results: split -> development-test :class:`EvaluationResult`.
    """
    info = copy.deepcopy(dict(info or {}))
    check_information(info)
    authors = info["submission"]["authors"]
    if len(authors) == 1 and isinstance(authors[0], dict):
        authors[0].setdefault("corresponding", True)
    precisions = sorted({c.precision for c in complexities.values()})
    subsystems = max(c.subsystems for c in complexities.values())
    generated = {
        "submission": {},
        "system": {
            "description": {
                "input_sampling_rate": f"{SAMPLING_RATE // 1000}kHz",
                "acoustic_features": "log-mel energies",
                "data_augmentation": None,
                "machine_learning_method": "CNN" if subsystems == 1 else "CNN ensemble",
                "external_data_usage": None,
                "complexity_management": _complexity_management(complexities),
                "pipeline": None,
                "framework": "keras-asc (Keras 3)"
                + (", TensorFlow Lite int8" if "int8" in precisions else ""),
                "split_adaptations": None,
                "system_adaptations": None,
            },
            "complexity": {
                **_combined_complexity(complexities),
                "precision": "/".join(precisions),
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
    return meta


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
        problems: what the check of the written folder against the challenge's rules found
            (the rows held against the evaluation folder's files), one line each; empty when
            it passes.
    """

    paths: tuple
    meta: dict
    num_files: int
    skipped: tuple = ()
    results: dict = dataclasses.field(default_factory=dict)
    problems: tuple = ()


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


def _batch_probabilities(predictor, waveforms, windows_cache, names):
    """Mean softmax probabilities of ``predictor`` over each waveform's 1-s windows."""
    length = predictor_num_samples(predictor)
    if length not in windows_cache:
        parts = [split_windows(w, length) for w in waveforms]
        windows_cache[length] = (np.concatenate(parts), [len(p) for p in parts])
    windows, counts = windows_cache[length]
    clips = [name for name, count in zip(names, counts, strict=True) for _ in range(count)]
    probabilities = softmax(predict_logits(predictor, windows, clips))
    if probabilities.shape[1] != len(SCENE_LABELS):
        raise ValueError(
            f"{getattr(predictor, 'name', predictor)} returns {probabilities.shape[1]} scores "
            f"per clip; a DCASE submission needs the {len(SCENE_LABELS)} scene classes."
        )
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.add.reduceat(probabilities, starts, axis=0) / np.asarray(counts)[:, None]


def submission_folder(out_dir, label):
    """Where the files go: ``out_dir/task1/<label>``, the layout of the submission zip, or
    ``out_dir`` itself when it already ends in ``task1/<label>``."""
    out_dir = os.path.abspath(os.path.expandvars(os.path.expanduser(os.fspath(out_dir))))
    if os.path.basename(out_dir) == label and os.path.basename(os.path.dirname(out_dir)) == TASK:
        return out_dir
    return os.path.join(out_dir, TASK, label)


def write_submission(
    systems,
    eval_dir,
    out_dir,
    *,
    info=None,
    data_dir=None,
    batch_size=64,
    on_error="raise",
    check_splits=True,
    verbose=True,
):
    """Write the five system output files and the meta information of a DCASE 2024 Task 1
    submission into ``out_dir/task1/<label>/`` (the layout of the submission zip), then check
    the folder against the challenge's rules (:mod:`keras_asc.training.submission_check`).

    Args:
        systems: split -> system, for all five training splits (5, 10, 25, 50, 100): a run
            directory (with ``model.keras``; an ensemble folder too), its ``model.keras``, or
            an int8 ``.tflite`` export inside a run (``RUN/int8/NAME.tflite``, its
            ``NAME.json`` and ``NAME.frontend.npz`` beside it). One system may serve several
            splits only if its records allow it (they cannot: each split's system may use
            only that split's clips).
        eval_dir: folder of the evaluation WAVs (or a folder whose ``audio/`` holds them).
        out_dir: folder for the package: the files go to ``out_dir/task1/<label>/`` (or to
            ``out_dir`` when it already ends in ``task1/<label>``), created when absent. Each
            file is written atomically (the outputs only when every evaluation file is
            classified), so an interrupted run leaves the folder as it was; re-running
            overwrites the files.
        info: the submission information (``keras-asc submit --info INFO.yaml``): every field
            of :data:`USER_FIELDS`, e.g. ``{"submission": {"label": "Doe_ACME_task1_1",
            "name": ..., "abbreviation": ..., "authors": [{"lastname": ..., "firstname":
            ..., "email": ..., "affiliation": ...}]}, "system": {"description":
            {"data_augmentation": ..., "external_data_usage": ..., "pipeline": ...,
            "split_adaptations": ..., "system_adaptations": ...}, "source_code": ...}}``,
            optionally ``system.external_datasets`` and values that replace generated ones.
            All missing fields are named in one error before anything runs.
        data_dir: a TAU22-layout development set; when given, every system is evaluated on
            its test split for the ``results``; else each system's saved ``eval-test``
            evaluation is read.
        batch_size: evaluation files classified per batch.
        on_error: ``"raise"`` (default): an evaluation file that cannot be read stops with an
            error naming it; ``"skip"``: it is left out of the outputs and reported (a
            submission must then be completed by hand).
        check_splits: refuse a system unless its records show that its float training, its
            quantisation data and its teachers all used its split
            (:mod:`keras_asc.training.submission_provenance`). ``False`` is only for stand-in
            models (a model object, a bare ``.keras`` file) in examples and rehearsals; such a
            package breaks the challenge's rules.
        verbose: print progress.

    Returns:
        A :class:`SubmissionResult`.
    """
    from keras_asc.training.submission_check import check_package
    from keras_asc.training.submission_provenance import check_system_split

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip'. Received: on_error={on_error!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(
            f"batch_size must be a positive integer. Received: batch_size={batch_size}"
        )
    systems = normalize_systems(systems)
    check_information(info)
    label = info["submission"]["label"]
    paths, names = list_evaluation_files(eval_dir)
    if check_splits:
        for split, system in systems.items():
            check_system_split(split, system)
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

    folder = submission_folder(out_dir, label)
    os.makedirs(folder, exist_ok=True)
    output_paths = [os.path.join(folder, output_filename(label, split)) for split in systems]
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
                        kept,
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

    meta_path = os.path.join(folder, meta_filename(label))
    write_text_atomic(meta_path, yaml.safe_dump(meta, sort_keys=False, allow_unicode=True))
    expected = {name.rsplit("/", 1)[-1] for name in names}  # as expected_evaluation_files
    return SubmissionResult(
        paths=(*output_paths, meta_path),
        meta=meta,
        num_files=written,
        skipped=tuple(skipped),
        results=results,
        problems=tuple(check_package(folder, expected_files=expected)),
    )


__all__ = [
    "OUTPUT_HEADER",
    "SubmissionResult",
    "SystemComplexity",
    "build_meta",
    "check_label",
    "development_result",
    "expected_evaluation_files",
    "check_information",
    "missing_information",
    "list_evaluation_files",
    "meta_filename",
    "normalize_systems",
    "output_filename",
    "read_info",
    "results_block",
    "system_complexity",
    "write_submission",
]
