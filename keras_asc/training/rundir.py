"""The run folder: one owner for its layout, lock, settings, completion record and history.

Every module that reads or writes a run folder (``train``, ``evaluate``, ``ensemble``,
``quantize``, distillation, ``reproduce``, ``submit``) goes through :class:`RunDir`, so
``run_config.json`` has one parser whose errors name the file, the model digest is computed by
one function, and "is this run finished" has one answer.

The layout (file names from :mod:`keras_asc.files`)::

    run_config.json        what the run is: model, split and its fingerprint, seed, recipe,
                           overrides, teachers, data folder (an ensemble: its members)
    log.csv                one row per epoch (the history)
    checkpoints/           last.keras, best.keras, best.json
    backup/                the state a resumed run starts from (removed when the run ends)
    tensorboard/           TensorBoard event files
    model.keras            the final model
    complete.json          the completion record: run id, SHA-256 of model.keras, the number
                           of optimiser steps trained and the split (name and fingerprint)
    .keras-asc.lock        flock-ed while a process works in the folder

API (for the other modules and for users):

- ``RunDir(path)``: ``path`` gets ``~`` and environment variables expanded and is made
  absolute. Paths: ``.path``, ``.config_path``, ``.model_path``, ``.complete_path``,
  ``.log_path``, ``.checkpoint_dir``, ``.backup_dir``, ``.tensorboard_dir``, ``.int8_dir``.
- ``.read_config()``: the :class:`RunConfig`, or ``None`` when the folder has no
  ``run_config.json``; ``.config``: the same, raising :class:`RunConfigError` when there is none.
  A file that is not a JSON object, or holds an unknown split, raises :class:`RunConfigError`
  (a :class:`~keras_asc.files.RunDirError` and a ``ValueError``) naming the file.
- ``.write_config(dict)``: write ``run_config.json`` atomically; returns the ``RunConfig``.
- ``.lock(owner)``: the folder's :class:`~keras_asc.files.FolderLock` (a context manager).
- ``.mark_complete(run_id, steps_trained, split=None)``: write ``complete.json`` for the
  ``model.keras`` now in the folder; ``.completion()``: that record (``None`` without one).
- ``.stale_model_reason(run_id=None)``: ``None`` when ``model.keras`` is the recorded result of
  the run (default: the run in ``run_config.json``), else why not; ``.is_complete()``: a
  ``model.keras`` that is the run's recorded result of one or more steps.
- ``.steps_trained``: optimiser steps the finished run took (``None`` when not recorded).
- ``.split_name`` / ``.split_fingerprint``: the split the run trained on (an ensemble: the
  one its members share), from ``run_config.json``.
- ``.history()``: ``{column: [values]}`` from ``log.csv``; ``.remove_run_files()``: remove what
  a run writes and nothing else.
- :func:`file_digest` (SHA-256 of a file), :func:`read_history`.

Hand-written: the folder's rules (what marks a finished run, which files a run owns) are this
project's, with no library to delegate them to.

Example:
    >>> run = RunDir("~/runs/mofle10")
    >>> run.config.split, run.config.split_fingerprint[:12], run.is_complete()
    (10, '3f2a...', True)
    >>> run.steps_trained
    4360
"""

import contextlib
import csv
import dataclasses
import errno
import hashlib
import json
import math
import os
import shutil

from keras_asc.data import tau22
from keras_asc.files import (
    BACKUP_DIR,
    CHECKPOINT_DIR,
    COMPLETE_RECORD,
    FINAL_MODEL,
    INT8_DIR,
    LOCK_FILE,
    LOG_FILE,
    RUN_CONFIG,
    RUN_FILES,
    TENSORBOARD_DIR,
    FolderLock,
    RunDirError,
    write_text_atomic,
)

__all__ = ["RunConfig", "RunConfigError", "RunDir", "file_digest", "read_history"]

RESUME_HINT = "fix that and run the same command again to continue from the last backup"
RESTART_HINT = (
    "start the run again from epoch 0 with --overwrite (keras_asc.train(..., overwrite=True))"
)
DISK_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a folder on its path is a regular file",
    errno.EEXIST: "a folder on its path is a regular file",
}


class RunConfigError(RunDirError, ValueError):
    """``run_config.json`` is missing, unreadable or holds something that is not a run's
    settings; the message is one line naming the file."""


def disk_error(error, path):
    """A one-line :class:`RunDirError` for an ``OSError`` met writing ``path``."""
    reason = DISK_REASONS.get(error.errno) or error.strerror or str(error) or type(error).__name__
    return RunDirError(f"Cannot write {path!r}: {reason}; {RESUME_HINT}.")


@contextlib.contextmanager
def writing(path):
    """Turns an ``OSError`` raised while writing ``path`` into a one-line RunDirError."""
    try:
        yield
    except OSError as error:
        raise disk_error(error, path) from None


