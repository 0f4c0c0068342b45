"""tf.data pipelines for TAU22: batches of 32 kHz waveforms and labels for ``model.fit``.

``make_dataset`` takes a DCASE 2024 split resolved once (a :class:`keras_asc.data.tau22.Split`;
its missing files are reported before any decoding), decodes
and resamples the audio files in a parallel map (``keras_asc.data.audio.load_audio``:
libsndfile and the model's resampler, called through ``tf.numpy_function``), shuffles
with a seed (a new order each epoch, the same sequence of orders for the same seed), batches,
applies the waveform augmentations batch-wise with a per-batch seed, and prefetches. The
datasets feed ``model.fit`` on the TensorFlow, JAX and PyTorch Keras backends.

The decoded-audio cache (``prepare_cache``, ``keras-asc prepare``) lives in
:mod:`keras_asc.data.cache`; ``make_dataset(..., cache_dir=...)`` reads from it.

Decoding errors. ``on_error="raise"`` (default) stops at the first unreadable clip with an
error naming the file and the reason. ``on_error="skip"`` drops missing and unreadable clips,
warns with their number and names at the end of every pass over the data, and lists them in
``ClipDataset.skipped`` (a :class:`SkippedClips`). With a cache, unreadable clips are
found when the cache is built, so both policies act before training starts.

Example:
    >>> from keras_asc.data import tau22
    >>> from keras_asc.data.pipeline import make_dataset
    >>> train = make_dataset(tau22.Split.load("/data/tau22", 25), batch_size=256, seed=0)
    >>> model.fit(train.dataset, epochs=150)
"""

import dataclasses
import functools
import os
import threading
import warnings

import numpy as np
import tensorflow as tf

from keras_asc.data import audio, tau22
from keras_asc.data.cache import (
    _check_on_error,
    _decode_clip,
    _find_cache,
    _num_samples,
    _resolve_split,
    _text,
    cache_paths,
    prepare_cache,
)

__all__ = [
    "ClipDataset",
    "SkippedClips",
    "cache_paths",
    "decode_failure",
    "make_dataset",
    "prepare_cache",
]


class SkippedClips:
    """The clips an ``on_error="skip"`` dataset drops: missing or undecodable files.

    ``errors`` maps each file to its reason; ``last_pass`` holds the files dropped during the
    most recent complete pass over the dataset (missing files are dropped in every pass).

    Example:
        >>> data = make_dataset(tau22.Split.load("/data/tau22", 25), on_error="skip")
        >>> model.fit(data.dataset)
        >>> for filename, reason in data.skipped.errors.items():
        ...     print(filename, reason)
    """

    def __init__(self, total):
        self.total = int(total)
        self.errors = {}
        self.last_pass = ()
        self._before_decoding = []
        self._this_pass = []
        self._lock = threading.Lock()

    def add(self, filename, reason, before_decoding=False):
        """Record a dropped clip; ``before_decoding`` for files left out of every pass."""
        with self._lock:
            self.errors.setdefault(filename, reason)
            (self._before_decoding if before_decoding else self._this_pass).append(filename)

    def _record(self, path, reason):
        # Called from the tf.data filter (tf.numpy_function) for each unreadable clip.
        self.add(_text(path), _text(reason))
        return np.bool_(False)

    def _end_pass(self):
        with self._lock:
            self.last_pass = tuple(self._before_decoding + self._this_pass)
            self._this_pass = []
        if self.last_pass:
            warnings.warn(self.summary(self.last_pass), stacklevel=2)
        return np.int64(len(self.last_pass))

    def summary(self, filenames=None):
        """One line: how many clips were skipped and which (up to five), with reasons."""
        filenames = list(self.errors if filenames is None else filenames)
        examples = "; ".join(f"{name!r}: {self.errors[name]}" for name in filenames[:5])
        more = f" and {len(filenames) - 5} more" if len(filenames) > 5 else ""
        return (
            f"Skipped {len(filenames)} of {self.total} clips that could not be read "
            f"(on_error='skip'): {examples}{more}."
        )

    def __len__(self):
        return len(self.errors)

    def __repr__(self):
        return f"SkippedClips({len(self.errors)} of {self.total})"


