"""Train a registered model with its recipe: ``keras_asc.train`` and ``keras-asc train``.

One call builds the tf.data pipeline (with the recipe's waveform augmentations), the model
(with the recipe's spectrogram augmentations and front-end masking/jitter), the optimiser with
the recipe's learning-rate schedule, and fits with Keras progress bars. Everything a run leaves
behind lives in one run directory:

```
run_config.json        model, split, seed, epochs, data dir, the effective recipe
log.csv                one row per epoch (appended across resumes, each epoch once)
tensorboard/           TensorBoard event files (with the tensorboard package installed)
checkpoints/last.keras, best.keras, best.json
backup/                weights and optimiser state of the last backup (removed when the run ends)
model.keras            the final model, written last: a run with it is complete
```

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
import csv
import dataclasses
import functools
import importlib.util
import inspect
import json
import math
import numbers
import os
import shutil
import sys

import keras
import numpy as np

from keras_asc import registry
from keras_asc.data import tau22
from keras_asc.files import (
    BACKUP_DIR,
    BEST_CHECKPOINT,
    CHECKPOINT_DIR,
    FINAL_MODEL,
    LAST_CHECKPOINT,
    LOG_FILE,
    RUN_CONFIG,
    atomic_path,
    save_model_atomic,
    write_text_atomic,
)
from keras_asc.models.classifier import AudioClassifier
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
        self.state = None
        if os.path.exists(self.state_path):
            with open(self.state_path, encoding="utf-8") as handle:
                self.state = json.load(handle)
        self.restored_epoch = int(self.state["epoch"]) if self.state else 0
        self.epoch = self.restored_epoch
        self.steps = 0
        self.saved = 0 if self.state is None else int(self.state["backup"])

    def on_train_begin(self, logs=None):
        if self.state is not None:
            self.model.load_weights(os.path.join(self.backup_dir, self.state["weights"]))
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
        os.makedirs(self.backup_dir, exist_ok=True)
        self.saved += 1
        weights = f"backup-{self.saved}.weights.h5"
        with atomic_path(os.path.join(self.backup_dir, weights), suffix=".weights.h5") as temporary:
            self.model.save_weights(temporary)
        state = {"epoch": next_epoch, "backup": self.saved, "weights": weights}
        write_text_atomic(self.state_path, json.dumps(state) + "\n")
        for name in os.listdir(self.backup_dir):
            if name.endswith(".weights.h5") and name != weights:
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
    so that the log holds each epoch exactly once."""

    def __init__(self, filename, backup):
        super().__init__(filename, append=True)
        self.backup = backup

    def on_train_begin(self, logs=None):
        keep_below = self.backup.restored_epoch
        if os.path.exists(self.filename):
            with open(self.filename, newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))
            header, body = (rows[0], rows[1:]) if rows else ([], [])
            kept = [row for row in body if row and int(row[0]) < keep_below]
            if len(kept) != len(body):
                if kept:
                    lines = [",".join(header)] + [",".join(row) for row in kept]
                    write_text_atomic(self.filename, "\n".join(lines) + "\n")
                else:
                    os.remove(self.filename)
        super().on_train_begin(logs)


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
        os.makedirs(self.directory, exist_ok=True)
        if os.path.exists(self.state_path):
            with open(self.state_path, encoding="utf-8") as handle:
                self.best = json.load(handle)["value"]

    def _improved(self, value):
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        save_model_atomic(self.classifier, os.path.join(self.directory, LAST_CHECKPOINT))
        if self.monitor not in logs:
            return
        value = float(logs[self.monitor])
        if math.isfinite(value) and self._improved(value):
            self.best = value
            save_model_atomic(self.classifier, os.path.join(self.directory, BEST_CHECKPOINT))
            write_text_atomic(
                self.state_path,
                json.dumps({"monitor": self.monitor, "value": value, "epoch": epoch}, indent=2),
            )


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


