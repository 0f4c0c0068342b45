"""tf.data pipelines for TAU22: batches of 32 kHz waveforms and labels for ``model.fit``.

``make_dataset`` reads a DCASE 2024 split (``tau22.load_split`` checks the files first), decodes
and resamples the WAVs in parallel graph ops (``keras_asc.data.audio``), shuffles with a seed
(a new order each epoch, the same sequence of orders for the same seed), batches, applies the
waveform augmentations batch-wise with a per-batch seed, and prefetches. The datasets feed
``model.fit`` on the TensorFlow, JAX and PyTorch Keras backends.

The decoded-audio cache (``prepare_cache``, ``keras-asc prepare``) stores each split once as
16-bit PCM at 32 kHz in one ``.npy`` file, so that later epochs and runs skip WAV decoding: a
100 % split is 139,970 clips x 32,000 samples x 2 bytes = 8.96 GB (25 %: 2.2 GB; the test
split: 1.9 GB). A cache built for a larger split serves every split it contains (split100
serves split5 to split50).

Decoding errors. ``on_error="raise"`` (default) stops at the first unreadable clip with an
error naming the file and the reason. ``on_error="skip"`` drops missing and unreadable clips,
warns with their number and names at the end of every pass over the data, and lists them in
``dataset.skipped_clips`` (a :class:`SkippedClips`). With a cache, unreadable clips are
found when the cache is built, so both policies act before training starts.

Example:
    >>> from keras_asc.data.pipeline import make_dataset
    >>> train = make_dataset("/data/tau22", 25, batch_size=256, seed=0)
    >>> model.fit(train, epochs=150)
"""

import functools
import hashlib
import json
import os
import threading
import warnings

import numpy as np
import tensorflow as tf

from keras_asc.data import audio, tau22

__all__ = ["SkippedClips", "cache_paths", "make_dataset", "prepare_cache"]

_CACHE_FORMAT = "keras-asc decoded audio cache"
_CACHE_VERSION = 1
_ON_ERROR = ("raise", "skip")
_INT16_SCALE = 32768.0
# Clips decoded per block when building a cache; progress is saved after each block, which is
# where an interrupted build resumes.
_CACHE_BLOCK = 2048


