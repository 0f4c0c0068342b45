"""Train a registered model with its recipe: ``keras_asc.train`` and ``keras-asc train``.

One call builds the tf.data pipeline (with the recipe's waveform augmentations), the model
(with the recipe's spectrogram augmentations and front-end masking/jitter), the optimiser with
the recipe's learning-rate schedule, and fits (with progress bars on a terminal, one line per
epoch into a file or a pipe). ``train`` is a short sequence of named steps: resolve the plan
(the split, read once as a :class:`~keras_asc.data.tau22.Split`, the recipe, teachers,
augmentations and steps), claim the run folder, build the data, build the model, fit, finish.
The run folder is a :class:`~keras_asc.training.rundir.RunDir` and the callbacks live in
:mod:`keras_asc.training.callbacks`. Everything a run leaves behind lives in one run directory:

```
run_config.json        model, split and its fingerprint, seed, epochs, data dir, the effective
                       recipe (and the recipe overrides and distillation teachers, when given)
log.csv                one row per epoch (appended across resumes, each epoch once)
tensorboard/           TensorBoard event files (with the tensorboard package installed)
checkpoints/last.keras, best.keras, best.json
backup/                weights and optimiser state of the last backup (removed when the run ends)
model.keras            the final model
complete.json          the run id, SHA-256 of model.keras, optimiser steps trained and the split,
                       written right after it: the completion mark (a model.keras without it
                       is never taken as the result)
.keras-asc.lock        locked (flock) while a train process works in the folder
```

A run that would take 0 optimiser steps (fewer clips than one batch) is refused before it
starts. A run folder belongs to one run at a time: a second ``train`` on a locked folder is refused; a
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
import dataclasses
import errno
import functools
import inspect
import json
import numbers
import os
import shutil
import sys
import uuid

import keras
import numpy as np

from keras_asc import complexity, registry
from keras_asc.data import tau22
from keras_asc.files import FINAL_MODEL, LOCK_FILE, RUN_CONFIG, RunDirError, save_model_atomic
from keras_asc.models.classifier import AudioClassifier
from keras_asc.training import callbacks as callbacks_module
from keras_asc.training.callbacks import NonFiniteTrainingError
from keras_asc.training.precision import check_precision, precision_scope
from keras_asc.training.recipes import DEVICE_IMPULSE_RESPONSE, get_recipe
from keras_asc.training.rundir import (
    DISK_REASONS,
    RESTART_HINT,
    RunDir,
    disk_error,
    writing,
)
from keras_asc.training.saving import load_model

DISTRIBUTIONS = ("mirrored", "data_parallel")
# Fields of run_config.json that must match for a run directory to be continued.
_RESUME_KEYS = (
    "model",
    "split",
    "split_fingerprint",
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
        skipped_clips: the :class:`~keras_asc.data.pipeline.SkippedClips` of the training
            data (``on_error="skip"``); ``None`` when a complete run was loaded.
        steps_trained: optimiser steps the run took (all of its epochs, resumes included), as
            its completion record holds them.
    """

    model: object
    run_dir: str
    history: dict
    recipe: object
    training_model: object = None
    skipped_clips: object = None
    steps_trained: object = None

    @property
    def model_path(self):
        return os.path.join(self.run_dir, FINAL_MODEL)


def _note(message):
    print(f"keras-asc train: note: {message}", file=sys.stderr, flush=True)


# --- the run folder: lock, ownership, completion (keras_asc.training.rundir) -----------------

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
                raise disk_error(error, error.filename or run_dir) from None
            finally:
                _CURRENT_RUN.reset(token)

    return wrapper


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


def _check_distribution(distribution):
    """Refuse an unknown distribution, or one the process's Keras backend cannot run."""
    backend = keras.backend.backend()
    if distribution is None:
        return
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
        return
    if backend != "jax":
        raise ValueError(
            f"distribution='data_parallel' (keras.distribution.DataParallel) needs the JAX "
            f"backend; this process runs {backend!r}. Use 'mirrored' on TensorFlow."
        )


def _distribution_scope(distribution, batch_size):
    """A context manager for model creation and fit, and the number of replicas."""
    _check_distribution(distribution)
    if distribution is None:
        return contextlib.nullcontext(), 1
    if distribution == "mirrored":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        return strategy.scope(), strategy.num_replicas_in_sync
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