@dataclasses.dataclass(frozen=True)
class ClipDataset:
    """What :func:`make_dataset` returns: the batches and the clips behind them.

    Attributes:
        dataset: the batched ``tf.data.Dataset`` for ``model.fit`` / ``predict``.
        clips: the :class:`~keras_asc.data.tau22.Clip` records the dataset reads, in file order
            (missing files already left out with ``on_error="skip"``).
        skipped: the :class:`SkippedClips` (filled while the dataset is read, for clips that
            fail to decode).
        split: the :class:`~keras_asc.data.tau22.Split` the dataset was built from.
    """

    dataset: object
    clips: tuple
    skipped: SkippedClips
    split: object = None

    def steps(self, batch_size):
        """Full batches of ``batch_size`` in one pass over ``clips``."""
        return len(self.clips) // int(batch_size)


# --------------------------------------------------------------------------------------------
# Arguments


def _load_clips(split, on_error):
    """The split's readable clips and a :class:`SkippedClips`; missing files raise or are
    dropped (``on_error``), before any decoding."""
    clips = list(split.clips)
    missing = split.missing_files()
    if not missing:
        return clips, SkippedClips(len(clips))
    error = split.missing_files_error(missing)
    if on_error == "raise":
        raise tau22.MissingFilesError(
            f"{error} Download or extract the audio, or pass on_error='skip' to drop them.",
            missing,
        )
    skipped = SkippedClips(len(clips))
    for name in missing:
        skipped.add(os.path.join(split.root, name), "file not found", before_decoding=True)
    warnings.warn(f"{error} They are skipped (on_error='skip').", stacklevel=3)
    absent = set(missing)
    return [clip for clip in clips if clip.filename not in absent], skipped


# --------------------------------------------------------------------------------------------
# The decoded-audio cache


# The errors behind a failed tf.data assertion, by message: tf.data turns them into a
# tf.errors.InvalidArgumentError whose text carries the message among TensorFlow's own lines.
_DECODE_FAILURES = {}
_DECODE_FAILURES_LOCK = threading.Lock()


def decode_failure(error):
    """The :class:`~keras_asc.data.audio.AudioDecodeError` behind a tf.data error, or ``None``.

    A pipeline built with ``on_error="raise"`` stops at an unreadable clip with a TensorFlow
    error of many lines; ``train`` and ``evaluate`` use this to re-raise the one-line error
    that names the file.

    Example:
        >>> try:
        ...     model.fit(make_dataset("/data/tau22", 25))
        ... except tf.errors.OpError as error:
        ...     raise (decode_failure(error) or error) from None
    """
    text = str(error)
    with _DECODE_FAILURES_LOCK:
        for message, failure in _DECODE_FAILURES.items():
            if message in text:
                return failure
    return None


@functools.cache
def _clip_decoder(sampling_rate, num_samples, raise_errors, resampler=audio.DEFAULT_RESAMPLER):
    """The per-clip decoder of the tf.data pipeline, traced once per process.

    Returns ``path -> (waveform, reason)``: ``keras_asc.data.audio.load_audio`` through
    ``tf.numpy_function`` (libsndfile releases the GIL while it reads, so a parallel map runs
    several at once), with the static shape ``[num_samples]`` set afterwards. With
    ``raise_errors`` an unreadable file fails with "Cannot decode audio file <path>: <reason>"
    instead (and ``reason`` is always "").
    """

    def decode_numpy(path):
        path = _text(path)
        waveform, reason = _decode_clip(path, sampling_rate, num_samples, resampler)
        if raise_errors and reason:
            failure = audio.AudioDecodeError(path, reason)
            reason = str(failure)
            with _DECODE_FAILURES_LOCK:
                _DECODE_FAILURES[reason] = failure
        return waveform, reason.encode("utf-8")

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)], autograph=False)
    def decode(path):
        waveform, reason = tf.numpy_function(
            decode_numpy, [path], [tf.float32, tf.string], stateful=False
        )
        waveform = tf.ensure_shape(waveform, [num_samples])
        reason = tf.ensure_shape(reason, [])
        if raise_errors:
            check = tf.debugging.Assert(tf.equal(reason, ""), [reason])
            with tf.control_dependencies([check]):
                return tf.identity(waveform), tf.constant("")
        return waveform, reason

    return decode


# --------------------------------------------------------------------------------------------
# Datasets


