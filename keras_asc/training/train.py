"""Train a registered model with its recipe: ``keras_asc.train`` and ``keras-asc train``.

One call builds the tf.data pipeline (with the recipe's waveform augmentations), the model
(with the recipe's spectrogram augmentations and front-end masking/jitter), the optimiser with
the recipe's learning-rate schedule, and fits with Keras progress bars. Everything a run leaves
behind lives in one run directory:

```
run_config.json        model, split, seed, epochs, data dir, the effective recipe (and the
                       recipe overrides and distillation teachers, when given)
log.csv                one row per epoch (appended across resumes, each epoch once)
tensorboard/           TensorBoard event files (with the tensorboard package installed)
checkpoints/last.keras, best.keras, best.json
backup/                weights and optimiser state of the last backup (removed when the run ends)
model.keras            the final model
complete.json          the run id and SHA-256 of model.keras, written right after it: the
                       completion mark (a model.keras without it is never taken as the result)
.keras-asc.lock        locked (flock) while a train process works in the folder
```

A run folder belongs to one run at a time: a second ``train`` on a locked folder is refused; a
new run refuses a folder holding anything (``overwrite=True`` removes only the files above and
keeps the rest); a disk error or a corrupt backup stops the run with a one-line error that says
how to go on, and the same call continues the run once the cause is fixed.

Calling ``train`` again with the same run directory continues an interrupted run from its last
backup (written every ``backup_every_steps`` steps and at each epoch end); calling it on a
complete run loads the saved model instead of training again. The interrupted epoch is run
again from its first batch, starting from the weights and optimiser state of the last backup,
so a resumed run is close to, but not bit-identical with, an uninterrupted one with the same
seed.

Example:
    >>> result = keras_asc.train("moflenet57", data_dir="/data/tau22", split=25,
    ...                          dirs_dir="/data/micirp_dirs", out_dir="runs/mofle25")
    >>> result.history["accuracy"][-1]
"""

import contextlib
import contextvars
import csv
import dataclasses
import errno
import functools
import hashlib
import importlib.util
import inspect
import json
import math
import numbers
import os
import shutil
import sys
import uuid

import keras
import numpy as np

from keras_asc import complexity, registry
from keras_asc.data import tau22
from keras_asc.files import (
    BACKUP_DIR,
    BEST_CHECKPOINT,
    CHECKPOINT_DIR,
    COMPLETE_RECORD,
    FINAL_MODEL,
    LAST_CHECKPOINT,
    LOCK_FILE,
    LOG_FILE,
    RUN_CONFIG,
    RUN_FILES,
    FolderLock,
    RunDirError,
    atomic_path,
    save_model_atomic,
    write_text_atomic,
)
from keras_asc.models.classifier import AudioClassifier
from keras_asc.training.precision import check_precision, precision_scope
from keras_asc.training.recipes import DEVICE_IMPULSE_RESPONSE, get_recipe
from keras_asc.training.saving import load_model

DISTRIBUTIONS = ("mirrored", "data_parallel")
# Fields of run_config.json that must match for a run directory to be continued.
_RESUME_KEYS = (
    "model",
    "split",
    "seed",
    "epochs",
    "batch_size",
    "weight_decay",
    "steps_per_epoch",
    "augmentations",
    "validation_split",
    "teachers",
    "overrides",
    "precision",
)
# Offsets that give every random component its own seed derived from the run seed.
_FRONTEND_SEED_OFFSET = 1
_SPECTROGRAM_SEED_OFFSET = 2


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns.

    Attributes:
        model: the trained Keras model (waveform input, logits output).
        run_dir: the run directory.
        history: ``{metric: [value per epoch]}`` for the whole run, including epochs trained
            before a resume, read from ``log.csv``; ``history["epoch"]`` holds the 0-based
            epoch numbers.
        recipe: the effective :class:`~keras_asc.training.recipes.Recipe` (after overrides).
        training_model: the compiled model that was fitted (with its optimiser): the classifier
            itself, or a wrapper that also runs the spectrogram augmentations and shares the
            classifier's layers; ``None`` when a complete run was loaded from disk.
    """

    model: object
    run_dir: str
    history: dict
    recipe: object
    training_model: object = None

    @property
    def model_path(self):
        return os.path.join(self.run_dir, FINAL_MODEL)


def _note(message):
    print(f"keras-asc train: note: {message}", file=sys.stderr, flush=True)


# --- the run folder: disk errors, lock, ownership, completion --------------------------------

_RESUME_HINT = "fix that and run the same command again to continue from the last backup"
_RESTART_HINT = (
    "start the run again from epoch 0 with --overwrite (keras_asc.train(..., overwrite=True))"
)
_DISK_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a folder on its path is a regular file",
    errno.EEXIST: "a folder on its path is a regular file",
}


def _disk_error(error, path):
    """A one-line :class:`RunDirError` for an ``OSError`` met writing ``path``."""
    reason = _DISK_REASONS.get(error.errno) or error.strerror or str(error) or type(error).__name__
    return RunDirError(f"Cannot write {path!r}: {reason}; {_RESUME_HINT}.")


@contextlib.contextmanager
def _writing(path):
    """Turns an ``OSError`` raised while writing ``path`` into a one-line RunDirError."""
    try:
        yield
    except OSError as error:
        raise _disk_error(error, path) from None


# The lock and folder of the train() call in progress (train() may be called again in-process).
_CURRENT_RUN = contextvars.ContextVar("keras_asc_current_run", default=None)


def _owns_run_folder(function):
    """Runs ``train`` with a place to hold its run-folder lock, released when it returns or
    raises (not when a traceback that still references it is collected), and turns a disk
    error the run met in its folder (a full disk while saving the final model) into one line."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with contextlib.ExitStack() as stack:
            current = {"stack": stack, "run_dir": None}
            token = _CURRENT_RUN.set(current)
            try:
                return function(*args, **kwargs)
            except OSError as error:
                run_dir = current["run_dir"]
                in_run = run_dir is not None and (
                    error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
                    or os.fspath(error.filename or "").startswith(run_dir + os.sep)
                )
                if not in_run:
                    raise
                raise _disk_error(error, error.filename or run_dir) from None
            finally:
                _CURRENT_RUN.reset(token)

    return wrapper