@dataclasses.dataclass
class _Plan:
    """Everything one ``train`` call resolved before it touches the run folder."""

    model: str
    split: tau22.Split
    seed: int
    recipe: object
    run: RunDir
    waveform_augmentations: list
    spectrogram_factories: list
    augmentations: list
    teachers: list
    overrides: dict
    validation: object
    scope: object
    steps: int
    fit_steps: object
    config: dict
    options: dict


def _zero_steps_error(split, clips, batch_size, steps):
    return ValueError(
        f"Training on {split.title} of {split.root!r} would take 0 optimiser steps: {clips} "
        f"clip(s), batch size {batch_size}, {steps} step(s) per epoch of full batches; lower "
        "batch_size (--batch-size) or train on a larger split."
    )


def _resolve_plan(model, data_dir, split, out_dir, seed, resume, overwrite, options):
    """Check the arguments and resolve the run's facts once: the split, the recipe (with
    overrides), the teachers, the augmentations, the steps and the config to record."""
    if not isinstance(model, str):
        raise TypeError(f"model must be a registered model name. Received: model={model!r}")
    if data_dir is None:
        raise ValueError(
            "data_dir is required: the TAU22 development-set folder (or a synthetic one)."
        )
    if tau22.normalize_split(split) == "test":
        raise ValueError("split='test' is the evaluation split; train on 5, 10, 25, 50 or 100.")
    seed = _check_int("seed", seed, 0)
    _check_distribution(options["distribution"])
    check_precision(options["precision"])
    steps_per_epoch = options["steps_per_epoch"]
    if steps_per_epoch is not None:
        steps_per_epoch = _check_int("steps_per_epoch", steps_per_epoch, 1)
    options["backup_every_steps"] = _check_int(
        "backup_every_steps", options["backup_every_steps"], 1
    )
    dirs_dir = tau22.expand_path(options["dirs_dir"])
    if dirs_dir is not None and not os.path.isdir(dirs_dir):
        raise FileNotFoundError(f"Impulse-response folder {dirs_dir!r} does not exist.")
    options["cache_dir"] = tau22.expand_path(options["cache_dir"])
    if options["on_error"] not in ("raise", "skip"):
        raise ValueError(
            f"on_error must be 'raise' or 'skip'. Received: on_error={options['on_error']!r}"
        )
    split = tau22.Split.load(data_dir, split)
    if options["on_error"] == "raise" and options["cache_dir"] is None:
        missing = split.missing_files()  # reported before the run folder is touched
        if missing:
            raise tau22.MissingFilesError(
                f"{split.missing_files_error(missing)} Download or extract the audio, or pass "
                "on_error='skip' (--on-error skip) to drop them.",
                missing,
            )
    run = RunDir(out_dir or os.path.join("runs", f"{model}-split{split.name}-seed{seed}"))
    continuing = resume and not overwrite
    recipe = get_recipe(model).with_overrides(**options["recipe"])
    overrides = _effective_overrides(options["overrides"], run, continuing)
    if overrides:
        recipe = recipe.with_settings(overrides)
    teachers = options["teachers"]
    if teachers is None and continuing:  # a distilled run continues with its teachers
        recorded = _recorded(run, "teachers", "teachers")
        teachers = [teacher["path"] for teacher in recorded] if recorded else None
    if teachers is not None:
        from keras_asc.training import distill

        teachers = distill.check_teachers(teachers, split.name)
    clips, batch = len(split.clips), recipe.batch_size
    steps = steps_per_epoch or clips // batch
    if clips < batch or steps < 1:  # full batches only: a run needs one of them at least
        raise _zero_steps_error(split, clips, batch, clips // batch)
    keras.utils.set_random_seed(seed)
    augment = options["augment"]
    waveform, spectrogram, described = _resolve_augmentations(
        recipe, [augment] if isinstance(augment, str) else list(augment or ()), dirs_dir, seed
    )
    scope, replicas = _distribution_scope(options["distribution"], recipe.batch_size)
    validation = options["validation_split"]
    if validation is not None:
        validation = tau22.Split.load(split.root, validation)
    config = {
        "model": model,
        "split": split.name,
        "split_fingerprint": split.fingerprint,
        "seed": seed,
        "epochs": recipe.epochs,
        "batch_size": recipe.batch_size,
        "weight_decay": recipe.weight_decay,
        "steps_per_epoch": steps,
        "augmentations": described,
        "validation_split": None if validation is None else validation.name,
        # How the audio reached 32 kHz (the cache is keyed by it; the model's front-end
        # records it too).
        "resampler": recipe.resampler,
        "data_dir": split.root,
        "dirs_dir": None if dirs_dir is None else os.path.abspath(dirs_dir),
        "distribution": options["distribution"],
        "replicas": replicas,
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "recipe": recipe.to_dict(),
    }
    if overrides:
        config["overrides"] = overrides
    if options["precision"] != "float32":
        config["precision"] = options["precision"]
    if teachers is not None:
        config["teachers"] = teachers
        cache_dir = options["cache_dir"]
        config["distillation"] = {
            "temperature": recipe.kd_temperature,
            "lambda": recipe.kd_lambda,
            "teacher_logits": None
            if cache_dir is None
            else distill.teacher_logits_path(cache_dir, split, teachers),
        }
    # Round-trip through JSON so that the comparison with a saved config sees the same types.
    config = json.loads(json.dumps(config))
    return _Plan(
        model,
        split,
        seed,
        recipe,
        run,
        waveform,
        spectrogram,
        described,
        teachers,
        overrides,
        validation,
        scope,
        steps,
        steps_per_epoch,
        config,
        options,
    )


def _build_data(plan):
    """The training data (built once, with the teachers' logits when distilling) and the
    validation data; ``plan.fit_steps`` becomes the steps ``fit`` is told, if any."""
    from keras_asc.data.pipeline import make_dataset

    options = plan.options
    targets = None
    if plan.teachers is not None:
        from keras_asc.training import distill

        targets = distill.teacher_logits(
            [teacher["path"] for teacher in plan.teachers],
            plan.split,
            cache_dir=options["cache_dir"],
            on_error=options["on_error"],
            verbose=options["verbose"],
        )
        # Loading the teachers drew initial weights: the student starts from the draw it gets
        # without distillation, and its pipeline shuffles as it does without.
        keras.utils.set_random_seed(plan.seed)
    data = make_dataset(
        plan.split,
        batch_size=plan.recipe.batch_size,
        training=True,
        seed=plan.seed,
        waveform_augmentations=tuple(plan.waveform_augmentations),
        cache_dir=options["cache_dir"],
        on_error=options["on_error"],
        clip_targets=targets,
        resampler=plan.recipe.resampler,
    )
    if len(data.clips) < plan.recipe.batch_size:  # missing files were dropped (on_error="skip")
        raise _zero_steps_error(plan.split, len(data.clips), plan.recipe.batch_size, 0)
    dataset = data.dataset
    if targets is not None:
        # Labels and teacher logits as one target tensor, which every backend's fit accepts.
        dataset = dataset.map(distill.join_targets)
    if plan.fit_steps is not None or int(dataset.cardinality()) <= 0:
        # A fixed number of steps per epoch over a repeated stream: Keras keeps one iterator
        # across epochs when steps_per_epoch is given, and with an unknown length (clips may
        # drop out with on_error="skip") no epoch may end early, so that the schedule, the
        # backups and the log all count the same steps.
        plan.fit_steps = plan.steps
        dataset = dataset.repeat()
    validation = None
    if plan.validation is not None:
        validation = make_dataset(
            plan.validation,
            batch_size=plan.recipe.batch_size,
            training=False,
            cache_dir=options["cache_dir"],
            on_error=options["on_error"],
            resampler=plan.recipe.resampler,
        ).dataset
    return data, dataset, validation


def _compile_model(plan):
    """``(classifier, training_model)``, compiled with the recipe's optimiser and the loss."""
    with precision_scope(plan.options["precision"]):
        network, training_network = _build_model(
            plan.model, plan.recipe, plan.spectrogram_factories, plan.seed
        )
    if plan.teachers is not None:
        from keras_asc.training import distill

        loss = distill.DistillationLoss(plan.recipe.kd_temperature, plan.recipe.kd_lambda)
        accuracy = distill.LabelAccuracy(name="accuracy")
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    training_network.compile(
        optimizer=plan.recipe.make_optimizer(plan.steps),
        loss=loss,
        metrics=[accuracy],
        jit_compile=plan.options["jit_compile"],
    )
    return network, training_network


def _announce(plan, network, resuming):
    """The one line that says what is trained, how long, and where."""
    try:  # the DCASE count, as `keras-asc summary` and the README give it
        params = f"{complexity.profile(network).params:,} params"
    except (TypeError, ValueError):  # a plugin layer the DCASE counter does not know
        params = f"{network.count_params():,} Keras weights incl. BN statistics"
    recipe = plan.recipe
    print(
        f"keras-asc train: {plan.model} on {plan.split.title} ({plan.steps} steps/epoch x "
        f"{recipe.epochs} epochs, batch {recipe.batch_size}, {params}) -> {plan.run.path}"
        + (f" [distilled from {len(plan.teachers)} teacher(s)]" if plan.teachers else "")
        + (" [resuming]" if resuming else ""),
        flush=True,
    )


def _fit(plan, network, training_network, dataset, validation):
    """Fit with the run's callbacks; returns the optimiser steps this call trained."""
    options, run = plan.options, plan.run
    backup = callbacks_module.RunBackup(run.backup_dir, options["backup_every_steps"], plan.steps)
    monitor, mode = ("val_accuracy", "max") if validation is not None else ("loss", "min")
    run_callbacks = [
        # First, so that no backup or checkpoint is written from non-finite weights.
        callbacks_module.StopOnNonFiniteLoss(),
        callbacks_module.LogLearningRate(),
        callbacks_module.ResumableCSVLogger(run.log_path, backup),
        *callbacks_module.tensorboard_callbacks(options["tensorboard"], run.tensorboard_dir),
        callbacks_module.RunCheckpoint(run.checkpoint_dir, monitor, mode, network),
        backup,  # after the log and the checkpoints (see keras_asc.training.callbacks)
        *(options["callbacks"] or ()),
    ]
    iterations = training_network.optimizer.iterations
    try:
        training_network.fit(
            dataset,
            epochs=plan.recipe.epochs,
            initial_epoch=backup.restored_epoch,
            steps_per_epoch=plan.fit_steps,
            validation_data=validation,
            shuffle=False,  # the pipeline shuffles (seeded) itself
            callbacks=run_callbacks,
            verbose=options["verbose"],
        )
    except Exception as error:
        # tf.data reports an unreadable clip in many lines; re-raise the one-line error.
        from keras_asc.data.pipeline import decode_failure

        failure = decode_failure(error)
        if failure is None:
            raise
        raise failure from None
    return int(keras.ops.convert_to_numpy(iterations))


def _finish(plan, network, training_network, data, steps_trained):
    """Save ``model.keras``, write the completion record, drop the backup."""
    run = plan.run
    if steps_trained < 1:
        raise _zero_steps_error(plan.split, len(data.clips), plan.recipe.batch_size, steps_trained)
    _check_finite_weights(network, run.model_path)
    if len(data.skipped):
        _note(data.skipped.summary())
    save_model_atomic(network, run.model_path)
    run.mark_complete(plan.config["run_id"], steps_trained, plan.split)
    # The final model is the completion mark; only now is the backup no longer needed.
    if os.path.isdir(run.backup_dir):
        shutil.rmtree(run.backup_dir)
    return TrainResult(
        network, run.path, run.history(), plan.recipe, training_network, data.skipped, steps_trained
    )


def _check_run_dir(run, config, resume, overwrite=False):
    """Create and lock the run folder and decide what this call does there.

    Returns ``(resuming, complete)``: whether an earlier run of the same settings is continued,
    and whether its ``model.keras`` is that run's recorded result. ``config`` gets the run id
    (new, or the continued run's). A new run needs a folder without files (apart from the
    lock); ``overwrite`` first removes what a run writes (``RUN_FILES``), nothing else.
    """
    run_dir = run.path
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as error:
        raise RunDirError(
            f"Cannot create the run directory {run_dir!r}: "
            f"{DISK_REASONS.get(error.errno) or error.strerror or error}; fix that or choose "
            "another out_dir (--out)."
        ) from None
    if not os.path.isdir(run_dir):
        raise RunDirError(f"out_dir {run_dir!r} is a file; expected a folder for the run.")
    current = _CURRENT_RUN.get()
    with writing(run.lock_path):
        lock = run.lock("keras-asc train").__enter__()
    if current is not None:
        current["stack"].callback(lock.__exit__, None, None, None)
        current["run_dir"] = run_dir
    if overwrite:
        run.remove_run_files()
    try:
        previous = run.read_config()
    except RunDirError as error:
        raise RunDirError(f"{error} {RESTART_HINT[0].upper()}{RESTART_HINT[1:]}.") from None
    if previous is None:
        others = sorted(name for name in os.listdir(run_dir) if name != LOCK_FILE)
        if others and not overwrite:
            with contextlib.suppress(OSError):  # leave the user's folder as it was
                os.remove(lock.path)
            shown = ", ".join(others[:5]) + (
                f" and {len(others) - 5} more" if len(others) > 5 else ""
            )
            raise FileExistsError(
                f"Run directory {run_dir!r} holds files this run did not write ({shown}); "
                "choose a new or empty out_dir (--out), or pass overwrite=True (--overwrite) to "
                "replace only what a run writes and keep the rest."
            )
        config["run_id"] = uuid.uuid4().hex
        with writing(run.config_path):
            run.write_config(config)
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
        and not (key == "split_fingerprint" and previous.get(key) is None)  # older runs
    ]
    if differences:
        raise ValueError(
            f"Cannot resume the run in {run_dir!r}: its settings differ ("
            + "; ".join(differences)
            + "). Use another out_dir for a new run."
        )
    config["run_id"] = previous.run_id
    if not run.has_model():
        return True, False
    stale = run.stale_model_reason(config["run_id"])
    if stale is not None:
        _note(
            f"{FINAL_MODEL} in {run_dir} is not this run's result ({stale}); the run continues "
            "and replaces it."
        )
        return True, False
    return True, True