def make_dataset(
    data,
    split=None,
    *,
    batch_size=256,
    training=True,
    shuffle=None,
    seed=0,
    waveform_augmentations=(),
    cache_dir=None,
    include_device=False,
    num_parallel_calls=tf.data.AUTOTUNE,
    drop_remainder=None,
    on_error="raise",
    sampling_rate=32000,
    clip_seconds=1.0,
    splits_dir=None,
    clip_targets=None,
    resampler=audio.DEFAULT_RESAMPLER,
):
    """Batches of ``(waveforms, labels)`` from a TAU22 split, ready for ``model.fit``.

    Waveforms are float32 ``(batch, sampling_rate * clip_seconds)`` (32,000 by default) in
    [-1, 1), mono, resampled to ``sampling_rate``; labels are int32 class indices into
    ``tau22.SCENE_LABELS``. The clip list is the :class:`tau22.Split`'s; its files are
    checked before any decoding: missing files are reported with their count and examples.

    Order: shuffle (seeded; a new order each epoch, the same sequence of orders for the same
    seed), decode in parallel, batch, augment (each augmentation gets a seed derived from
    ``seed``, the epoch and the batch, so runs repeat exactly), prefetch.

    Args:
        data: a :class:`tau22.Split` (``tau22.Split.load(data_dir, 25)``), or the TAU22 root
            (then ``split`` names the split).
        split: with a dataset folder as ``data``: 5, 10, 25, 50, 100 (also ``"split25"``,
            ``"25%"``) or ``"test"``; the split file is then read here.
        batch_size: clips per batch.
        training: training defaults: shuffle, drop the last partial batch, allow augmentations.
        shuffle: shuffle the clips every epoch; defaults to ``training``.
        seed: seed of the shuffle and of the augmentations.
        waveform_augmentations: ``keras_asc.augment.WaveformAugmentation`` objects applied in
            order to each batch (e.g. ``DeviceImpulseResponse`` then ``TimeRoll``); training
            only.
        cache_dir: folder of decoded-audio caches (see :func:`prepare_cache`). The split is
            read from a cache there that holds it, which is built first (with a progress bar)
            if there is none; the WAV files are then not read at all.
        include_device: also yield the device of each clip, ``(waveforms, labels, devices)``
            with devices as ``tf.string``; for evaluation loops (``fit`` would take the third
            element for sample weights).
        num_parallel_calls: parallel decoders; ``tf.data.AUTOTUNE`` by default.
        drop_remainder: drop the last partial batch (static batch size); defaults to
            ``training``.
        on_error: ``"raise"`` (default): a missing or unreadable file stops the pipeline with
            an error naming it. ``"skip"``: such clips are dropped; the pipeline warns with
            their number and names at the end of each pass and lists them in
            ``ClipDataset.skipped``.
        sampling_rate: output rate in Hz.
        clip_seconds: clip length in seconds; longer files are trimmed (the start is kept),
            shorter ones zero-padded at the end.
        splits_dir: folder with the split files (see ``tau22.find_split_file``), with a
            dataset folder as ``data``.
        clip_targets: optional ``{filename: float32 vector}`` with one vector (all of one
            length) per clip of the split, e.g. a teacher's logits for knowledge distillation;
            each vector travels with its clip through shuffling and skipping, and batches
            become ``(waveforms, (labels, targets))``.
        resampler: how the files reach ``sampling_rate``: the model's front-end's
            (``keras_asc.data.resampling.resampler_of(model)``); ``"soxr_hq"``,
            ``"sinc_hann"`` or ``"polyphase"``.

    Returns:
        A :class:`ClipDataset`: ``dataset`` (the ``tf.data.Dataset``), ``clips`` (the
        :class:`tau22.Clip` records it reads, in file order), ``skipped`` (a
        :class:`SkippedClips`) and ``split``.

    Raises:
        tau22.MissingFilesError: listed files are missing and ``on_error="raise"``.
        ValueError: bad arguments, or augmentations with ``training=False``.

    Example:
        >>> from keras_asc.augment import DeviceImpulseResponse, TimeRoll
        >>> train = make_dataset(
        ...     tau22.Split.load("/data/tau22", 25), batch_size=256, seed=0,
        ...     waveform_augmentations=[DeviceImpulseResponse("micirp_dirs"), TimeRoll()])
        >>> test = make_dataset("/data/tau22", "test", training=False, include_device=True)
        >>> model.fit(train.dataset, epochs=2)
    """
    _check_on_error(on_error)
    split = _resolve_split(data, split, tau22.expand_path(splits_dir))
    num_samples = _num_samples(sampling_rate, clip_seconds)
    sampling_rate = int(sampling_rate)
    resampler = audio.check_resampler(resampler)
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(
            f"batch_size must be a positive integer. Received: batch_size={batch_size!r}"
        )
    batch_size = int(batch_size)
    waveform_augmentations = tuple(waveform_augmentations or ())
    for augmentation in waveform_augmentations:
        if not callable(augmentation):
            raise ValueError(
                "waveform_augmentations must be WaveformAugmentation objects (callables "
                f"(waveforms, devices, seed) -> waveforms). Received: {augmentation!r}"
            )
    if waveform_augmentations and not training:
        raise ValueError(
            "waveform_augmentations are for training; received "
            f"{list(waveform_augmentations)} with training=False."
        )
    shuffle = training if shuffle is None else bool(shuffle)
    drop_remainder = training if drop_remainder is None else bool(drop_remainder)

    if cache_dir is not None:
        dataset, clips, skipped = _cached_clips(
            split,
            tau22.expand_path(cache_dir),
            on_error=on_error,
            sampling_rate=sampling_rate,
            clip_seconds=float(clip_seconds),
            num_samples=num_samples,
            shuffle=shuffle,
            seed=seed,
            batch_size=batch_size,
            drop_remainder=drop_remainder,
            num_parallel_calls=num_parallel_calls,
            clip_targets=clip_targets,
            resampler=resampler,
        )
    else:
        dataset, clips, skipped = _wav_clips(
            split,
            on_error=on_error,
            sampling_rate=sampling_rate,
            num_samples=num_samples,
            shuffle=shuffle,
            seed=seed,
            batch_size=batch_size,
            drop_remainder=drop_remainder,
            num_parallel_calls=num_parallel_calls,
            clip_targets=clip_targets,
            resampler=resampler,
        )

    if waveform_augmentations:
        # One random int64 pair per batch from a stream that is re-drawn (deterministically)
        # every epoch: the seed of batch i in epoch e depends only on (seed, e, i).
        batch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip((dataset, batch_seeds))

        @tf.autograph.experimental.do_not_convert
        def augment(batch, batch_seed):
            waveforms, labels, devices = batch
            for index, augmentation in enumerate(waveform_augmentations):
                waveforms = augmentation(
                    waveforms,
                    devices,
                    tf.random.experimental.stateless_fold_in(batch_seed, index),
                )
            return waveforms, labels, devices

        dataset = dataset.map(augment, num_parallel_calls=num_parallel_calls, deterministic=True)

    if not include_device:
        dataset = dataset.map(lambda waveforms, labels, devices: (waveforms, labels))
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    return ClipDataset(dataset, tuple(clips), skipped, split)


