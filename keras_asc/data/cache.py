"""The decoded-audio cache of TAU22 splits: ``prepare_cache`` and ``keras-asc prepare``.

``prepare_cache`` decodes each split once, in
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

Hand-written because no library keeps a memory-mapped array of decoded clips with a manifest
that a tf.data pipeline can read by row and an interrupted build can resume from.
``make_dataset(..., cache_dir=...)`` (:mod:`keras_asc.data.pipeline`) reads from it.

Example:
    >>> from keras_asc.data.cache import prepare_cache
    >>> prepare_cache("/data/tau22", 25, "/data/cache")["num_clips"]
    34900
"""

import concurrent.futures
import contextlib
import functools
import hashlib
import json
import multiprocessing
import os
import signal
import sys
import warnings

import keras
import numpy as np

from keras_asc.data import audio, tau22
from keras_asc.files import write_text_atomic

__all__ = ["cache_paths", "prepare_cache"]

_CACHE_FORMAT = "keras-asc decoded audio cache"
# Version 1 stored int16 (round(x * 32768)), which drops the low 8 bits of 24-bit audio;
# version 2 stores the float32 samples themselves (see the module docstring).
_CACHE_VERSION = 2
_CACHE_DTYPE = "float32"
_ON_ERROR = ("raise", "skip")
# Clips decoded per block when building a cache; progress is saved after each block, which is
# where an interrupted build resumes.
_CACHE_BLOCK = 2048


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


def _decode_clip(path, sampling_rate, num_samples):
    """``(waveform float32 [num_samples], reason)``; ``reason`` is "" when the file decoded."""
    try:
        return audio.load_audio(path, sampling_rate, num_samples=num_samples), ""
    except audio.AudioDecodeError as error:
        reason = error.reason
    except FileNotFoundError:
        reason = "file not found"
    except OSError as error:
        reason = f"cannot read it ({error.strerror or error})"
    return np.zeros(num_samples, np.float32), reason


def _decode_into(array_path, rows, paths, *, sampling_rate, num_samples):
    """Decode ``paths`` into ``rows`` of the cache array (a worker's task); their reasons."""
    array = np.load(array_path, mmap_mode="r+")
    reasons = []
    for row, path in zip(rows, paths, strict=True):
        waveform, reason = _decode_clip(path, sampling_rate, num_samples)
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


def _decode_tasks(tasks, array_path, sampling_rate, num_samples, num_workers):
    """Run ``_decode_into`` on each ``(rows, paths)`` task; yields their reasons in order.

    ``num_workers`` > 1 runs the tasks in a process pool; 1 runs them in this process. The
    pool is shut down (queued tasks cancelled) when the caller stops early.
    """
    work = functools.partial(
        _decode_into, array_path, sampling_rate=sampling_rate, num_samples=num_samples
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
    cache_dir=None,
    *,
    sampling_rate=32000,
    clip_seconds=1.0,
    splits_dir=None,
    on_error="raise",
    overwrite=False,
    batch_size=64,
    num_workers=None,
    verbose=1,
):
    """Decode a split once into ``cache_dir``: float32 samples at ``sampling_rate``.

    Writes ``<split>-<rate>hz-<ms>ms.npy`` (float32, shape ``(num_clips, num_samples)``, read
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
        data_dir: TAU22 root, or a :class:`tau22.Split` (then ``split`` is ``None``).
        split: 5, 10, 25, 50, 100 or ``"test"`` (any spelling ``tau22.load_split`` accepts).
        cache_dir: folder for the cache (created if needed; ``~`` and variables expanded).
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
    for name, value in (("batch_size", batch_size), ("num_workers", num_workers)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
    num_workers = int(num_workers) if num_workers is not None else _cpu_cores()
    if cache_dir is None:
        raise ValueError("prepare_cache needs cache_dir: the folder for the cache.")
    resolved = _resolve_split(data_dir, split, tau22.expand_path(splits_dir))
    if on_error == "raise":
        missing = resolved.missing_files()
        if missing:
            error = resolved.missing_files_error(missing)
            raise tau22.MissingFilesError(
                f"{error} Download or extract the audio, or pass on_error='skip' to record them.",
                missing,
            )
    return _build_cache(
        resolved.root,
        resolved.name,
        [clip.filename for clip in resolved.clips],
        tau22.expand_path(cache_dir),
        sampling_rate=int(sampling_rate),
        clip_seconds=float(clip_seconds),
        num_samples=num_samples,
        on_error=on_error,
        overwrite=overwrite,
        batch_size=int(batch_size),
        num_workers=num_workers,
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
    num_workers,
    verbose,
):
    root = os.fspath(data_dir)
    os.makedirs(cache_dir, exist_ok=True)
    array_path, manifest_path = cache_paths(cache_dir, split, sampling_rate, clip_seconds)
    digest = _file_list_digest(filenames)
    if os.path.exists(manifest_path):
        manifest = _read_manifest(manifest_path)
        if manifest["version"] != _CACHE_VERSION:
            warnings.warn(_old_version_message(manifest_path, manifest), stacklevel=3)
            os.remove(manifest_path)  # the manifest marks a complete cache: drop it first
            if os.path.exists(array_path):
                os.remove(array_path)
        else:
            same = _matches(manifest, digest, sampling_rate, num_samples)
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
            previous, digest, sampling_rate, num_samples
        ):
            manifest, start = previous, int(previous["done"])
    if not start:
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
    results = _decode_tasks(tasks, partial_array, sampling_rate, num_samples, num_workers)
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
        if manifest["version"] != _CACHE_VERSION:
            continue  # an older format: building the split's cache replaces it, with a warning
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


def _resolve_split(split, name, splits_dir):
    """A :class:`tau22.Split` from ``make_dataset``'s or ``prepare_cache``'s arguments."""
    if isinstance(split, tau22.Split):
        if name is not None:
            raise ValueError(
                f"make_dataset takes a Split, or a dataset folder and a split name; received the "
                f"Split {split!r} and the name {name!r}."
            )
        return split
    if name is None:
        raise ValueError(
            "make_dataset needs a keras_asc.data.tau22.Split (Split.load(data_dir, split)), or a "
            f"dataset folder and a split name. Received: {split!r}"
        )
    return tau22.Split.load(split, name, splits_dir=splits_dir)