def _recorded(run, key, what):
    """What the run in ``run`` recorded under ``key`` in run_config.json (``None`` when
    there is no readable run there), with a note that the continued run uses it."""
    try:
        previous = run.read_config() if run.is_folder() else None
    except RunDirError:
        return None  # reported by _check_run_dir with its own advice
    recorded = (previous.data if previous else {}).get(key)
    if recorded:
        _note(f"continuing the run in {run.path} with its {what} {recorded}.")
    return recorded or None


def _effective_overrides(overrides, run, resuming):
    """The recipe overrides of this call: ``overrides`` as given (checked to be a dict with
    string keys), or, when it is ``None`` and the run in ``run`` is continued, the ones
    that run recorded in run_config.json."""
    if overrides is None:
        return _recorded(run, "overrides", "recipe overrides") if resuming else None
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
    options = {
        "recipe": {"epochs": epochs, "batch_size": batch_size, "weight_decay": weight_decay},
        "steps_per_epoch": steps_per_epoch,
        "backup_every_steps": backup_every_steps,
        "augment": augment,
        "dirs_dir": dirs_dir,
        "cache_dir": cache_dir,
        "distribution": distribution,
        "validation_split": validation_split,
        "teachers": teachers,
        "overrides": overrides,
        "on_error": on_error,
        "verbose": callbacks_module.progress_verbosity(verbose),
        "callbacks": callbacks,
        "tensorboard": tensorboard,
        "jit_compile": jit_compile,
        "precision": precision,
    }
    plan = _resolve_plan(model, data_dir, split, out_dir, seed, resume, overwrite, options)
    resuming, complete = _check_run_dir(plan.run, plan.config, resume, overwrite)
    if complete:
        _note(f"run in {plan.run.path} is already complete; loading {FINAL_MODEL}.")
        run = plan.run
        return TrainResult(
            load_model(run.model_path),
            run.path,
            run.history(),
            plan.recipe,
            steps_trained=run.steps_trained,
        )
    data, dataset, validation = _build_data(plan)
    with plan.scope:
        network, training_network = _compile_model(plan)
        if plan.options["verbose"]:
            _announce(plan, network, resuming)
        steps_trained = _fit(plan, network, training_network, dataset, validation)
    return _finish(plan, network, training_network, data, steps_trained)


def _check_finite_weights(network, final_path):
    """Refuse to save a model whose weights hold NaN or Inf."""
    for weight in network.weights:
        if not np.all(np.isfinite(keras.ops.convert_to_numpy(weight))):
            raise NonFiniteTrainingError(
                f"weight {weight.path} holds NaN or Inf after training; {final_path} was not "
                "written (lower the learning rate or weight decay, or check the data)"
            )