def _slices(clips, first, clip_targets=None):
    labels = np.array([clip.label for clip in clips], np.int32)
    if clip_targets is not None:
        missing = [clip.filename for clip in clips if clip.filename not in clip_targets]
        if missing:
            raise ValueError(
                f"clip_targets has no vector for {len(missing)} clip(s) of the split, e.g. "
                f"{missing[0]!r}."
            )
        targets = np.stack([np.asarray(clip_targets[clip.filename], np.float32) for clip in clips])
        labels = (labels, targets)
    devices = np.array([clip.device for clip in clips])
    return tf.data.Dataset.from_tensor_slices((first, labels, devices))


def _wav_clips(
    split,
    *,
    on_error,
    sampling_rate,
    num_samples,
    shuffle,
    seed,
    batch_size,
    drop_remainder,
    num_parallel_calls,
    clip_targets=None,
    resampler=audio.DEFAULT_RESAMPLER,
):
    clips, skipped = _load_clips(split, on_error)
    if not clips:
        raise ValueError(f"Split {split.title} of {split.root!r} has no readable clips.")
    paths = np.array([split.path_of(clip) for clip in clips])
    dataset = _slices(clips, paths, clip_targets)
    if shuffle:
        # The elements are file names, so a buffer of the whole split costs little memory and
        # gives a uniform shuffle.
        dataset = dataset.shuffle(len(clips), seed=seed, reshuffle_each_iteration=True)

    decoder = _clip_decoder(sampling_rate, num_samples, on_error == "raise", resampler)

    @tf.autograph.experimental.do_not_convert
    def decode(path, label, device):
        waveform, reason = decoder(path)
        return waveform, label, device, (path, reason)

    dataset = dataset.map(decode, num_parallel_calls=num_parallel_calls, deterministic=True)
    if on_error == "skip":

        @tf.autograph.experimental.do_not_convert
        def readable(waveform, label, device, path_reason):
            path, reason = path_reason
            return tf.cond(
                tf.equal(reason, ""),
                lambda: tf.constant(True),
                lambda: tf.reshape(tf.numpy_function(skipped._record, [path, reason], tf.bool), []),
            )

        def end_of_pass(_):
            # Runs once every pass, after the last clip went through the filter above.
            count = tf.numpy_function(skipped._end_pass, [], tf.int64, stateful=True)
            with tf.control_dependencies([count]):
                label = tf.nest.map_structure(
                    lambda spec: tf.zeros(spec.shape, spec.dtype), dataset.element_spec[1]
                )
                return tf.zeros([num_samples]), label, tf.constant("")

        dataset = dataset.filter(readable)
        dataset = dataset.map(lambda waveform, label, device, error: (waveform, label, device))
        report = tf.data.Dataset.range(1).map(end_of_pass).filter(lambda *element: False)
        dataset = dataset.concatenate(report)
    else:
        dataset = dataset.map(lambda waveform, label, device, error: (waveform, label, device))
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset, clips, skipped


