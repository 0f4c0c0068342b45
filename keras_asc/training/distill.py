"""Knowledge distillation from trained keras-asc runs, as the CP-JKU DCASE 2023 system does it.

A student is trained on its split with a loss that mixes the label loss with the
Kullback-Leibler divergence between the teachers' and its own temperature-softened class
distributions::

    loss = kd_lambda * CE(labels, student)
           + (1 - kd_lambda) * T^2 * mean_c[ p_t * (log p_t - log p_s) ]
    p_t = softmax(teacher_logits / T),  log p_s = log_softmax(student_logits / T)

The divergence runs from the teacher to the student, KL(p_t || p_s), and is averaged over the
classes as well as the batch (``torch.nn.KLDivLoss(reduction="none", log_target=True)``
followed by ``.mean()`` in the reference): per clip it is the KL divergence divided by the
number of classes. ``kd_lambda = 0.02`` and ``T = 2`` (the recipe's ``kd_lambda`` and
``kd_temperature``) were tuned with that scale.

The teacher logits are computed once per training clip, on the clean clip (no augmentation),
as the mean of the teachers' logits, and stored; the student then sees its augmented clip
(device impulse responses, time roll, Freq-MixStyle) against those fixed targets. None of the
recipes' augmentations mixes labels (Freq-MixStyle mixes frequency statistics between clips,
not their classes), so the targets need no mixing either.

Teachers must have been trained on the student's split. DCASE 2024 Task 1 allows a system
trained on a subset to use only that subset's clips, and a teacher trained on a larger split
carries the clips outside it into the student; :func:`check_teachers` refuses such teachers.

The logits are stored in the audio cache folder when there is one (``cache_dir``), as
``teacher-logits-<split>-<key>.npy`` with one row per clip of the split in file order; the key
is a SHA-256 of the dataset folder, the split's file list and each teacher's folder and
``model.keras`` digest, so a retrained teacher or another split gets a new file. Without a
cache folder they are computed in memory for each ``train`` call.

Example:
    >>> keras_asc.train("moflenet57", data_dir="/data/tau22", split=25,
    ...                 teachers=["runs/cpr128k-a", "runs/cpr128k-b"])

Reference:
    F. Schmid et al., CP-JKU submission to DCASE 2023 Task 1 ("Efficient acoustic scene
    classification with CP-Mobile") and its code, fschmid56/cpjku_dcase23: ``run_training.py``
    (the loss, T = 2, kd_lambda = 0.02) and ``datasets/dcase23.py`` (one stored ensemble logit
    vector per clip).
"""

import hashlib
import json
import os

import numpy as np

from keras_asc.data import tau22
from keras_asc.files import atomic_path
from keras_asc.training.evaluation import load_predictor
from keras_asc.training.losses import DistillationLoss, LabelAccuracy
from keras_asc.training.rundir import RunDir

__all__ = [
    "DistillationLoss",
    "LabelAccuracy",
    "check_teachers",
    "join_targets",
    "teacher_logits",
]

_LOGITS_VERSION = 1


# --- the teachers --------------------------------------------------------------------------


_split_name = tau22.split_title


def _trained_splits(folder, what):
    """The splits the run or ensemble in ``folder`` was trained on (an ensemble: its members')."""
    config = RunDir(folder).read_config()
    if config is None:
        raise ValueError(
            f"{what} {folder!r} has no run_config.json, so the split it was trained on is "
            "unknown; teachers must be keras-asc runs or ensembles trained on the same split."
        )
    if config.get("kind") == "ensemble":
        splits = set()
        for member in config.get("members") or [{}]:
            source = member.get("source")
            if source is None:
                raise ValueError(
                    f"Ensemble {folder!r} has a member without a recorded source run, so the "
                    "split it was trained on is unknown; build the ensemble from run directories."
                )
            member_dir = source if os.path.isdir(source) else os.path.dirname(source)
            splits |= _trained_splits(member_dir, f"member {source!r} of ensemble")
        return splits
    if config.split is None:
        raise ValueError(f"{what} {folder!r}: run_config.json records no training split.")
    return {config.split}


def check_teachers(teachers, split):
    """Check that every teacher is a finished run or ensemble trained on ``split``.

    Args:
        teachers: run directories (``keras-asc train``) or ensemble folders
            (``keras-asc ensemble``), each with ``model.keras`` and ``run_config.json``.
        split: the student's training split (5, 10, 25, 50 or 100).

    Returns:
        ``[{"path": absolute folder, "model": recorded model name}]``, one per teacher.

    Raises:
        ValueError: no teachers, a teacher that is not a folder with ``run_config.json``, or a
            teacher trained on another split (the message says why that is refused).
        FileNotFoundError: a teacher folder without ``model.keras``.
    """
    if isinstance(teachers, (str, os.PathLike)):
        teachers = [teachers]
    teachers = list(teachers)
    if not teachers:
        raise ValueError("teachers is empty: give at least one run directory.")
    split = tau22.normalize_split(split)
    described = []
    for teacher in teachers:
        run = RunDir(teacher)
        folder = run.path
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"Teacher {os.fspath(teacher)!r} is not a folder: expected a run directory "
                "written by `keras-asc train` or an ensemble folder (`keras-asc ensemble`)."
            )
        if not run.has_model():
            raise FileNotFoundError(
                f"Teacher {folder!r} has no model.keras: train it to the end first."
            )
        trained = _trained_splits(folder, "Teacher")
        if trained != {split}:
            shown = ", ".join(_split_name(s) for s in sorted(trained, key=str))
            raise ValueError(
                f"Teacher {folder!r} was trained on {shown}, but the student trains on "
                f"{_split_name(split)}: DCASE 2024 Task 1 allows only the clips of the training "
                "split, and a teacher trained on other clips passes them on to the student; use "
                f"teachers trained on {_split_name(split)}."
            )
        described.append({"path": folder, "model": run.config.model})
    return described