def _file_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mark_complete(run_dir, config):
    """Record that ``model.keras`` is this run's result (run id + its SHA-256)."""
    path = os.path.join(run_dir, COMPLETE_RECORD)
    record = {"run_id": config.get("run_id"), "sha256": _file_digest(os.path.join(run_dir, FINAL_MODEL))}
    with _writing(path):
        write_text_atomic(path, json.dumps(record, indent=2) + "\n")


def _stale_model_reason(run_dir, run_id):
    """``None`` when ``model.keras`` in ``run_dir`` is the result of the run ``run_id``, else why
    it is not (a model left from an earlier run, or one saved but not yet recorded)."""
    record_path = os.path.join(run_dir, COMPLETE_RECORD)
    if run_id is None:  # a run folder written before run ids: no backup means the run ended
        if os.path.isdir(os.path.join(run_dir, BACKUP_DIR)):
            return f"the run's {BACKUP_DIR}/ folder says it did not finish"
        return None
    try:
        with open(record_path, encoding="utf-8") as handle:
            record = json.load(handle)
    except FileNotFoundError:
        return f"no {COMPLETE_RECORD} records it as this run's result"
    except (OSError, ValueError) as error:
        return f"{COMPLETE_RECORD} is unreadable ({error})"
    if not isinstance(record, dict) or record.get("run_id") != run_id:
        return f"{COMPLETE_RECORD} belongs to another run"
    if record.get("sha256") != _file_digest(os.path.join(run_dir, FINAL_MODEL)):
        return f"it is not the file {COMPLETE_RECORD} recorded (it was replaced)"
    return None


def _remove_run_files(run_dir):
    """Remove what a run writes (``RUN_FILES`` and their temporary files), nothing else."""
    for name in os.listdir(run_dir):
        owned = name in RUN_FILES and name != LOCK_FILE
        temporary = any(name.startswith(f".{own}.") for own in RUN_FILES)  # atomic_path's
        if not (owned or temporary):
            continue
        path = os.path.join(run_dir, name)
        with _writing(path):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)


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