class SkippedClips:
    """The clips an ``on_error="skip"`` dataset drops: missing or undecodable files.

    ``errors`` maps each file to its reason; ``last_pass`` holds the files dropped during the
    most recent complete pass over the dataset (missing files are dropped in every pass).

    Example:
        >>> dataset = make_dataset("/data/tau22", 25, on_error="skip")
        >>> model.fit(dataset)
        >>> for filename, reason in dataset.skipped_clips.errors.items():
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


# --------------------------------------------------------------------------------------------
# Arguments


def _check_on_error(on_error):
    if on_error not in _ON_ERROR:
        raise ValueError(f"on_error must be 'raise' or 'skip'. Received: on_error={on_error!r}")


def _num_samples(sampling_rate, clip_seconds):
    if isinstance(sampling_rate, bool) or int(sampling_rate) != sampling_rate or sampling_rate < 1:
        raise ValueError(
            f"sampling_rate must be a positive integer in Hz. Received: sampling_rate={sampling_rate!r}"
        )
    if not clip_seconds > 0:
        raise ValueError(f"clip_seconds must be > 0. Received: clip_seconds={clip_seconds!r}")
    return int(round(sampling_rate * clip_seconds))


def _load_clips(data_dir, split, splits_dir, on_error):
    """The split's clips and a :class:`SkippedClips`; missing files raise or are dropped.

    ``tau22.load_split`` counts the missing files and names a few; with ``"raise"`` that error
    reaches the caller before any training starts, with ``"skip"`` the files are recorded.
    """
    try:
        clips = tau22.load_split(data_dir, split, splits_dir=splits_dir, on_missing="raise")
        return clips, SkippedClips(len(clips))
    except tau22.MissingFilesError as error:
        if on_error == "raise":
            raise
        clips = tau22.load_split(data_dir, split, splits_dir=splits_dir, check_files=False)
        skipped = SkippedClips(len(clips))
        for name in error.missing:
            skipped.add(
                os.path.join(os.fspath(data_dir), name), "file not found", before_decoding=True
            )
        warnings.warn(f"{error} They are skipped (on_error='skip').", stacklevel=3)
        missing = set(error.missing)
        return [clip for clip in clips if clip.filename not in missing], skipped


# --------------------------------------------------------------------------------------------
# The decoded-audio cache


def cache_paths(cache_dir, split, sampling_rate=32000, clip_seconds=1.0):
    """``(array_path, manifest_path)`` of the cache of ``split`` in ``cache_dir``.

    Example:
        >>> cache_paths("/cache", "split25")
        ('/cache/split25-32000hz-1000ms.npy', '/cache/split25-32000hz-1000ms.json')
    """
    split = tau22.normalize_split(split)
    name = "test" if split == "test" else f"split{split}"
    stem = f"{name}-{int(sampling_rate)}hz-{int(round(clip_seconds * 1000))}ms"
    base = os.path.join(os.fspath(cache_dir), stem)
    return base + ".npy", base + ".json"


def _file_list_digest(filenames):
    digest = hashlib.sha256()
    for name in filenames:
        digest.update(name.encode("utf-8") + b"\n")
    return digest.hexdigest()


def _write_json(path, payload):
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(payload, handle)
    os.replace(temporary, path)


def _read_manifest(path):
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"Unreadable cache manifest {path!r}: {error}") from error
    if manifest.get("format") != _CACHE_FORMAT or manifest.get("version") != _CACHE_VERSION:
        raise ValueError(
            f"{path!r} is not a keras-asc audio cache manifest of version {_CACHE_VERSION}."
        )
    return manifest


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@functools.cache
def _clip_decoder(sampling_rate, num_samples, raise_errors):
    """The per-clip decoder, traced once per process and shared by every dataset.

    Returns ``path -> (waveform, reason)``; with ``raise_errors`` an unreadable file fails with
    "Cannot decode audio file <path>: <reason>" instead (and ``reason`` is always "").
    """

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)], autograph=False)
    def decode(path):
        contents = tf.io.read_file(path)
        if raise_errors:
            waveform = audio.decode_audio(
                contents, path, sampling_rate=sampling_rate, num_samples=num_samples
            )
            return waveform, tf.constant("")
        return audio.decode_with_reason(
            contents, sampling_rate=sampling_rate, num_samples=num_samples
        )

    return decode


def _decode_batches(paths, num_samples, sampling_rate, batch_size, num_parallel_calls):
    """(waveforms, reasons) batches in file order; reasons are "" for readable files."""
    decode = _clip_decoder(sampling_rate, num_samples, False)
    dataset = tf.data.Dataset.from_tensor_slices(paths)
    dataset = dataset.map(decode, num_parallel_calls=num_parallel_calls, deterministic=True)
    return dataset.batch(batch_size).prefetch(2)


def _to_int16(waveforms):
    return np.clip(np.rint(waveforms * _INT16_SCALE), -32768, 32767).astype(np.int16)


def prepare_cache(
    data_dir,
    split,
    cache_dir,
    *,
    sampling_rate=32000,
    clip_seconds=1.0,
    splits_dir=None,
    on_error="raise",
    overwrite=False,
    batch_size=256,
    num_parallel_calls=tf.data.AUTOTUNE,
    verbose=1,
):
    """Decode a split once into ``cache_dir`` as 16-bit PCM at ``sampling_rate``.

    Writes ``<split>-<rate>hz-<ms>ms.npy`` (int16, shape ``(num_clips, num_samples)``, read as
    a memory map by the pipeline; samples are ``round(x * 32768)`` clipped to int16) and a JSON
    manifest beside it: the split's file list in file order, its SHA-256, the rate and length,
    and the clips that could not be read. The manifest is written last, atomically, and marks
    the cache complete; an interrupted build resumes from its last saved block of 2,048 clips.
    A complete cache of the same file list is reused as is; one of a different file list (an
    edited split file) is refused unless ``overwrite=True``. Size: ``num_clips * num_samples *
    2`` bytes, 8.96 GB for the 139,970 clips of split 100.

    Args:
        data_dir: TAU22 root.
        split: 5, 10, 25, 50, 100 or ``"test"`` (any spelling ``tau22.load_split`` accepts).
        cache_dir: folder for the cache (created if needed).
        sampling_rate: rate of the cached audio in Hz.
        clip_seconds: clip length; longer files are trimmed, shorter ones zero-padded.
        splits_dir: folder with the split files (see ``tau22.find_split_file``).
        on_error: ``"raise"`` stops at the first missing or undecodable file, naming it;
            ``"skip"`` keeps going, stores such clips as silent rows listed under ``"failed"``
            in the manifest (pipelines drop them), and reports them at the end.
        overwrite: rebuild even if a cache of another file list exists under the same name.
        batch_size: clips decoded per step.
        num_parallel_calls: parallel decoders (``tf.data.AUTOTUNE`` by default).
        verbose: 1 shows a progress bar and a summary, 0 is silent.

    Returns:
        The manifest as a dict, with ``"array_path"`` and ``"manifest_path"`` added.

    Raises:
        tau22.MissingFilesError: listed files are missing and ``on_error="raise"``.
        audio.AudioDecodeError: a file cannot be decoded and ``on_error="raise"``.
        ValueError: a cache of a different file list exists and ``overwrite`` is False.

    Example:
        >>> prepare_cache("/data/tau22", 25, "/data/cache")["num_clips"]
        34900
    """
    _check_on_error(on_error)
    num_samples = _num_samples(sampling_rate, clip_seconds)
    if on_error == "raise":
        clips = tau22.load_split(data_dir, split, splits_dir=splits_dir, on_missing="raise")
    else:
        clips = tau22.load_split(data_dir, split, splits_dir=splits_dir, check_files=False)
    return _build_cache(
        data_dir,
        tau22.normalize_split(split),
        [clip.filename for clip in clips],
        cache_dir,
        sampling_rate=int(sampling_rate),
        clip_seconds=float(clip_seconds),
        num_samples=num_samples,
        on_error=on_error,
        overwrite=overwrite,
        batch_size=batch_size,
        num_parallel_calls=num_parallel_calls,
        verbose=verbose,
    )


def _build_cache(
    data_dir,
    split,
    filenames,
    cache_dir,
    *,
    sampling_rate,
    clip_seconds,
    num_samples,
    on_error,
    overwrite,
    batch_size,
    num_parallel_calls,
    verbose,
):
    import keras

    root = os.fspath(data_dir)
    os.makedirs(cache_dir, exist_ok=True)
    array_path, manifest_path = cache_paths(cache_dir, split, sampling_rate, clip_seconds)
    digest = _file_list_digest(filenames)
    if os.path.exists(manifest_path):
        manifest = _read_manifest(manifest_path)
        same = _matches(manifest, digest, sampling_rate, num_samples)
        if same and os.path.exists(array_path):
            if verbose:
                print(f"Cache {array_path} is up to date ({manifest['num_clips']} clips).")
            return _with_paths(manifest, array_path, manifest_path)
        if not same and not overwrite:
            raise ValueError(_stale_message(manifest_path, manifest, split, root, filenames))
        os.remove(manifest_path)  # the manifest marks a complete cache: drop it first

    partial_array = array_path[: -len(".npy")] + ".partial.npy"
    partial_manifest = manifest_path + ".partial"
    manifest = {
        "format": _CACHE_FORMAT,
        "version": _CACHE_VERSION,
        "split": split,
        "data_dir": os.path.abspath(root),
        "sampling_rate": sampling_rate,
        "clip_seconds": clip_seconds,
        "num_samples": num_samples,
        "num_clips": len(filenames),
        "dtype": "int16",
        "scale": _INT16_SCALE,
        "files_sha256": digest,
        "filenames": list(filenames),
        "failed": {},
        "done": 0,
    }
    start = 0
    if os.path.exists(partial_manifest) and os.path.exists(partial_array):
        previous = _read_manifest(partial_manifest)
        if _matches(previous, digest, sampling_rate, num_samples):
            manifest, start = previous, int(previous["done"])
    if start:
        rows = np.load(partial_array, mmap_mode="r+")
    else:
        rows = np.lib.format.open_memmap(
            partial_array, mode="w+", dtype=np.int16, shape=(len(filenames), num_samples)
        )

    progress = keras.utils.Progbar(len(filenames), unit_name="clip") if verbose else None
    if progress is not None and start:
        progress.update(start)
    paths = [os.path.join(root, name) for name in filenames]
    for block_start in range(start, len(filenames), _CACHE_BLOCK):
        block_end = min(block_start + _CACHE_BLOCK, len(filenames))
        block = []
        for index in range(block_start, block_end):
            if os.path.isfile(paths[index]):
                block.append(index)
            elif on_error == "raise":
                raise FileNotFoundError(f"Audio file not found: {paths[index]!r}.")
            else:
                manifest["failed"][filenames[index]] = "file not found"
                rows[index] = 0
        position = 0
        batches = ()
        if block:
            batches = _decode_batches(
                [paths[i] for i in block],
                num_samples,
                sampling_rate,
                batch_size,
                num_parallel_calls,
            ).as_numpy_iterator()
        for waveforms, reasons in batches:
            indices = block[position : position + len(waveforms)]
            position += len(waveforms)
            for index, reason in zip(indices, reasons, strict=True):
                if reason:
                    reason = _text(reason)
                    if on_error == "raise":
                        raise audio.AudioDecodeError(paths[index], reason)
                    manifest["failed"][filenames[index]] = reason
            rows[indices] = _to_int16(waveforms)
            if progress is not None:
                progress.update(block_start + position)
        rows.flush()
        manifest["done"] = block_end
        _write_json(partial_manifest, manifest)
        if progress is not None and position < block_end - block_start:
            progress.update(block_end)  # the block had missing files
    del rows
    os.replace(partial_array, array_path)
    _write_json(manifest_path, manifest)
    os.remove(partial_manifest)
    if verbose:
        size_gb = os.path.getsize(array_path) / 1e9
        print(f"Cached {len(filenames)} clips in {array_path} ({size_gb:.2f} GB).")
        if manifest["failed"]:
            names = list(manifest["failed"].items())
            examples = "; ".join(f"{name!r}: {reason}" for name, reason in names[:5])
            print(
                f"{len(names)} of {len(filenames)} clips could not be read (on_error='skip'); "
                f"the pipeline drops them: {examples}"
            )
    return _with_paths(manifest, array_path, manifest_path)


def _matches(manifest, digest, sampling_rate, num_samples):
    return (
        manifest["files_sha256"] == digest
        and manifest["sampling_rate"] == sampling_rate
        and manifest["num_samples"] == num_samples
    )


def _stale_message(manifest_path, manifest, split, root, filenames):
    return (
        f"The cache {manifest_path!r} was built for another file list "
        f"({manifest['num_clips']} clips, SHA-256 {manifest['files_sha256'][:12]}...) than "
        f"split {split!r} of {root!r} lists now ({len(filenames)} clips, "
        f"{_file_list_digest(filenames)[:12]}...). Rebuild it with "
        "`keras-asc prepare --overwrite` (prepare_cache(..., overwrite=True)) or use another "
        "cache folder."
    )


def _with_paths(manifest, array_path, manifest_path):
    manifest = dict(manifest)
    manifest["array_path"] = array_path
    manifest["manifest_path"] = manifest_path
    return manifest


def _find_cache(cache_dir, data_dir, split, filenames, sampling_rate, clip_seconds, num_samples):
    """A complete cache holding every file of ``filenames``: ``(manifest, rows)`` or None.

    The split's own cache is tried first, then any other cache in ``cache_dir`` with the same
    rate and length whose file list contains the split (a split100 cache serves split25).
    Raises when the split's own cache is stale and no other one covers the split.
    """
    array_path, manifest_path = cache_paths(cache_dir, split, sampling_rate, clip_seconds)
    if not os.path.isdir(cache_dir):
        return None
    digest = _file_list_digest(filenames)
    stale = None
    candidates = [manifest_path] + sorted(
        os.path.join(cache_dir, name)
        for name in os.listdir(cache_dir)
        if name.endswith(".json") and os.path.join(cache_dir, name) != manifest_path
    )
    for path in candidates:
        if not os.path.isfile(path):
            continue
        manifest = _read_manifest(path)
        cache_array = path[: -len(".json")] + ".npy"
        if manifest["sampling_rate"] != sampling_rate or manifest["num_samples"] != num_samples:
            continue
        if not os.path.isfile(cache_array):
            continue
        if manifest["files_sha256"] == digest:
            return _with_paths(manifest, cache_array, path), np.arange(len(filenames))
        row_of = {name: row for row, name in enumerate(manifest["filenames"])}
        rows = [row_of.get(name) for name in filenames]
        if all(row is not None for row in rows):
            return _with_paths(manifest, cache_array, path), np.asarray(rows, np.int64)
        if path == manifest_path:
            stale = manifest
    if stale is not None:
        raise ValueError(
            _stale_message(manifest_path, stale, split, os.fspath(data_dir), filenames)
        )
    return None


# --------------------------------------------------------------------------------------------
# Datasets


def make_dataset(
    data_dir,
    split,
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
):
    """Batches of ``(waveforms, labels)`` from a TAU22 split, ready for ``model.fit``.

    Waveforms are float32 ``(batch, sampling_rate * clip_seconds)`` (32,000 by default) in
    [-1, 1), mono, resampled to ``sampling_rate``; labels are int32 class indices into
    ``tau22.SCENE_LABELS``. The clip list comes from ``tau22.load_split``, which checks every
    file before any decoding: missing files are reported with their count and examples.

    Order: shuffle (seeded; a new order each epoch, the same sequence of orders for the same
    seed), decode in parallel, batch, augment (each augmentation gets a seed derived from
    ``seed``, the epoch and the batch, so runs repeat exactly), prefetch.

    Args:
        data_dir: TAU22 root (``audio/``, ``meta.csv``, split files).
        split: 5, 10, 25, 50, 100 (also ``"split25"``, ``"25%"``) or ``"test"``.
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
            ``dataset.skipped_clips``.
        sampling_rate: output rate in Hz.
        clip_seconds: clip length in seconds; longer files are trimmed (the start is kept),
            shorter ones zero-padded at the end.
        splits_dir: folder with the split files (see ``tau22.find_split_file``).

    Returns:
        A ``tf.data.Dataset`` with attributes ``clips`` (the :class:`tau22.Clip` list, in file
        order) and ``skipped_clips`` (a :class:`SkippedClips`).

    Raises:
        tau22.MissingFilesError: listed files are missing and ``on_error="raise"``.
        ValueError: bad arguments, or augmentations with ``training=False``.

    Example:
        >>> from keras_asc.augment import DeviceImpulseResponse, TimeRoll
        >>> train = make_dataset(
        ...     "/data/tau22", 25, batch_size=256, seed=0,
        ...     waveform_augmentations=[DeviceImpulseResponse("micirp_dirs"), TimeRoll()])
        >>> test = make_dataset("/data/tau22", "test", training=False, include_device=True)
    """
    _check_on_error(on_error)
    num_samples = _num_samples(sampling_rate, clip_seconds)
    sampling_rate = int(sampling_rate)
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
            data_dir,
            split,
            cache_dir,
            splits_dir=splits_dir,
            on_error=on_error,
            sampling_rate=sampling_rate,
            clip_seconds=float(clip_seconds),
            num_samples=num_samples,
            shuffle=shuffle,
            seed=seed,
            batch_size=batch_size,
            drop_remainder=drop_remainder,
            num_parallel_calls=num_parallel_calls,
        )
    else:
        dataset, clips, skipped = _wav_clips(
            data_dir,
            split,
            splits_dir=splits_dir,
            on_error=on_error,
            sampling_rate=sampling_rate,
            num_samples=num_samples,
            shuffle=shuffle,
            seed=seed,
            batch_size=batch_size,
            drop_remainder=drop_remainder,
            num_parallel_calls=num_parallel_calls,
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
    dataset.clips = clips
    dataset.skipped_clips = skipped
    return dataset


def _slices(clips, first):
    labels = np.array([clip.label for clip in clips], np.int32)
    devices = np.array([clip.device for clip in clips])
    return tf.data.Dataset.from_tensor_slices((first, labels, devices))


def _wav_clips(
    data_dir,
    split,
    *,
    splits_dir,
    on_error,
    sampling_rate,
    num_samples,
    shuffle,
    seed,
    batch_size,
    drop_remainder,
    num_parallel_calls,
):
    clips, skipped = _load_clips(data_dir, split, splits_dir, on_error)
    if not clips:
        raise ValueError(f"Split {split!r} of {os.fspath(data_dir)!r} has no readable clips.")
    paths = np.array([os.path.join(os.fspath(data_dir), clip.filename) for clip in clips])
    dataset = _slices(clips, paths)
    if shuffle:
        # The elements are file names, so a buffer of the whole split costs little memory and
        # gives a uniform shuffle.
        dataset = dataset.shuffle(len(clips), seed=seed, reshuffle_each_iteration=True)

    decoder = _clip_decoder(sampling_rate, num_samples, on_error == "raise")

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
                return tf.zeros([num_samples]), tf.constant(0, tf.int32), tf.constant("")

        dataset = dataset.filter(readable)
        dataset = dataset.map(lambda waveform, label, device, error: (waveform, label, device))
        report = tf.data.Dataset.range(1).map(end_of_pass).filter(lambda *element: False)
        dataset = dataset.concatenate(report)
    else:
        dataset = dataset.map(lambda waveform, label, device, error: (waveform, label, device))
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset, clips, skipped


def _cached_clips(
    data_dir,
    split,
    cache_dir,
    *,
    splits_dir,
    on_error,
    sampling_rate,
    clip_seconds,
    num_samples,
    shuffle,
    seed,
    batch_size,
    drop_remainder,
    num_parallel_calls,
):
    cache_dir = os.fspath(cache_dir)
    # The cache replaces the WAV files, so they are not checked here; building it checks them.
    clips = tau22.load_split(data_dir, split, splits_dir=splits_dir, check_files=False)
    filenames = [clip.filename for clip in clips]
    found = _find_cache(
        cache_dir, data_dir, split, filenames, sampling_rate, clip_seconds, num_samples
    )
    if found is None:
        print(f"Building the decoded-audio cache of split {split!r} in {cache_dir} ...")
        prepare_cache(
            data_dir,
            split,
            cache_dir,
            sampling_rate=sampling_rate,
            clip_seconds=clip_seconds,
            splits_dir=splits_dir,
            on_error=on_error,
            num_parallel_calls=num_parallel_calls,
        )
        found = _find_cache(
            cache_dir, data_dir, split, filenames, sampling_rate, clip_seconds, num_samples
        )
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
                f"built; {len(bad)} clip(s) of split {split!r} failed). Fix the files and "
                "rebuild the cache, or pass on_error='skip'.",
            )
        warnings.warn(skipped.summary(), stacklevel=3)
        keep = np.ones(len(clips), bool)
        keep[bad] = False
        clips = [clip for clip, kept in zip(clips, keep, strict=True) if kept]
        rows = rows[keep]
    if not clips:
        raise ValueError(f"Split {split!r} of {os.fspath(data_dir)!r} has no readable clips.")

    array = np.load(manifest["array_path"], mmap_mode="r")
    scale = 1.0 / float(manifest.get("scale", _INT16_SCALE))

    def gather(batch_rows):
        # Sorted reads walk the memory-mapped file forwards; the result is put back in order.
        order = np.argsort(batch_rows, kind="stable")
        out = np.empty((len(batch_rows), num_samples), np.int16)
        out[order] = array[batch_rows[order]]
        return out

    def load(batch_rows, labels, devices):
        samples = tf.numpy_function(gather, [batch_rows], tf.int16, stateful=False)
        samples = tf.ensure_shape(samples, [None, num_samples])
        waveforms = tf.cast(samples, tf.float32) * scale
        if drop_remainder:
            waveforms = tf.ensure_shape(waveforms, [batch_size, num_samples])
        return waveforms, labels, devices

    dataset = _slices(clips, rows)
    if shuffle:
        dataset = dataset.shuffle(len(clips), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(load, num_parallel_calls=num_parallel_calls, deterministic=True)
    return dataset, clips, skipped