def _check_run_dir(run_dir, config, resume):
    path = os.path.join(run_dir, RUN_CONFIG)
    if not os.path.exists(path):
        return False
    if not resume:
        raise FileExistsError(
            f"Run directory {run_dir!r} already holds a run ({RUN_CONFIG}); pass resume=True to "
            "continue it or choose another out_dir."
        )
    try:
        with open(path, encoding="utf-8") as handle:
            previous = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path}: not valid JSON ({error}); cannot resume this run. Remove the run "
            "directory or use another out_dir."
        ) from None
    if not isinstance(previous, dict):
        raise ValueError(f"{path}: expected a JSON object, received {type(previous).__name__}.")
    differences = [
        f"{key}: run has {previous.get(key)!r}, now {config[key]!r}"
        for key in _RESUME_KEYS
        if previous.get(key) != config[key]
    ]
    if differences:
        raise ValueError(
            f"Cannot resume the run in {run_dir!r}: its settings differ ("
            + "; ".join(differences)
            + "). Use another out_dir for a new run."
        )
    return True


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}. Received: {name}={value!r}")
    return int(value)


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
    verbose=1,
    steps_per_epoch=None,
    validation_split=None,
    backup_every_steps=100,
    callbacks=None,
    tensorboard=None,
    jit_compile="auto",
    on_error="raise",
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
    if steps_per_epoch is not None:
        steps_per_epoch = _check_int("steps_per_epoch", steps_per_epoch, 1)
    backup_every_steps = _check_int("backup_every_steps", backup_every_steps, 1)
    if dirs_dir is not None and not os.path.isdir(dirs_dir):
        raise FileNotFoundError(f"Impulse-response folder {os.fspath(dirs_dir)!r} does not exist.")
    if isinstance(augment, str):
        augment = [augment]
    recipe = get_recipe(model).with_overrides(
        epochs=epochs, batch_size=batch_size, weight_decay=weight_decay
    )
    keras.utils.set_random_seed(seed)
    waveform_augs, spectrogram_factories, described = _resolve_augmentations(
        recipe, list(augment or ()), dirs_dir, seed
    )
    scope, replicas = _distribution_scope(distribution, recipe.batch_size)

    from keras_asc.data.pipeline import make_dataset

    dataset = make_dataset(
        data_dir,
        split,
        batch_size=recipe.batch_size,
        training=True,
        seed=seed,
        waveform_augmentations=tuple(waveform_augs),
        cache_dir=cache_dir,
        on_error=on_error,
    )
    skipped = dataset.skipped_clips
    if steps_per_epoch is None:
        steps = _steps_per_epoch(dataset, split, recipe.batch_size)
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

    run_dir = os.path.abspath(out_dir or os.path.join("runs", f"{model}-split{split}-seed{seed}"))
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
    # Round-trip through JSON so that the comparison with a saved config sees the same types.
    config = json.loads(json.dumps(config))
    resuming = _check_run_dir(run_dir, config, resume)
    final_path = os.path.join(run_dir, FINAL_MODEL)
    log_path = os.path.join(run_dir, LOG_FILE)
    if resuming and os.path.exists(final_path):
        _note(f"run in {run_dir} is already complete; loading {FINAL_MODEL}.")
        return TrainResult(load_model(final_path), run_dir, read_history(log_path), recipe)
    os.makedirs(run_dir, exist_ok=True)
    if not resuming:
        write_text_atomic(os.path.join(run_dir, RUN_CONFIG), json.dumps(config, indent=2) + "\n")

    with scope:
        network, training_network = _build_model(model, recipe, spectrogram_factories, seed)
        training_network.compile(
            optimizer=recipe.make_optimizer(steps),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=jit_compile,
        )
        if verbose:
            from keras_asc import complexity

            try:  # the DCASE count, as `keras-asc summary` and the README give it
                params = f"{complexity.profile(network).params:,} params"
            except (TypeError, ValueError):  # a plugin layer the DCASE counter does not know
                params = f"{network.count_params():,} Keras weights incl. BN statistics"
            print(
                f"keras-asc train: {model} on split{split} ({steps} steps/epoch x {recipe.epochs} "
                f"epochs, batch {recipe.batch_size}, {params}) -> {run_dir}"
                + (" [resuming]" if resuming else ""),
                flush=True,
            )
        backup = _RunBackup(os.path.join(run_dir, BACKUP_DIR), backup_every_steps, steps)
        monitor, mode = ("val_accuracy", "max") if validation is not None else ("loss", "min")
        run_callbacks = [
            # First, so that no backup or checkpoint is written from non-finite weights.
            _StopOnNonFiniteLoss(),
            backup,
            _LogLearningRate(),
            _ResumableCSVLogger(log_path, backup),
            *_tensorboard_callbacks(tensorboard, os.path.join(run_dir, "tensorboard")),
            _RunCheckpoint(os.path.join(run_dir, CHECKPOINT_DIR), monitor, mode, network),
            *(callbacks or ()),
        ]
        try:
            training_network.fit(
                dataset,
                epochs=recipe.epochs,
                initial_epoch=backup.restored_epoch,
                steps_per_epoch=steps_per_epoch,
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
