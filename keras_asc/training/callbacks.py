"""The Keras callbacks of a training run: backups, the epoch log, checkpoints, progress.

``keras_asc.train`` runs them in this order: stop on a non-finite loss, log the learning rate,
append the epoch to ``log.csv``, TensorBoard, save the checkpoints, back up (the backup comes
after the log and the checkpoints, so an epoch it counts as done has its ``log.csv`` row).

Hand-written where Keras has no callback that does the job: ``keras.callbacks.BackupAndRestore``
saves either per epoch or every N batches, not both, and sets the start epoch through a
private model attribute; ``CSVLogger`` in append mode keeps the rows of epochs a resumed run
redoes; ``ModelCheckpoint`` would save the training model with its augmentation layers.
"""

import contextlib
import csv
import importlib.util
import json
import math
import os
import sys

import keras

from keras_asc.files import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    RunDirError,
    atomic_path,
    save_model_atomic,
    write_text_atomic,
)
from keras_asc.training.rundir import RESTART_HINT, writing


def progress_verbosity(verbose=None, stream=None):
    """Keras ``verbose`` for ``fit``: ``None`` (the default of ``train`` and ``quantize``) is
    1, a progress bar, when ``stream`` (standard output) is a terminal, and 2, one line per
    epoch, when it is a file or a pipe, where a bar would leave escape codes."""
    if verbose is not None:
        return verbose
    stream = sys.stdout if stream is None else stream
    try:
        return 1 if stream.isatty() else 2
    except (AttributeError, ValueError):  # a closed or file-like stream without isatty
        return 2


class NonFiniteTrainingError(ValueError):
    """Training produced a NaN or infinite loss or weights; the run stops without saving."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
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


class RunBackup(keras.callbacks.Callback):
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
            f"The backup in {self.backup_dir!r} is corrupt ({detail}); {RESTART_HINT}."
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
        with writing(path):
            os.makedirs(self.backup_dir, exist_ok=True)
            with atomic_path(path, suffix=".weights.h5") as temporary:
                self.model.save_weights(temporary)
        state = {"epoch": next_epoch, "backup": self.saved + 1, "weights": weights}
        with writing(self.state_path):
            write_text_atomic(self.state_path, json.dumps(state) + "\n")
        self.saved += 1  # only once backup.json names the new file
        for name in os.listdir(self.backup_dir):
            if name.endswith(".weights.h5") and name != weights:
                with contextlib.suppress(OSError):  # a leftover is harmless; the next save retries
                    os.remove(os.path.join(self.backup_dir, name))


class LogLearningRate(keras.callbacks.Callback):
    """Adds the learning rate reached at the end of each epoch to the epoch logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            # A schedule-driven optimiser evaluates its schedule at the current step here.
            value = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(value))


class ResumableCSVLogger(keras.callbacks.CSVLogger):
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
                with writing(self.filename):
                    if kept:
                        lines = [",".join(header)] + [",".join(row) for row in kept]
                        write_text_atomic(self.filename, "\n".join(lines) + "\n")
                    else:
                        os.remove(self.filename)
        with writing(self.filename):
            super().on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        with writing(self.filename):
            super().on_epoch_end(epoch, logs)


class RunCheckpoint(keras.callbacks.Callback):
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
        with writing(self.directory):
            os.makedirs(self.directory, exist_ok=True)
        if os.path.exists(self.state_path):
            try:
                with open(self.state_path, encoding="utf-8") as handle:
                    self.best = float(json.load(handle)["value"])
            except (OSError, ValueError, TypeError, KeyError) as error:
                raise RunDirError(
                    f"{self.state_path!r} is corrupt ({type(error).__name__}: {error}); delete it "
                    "to let the next epoch start a new best checkpoint, or "
                    f"{RESTART_HINT}."
                ) from None

    def _improved(self, value):
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        last = os.path.join(self.directory, LAST_CHECKPOINT)
        with writing(last):
            save_model_atomic(self.classifier, last)
        if self.monitor not in logs:
            return
        value = float(logs[self.monitor])
        if math.isfinite(value) and self._improved(value):
            best = os.path.join(self.directory, BEST_CHECKPOINT)
            with writing(best):
                save_model_atomic(self.classifier, best)
            with writing(self.state_path):
                write_text_atomic(
                    self.state_path,
                    json.dumps({"monitor": self.monitor, "value": value, "epoch": epoch}, indent=2),
                )
            self.best = value


def tensorboard_callbacks(tensorboard, log_dir):
    if tensorboard is False:
        return []
    if importlib.util.find_spec("tensorboard") is None:
        if tensorboard:
            raise ImportError(
                "tensorboard=True needs the tensorboard package (pip install tensorboard)."
            )
        print(
            "keras-asc train: note: TensorBoard logs skipped: the tensorboard package is not "
            "installed.",
            file=sys.stderr,
            flush=True,
        )
        return []
    return [keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False, profile_batch=0)]