def _logits_key(split, teachers):
    record = {
        "version": _LOGITS_VERSION,
        "data_dir": split.root,
        "files": hashlib.sha256(
            "\n".join(clip.filename for clip in split.clips).encode("utf-8")
        ).hexdigest(),
        "teachers": [
            [teacher["path"], RunDir(teacher["path"]).model_digest()] for teacher in teachers
        ],
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode("utf-8")).hexdigest()


def teacher_logits_path(cache_dir, split, teachers):
    """Where :func:`teacher_logits` stores the logits of ``teachers`` (from
    :func:`check_teachers`) for ``split`` (a :class:`~keras_asc.data.tau22.Split`) in
    ``cache_dir``."""
    name = f"teacher-logits-{split.title}-{_logits_key(split, teachers)[:16]}.npy"
    return os.path.join(tau22.expand_path(cache_dir), name)


def _compute_logits(teachers, split, cache_dir, on_error, batch_size, verbose):
    """The mean teacher logits of every clip of the split, in file order; rows of clips that
    could not be read (``on_error="skip"``) are NaN."""
    from keras_asc.data.pipeline import make_dataset

    data = make_dataset(
        split,
        batch_size=batch_size,
        training=False,
        cache_dir=cache_dir,
        on_error=on_error,
    )
    predictors = [load_predictor(teacher["path"]) for teacher in teachers]
    if verbose:
        names = ", ".join(teacher["model"] or teacher["path"] for teacher in teachers)
        print(f"keras-asc train: teacher logits of {len(data.clips)} clips from {names} ...")
    batches = []
    for waveforms, _ in data.dataset.as_numpy_iterator():
        logits = [np.asarray(predictor.predict(waveforms), np.float64) for predictor in predictors]
        shapes = {value.shape for value in logits}
        if len(shapes) != 1:
            raise ValueError(
                f"The teachers disagree on the number of classes: output shapes {sorted(shapes)}."
            )
        batches.append(np.mean(logits, axis=0).astype(np.float32))
    computed = np.concatenate(batches) if batches else np.zeros((0, 0), np.float32)
    all_clips = split.clips
    skipped = set(data.skipped.errors)
    listed = {clip.filename for clip in data.clips}
    read = [
        index
        for index, clip in enumerate(all_clips)
        if clip.filename in listed and split.path_of(clip) not in skipped
    ]
    if len(read) != len(computed):
        raise RuntimeError(
            f"Teacher logits: {len(computed)} clips were read but {len(read)} were expected."
        )
    logits = np.full((len(all_clips), computed.shape[1]), np.nan, np.float32)
    logits[read] = computed
    return logits


def teacher_logits(
    teachers,
    data,
    split=None,
    *,
    cache_dir=None,
    on_error="raise",
    batch_size=64,
    verbose=1,
):
    """The mean logits of ``teachers`` for every clip of ``split``, computed once.

    Each clip is read as the pipeline reads it for evaluation (no augmentation) and passed
    through every teacher; the teachers' logits are averaged. With ``cache_dir`` the result
    is stored there (written atomically) and reused by later calls with the same dataset,
    split and teacher models.

    Args:
        teachers: the teacher folders (see :func:`check_teachers`, which checks their split).
        data: the training split, a :class:`~keras_asc.data.tau22.Split` (the one the
            student trains on), or the dataset root (then ``split`` names the split).
        split: with a dataset root as ``data``: the split's name (5, 10, 25, 50 or 100).
        cache_dir: the decoded-audio cache folder; the logits are stored beside the caches.
        on_error: ``"raise"`` or ``"skip"``, as for ``make_dataset``.
        batch_size: clips per teacher forward pass.
        verbose: print a line when the logits are computed or reused.

    Returns:
        ``{filename: float32 logits}`` for every clip of the split; the row of a clip that
        could not be read (``on_error="skip"``) is NaN. The pipeline drops such clips before
        they reach the loss, but without a cache it lists them and drops them only as it reads
        them, so every clip it lists needs a row.
    """
    split = data if isinstance(data, tau22.Split) else tau22.Split.load(data, split)
    described = check_teachers(teachers, split.name)
    path = None
    logits = None
    if cache_dir is not None:
        cache_dir = tau22.expand_path(cache_dir)
        os.makedirs(cache_dir, exist_ok=True)
        path = teacher_logits_path(cache_dir, split, described)
        if os.path.isfile(path):
            try:
                logits = np.load(path)
            except (OSError, ValueError) as error:
                raise ValueError(
                    f"The teacher logits {path!r} are unreadable ({error}); delete the file to "
                    "compute them again."
                ) from None
            if verbose:
                print(f"keras-asc train: teacher logits reused from {path}")
    filenames = [clip.filename for clip in split.clips]
    if logits is None or logits.ndim != 2 or len(logits) != len(filenames):
        logits = _compute_logits(described, split, cache_dir, on_error, batch_size, verbose)
        if path is not None:
            with atomic_path(path, suffix=".npy") as temporary:
                np.save(temporary, logits)
    return dict(zip(filenames, logits, strict=True))


# --- the targets ---------------------------------------------------------------------------


def join_targets(waveforms, labels_and_logits):
    """Map a ``make_dataset(..., clip_targets=...)`` batch to ``(waveforms, targets)``, with
    the label in column 0 and the teacher logits after it, as :class:`DistillationLoss` reads
    them (a tf.data map function)."""
    import tensorflow as tf

    labels, logits = labels_and_logits
    labels = tf.cast(labels, logits.dtype)[:, None]
    return waveforms, tf.concat([labels, logits], axis=-1)
