"""tf.data pipelines for TAU22: batches of 32 kHz waveforms and labels for ``model.fit``.

``make_dataset`` reads a DCASE 2024 split (``tau22.load_split`` checks the files first), decodes
and resamples the audio files in a parallel map (``keras_asc.data.audio.load_audio``:
libsndfile and the model's resampler, called through ``tf.numpy_function``), shuffles
with a seed (a new order each epoch, the same sequence of orders for the same seed), batches,
applies the waveform augmentations batch-wise with a per-batch seed, and prefetches. The
datasets feed ``model.fit`` on the TensorFlow, JAX and PyTorch Keras backends.

The decoded-audio cache (``prepare_cache``, ``keras-asc prepare``) decodes each split once, in
a pool of worker processes, into one memory-mapped ``.npy`` file, so that later epochs and runs
skip decoding. It stores the float32 samples the pipeline would decode, so a model sees the
same input with or without it: 139,970 clips x 32,000 samples x 4 bytes = 17.9 GB for a 100 %
split (25 %: 4.5 GB; the test split: 3.8 GB). Two bytes per sample do not keep that promise:
measured on a real 24-bit TAU recording, in ``LogMelSpectrogram`` units (CP-JKU defaults,
``training=False``), int16 (version 1 of this cache) changes the log-mel by up to 1.9e-2
(0.21 on the same recording at -60 dBFS), int16 with a per-clip scale by up to 1.1e-2 and
float16 by up to 0.12, in the top mel bands near 15.5 kHz, where the resampler's low-pass
leaves little signal above the white rounding noise. A cache built for a larger split serves every split it contains (split100 serves split5
to split50).

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

import concurrent.futures
import contextlib
import functools
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_asc.data import audio, tau22
from keras_asc.files import write_text_atomic

__all__ = ["SkippedClips", "cache_paths", "decode_failure", "make_dataset", "prepare_cache"]

_CACHE_FORMAT = "keras-asc decoded audio cache"
# Version 1 stored int16 (round(x * 32768)), which drops the low 8 bits of 24-bit audio;
# version 2 stores the float32 samples themselves (see the module docstring).
_CACHE_VERSION = 2
_CACHE_DTYPE = "float32"
_ON_ERROR = ("raise", "skip")
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


# The longest clip a pipeline or cache cuts: one minute, six TAU22 recordings.
MAX_CLIP_SECONDS = 60.0


def _check_on_error(on_error):
    if on_error not in _ON_ERROR:
        raise ValueError(f"on_error must be 'raise' or 'skip'. Received: on_error={on_error!r}")


def _num_samples(sampling_rate, clip_seconds):
    if isinstance(sampling_rate, bool) or int(sampling_rate) != sampling_rate or sampling_rate < 1:
        raise ValueError(
            f"sampling_rate must be a positive integer in Hz. Received: sampling_rate={sampling_rate!r}"
        )
    if not 0 < clip_seconds <= MAX_CLIP_SECONDS:
        raise ValueError(
            f"clip_seconds must be > 0 and at most {MAX_CLIP_SECONDS:g} (TAU22 clips are 10 s; "
            f"longer clips would be zero padding). Received: clip_seconds={clip_seconds!r}"
        )
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


def cache_paths(
    cache_dir, split, sampling_rate=32000, clip_seconds=1.0, resampler=audio.DEFAULT_RESAMPLER
):
    """``(array_path, manifest_path)`` of the cache of ``split`` in ``cache_dir``.

    The resampler is part of the name (and of the manifest): a model whose front-end names
    another one never reads audio resampled with the first.

    Example:
        >>> cache_paths("/cache", "split25")
        ('/cache/split25-32000hz-1000ms-soxr_hq.npy', '/cache/split25-32000hz-1000ms-soxr_hq.json')
    """
    split = tau22.normalize_split(split)
    name = "test" if split == "test" else f"split{split}"
    resampler = audio.check_resampler(resampler)
    stem = f"{name}-{int(sampling_rate)}hz-{int(round(clip_seconds * 1000))}ms-{resampler}"
    base = os.path.join(os.fspath(cache_dir), stem)
    return base + ".npy", base + ".json"


def _file_list_digest(filenames):
    digest = hashlib.sha256()
    for name in filenames:
        digest.update(name.encode("utf-8") + b"\n")
    return digest.hexdigest()


def _write_json(path, payload):
    write_text_atomic(path, json.dumps(payload))


def _read_manifest(path):
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"Unreadable cache manifest {path!r}: {error}") from error
    version = manifest.get("version") if isinstance(manifest, dict) else None
    if manifest.get("format") != _CACHE_FORMAT or not isinstance(version, int):
        raise ValueError(f"{path!r} is not a keras-asc audio cache manifest.")
    if version > _CACHE_VERSION:
        raise ValueError(
            f"The audio cache {path!r} has format version {version}, written by a newer "
            f"keras-asc (this one reads version {_CACHE_VERSION}); upgrade keras-asc or use "
            "another cache folder."
        )
    return manifest


def _old_version_message(path, manifest):
    return (
        f"The audio cache {path!r} has format version {manifest['version']} "
        f"({manifest.get('dtype', 'int16')} samples, which drop the low 8 bits of 24-bit audio); "
        f"rebuilding it in format version {_CACHE_VERSION} ({_CACHE_DTYPE}, the very samples "
        "the pipeline decodes without a cache)."
    )


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _decode_clip(path, sampling_rate, num_samples, resampler=audio.DEFAULT_RESAMPLER):
    """``(waveform float32 [num_samples], reason)``; ``reason`` is "" when the file decoded."""
    try:
        waveform = audio.load_audio(
            path, sampling_rate, num_samples=num_samples, resampler=resampler
        )
        return waveform, ""
    except audio.AudioDecodeError as error:
        reason = error.reason
    except FileNotFoundError:
        reason = "file not found"
    except OSError as error:
        reason = f"cannot read it ({error.strerror or error})"
    return np.zeros(num_samples, np.float32), reason


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


def _decode_into(array_path, rows, paths, *, sampling_rate, num_samples, resampler):
    """Decode ``paths`` into ``rows`` of the cache array (a worker's task); their reasons."""
    array = np.load(array_path, mmap_mode="r+")
    reasons = []
    for row, path in zip(rows, paths, strict=True):
        waveform, reason = _decode_clip(path, sampling_rate, num_samples, resampler)
        array[row] = waveform
        reasons.append(reason)
    array.flush()
    del array
    return reasons


def _ignore_interrupts():
    # Ctrl-C reaches the whole process group: the parent stops the build, the workers finish
    # their task quietly instead of each printing a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _pool_context():
    """Start method of the cache workers: "fork" on Linux, the platform default elsewhere.

    The workers run libsndfile, scipy and numpy only, never TensorFlow (or JAX, PyTorch), so
    forking a process that has their threads is safe for them; "spawn" and "forkserver" would
    import TensorFlow again in every worker (this module does) and re-run the
    caller's main script, which would then need an ``if __name__ == "__main__":`` guard.
    """
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return None


def _decode_tasks(tasks, array_path, sampling_rate, num_samples, num_workers, resampler):
    """Run ``_decode_into`` on each ``(rows, paths)`` task; yields their reasons in order.

    ``num_workers`` > 1 runs the tasks in a process pool; 1 runs them in this process. The
    pool is shut down (queued tasks cancelled) when the caller stops early.
    """
    work = functools.partial(
        _decode_into,
        array_path,
        sampling_rate=sampling_rate,
        num_samples=num_samples,
        resampler=resampler,
    )
    if num_workers <= 1 or len(tasks) <= 1:
        for rows, paths in tasks:
            yield work(rows, paths)
        return
    executor = concurrent.futures.ProcessPoolExecutor(
        max_workers=min(num_workers, len(tasks)),
        mp_context=_pool_context(),
        initializer=_ignore_interrupts,
    )
    try:
        with warnings.catch_warnings():
            # Python 3.12+ and JAX warn on every fork of a multi-threaded process; the
            # workers never touch the threaded libraries (see _pool_context).
            warnings.filterwarnings("ignore", message=".*fork\\(\\).*", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*fork\\(\\).*", category=RuntimeWarning)
            futures = [executor.submit(work, rows, paths) for rows, paths in tasks]
        for future in futures:
            yield future.result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _cpu_cores():
    # A process pinned to some cores (taskset, a container's cpuset) forks workers pinned
    # to the same cores: more workers than that would only take turns.
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _task_size(num_clips, batch_size, num_workers):
    """Clips per task: at most ``batch_size``, small enough for about 4 tasks per worker."""
    return max(1, min(batch_size, -(-num_clips // (4 * num_workers))))


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
    batch_size=64,
    num_workers=None,
    verbose=1,
    resampler=audio.DEFAULT_RESAMPLER,
):
    """Decode a split once into ``cache_dir``: float32 samples at ``sampling_rate``.

    Writes ``<split>-<rate>hz-<ms>ms-<resampler>.npy`` (float32, shape ``(num_clips, num_samples)``, read
    as a memory map by the pipeline: the very samples ``keras_asc.data.audio.load_audio``
    returns, so the model sees the same input with and without the cache) and a JSON manifest
    beside it: the split's file list in file order, its SHA-256, the rate and length, and the
    clips that could not be read. Clips are decoded by ``num_workers`` processes. The
    manifest is written last, atomically, and marks the cache complete; an interrupted build
    resumes from its last saved block of 2,048 clips. A complete cache of the same file list
    is reused as is; one of a different file list (an edited split file) is refused unless
    ``overwrite=True``; one written by an older keras-asc (format version 1, int16 samples) is
    rebuilt, with a warning. Size: ``num_clips * num_samples * 4`` bytes, 17.9 GB for the
    139,970 clips of split 100.

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
        batch_size: the most clips a worker decodes per task.
        num_workers: decoding processes; ``None`` uses one per CPU core this process may run on
            (``os.sched_getaffinity``, else ``os.cpu_count()``); 1 decodes in this process. On Linux they are forked; on macOS and Windows they are spawned, which
            re-imports the calling script: call this under ``if __name__ == "__main__":``.
        verbose: 1 shows a progress bar and a summary, 0 is silent.
        resampler: how the files reach ``sampling_rate`` (``"soxr_hq"``, ``"sinc_hann"`` or
            ``"polyphase"``; a model's is ``keras_asc.data.resampling.resampler_of(model)``);
            part of the cache's name and manifest.

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
    resampler = audio.check_resampler(resampler)
    for name, value in (("batch_size", batch_size), ("num_workers", num_workers)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
    num_workers = int(num_workers) if num_workers is not None else _cpu_cores()
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
        batch_size=int(batch_size),
        num_workers=num_workers,
        verbose=verbose,
        resampler=resampler,
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
    num_workers,
    verbose,
    resampler,
):
    root = os.fspath(data_dir)
    os.makedirs(cache_dir, exist_ok=True)
    array_path, manifest_path = cache_paths(
        cache_dir, split, sampling_rate, clip_seconds, resampler
    )
    digest = _file_list_digest(filenames)
    if os.path.exists(manifest_path):
        manifest = _read_manifest(manifest_path)
        if manifest["version"] != _CACHE_VERSION:
            warnings.warn(_old_version_message(manifest_path, manifest), stacklevel=3)
            os.remove(manifest_path)  # the manifest marks a complete cache: drop it first
            if os.path.exists(array_path):
                os.remove(array_path)
        else:
            same = _matches(manifest, digest, sampling_rate, num_samples, resampler)
            if same and os.path.exists(array_path):
                if verbose:
                    print(f"Cache {array_path} is up to date ({manifest['num_clips']} clips).")
                return _with_paths(manifest, array_path, manifest_path)
            if not same and not overwrite:
                raise ValueError(_stale_message(manifest_path, manifest, split, root, filenames))
            os.remove(manifest_path)

    partial_array = array_path[: -len(".npy")] + ".partial.npy"
    partial_manifest = manifest_path + ".partial"
    manifest = {
        "format": _CACHE_FORMAT,
        "version": _CACHE_VERSION,
        "split": split,
        "data_dir": os.path.abspath(root),
        "sampling_rate": sampling_rate,
        "resampler": resampler,
        "clip_seconds": clip_seconds,
        "num_samples": num_samples,
        "num_clips": len(filenames),
        "dtype": _CACHE_DTYPE,
        "files_sha256": digest,
        "filenames": list(filenames),
        "failed": {},
        "done": 0,
    }
    start = 0
    if os.path.exists(partial_manifest) and os.path.exists(partial_array):
        previous = _read_manifest(partial_manifest)
        if previous["version"] == _CACHE_VERSION and _matches(
            previous, digest, sampling_rate, num_samples, resampler
        ):
            manifest, start = previous, int(previous["done"])
    if not start:
        _check_free_space(cache_dir, len(filenames) * num_samples * 4, partial_array)
        rows = np.lib.format.open_memmap(
            partial_array, mode="w+", dtype=_CACHE_DTYPE, shape=(len(filenames), num_samples)
        )
        del rows  # the workers write the rows through their own memory maps

    progress = keras.utils.Progbar(len(filenames), unit_name="clip") if verbose else None
    if progress is not None and start:
        progress.update(start)
    paths = [os.path.join(root, name) for name in filenames]
    # Tasks never straddle a block of _CACHE_BLOCK clips, so progress is saved after each
    # block, once every task of it (in file order) is done.
    size = _task_size(len(filenames) - start, batch_size, num_workers)
    tasks = []
    for block_start in range(start, len(filenames), _CACHE_BLOCK):
        block_end = min(block_start + _CACHE_BLOCK, len(filenames))
        for first in range(block_start, block_end, size):
            rows = list(range(first, min(first + size, block_end)))
            tasks.append((rows, [paths[index] for index in rows]))
    results = _decode_tasks(
        tasks, partial_array, sampling_rate, num_samples, num_workers, resampler
    )
    with contextlib.closing(results):
        for (rows, _), reasons in zip(tasks, results, strict=True):
            for index, reason in zip(rows, reasons, strict=True):
                if not reason:
                    continue
                if on_error == "raise":
                    if not os.path.isfile(paths[index]):
                        raise FileNotFoundError(f"Audio file not found: {paths[index]!r}.")
                    raise audio.AudioDecodeError(paths[index], reason)
                manifest["failed"][filenames[index]] = reason
            done = rows[-1] + 1
            if progress is not None:
                progress.update(done)
            if done % _CACHE_BLOCK == 0 or done == len(filenames):
                manifest["done"] = done
                _write_json(partial_manifest, manifest)
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


def _check_free_space(cache_dir, needed, path):
    """Refuse a cache the disk cannot hold, in one line, before a byte is written."""
    free = shutil.disk_usage(cache_dir).free
    if needed > free:
        raise ValueError(
            f"The cache {path!r} needs {needed / 1e9:.3g} GB but {cache_dir!r} has "
            f"{free / 1e9:.3g} GB free; expected fewer clips or shorter ones (--clip-seconds) "
            "or another cache folder."
        )


def _matches(manifest, digest, sampling_rate, num_samples, resampler):
    return (
        manifest["files_sha256"] == digest
        and manifest["sampling_rate"] == sampling_rate
        and manifest["num_samples"] == num_samples
        and manifest.get("resampler") == resampler
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


def _find_cache(
    cache_dir, data_dir, split, filenames, sampling_rate, clip_seconds, num_samples, resampler
):
    """A complete cache holding every file of ``filenames``: ``(manifest, rows)`` or None.

    The split's own cache is tried first, then any other cache in ``cache_dir`` with the same
    rate and length whose file list contains the split (a split100 cache serves split25).
    Raises when the split's own cache is stale and no other one covers the split.
    """
    array_path, manifest_path = cache_paths(
        cache_dir, split, sampling_rate, clip_seconds, resampler
    )
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
        if manifest["version"] != _CACHE_VERSION:
            continue  # an older format: building the split's cache replaces it, with a warning
        if manifest["sampling_rate"] != sampling_rate or manifest["num_samples"] != num_samples:
            continue
        if manifest.get("resampler") != resampler:
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
    clip_targets=None,
    resampler=audio.DEFAULT_RESAMPLER,
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
        clip_targets: optional ``{filename: float32 vector}`` with one vector (all of one
            length) per clip of the split, e.g. a teacher's logits for knowledge distillation;
            each vector travels with its clip through shuffling and skipping, and batches
            become ``(waveforms, (labels, targets))``.
        resampler: how the files reach ``sampling_rate``: the model's front-end's
            (``keras_asc.data.resampling.resampler_of(model)``); ``"soxr_hq"``,
            ``"sinc_hann"`` or ``"polyphase"``.

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
            clip_targets=clip_targets,
            resampler=resampler,
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
    dataset.clips = clips
    dataset.skipped_clips = skipped
    return dataset


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
    clip_targets=None,
    resampler=audio.DEFAULT_RESAMPLER,
):
    clips, skipped = _load_clips(data_dir, split, splits_dir, on_error)
    if not clips:
        raise ValueError(f"Split {split!r} of {os.fspath(data_dir)!r} has no readable clips.")
    paths = np.array([os.path.join(os.fspath(data_dir), clip.filename) for clip in clips])
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
    clip_targets=None,
    resampler=audio.DEFAULT_RESAMPLER,
):
    cache_dir = os.fspath(cache_dir)
    # The cache replaces the WAV files, so they are not checked here; building it checks them.
    clips = tau22.load_split(data_dir, split, splits_dir=splits_dir, check_files=False)
    filenames = [clip.filename for clip in clips]
    found = _find_cache(
        cache_dir, data_dir, split, filenames, sampling_rate, clip_seconds, num_samples, resampler
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
            resampler=resampler,
        )
        found = _find_cache(
            cache_dir,
            data_dir,
            split,
            filenames,
            sampling_rate,
            clip_seconds,
            num_samples,
            resampler,
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