def _cached_clips(
    split,
    cache_dir,
    *,
    on_error,
    sampling_rate,
    clip_seconds,
    num_samples,
    shuffle,
    seed,
    batch_size,
    drop_remainder,
    num_parallel_calls,
    clip_targets=None,
    resampler=audio.DEFAULT_RESAMPLER,
):
    cache_dir = os.fspath(cache_dir)
    data_dir = split.root
    # The cache replaces the WAV files, so they are not checked here; building it checks them.
    clips = list(split.clips)
    filenames = [clip.filename for clip in clips]
    def find():
        return _find_cache(
            cache_dir, data_dir, split.name, filenames, sampling_rate, clip_seconds,
            num_samples, resampler,
        )

    found = find()
    if found is None:
        print(f"Building the decoded-audio cache of {split.title} in {cache_dir} ...")
        prepare_cache(
            split,
            None,
            cache_dir,
            sampling_rate=sampling_rate,
            clip_seconds=clip_seconds,
            on_error=on_error,
            resampler=resampler,
        )
        found = find()
    manifest, rows = found
    skipped = SkippedClips(len(clips))
    failed = manifest.get("failed", {})
    bad = [index for index, name in enumerate(filenames) if name in failed]
    if bad:
        for index in bad:
            skipped.add(
                os.path.join(os.fspath(data_dir), filenames[index]),
                failed[filenames[index]],
                before_decoding=True,
            )
        skipped.last_pass = tuple(skipped.errors)  # the same clips are left out of every pass
        if on_error == "raise":
            first = filenames[bad[0]]
            raise audio.AudioDecodeError(
                os.path.join(os.fspath(data_dir), first),
                f"{failed[first]} (recorded when the cache {manifest['manifest_path']!r} was "
                f"built; {len(bad)} clip(s) of split {split.name!r} failed). Fix the files and "
                "rebuild the cache, or pass on_error='skip'.",
            )
        warnings.warn(skipped.summary(), stacklevel=3)
        keep = np.ones(len(clips), bool)
        keep[bad] = False
        clips = [clip for clip, kept in zip(clips, keep, strict=True) if kept]
        rows = rows[keep]
    if not clips:
        raise ValueError(f"Split {split.title} of {data_dir!r} has no readable clips.")

    array = np.load(manifest["array_path"], mmap_mode="r")

    def gather(batch_rows):
        # Sorted reads walk the memory-mapped file forwards; the result is put back in order.
        order = np.argsort(batch_rows, kind="stable")
        out = np.empty((len(batch_rows), num_samples), np.float32)
        out[order] = array[batch_rows[order]]
        return out

    def load(batch_rows, labels, devices):
        waveforms = tf.numpy_function(gather, [batch_rows], tf.float32, stateful=False)
        waveforms = tf.ensure_shape(waveforms, [None, num_samples])
        if drop_remainder:
            waveforms = tf.ensure_shape(waveforms, [batch_size, num_samples])
        return waveforms, labels, devices

    dataset = _slices(clips, rows, clip_targets)
    if shuffle:
        dataset = dataset.shuffle(len(clips), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(load, num_parallel_calls=num_parallel_calls, deterministic=True)
    return dataset, clips, skipped
