"""Which training split every part of a submitted system saw, from what its files record.

DCASE 2024 Task 1 allows the system of a training split (5, 10, 25, 50 or 100 %) to use only
that split's clips: the float training, the quantisation-aware fine-tuning or post-training
calibration, and the teachers of a distilled student. :func:`check_system_split` follows a
system back through its records and refuses it, with one line, when any part used another
split or when the split of a part is not recorded:

- a run folder (or its ``model.keras``): the ``split`` of its ``run_config.json``, and for a
  distilled run each teacher (recursively: a teacher can be an ensemble or itself distilled);
- an ensemble folder: every member's source run;
- an int8 export ``RUN/int8/NAME.tflite``: the split its ``NAME.json`` records for the
  fine-tuning or calibration data, then the float run ``RUN``; an export in a
  ``keras-asc reproduce`` cell (``CELL/int8/``) takes the split from the cell's record, since
  reproduce quantises every cell on its own split, and its float run is ``CELL/run``.

A model object or a ``.keras`` file outside a run folder records no split and is refused.

:func:`recorded_split` and :func:`recorded_fingerprint` are the one place that reads a split
from these records, and a run's configuration is read through :class:`~keras_asc.training.rundir.RunDir`.
Where a record holds the fingerprint of the split's clip list, every part must agree on it
too: the same split name over another copy of the data is refused.
"""

from __future__ import annotations

import json
import os

from keras_asc.data.tau22 import normalize_split
from keras_asc.files import FINAL_MODEL, RUN_CONFIG
from keras_asc.training.rundir import RunDir

# `keras-asc reproduce` cells: CELL/run/ (the float run), CELL/int8/, CELL/evaluation.json.
_CELL_RUN_DIR = "run"
_CELL_RECORD = "evaluation.json"


class ProvenanceError(ValueError):
    """A system used clips outside its split, or the split of one of its parts is unknown."""


def recorded_split(record):
    """The split a record names: ``run_config.json``, ``NAME.json`` or a reproduce cell's
    record. Accepts ``"split": 25`` (or ``"split25"``) and ``"split": {"name": 25,
    "fingerprint": ...}``; returns the normalised split, or ``None`` when none is recorded."""
    if not isinstance(record, dict):
        return None
    value = record.get("split")
    if isinstance(value, dict):
        value = value.get("name", value.get("split"))
    if value is None:
        return None
    try:
        return normalize_split(value)
    except ValueError:
        return None


def recorded_fingerprint(record):
    """The fingerprint of the split's clip list a record names (``"split_fingerprint"``, or
    ``"fingerprint"`` inside a ``"split"`` mapping), else ``None``."""
    if not isinstance(record, dict):
        return None
    value = record.get("split")
    if isinstance(value, dict) and isinstance(value.get("fingerprint"), str):
        return value["fingerprint"]
    fingerprint = record.get("split_fingerprint")
    return fingerprint if isinstance(fingerprint, str) else None


def _run_config(folder):
    """The ``run_config.json`` of a run or ensemble folder as a dict (``None``: none), read by
    :class:`~keras_asc.training.rundir.RunDir`, whose errors name the file."""
    config = RunDir(folder).read_config()
    return None if config is None else config.data


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = " ".join(str(error).split())
        raise ProvenanceError(f"{path}: cannot be read ({reason}).") from None


def _split_text(split):
    return "the test split" if split == "test" else f"split {split}"


def _run_facts(folder, what, seen):
    """Facts of the run or ensemble in ``folder`` and of everything it used; ``what`` names
    the part, with ``{}`` where the folder goes."""
    folder = os.path.abspath(folder)
    if folder in seen:
        return []
    seen.add(folder)
    config = _run_config(folder)
    if config is None:
        return [(what.replace("{}", folder, 1), None, None, f"it has no {RUN_CONFIG}")]
    if config.get("kind") == "ensemble":
        facts = []
        for member in config.get("members") or []:
            source = member.get("source") if isinstance(member, dict) else None
            if not isinstance(source, str):
                facts.append(
                    (f"a member of ensemble {folder}", None, None, "its source run is not recorded")
                )
                continue
            member_dir = source if os.path.isdir(source) else os.path.dirname(source)
            if os.path.isfile(RunDir(member_dir).config_path):
                facts += _run_facts(member_dir, "member run {} of ensemble " + folder, seen)
            else:  # the member's run is gone: what the ensemble recorded of it, if anything
                facts.append(
                    (
                        f"member {source} of ensemble {folder}",
                        recorded_split(member),
                        recorded_fingerprint(member),
                        "its run is gone and the ensemble records no split for it",
                    )
                )
        return facts or [(f"ensemble {folder}", None, None, "it records no members")]
    facts = [
        (
            what.replace("{}", folder, 1),
            recorded_split(config),
            recorded_fingerprint(config),
            f"its {RUN_CONFIG} records no split",
        )
    ]
    for teacher in config.get("teachers") or []:
        path = teacher.get("path") if isinstance(teacher, dict) else teacher
        split = recorded_split(teacher) if isinstance(teacher, dict) else None
        if split is not None:
            facts.append((f"teacher {path} of {folder}", split, recorded_fingerprint(teacher), ""))
        elif isinstance(path, str) and os.path.isdir(path):
            facts += _run_facts(path, "teacher run {} of " + folder, seen)
        else:
            facts.append(
                (
                    f"teacher {path} of {folder}",
                    None,
                    None,
                    "it is gone and its split is not recorded",
                )
            )
    return facts


