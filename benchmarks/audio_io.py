"""Cache-build throughput: libsndfile + resample_poly against the TensorFlow-op decoder it replaced.

Decodes 44.1 kHz 24-bit mono WAVs (the synthetic TAU22 generator's, split 100 = 200 clips by
default) to 1-s clips at 32 kHz, as ``keras-asc prepare`` does, and prints clips per second:

* ``new, process pool``: ``pipeline.prepare_cache`` with ``--workers`` processes (libsndfile
  decode, ``scipy.signal.resample_poly``, rows written into the float32 ``.npy``);
* ``new, one process``: the same with ``num_workers=1``;
* ``new, tf.data map``: the pipeline without a cache (``load_audio`` through
  ``tf.numpy_function`` in a parallel ``tf.data`` map), for comparison with the old one;
* ``old, tf.data map``: what the cache build ran before: the RIFF parser and polyphase
  resampler written in TensorFlow ops (``decode_with_reason`` in a ``tf.data`` map with
  ``AUTOTUNE`` parallel calls, batches of 256), samples rounded to int16.

The old decoder is not copied here: ``keras_asc/data/audio.py`` is read from git at
``--old-ref`` (default ``8c97f7589c6d98554658086014fa8a12288a7914``, the commit before
decoding moved to libsndfile) into a temporary file and imported from there, so both sides run
in the same process on the same files. Each figure is the best of ``--repeats`` timed passes
after one untimed warm-up pass (tracing, page cache), with the CPU time it took per clip
(this process and the pool's workers): on a shared machine other work slows the wall-clock
figures, less so the CPU time. The load average is printed. The largest difference between the old and
new decoded clips is printed as a check that both decode the same audio.

Example:
    python benchmarks/audio_io.py
    python benchmarks/audio_io.py --clips-per-class 40 --workers 4 --repeats 3
"""

import argparse
import importlib.util
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

DEFAULT_OLD_REF = "8c97f7589c6d98554658086014fa8a12288a7914"
SAMPLING_RATE = 32000
NUM_SAMPLES = 32000
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _old_audio_module(ref, folder):
    """``keras_asc/data/audio.py`` as it was at ``ref``, imported from a temporary file."""
    source = subprocess.run(
        ["git", "-C", REPOSITORY, "show", f"{ref}:keras_asc/data/audio.py"],
        check=True,
        capture_output=True,
    ).stdout
    path = os.path.join(folder, "keras_asc_audio_old.py")
    with open(path, "wb") as handle:
        handle.write(source)
    spec = importlib.util.spec_from_file_location("keras_asc_audio_old", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "decode_with_reason"):
        raise SystemExit(
            f"{ref}:keras_asc/data/audio.py has no decode_with_reason (not the old decoder)."
        )
    return module


def _old_cache_rows(old, paths):
    """The old cache build's decoding: a tf.data map of graph-op decodes, then int16."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)], autograph=False)
    def decode(path):
        return old.decode_with_reason(
            tf.io.read_file(path), sampling_rate=SAMPLING_RATE, num_samples=NUM_SAMPLES
        )

    def run():
        dataset = tf.data.Dataset.from_tensor_slices(paths)
        dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        rows, decoded = np.empty((len(paths), NUM_SAMPLES), np.int16), []
        position = 0
        for waveforms, reasons in dataset.batch(256).prefetch(2).as_numpy_iterator():
            if any(reasons):
                raise RuntimeError(f"The old decoder failed: {reasons[reasons != b''][0]}")
            rows[position : position + len(waveforms)] = np.clip(
                np.rint(waveforms * 32768.0), -32768, 32767
            )
            decoded.append(waveforms)
            position += len(waveforms)
        return np.concatenate(decoded)

    return run


def _new_tf_data(paths):
    import tensorflow as tf

    from keras_asc.data.pipeline import _clip_decoder

    decoder = _clip_decoder(SAMPLING_RATE, NUM_SAMPLES, True)

    def run():
        dataset = tf.data.Dataset.from_tensor_slices(paths)
        dataset = dataset.map(
            lambda path: decoder(path)[0], num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        return np.concatenate(list(dataset.batch(256).as_numpy_iterator()))

    return run


def _new_cache(data_dir, cache_root, num_workers):
    from keras_asc.data.pipeline import prepare_cache

    counter = iter(range(1_000_000))

    def run():
        cache_dir = os.path.join(cache_root, f"cache-{num_workers}-{next(counter)}")
        manifest = prepare_cache(
            data_dir, 100, cache_dir, num_workers=num_workers, on_error="raise", verbose=0
        )
        return np.load(manifest["array_path"], mmap_mode="r")

    return run


def _best_rate(run, num_clips, repeats):
    """(clips/s, CPU ms per clip) of the fastest of ``repeats`` passes, and the output."""
    output = run()  # warm-up: tracing, the page cache, the filter design
    wall, cpu = min(_timed(run) for _ in range(repeats))
    return num_clips / wall, 1e3 * cpu / num_clips, output


def _cpu_seconds():
    # This process's threads plus finished child processes (the pool's workers).
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(run):
    start, cpu = time.perf_counter(), _cpu_seconds()
    run()
    return time.perf_counter() - start, _cpu_seconds() - cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips-per-class", type=int, default=20, help="split 100 = 10x this")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per figure")
    parser.add_argument(
        "--old-ref", default=DEFAULT_OLD_REF, help="git commit of the old decoder (audio.py)"
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from keras_asc.data import tau22
    from keras_asc.data.synthetic import make_synthetic_tau22

    with tempfile.TemporaryDirectory(prefix="audio-io-") as folder:
        old = _old_audio_module(args.old_ref, folder)
        data_dir = make_synthetic_tau22(
            os.path.join(folder, "tau22"),
            clips_per_class=args.clips_per_class,
            test_clips_per_class=9,
        )
        clips = tau22.load_split(data_dir, 100)
        paths = [os.path.join(data_dir, clip.filename) for clip in clips]
        print(
            f"{len(paths)} synthetic clips (1 s, 44.1 kHz, 24-bit PCM) -> 32 kHz, "
            f"{os.cpu_count()} CPU cores, {args.workers} workers, best of {args.repeats}; "
            f"load average before: {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
        cases = [
            ("new, process pool", _new_cache(data_dir, folder, args.workers)),
            ("new, one process", _new_cache(data_dir, folder, 1)),
            ("new, tf.data map", _new_tf_data(paths)),
            (f"old, tf.data map ({args.old_ref[:12]})", _old_cache_rows(old, paths)),
        ]
        rates, outputs = {}, {}
        for name, run in cases:
            rates[name], cpu_ms, outputs[name] = _best_rate(run, len(paths), args.repeats)
            print(
                f"  {name:<32} {rates[name]:8.1f} clips/s   {cpu_ms:5.2f} CPU ms per clip",
                flush=True,
            )
        old_name = cases[-1][0]
        for name, _ in cases[:-1]:
            print(f"  ratio {name} / old: {rates[name] / rates[old_name]:.2f}x")
        difference = np.abs(outputs["new, process pool"] - outputs[old_name]).max()
        print(f"  largest |new - old| sample difference: {difference:.2e}")
        print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