def file_digest(path):
    """SHA-256 (hex) of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_history(log_path):
    """``{column: [values]}`` from a CSVLogger file: ``epoch`` as int, the rest as float.

    CSVLogger writes ``NA`` for validation columns of a run without validation; columns that
    are ``NA`` throughout are left out.
    """
    history = {}
    if not os.path.exists(log_path):
        return history
    with open(log_path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key == "epoch":
                    value = int(value)
                else:
                    value = math.nan if value == "NA" else float(value)
                history.setdefault(key, []).append(value)
    return {
        key: values
        for key, values in history.items()
        if key == "epoch" or not all(math.isnan(value) for value in values)
    }


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The settings a run (or an ensemble) recorded in its ``run_config.json``.

    Attributes:
        path: the ``run_config.json`` file.
        data: everything the file holds, as a dict (``.get(key)`` reads it).

    Properties (``None`` when the file does not record them): ``kind`` (``"run"`` or
    ``"ensemble"``), ``model``, ``split`` (normalised: 5 ... 100), ``split_title``
    (``"split10"``), ``split_fingerprint``, ``seed``, ``data_dir``, ``recipe``, ``overrides``,
    ``teachers`` (a list of ``{"path", "model"}``), ``members`` (an ensemble's), ``run_id``,
    ``steps_per_epoch``, ``epochs``, ``augmentations``.
    """

    path: str
    data: dict

    def get(self, key, default=None):
        """``data.get(key, default)``."""
        return self.data.get(key, default)

    @property
    def kind(self):
        return "ensemble" if self.data.get("kind") == "ensemble" else "run"

    @property
    def model(self):
        for key in ("model", "model_name", "preset"):
            if isinstance(self.data.get(key), str):
                return self.data[key]
        return None

    @property
    def split(self):
        value = self.data.get("split")
        if value is None:
            return None
        try:
            return tau22.normalize_split(value)
        except ValueError:
            raise RunConfigError(
                f"{self.path}: 'split' is {value!r}, not a DCASE split (5, 10, 25, 50 or 100)."
            ) from None

    @property
    def split_title(self):
        split = self.split
        return None if split is None else tau22.split_title(split)

    def _field(name):  # noqa: N805 (a property factory used in the class body)
        return property(lambda self: self.data.get(name), doc=f"``{name}`` as recorded.")

    split_fingerprint = _field("split_fingerprint")
    seed = _field("seed")
    data_dir = _field("data_dir")
    recipe = _field("recipe")
    overrides = _field("overrides")
    teachers = _field("teachers")
    members = _field("members")
    run_id = _field("run_id")
    steps_per_epoch = _field("steps_per_epoch")
    epochs = _field("epochs")
    augmentations = _field("augmentations")
    del _field