class _RunBackup(keras.callbacks.Callback):
    """Backs up the training model's weights and optimiser state every ``save_every_steps``
    steps and at every epoch end, and restores them when a run resumes.

    ``restored_epoch`` (read when the callback is made) is the epoch a resumed run starts at:
    ``train`` passes it to ``fit(initial_epoch=...)``. An interrupted epoch restarts from its
    first batch, with the weights of its last mid-epoch backup; ``optimizer.iterations`` is set
    to ``epoch * steps_per_epoch`` so the per-step learning-rate schedule is on the epoch the
    run is in. Each backup is a new weights file, written atomically, then named in
    ``backup.json`` (also atomic), so a kill at any moment leaves a consistent pair.
    (``keras.callbacks.BackupAndRestore`` saves either per epoch or every N batches, not
    both, and sets the start epoch through a private model attribute.)
    """

    STATE = "backup.json"

    def __init__(self, backup_dir, save_every_steps, steps_per_epoch):
        super().__init__()
        self.backup_dir = backup_dir
        self.save_every_steps = save_every_steps
        self.steps_per_epoch = steps_per_epoch
        self.state_path = os.path.join(backup_dir, self.STATE)
        self.state = self._read_state()
        self.restored_epoch = int(self.state["epoch"]) if self.state else 0
        self.epoch = self.restored_epoch
        self.steps = 0
        self.saved = 0 if self.state is None else int(self.state["backup"])

    def _corrupt(self, detail):
        return RunDirError(
            f"The backup in {self.backup_dir!r} is corrupt ({detail}); {_RESTART_HINT}."
        )

    def _read_state(self):
        if not os.path.exists(self.state_path):
            return None
        try:
            with open(self.state_path, encoding="utf-8") as handle:
                state = json.load(handle)
        except (OSError, ValueError) as error:
            raise self._corrupt(f"{self.STATE} is unreadable: {error}") from None
        valid = (
            isinstance(state, dict)
            and all(isinstance(state.get(key), int) for key in ("epoch", "backup"))
            and isinstance(state.get("weights"), str)
            and os.path.basename(state["weights"]) == state["weights"]
            and state["epoch"] >= 0
        )
        if not valid:
            raise self._corrupt(
                f"{self.STATE} should hold integer 'epoch' and 'backup' and a 'weights' file "
                f"name; it holds {json.dumps(state)[:200]}"
            )
        if not os.path.isfile(os.path.join(self.backup_dir, state["weights"])):
            raise self._corrupt(f"{self.STATE} names {state['weights']}, which is missing")
        return state

    def on_train_begin(self, logs=None):
        if self.state is not None:
            weights = os.path.join(self.backup_dir, self.state["weights"])
            optimizer = self.model.optimizer
            if not optimizer.built:
                # Unbuilt, it has no slots to take the saved moments (Keras skips them).
                optimizer.build(self.model.trainable_variables)
            try:
                self.model.load_weights(weights)
            except Exception as error:  # h5py and Keras raise many types for a bad file
                detail = str(error).splitlines()[0] if str(error) else type(error).__name__
                raise self._corrupt(f"{self.state['weights']} cannot be loaded: {detail}") from None
            self.model.optimizer.iterations.assign(self.restored_epoch * self.steps_per_epoch)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps % self.save_every_steps == 0:
            self._save(self.epoch)  # mid-epoch: a resumed run redoes this epoch

    def on_epoch_end(self, epoch, logs=None):
        self.steps = 0  # N steps into every epoch, as a fresh count
        self._save(epoch + 1)

    def _save(self, next_epoch):
        weights = f"backup-{self.saved + 1}.weights.h5"
        path = os.path.join(self.backup_dir, weights)
        with _writing(path):
            os.makedirs(self.backup_dir, exist_ok=True)
            with atomic_path(path, suffix=".weights.h5") as temporary:
                self.model.save_weights(temporary)
        state = {"epoch": next_epoch, "backup": self.saved + 1, "weights": weights}
        with _writing(self.state_path):
            write_text_atomic(self.state_path, json.dumps(state) + "\n")
        self.saved += 1  # only once backup.json names the new file
        for name in os.listdir(self.backup_dir):
            if name.endswith(".weights.h5") and name != weights:
                with contextlib.suppress(OSError):  # a leftover is harmless; the next save retries
                    os.remove(os.path.join(self.backup_dir, name))