def _export_facts(path, seen):
    """Facts of an int8 export: the split of its fine-tuning or calibration, then its run's."""
    json_path = path[: -len(".tflite")] + ".json"
    description = _read_json(json_path)
    int8_dir = os.path.dirname(path)
    above = os.path.dirname(int8_dir)
    cell_run = os.path.join(above, _CELL_RUN_DIR)
    cell = _read_json(os.path.join(above, _CELL_RECORD)) if os.path.isdir(cell_run) else None
    split, fingerprint = recorded_split(description), recorded_fingerprint(description)
    if split is None and isinstance(cell, dict):
        split = recorded_split(cell)  # reproduce quantises every cell on the cell's split
    facts = [
        (
            f"the quantisation data of {path}",
            split,
            fingerprint,
            f"{os.path.basename(json_path)} records no split (quantise the run again with "
            "this keras-asc)",
        )
    ]
    if os.path.isfile(os.path.join(above, FINAL_MODEL)):
        return facts + _run_facts(above, "float run {}", seen)
    if os.path.isfile(os.path.join(cell_run, FINAL_MODEL)):
        return facts + _run_facts(cell_run, "float run {}", seen)
    return facts + [
        (f"the float run of {path}", None, None, "no run folder holds it (RUN/int8/NAME.tflite)")
    ]


def system_facts(system):
    """``[(part, split or None, fingerprint or None, why unknown)]`` for every part of a
    system: its float run, quantisation data, ensemble members and teachers."""
    if not isinstance(system, (str, os.PathLike)):
        name = getattr(system, "name", type(system).__name__)
        return [(f"model object {name!r}", None, None, "a model object records no training split")]
    path = os.path.abspath(os.path.expandvars(os.path.expanduser(os.fspath(system))))
    seen = set()
    if os.path.isdir(path):
        return _run_facts(path, "run {}", seen)
    if path.endswith(".tflite"):
        return _export_facts(path, seen)
    folder = os.path.dirname(path)
    if os.path.basename(path) == FINAL_MODEL and os.path.isfile(RunDir(folder).config_path):
        return _run_facts(folder, "run {}", seen)
    return [(path, None, None, "a model file outside a run folder records no training split")]


def check_system_split(split, system):
    """Refuse ``system`` for training split ``split`` unless every part of it is recorded as
    trained, fine-tuned or calibrated on that split; the error is one line."""
    shown = os.fspath(system) if isinstance(system, (str, os.PathLike)) else repr(system)
    facts = system_facts(system)
    for part, used, _, why in facts:
        if used is None:
            raise ProvenanceError(
                f"{shown} (the system of split {split}): cannot tell which split {part} used: "
                f"{why}; DCASE 2024 allows each system only its split's clips."
            )
        if used != split:
            raise ProvenanceError(
                f"{shown} is the system of split {split}, but {part} used {_split_text(used)}: "
                f"DCASE 2024 allows the system of split {split} only that split's clips."
            )
    # The same split name with another clip list (another copy or version of the data).
    fingerprinted = [(part, fingerprint) for part, _, fingerprint, _ in facts if fingerprint]
    for part, fingerprint in fingerprinted[1:]:
        first, expected = fingerprinted[0]
        if fingerprint != expected:
            raise ProvenanceError(
                f"{shown} (the system of split {split}): {part} used other clips than {first} "
                f"(split fingerprints {fingerprint[:12]} and {expected[:12]}); every part must "
                "use the same split's clips."
            )


__all__ = [
    "ProvenanceError",
    "check_system_split",
    "recorded_fingerprint",
    "recorded_split",
    "system_facts",
]