class RunDir:
    """A run folder (see the module docstring for the layout and the API).

    Args:
        path: the folder; ``~`` and environment variables are expanded.
    """

    def __init__(self, path):
        if isinstance(path, RunDir):
            path = path.path
        self.path = os.path.abspath(tau22.expand_path(path))

    def __repr__(self):
        return f"RunDir({self.path!r})"

    def __fspath__(self):
        return self.path

    # --- layout ---------------------------------------------------------------------------
    def _join(self, name):
        return os.path.join(self.path, name)

    config_path = property(lambda self: self._join(RUN_CONFIG))
    model_path = property(lambda self: self._join(FINAL_MODEL))
    complete_path = property(lambda self: self._join(COMPLETE_RECORD))
    log_path = property(lambda self: self._join(LOG_FILE))
    checkpoint_dir = property(lambda self: self._join(CHECKPOINT_DIR))
    backup_dir = property(lambda self: self._join(BACKUP_DIR))
    tensorboard_dir = property(lambda self: self._join(TENSORBOARD_DIR))
    lock_path = property(lambda self: self._join(LOCK_FILE))
    int8_dir = property(lambda self: self._join(INT8_DIR))

    def is_folder(self):
        return os.path.isdir(self.path)

    def has_model(self):
        return os.path.isfile(self.model_path)

    # --- run_config.json ------------------------------------------------------------------
    def read_config(self):
        """The :class:`RunConfig`, or ``None`` when there is no ``run_config.json``."""
        path = self.config_path
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except UnicodeDecodeError:
            raise RunConfigError(
                f"{path}: not UTF-8 text; expected a run's JSON settings."
            ) from None
        except json.JSONDecodeError as error:
            raise RunConfigError(
                f"{path}: not valid JSON ({error.msg}, line {error.lineno}); expected a run's "
                "settings as written by keras-asc train or ensemble."
            ) from None
        except OSError as error:
            raise RunConfigError(f"{path}: cannot be read ({error.strerror or error}).") from None
        if not isinstance(data, dict):
            raise RunConfigError(
                f"{path}: expected a JSON object with a run's settings, found "
                f"{type(data).__name__}."
            )
        return RunConfig(path, data)

    @property
    def config(self):
        """The :class:`RunConfig`; :class:`RunConfigError` when the folder has none."""
        config = self.read_config()
        if config is None:
            raise RunConfigError(
                f"{self.path!r} has no {RUN_CONFIG}: expected a run folder written by "
                "`keras-asc train` or `keras-asc ensemble`."
            )
        return config

    def write_config(self, data):
        """Write ``data`` as ``run_config.json`` (atomically); returns the :class:`RunConfig`.
        An ``OSError`` (a full disk) propagates: the caller words it for its command."""
        write_text_atomic(self.config_path, json.dumps(data, indent=2) + "\n")
        return RunConfig(self.config_path, data)

    @property
    def split_name(self):
        """The split the run trained on; an ensemble: the one its members share."""
        return self.config.split

    @property
    def split_fingerprint(self):
        return self.config.split_fingerprint

    # --- lock -----------------------------------------------------------------------------
    def lock(self, owner="keras-asc train"):
        """The folder's exclusive lock, as a context manager (see ``FolderLock``)."""
        return FolderLock(self.path, owner=owner)

    # --- completion -----------------------------------------------------------------------
    def model_digest(self):
        """SHA-256 of ``model.keras``."""
        return file_digest(self.model_path)

    def completion(self):
        """The completion record (a dict), or ``None`` when there is none.

        Raises:
            RunDirError: the record is unreadable or not a JSON object (naming the file).
        """
        try:
            with open(self.complete_path, encoding="utf-8") as handle:
                record = json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise RunDirError(
                f"{self.complete_path}: unreadable completion record ({error}); {RESTART_HINT}."
            ) from None
        if not isinstance(record, dict):
            raise RunDirError(
                f"{self.complete_path}: expected a JSON object (run id, model digest, steps); "
                f"{RESTART_HINT}."
            )
        return record

    def mark_complete(self, run_id, steps_trained, split=None):
        """Record that ``model.keras`` is the result of the run ``run_id`` after
        ``steps_trained`` optimiser steps on ``split`` (a :class:`tau22.Split`)."""
        record = {
            "run_id": run_id,
            "sha256": self.model_digest(),
            "steps_trained": int(steps_trained),
        }
        if split is not None:
            record["split"] = split.name
            record["split_fingerprint"] = split.fingerprint
        with writing(self.complete_path):
            write_text_atomic(self.complete_path, json.dumps(record, indent=2) + "\n")
        return record

    @property
    def steps_trained(self):
        """Optimiser steps of the finished run, from the completion record (else ``None``)."""
        try:
            record = self.completion()
        except RunDirError:
            return None
        steps = (record or {}).get("steps_trained")
        return steps if isinstance(steps, int) else None

    def stale_model_reason(self, run_id=None):
        """``None`` when ``model.keras`` is the recorded result of the run ``run_id`` (default:
        the run in ``run_config.json``), else why it is not."""
        if not self.has_model():
            return f"there is no {FINAL_MODEL}"
        if run_id is None:
            config = self.read_config()
            run_id = None if config is None else config.run_id
        if run_id is None:  # an ensemble, or a run folder written before run ids
            if os.path.isdir(self.backup_dir):
                return f"the run's {BACKUP_DIR}/ folder says it did not finish"
            return None
        try:
            record = self.completion()
        except RunDirError as error:
            return f"{COMPLETE_RECORD} is unreadable ({error})"
        if record is None:
            return f"no {COMPLETE_RECORD} records it as this run's result"
        if record.get("run_id") != run_id:
            return f"{COMPLETE_RECORD} belongs to another run"
        if record.get("sha256") != self.model_digest():
            return f"it is not the file {COMPLETE_RECORD} recorded (it was replaced)"
        if record.get("steps_trained") == 0:
            return "the run trained 0 steps"
        return None

    def is_complete(self):
        """Whether ``model.keras`` is the finished run's recorded result."""
        try:
            return self.stale_model_reason() is None
        except RunDirError:
            return False

    # --- history and cleanup ----------------------------------------------------------------
    def history(self):
        """``{column: [values]}`` from ``log.csv`` (:func:`read_history`)."""
        return read_history(self.log_path)

    def remove_run_files(self):
        """Remove what a run writes (``RUN_FILES`` and their temporary files), nothing else."""
        for name in os.listdir(self.path):
            owned = name in RUN_FILES and name != LOCK_FILE
            temporary = any(name.startswith(f".{own}.") for own in RUN_FILES)  # atomic_path's
            if not (owned or temporary):
                continue
            path = self._join(name)
            with writing(path):
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