class _LogLearningRate(keras.callbacks.Callback):
    """Adds the learning rate reached at the end of each epoch to the epoch logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            # A schedule-driven optimiser evaluates its schedule at the current step here.
            value = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(value))


class _ResumableCSVLogger(keras.callbacks.CSVLogger):
    """CSVLogger in append mode that first drops the rows of epochs a resumed run will redo,
    so that the log holds each epoch exactly once.

    ``train`` runs it before the backup at each epoch end: a kill after the row is written and
    before the backup makes the resumed run redo that epoch, and this drops its row first; the
    other order would lose the row of an epoch the backup counts as done. A row cut short by a
    kill or a full disk, and a repeated epoch, are dropped too.
    """

    def __init__(self, filename, backup):
        super().__init__(filename, append=True)
        self.backup = backup

    def on_train_begin(self, logs=None):
        keep_below = self.backup.restored_epoch
        if os.path.exists(self.filename):
            with open(self.filename, newline="", encoding="utf-8", errors="replace") as handle:
                text = handle.read()
            rows = list(csv.reader(text.splitlines()))
            header, body = (rows[0], rows[1:]) if rows else ([], [])
            kept, seen = [], set()
            for row in body:
                epoch = row[0] if row else ""
                if len(row) != len(header) or not epoch.isdigit():
                    continue
                if int(epoch) < keep_below and epoch not in seen:
                    seen.add(epoch)
                    kept.append(row)
            if len(kept) != len(body) or not text.endswith("\n"):
                with _writing(self.filename):
                    if kept:
                        lines = [",".join(header)] + [",".join(row) for row in kept]
                        write_text_atomic(self.filename, "\n".join(lines) + "\n")
                    else:
                        os.remove(self.filename)
        with _writing(self.filename):
            super().on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        with _writing(self.filename):
            super().on_epoch_end(epoch, logs)


class _RunCheckpoint(keras.callbacks.Callback):
    """Saves the classifier (never the training model, which holds the spectrogram
    augmentations) as ``last.keras`` after every epoch and ``best.keras`` when ``monitor``
    improves, atomically; the best value survives a resume (``best.json``)."""

    def __init__(self, directory, monitor, mode, classifier):
        super().__init__()
        self.classifier = classifier
        self.directory = directory
        self.monitor = monitor
        self.mode = mode
        self.state_path = os.path.join(directory, "best.json")
        self.best = None

    def on_train_begin(self, logs=None):
        with _writing(self.directory):
            os.makedirs(self.directory, exist_ok=True)
        if os.path.exists(self.state_path):
            try:
                with open(self.state_path, encoding="utf-8") as handle:
                    self.best = float(json.load(handle)["value"])
            except (OSError, ValueError, TypeError, KeyError) as error:
                raise RunDirError(
                    f"{self.state_path!r} is corrupt ({type(error).__name__}: {error}); delete it "
                    "to let the next epoch start a new best checkpoint, or "
                    f"{_RESTART_HINT}."
                ) from None

    def _improved(self, value):
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        last = os.path.join(self.directory, LAST_CHECKPOINT)
        with _writing(last):
            save_model_atomic(self.classifier, last)
        if self.monitor not in logs:
            return
        value = float(logs[self.monitor])
        if math.isfinite(value) and self._improved(value):
            best = os.path.join(self.directory, BEST_CHECKPOINT)
            with _writing(best):
                save_model_atomic(self.classifier, best)
            with _writing(self.state_path):
                write_text_atomic(
                    self.state_path,
                    json.dumps({"monitor": self.monitor, "value": value, "epoch": epoch}, indent=2),
                )
            self.best = value


def _tensorboard_callbacks(tensorboard, log_dir):
    if tensorboard is False:
        return []
    if importlib.util.find_spec("tensorboard") is None:
        if tensorboard:
            raise ImportError(
                "tensorboard=True needs the tensorboard package (pip install tensorboard)."
            )
        _note("TensorBoard logs skipped: the tensorboard package is not installed.")
        return []
    return [keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False, profile_batch=0)]


def _check_split(split):
    return tau22.normalize_split(split)


def _resolve_augmentations(recipe, augment, dirs_dir, seed):
    """The recipe's augmentations plus ``augment``, as (waveform objects, spectrogram layer
    factories, JSON-ready description).

    Spectrogram layers are returned as factories because they own variables (seed state),
    which must be created inside the distribution scope, with the model.
    """
    requested = list(recipe.augmentations)
    for name in augment:
        if not isinstance(name, str):
            raise TypeError(f"augment must hold augmentation names. Received: {name!r}")
        registry.get_augmentation(name)  # unknown name: error listing the known ones
        if name in recipe.augmentation_names:
            _note(
                f"augmentation {name!r} is already part of the {recipe.model} recipe; applied once."
            )
            continue
        if name == DEVICE_IMPULSE_RESPONSE and dirs_dir is None:
            raise ValueError(
                f"augment={name!r} needs a folder of impulse-response WAV files: pass dirs_dir "
                "(--dirs on the command line)."
            )
        requested.append((name, {}))
    waveform, spectrogram, described = [], [], []
    for offset, (name, config) in enumerate(requested):
        entry = registry.get_augmentation(name)
        config = dict(config)
        if name == DEVICE_IMPULSE_RESPONSE:
            if dirs_dir is None:
                _note(
                    "device impulse response (DIR) augmentation skipped: no impulse-response "
                    "directory given (dirs_dir / --dirs). The recipe's results assume it."
                )
                continue
            config["directory"] = os.path.abspath(dirs_dir)
        if entry.stage == "spectrogram":
            parameters = inspect.signature(entry.augmentation).parameters
            if "seed" in parameters and "seed" not in config:
                config["seed"] = seed + _SPECTROGRAM_SEED_OFFSET + offset
        if entry.stage == "waveform":
            waveform.append(entry.augmentation(**config))
        else:
            spectrogram.append(functools.partial(entry.augmentation, **config))
        described.append({"name": name, "stage": entry.stage, "config": config})
    return waveform, spectrogram, described


def _distribution_scope(distribution, batch_size):
    """A context manager for model creation and fit, and the number of replicas."""
    backend = keras.backend.backend()
    if distribution is None:
        return contextlib.nullcontext(), 1
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"distribution must be None or one of {DISTRIBUTIONS}. Received: distribution={distribution!r}"
        )
    if distribution == "mirrored":
        if backend != "tensorflow":
            raise ValueError(
                f"distribution='mirrored' (tf.distribute.MirroredStrategy) needs the TensorFlow "
                f"backend; this process runs {backend!r}. Use 'data_parallel' on JAX."
            )
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        return strategy.scope(), strategy.num_replicas_in_sync
    if backend != "jax":
        raise ValueError(
            f"distribution='data_parallel' (keras.distribution.DataParallel) needs the JAX "
            f"backend; this process runs {backend!r}. Use 'mirrored' on TensorFlow."
        )
    devices = keras.distribution.list_devices()
    if batch_size % len(devices):
        raise ValueError(
            f"distribution='data_parallel' splits each batch over {len(devices)} devices; "
            f"batch_size must be a multiple of {len(devices)}. Received: batch_size={batch_size}"
        )
    return keras.distribution.DataParallel(devices=devices).scope(), len(devices)


def _build_model(model_name, recipe, spectrogram_factories, seed):
    """``(classifier, training_model)``: the model that is saved, and the one that is fitted.

    A model with a ``frontend`` (``LogMelSpectrogram``) and a ``backbone`` gets the recipe's
    training front-end settings, and the training model runs the spectrogram augmentations
    between the two, sharing the classifier's layers and weights; the classifier itself holds
    only inference. Any other waveform model is fitted as it is, without spectrogram
    augmentations (a note says so).
    """
    classifier = registry.get_model(model_name).build()
    if not (hasattr(classifier, "frontend") and hasattr(classifier, "backbone")):
        if spectrogram_factories:
            _note(
                f"model {model_name!r} ({type(classifier).__name__}) has no `frontend` and "
                "`backbone` attributes: its spectrogram augmentations and the recipe's "
                "front-end settings are skipped."
            )
        return classifier, classifier
    if isinstance(classifier, AudioClassifier):
        classifier = classifier.with_frontend(**recipe.frontend, seed=seed + _FRONTEND_SEED_OFFSET)
    elif recipe.frontend:
        _note(
            f"model {model_name!r} is not an AudioClassifier: the recipe's front-end settings "
            f"{sorted(recipe.frontend)} are skipped; its own front-end is used."
        )
    if not spectrogram_factories:
        return classifier, classifier
    inputs = keras.Input(shape=tuple(classifier.input_shape[1:]), name="waveform")
    x = classifier.frontend(inputs)
    for make_layer in spectrogram_factories:
        x = make_layer()(x)
    training_model = keras.Model(inputs, classifier.backbone(x), name=f"{classifier.name}_training")
    return classifier, training_model


def _steps_per_epoch(dataset, split, batch_size):
    cardinality = int(dataset.cardinality())
    if cardinality > 0:
        return cardinality
    num_clips = len(dataset.clips)
    if num_clips < batch_size:
        raise ValueError(
            f"Training split {split!r} has {num_clips} clips, fewer than one batch of "
            f"{batch_size}; lower batch_size."
        )
    # Unknown cardinality (clips may be skipped): full batches of the listed clips.
    return num_clips // batch_size


def _read_run_config(run_dir):
    path = os.path.join(run_dir, RUN_CONFIG)
    try:
        with open(path, encoding="utf-8") as handle:
            previous = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise RunDirError(f"{path!r} is unreadable ({error}); {_RESTART_HINT}.") from None
    if not isinstance(previous, dict):
        raise RunDirError(f"{path!r} does not hold a run's settings; {_RESTART_HINT}.")
    return previous


def _check_run_dir(run_dir, config, resume, overwrite=False):
    """Create and lock ``run_dir`` and decide what this call does there.

    Returns ``(resuming, complete)``: whether an earlier run of the same settings is continued,
    and whether its ``model.keras`` is that run's recorded result. ``config`` gets the run id
    (new, or the continued run's). A new run needs a folder without files (apart from the
    lock); ``overwrite`` first removes what a run writes (``RUN_FILES``), nothing else.
    """
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as error:
        raise RunDirError(
            f"Cannot create the run directory {run_dir!r}: "
            f"{_DISK_REASONS.get(error.errno) or error.strerror or error}; fix that or choose "
            "another out_dir (--out)."
        ) from None
    if not os.path.isdir(run_dir):
        raise RunDirError(f"out_dir {run_dir!r} is a file; expected a folder for the run.")
    current = _CURRENT_RUN.get()
    with _writing(os.path.join(run_dir, LOCK_FILE)):
        lock = FolderLock(run_dir, owner="keras-asc train").__enter__()
    if current is not None:
        current["stack"].callback(lock.__exit__, None, None, None)
        current["run_dir"] = run_dir
    if overwrite:
        _remove_run_files(run_dir)
    previous = _read_run_config(run_dir)
    if previous is None:
        others = sorted(name for name in os.listdir(run_dir) if name != LOCK_FILE)
        if others and not overwrite:
            with contextlib.suppress(OSError):  # leave the user's folder as it was
                os.remove(lock.path)
            shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            raise FileExistsError(
                f"Run directory {run_dir!r} holds files this run did not write ({shown}); "
                "choose a new or empty out_dir (--out), or pass overwrite=True (--overwrite) to "
                "replace only what a run writes and keep the rest."
            )
        config["run_id"] = uuid.uuid4().hex
        path = os.path.join(run_dir, RUN_CONFIG)
        with _writing(path):
            write_text_atomic(path, json.dumps(config, indent=2) + "\n")
        return False, False
    if not resume:
        raise FileExistsError(
            f"Run directory {run_dir!r} already holds a run ({RUN_CONFIG}); pass resume=True to "
            "continue it, overwrite=True (--overwrite) to replace it, or choose another out_dir."
        )
    differences = [
        f"{key}: run has {previous.get(key)!r}, now {config.get(key)!r}"
        for key in _RESUME_KEYS
        if previous.get(key) != config.get(key)
    ]
    if differences:
        raise ValueError(
            f"Cannot resume the run in {run_dir!r}: its settings differ ("
            + "; ".join(differences)
            + "). Use another out_dir for a new run."
        )
    config["run_id"] = previous.get("run_id")
    if not os.path.exists(os.path.join(run_dir, FINAL_MODEL)):
        return True, False
    stale = _stale_model_reason(run_dir, config["run_id"])
    if stale is not None:
        _note(
            f"{FINAL_MODEL} in {run_dir} is not this run's result ({stale}); the run continues "
            "and replaces it."
        )
        return True, False
    return True, True


def _recorded(run_dir, key, what):
    """What the run in ``run_dir`` recorded under ``key`` in run_config.json (``None`` when
    there is no readable run there), with a note that the continued run uses it."""
    try:
        previous = _read_run_config(run_dir) if os.path.isdir(run_dir) else None
    except RunDirError:
        return None  # reported by _check_run_dir with its own advice
    recorded = (previous or {}).get(key)
    if recorded:
        _note(f"continuing the run in {run_dir} with its {what} {recorded}.")
    return recorded or None


def _effective_overrides(overrides, run_dir, resuming):
    """The recipe overrides of this call: ``overrides`` as given (checked to be a dict with
    string keys), or, when it is ``None`` and the run in ``run_dir`` is continued, the ones
    that run recorded in run_config.json."""
    if overrides is None:
        return _recorded(run_dir, "overrides", "recipe overrides") if resuming else None
    if not isinstance(overrides, dict) or not all(isinstance(key, str) for key in overrides):
        raise TypeError(
            f"overrides must be a dict of recipe settings by name. Received: overrides={overrides!r}"
        )
    # JSON-ready, as run_config.json records them (tuples become lists).
    return json.loads(json.dumps(overrides)) or None


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}. Received: {name}={value!r}")
    return int(value)


@_owns_run_folder
def train(
    model="moflenet57",
    data_dir=None,
    split=25,
    *,
    epochs=None,
    batch_size=None,
    weight_decay=None,
    out_dir=None,
    seed=0,
    augment=None,
    dirs_dir=None,
    cache_dir=None,
    distribution=None,
    resume=True,
    overwrite=False,
    verbose=1,
    steps_per_epoch=None,
    validation_split=None,
    backup_every_steps=100,
    callbacks=None,
    tensorboard=None,
    jit_compile="auto",
    on_error="raise",
    teachers=None,
    overrides=None,
    precision="float32",
):
    """Train a registered model on a TAU22 training split with its recipe.

    Args:
        model: registered model name (``keras_asc.list_models()``), e.g. ``"moflenet57"``.
        data_dir: TAU22 development-set root (``audio/``, split files).
        split: DCASE 2024 training subset: 5, 10, 25, 50 or 100.
        epochs: override the recipe's 150 epochs; the learning-rate phases are scaled to it.
        batch_size: override the recipe's batch size (256); the learning rate is kept.
        weight_decay: override the recipe's weight decay (L2 coupled into the gradient for
            the report's models, as the reference trains them: 1e-4 MofleNet/CP-Mobile, 1e-3
            CP-ResNet; decoupled for the DCASE 2024 baseline's AdamW); 0 turns it off.
        out_dir: run directory; default ``runs/<model>-split<split>-seed<seed>``.
        seed: seeds weights, shuffling and every augmentation; a run is repeatable.
        augment: extra registered augmentation names, applied after the recipe's.
        dirs_dir: folder of impulse-response WAVs for the device impulse response (DIR)
            augmentation; without it DIR is skipped (with a printed note).
        cache_dir: where the pipeline caches decoded, resampled audio.
        distribution: ``None``, ``"mirrored"`` (TensorFlow backend, all local GPUs) or
            ``"data_parallel"`` (JAX backend, ``keras.distribution.DataParallel``).
        resume: continue an interrupted run found in ``out_dir`` (and return a complete one
            without training); ``False`` raises if ``out_dir`` already holds a run.
        overwrite: start a new run in ``out_dir`` even when it holds a run or other files:
            what a run writes there (run_config.json, log.csv, checkpoints/, backup/,
            tensorboard/, model.keras, complete.json) is removed first; the user's other files
            are kept. Without it, a new run needs an empty or new folder.
        verbose: Keras progress output (0 silent, 1 progress bar, 2 one line per epoch).
        steps_per_epoch: optimiser steps per epoch; default: one pass over the split.
        validation_split: optional split evaluated after every epoch (e.g. ``"test"``); then
            ``best.keras`` follows ``val_accuracy``, otherwise the training loss.
        backup_every_steps: steps between mid-epoch backups (a backup is also written at every
            epoch end).
        callbacks: extra Keras callbacks, run after the built-in ones.
        tensorboard: write TensorBoard logs to ``<run_dir>/tensorboard``: ``True`` requires
            the ``tensorboard`` package, ``False`` turns them off, ``None`` writes them when
            the package is installed (and prints a note when it is not).
        jit_compile: passed to ``model.compile`` (XLA on TensorFlow, ``jax.jit`` on JAX);
            on the TensorFlow backend ``False`` compiles much faster on a CPU, which suits
            short runs and tests.
        on_error: ``"raise"`` (default): a missing or undecodable clip stops the run with an
            error naming the file; ``"skip"``: such clips are dropped and listed at the end
            (``TrainResult.skipped_clips``).
        teachers: run directories or ensemble folders of trained teachers for knowledge
            distillation (``keras_asc.training.distill``): their mean logits, computed once
            per training clip (and stored in ``cache_dir`` when given), are the soft targets
            of a loss weighted by the recipe's ``kd_lambda`` with temperature
            ``kd_temperature``. Every teacher must have been trained on ``split``. The
            teachers run only once the run folder takes the run and it is not complete;
            continuing a run without ``teachers`` uses the ones it recorded.
        overrides: ``{key: value}`` recipe settings to change, e.g.
            ``{"device_impulse_response.p": 0.5, "freq_mixstyle.alpha": 0.4}``; the keys are
            those of ``Recipe.settings()``, applied after ``epochs``/``batch_size``/
            ``weight_decay``. They are recorded in run_config.json; continuing a run without
            ``overrides`` applies the recorded ones.
        precision: ``"float32"`` or ``"mixed"`` (Keras' mixed-precision policy:
            ``mixed_float16`` with loss scaling on a GPU, ``mixed_bfloat16`` on a CPU; the
            front-end and the normalisation statistics stay float32). Recorded in
            run_config.json when mixed.

    Returns:
        A :class:`TrainResult` (model, run directory, per-epoch history, effective recipe).

    Example:
        >>> result = train("cp_resnet59", data_dir="/data/tau22", split=5, epochs=2)
        >>> len(result.history["loss"])
        2

    Reference:
        "Low complexity acoustic scene classification with MofleNet", DCASE 2024 Task 1
        technical report (training recipe, Table 3).
    """
    if not isinstance(model, str):
        raise TypeError(f"model must be a registered model name. Received: model={model!r}")
    if data_dir is None:
        raise ValueError(
            "data_dir is required: the TAU22 development-set folder (or a synthetic one)."
        )
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"Dataset folder {data_dir!r} does not exist.")
    split = _check_split(split)
    if split == "test":
        raise ValueError("split='test' is the evaluation split; train on 5, 10, 25, 50 or 100.")
    seed = _check_int("seed", seed, 0)
    check_precision(precision)
    if steps_per_epoch is not None:
        steps_per_epoch = _check_int("steps_per_epoch", steps_per_epoch, 1)
    backup_every_steps = _check_int("backup_every_steps", backup_every_steps, 1)
    if dirs_dir is not None and not os.path.isdir(dirs_dir):
        raise FileNotFoundError(f"Impulse-response folder {os.fspath(dirs_dir)!r} does not exist.")
    if isinstance(augment, str):
        augment = [augment]
    run_dir = os.path.abspath(out_dir or os.path.join("runs", f"{model}-split{split}-seed{seed}"))
    recipe = get_recipe(model).with_overrides(
        epochs=epochs, batch_size=batch_size, weight_decay=weight_decay
    )
    overrides = _effective_overrides(overrides, run_dir, resume and not overwrite)
    if overrides:
        recipe = recipe.with_settings(overrides)
    if teachers is None and resume and not overwrite:
        # Continuing a distilled run without teachers uses the ones it recorded.
        recorded = _recorded(run_dir, "teachers", "teachers")
        teachers = [teacher["path"] for teacher in recorded] if recorded else None
    distilling = teachers is not None
    if distilling:
        from keras_asc.training import distill

        described_teachers = distill.check_teachers(teachers, split)
    keras.utils.set_random_seed(seed)
    waveform_augs, spectrogram_factories, described = _resolve_augmentations(
        recipe, list(augment or ()), dirs_dir, seed
    )
    scope, replicas = _distribution_scope(distribution, recipe.batch_size)

    from keras_asc.data.pipeline import make_dataset

    def training_dataset(targets=None):
        return make_dataset(
            data_dir,
            split,
            batch_size=recipe.batch_size,
            training=True,
            seed=seed,
            waveform_augmentations=tuple(waveform_augs),
            cache_dir=cache_dir,
            on_error=on_error,
            clip_targets=targets,
        )

    # Without the teachers' logits at first: they are computed only once the run folder is
    # known to take this run and the run is not complete yet.
    dataset = training_dataset()
    skipped = dataset.skipped_clips
    fit_steps = steps_per_epoch
    if steps_per_epoch is None:
        steps = _steps_per_epoch(dataset, split, recipe.batch_size)
        if int(dataset.cardinality()) <= 0:
            # Unknown length (with on_error="skip" clips may drop out): a fixed number of steps
            # per epoch over a repeated stream, so that no epoch ends early and the schedule,
            # the backups and the log all count the same steps.
            fit_steps = steps
            dataset = dataset.repeat()
    else:
        # Keras keeps one iterator across epochs when steps_per_epoch is given; repeat so that
        # short epochs never exhaust it.
        steps = steps_per_epoch
        dataset = dataset.repeat()
    validation = None
    if validation_split is not None:
        validation_split = _check_split(validation_split)
        validation = make_dataset(
            data_dir,
            validation_split,
            batch_size=recipe.batch_size,
            training=False,
            cache_dir=cache_dir,
            on_error=on_error,
        )

    config = {
        "model": model,
        "split": split,
        "seed": seed,
        "epochs": recipe.epochs,
        "batch_size": recipe.batch_size,
        "weight_decay": recipe.weight_decay,
        "steps_per_epoch": steps,
        "augmentations": described,
        "validation_split": validation_split,
        "data_dir": os.path.abspath(data_dir),
        "dirs_dir": None if dirs_dir is None else os.path.abspath(dirs_dir),
        "distribution": distribution,
        "replicas": replicas,
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "recipe": recipe.to_dict(),
    }
    if overrides:
        config["overrides"] = overrides
    if precision != "float32":
        config["precision"] = precision
    if distilling:
        config["teachers"] = described_teachers
        config["distillation"] = {
            "temperature": recipe.kd_temperature,
            "lambda": recipe.kd_lambda,
            "teacher_logits": None
            if cache_dir is None
            else distill.teacher_logits_path(cache_dir, data_dir, split, described_teachers),
        }
    # Round-trip through JSON so that the comparison with a saved config sees the same types.
    config = json.loads(json.dumps(config))
    resuming, complete = _check_run_dir(run_dir, config, resume, overwrite)
    final_path = os.path.join(run_dir, FINAL_MODEL)
    log_path = os.path.join(run_dir, LOG_FILE)
    if complete:
        _note(f"run in {run_dir} is already complete; loading {FINAL_MODEL}.")
        return TrainResult(load_model(final_path), run_dir, read_history(log_path), recipe)
    if distilling:
        targets = distill.teacher_logits(
            teachers, data_dir, split, cache_dir=cache_dir, on_error=on_error, verbose=verbose
        )
        # Loading the teachers drew initial weights: the student starts from the draw it gets
        # without distillation, and its pipeline shuffles as it does without.
        keras.utils.set_random_seed(seed)
        dataset = training_dataset(targets)
        skipped = dataset.skipped_clips
        # Labels and teacher logits as one target tensor, which every backend's fit accepts.
        clips = dataset.clips
        dataset = dataset.map(distill.join_targets)
        dataset.clips, dataset.skipped_clips = clips, skipped
        if fit_steps is not None:
            dataset = dataset.repeat()

    with scope:
        with precision_scope(precision):
            network, training_network = _build_model(model, recipe, spectrogram_factories, seed)
        if distilling:
            loss = distill.DistillationLoss(recipe.kd_temperature, recipe.kd_lambda)
            accuracy = distill.LabelAccuracy(name="accuracy")
        else:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        training_network.compile(
            optimizer=recipe.make_optimizer(steps),
            loss=loss,
            metrics=[accuracy],
            jit_compile=jit_compile,
        )
        if verbose:
            try:  # the DCASE count, as `keras-asc summary` and the README give it
                params = f"{complexity.profile(network).params:,} params"
            except (TypeError, ValueError):  # a plugin layer the DCASE counter does not know
                params = f"{network.count_params():,} Keras weights incl. BN statistics"
            print(
                f"keras-asc train: {model} on split{split} ({steps} steps/epoch x {recipe.epochs} "
                f"epochs, batch {recipe.batch_size}, {params}) -> {run_dir}"
                + (f" [distilled from {len(described_teachers)} teacher(s)]" if distilling else "")
                + (" [resuming]" if resuming else ""),
                flush=True,
            )
        backup = _RunBackup(os.path.join(run_dir, BACKUP_DIR), backup_every_steps, steps)
        monitor, mode = ("val_accuracy", "max") if validation is not None else ("loss", "min")
        # The backup comes after the log and the checkpoints: an epoch it counts as done has
        # its log.csv row (see _ResumableCSVLogger).
        run_callbacks = [
            # First, so that no backup or checkpoint is written from non-finite weights.
            _StopOnNonFiniteLoss(),
            _LogLearningRate(),
            _ResumableCSVLogger(log_path, backup),
            *_tensorboard_callbacks(tensorboard, os.path.join(run_dir, "tensorboard")),
            _RunCheckpoint(os.path.join(run_dir, CHECKPOINT_DIR), monitor, mode, network),
            backup,
            *(callbacks or ()),
        ]
        try:
            training_network.fit(
                dataset,
                epochs=recipe.epochs,
                initial_epoch=backup.restored_epoch,
                steps_per_epoch=fit_steps,
                validation_data=validation,
                # The pipeline shuffles (seeded) itself.
                shuffle=False,
                callbacks=run_callbacks,
                verbose=verbose,
            )
        except Exception as error:
            # tf.data reports an unreadable clip in many lines; re-raise the one-line error.
            from keras_asc.data.pipeline import decode_failure

            failure = decode_failure(error)
            if failure is None:
                raise
            raise failure from None
    _check_finite_weights(network, final_path)
    if len(skipped):
        _note(skipped.summary())
    save_model_atomic(network, final_path)
    _mark_complete(run_dir, config)
    # The final model is the completion mark; only now is the backup no longer needed.
    backup_dir = os.path.join(run_dir, BACKUP_DIR)
    if os.path.isdir(backup_dir):
        shutil.rmtree(backup_dir)
    result = TrainResult(network, run_dir, read_history(log_path), recipe, training_network)
    result.skipped_clips = skipped
    return result


class NonFiniteTrainingError(ValueError):
    """Training produced a NaN or infinite loss or weights; the run stops without saving."""


class _StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop at the first step whose loss is NaN or infinite, naming the epoch and step."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteTrainingError(
                f"training loss became {float(loss)} at epoch {getattr(self, 'epoch', 0) + 1}, "
                f"step {batch + 1}; the run stopped and no model was saved (lower the learning "
                "rate or weight decay, or check the data)"
            )


def _check_finite_weights(network, final_path):
    """Refuse to save a model whose weights hold NaN or Inf."""
    for weight in network.weights:
        if not np.all(np.isfinite(keras.ops.convert_to_numpy(weight))):
            raise NonFiniteTrainingError(
                f"weight {weight.path} holds NaN or Inf after training; {final_path} was not "
                "written (lower the learning rate or weight decay, or check the data)"
            )
