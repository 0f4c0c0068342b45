"""Input-pipeline throughput against the training step it has to feed, in clips per second.

Measured in one process on ``--cores`` CPU cores (2 by default: the process is pinned to them
and TensorFlow's thread pools are sized to match):

* ``wav``: the training pipeline from WAV files: decode 24-bit PCM (libsndfile), resample
  44.1 -> 32 kHz (``resample_poly``), shuffle, batch, device impulse responses (p = 0.6) and
  time roll;
* ``cache``: the same pipeline reading the float32 decoded-audio cache (memory-mapped ``.npy``)
  instead of the WAVs, with the same augmentations; ``cache, no aug`` without them and
  ``cache, roll`` with the time roll only (``wav, no aug``: decoding alone);
* ``snapshot``: for comparison, the alternative cache design: decoded int16 clips in a
  ``tf.data`` snapshot (second pass, reading), shuffled with a 1,024-clip buffer (a full
  shuffle would hold the whole split in memory), then the same augmentations;
* ``train``: what the model consumes: clips/s of ``train_on_batch`` (forward, backward, Adam
  update) of ``keras_asc.build(--model)`` (waveform input, log-mel front-end included) on the
  TensorFlow backend, batch ``--batch-size``, median over the timed steps;

and prints the ratio of each pipeline to the training rate (the target for the cache is at
least 4x, so that the input never limits training). Pipeline rates are clips over wall time
for whole passes after one warm-up pass; CPU seconds per clip are shown too, since a shared
machine's wall time depends on its other load (the load average is printed).

Without ``--data`` a synthetic TAU22 tree (``make_synthetic_tau22``) is written to a temporary
folder. Impulse responses come from ``--dirs`` (default: ``../shared/data/micirp_dirs`` beside
the project, the 66 MicIRP responses) or, when absent, two synthetic ones.

Example:
    python benchmarks/pipeline_throughput.py
    python benchmarks/pipeline_throughput.py --data /data/tau22 --split 5 --batch-size 256
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DIRS = os.path.join(os.path.dirname(PROJECT_ROOT), "shared", "data", "micirp_dirs")


def _limit_cores(cores):
    """Pin the process to ``cores`` CPUs and size TensorFlow's pools; call before importing TF."""
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if available and cores < len(available):
        os.sched_setaffinity(0, available[:cores])
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(cores)
    tf.config.threading.set_intra_op_parallelism_threads(cores)
    return len(os.sched_getaffinity(0)) if available else os.cpu_count()


def _impulse_responses(dirs, work_dir):
    if dirs is not None:
        return dirs, dirs
    if os.path.isdir(SHARED_DIRS):
        return SHARED_DIRS, "MicIRP, 66 responses"
    import numpy as np

    from keras_asc.data.synthetic import write_wav

    folder = os.path.join(work_dir, "dirs")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for index, rate in enumerate((44100, 48000)):
        t = np.arange(int(0.45 * rate)) / rate
        response = rng.normal(size=t.size) * np.exp(-t / 0.05)
        write_wav(
            os.path.join(folder, f"ir{index}.wav"), 0.5 * response / abs(response).max(), rate
        )
    return folder, "2 synthetic responses (no ../shared/data/micirp_dirs)"


def _time_passes(dataset, passes):
    """(clips/s over wall time, CPU s per clip) for ``passes`` passes after one warm-up pass."""
    for _ in dataset:  # warm-up: tracing, function instantiation, page cache
        pass
    clips = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(passes):
        for batch in dataset:
            clips += int(batch[0].shape[0])
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return clips / wall, cpu / clips


def _snapshot_dataset(paths, labels, devices, snapshot_dir, batch_size, augmentations, seed):
    import tensorflow as tf

    from keras_asc.data.pipeline import _clip_decoder

    decoder = _clip_decoder(32000, 32000, True)

    def decode(path, label, device):
        waveform, _ = decoder(path)
        samples = tf.cast(tf.clip_by_value(tf.round(waveform * 32768.0), -32768, 32767), tf.int16)
        return samples, label, device

    dataset = tf.data.Dataset.from_tensor_slices((paths, labels, devices))
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE).snapshot(snapshot_dir)
    dataset = dataset.shuffle(1024, seed=seed).batch(batch_size, drop_remainder=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def augment(batch, batch_seed):
        samples, label, device = batch
        waveforms = tf.cast(samples, tf.float32) / 32768.0
        for index, augmentation in enumerate(augmentations):
            seed_i = tf.random.experimental.stateless_fold_in(batch_seed, index)
            waveforms = augmentation(waveforms, device, seed_i)
        return waveforms, label

    dataset = tf.data.Dataset.zip((dataset, seeds)).map(
        augment, num_parallel_calls=tf.data.AUTOTUNE
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def _training_rate(model_name, batch_size, steps, warmup):
    import keras
    import numpy as np

    import keras_asc

    model = keras_asc.build(model_name)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    waveforms = rng.uniform(-0.5, 0.5, (batch_size, 32000)).astype("float32")
    labels = rng.integers(0, 10, batch_size).astype("int32")
    for _ in range(warmup):
        model.train_on_batch(waveforms, labels)
    durations = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(waveforms, labels)
        durations.append(time.perf_counter() - start)
    step = statistics.median(durations)
    return batch_size / step, step, model.count_params()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="TAU22-layout folder (default: a synthetic one)")
    parser.add_argument("--split", default="100", help="split to read (default 100)")
    parser.add_argument("--dirs", help="impulse-response folder (default: shared MicIRP set)")
    parser.add_argument("--cores", type=int, default=2, help="CPU cores to use (default 2)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--clips-per-class", type=int, default=40, help="synthetic data size")
    parser.add_argument("--passes", type=int, default=2, help="timed passes per pipeline")
    parser.add_argument("--model", default="moflenet57", help="model whose training step is timed")
    parser.add_argument("--train-steps", type=int, default=8, help="timed training steps")
    parser.add_argument(
        "--no-snapshot", action="store_true", help="skip the tf.data snapshot variant"
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    cores = _limit_cores(args.cores)
    import numpy as np

    from keras_asc.augment import DeviceImpulseResponse, TimeRoll
    from keras_asc.data import tau22
    from keras_asc.data.pipeline import make_dataset, prepare_cache

    work_dir = tempfile.mkdtemp(prefix="keras-asc-pipeline-")
    try:
        if args.data is None:
            from keras_asc.data.synthetic import make_synthetic_tau22

            started = time.perf_counter()
            data = make_synthetic_tau22(
                os.path.join(work_dir, "tau22"),
                clips_per_class=args.clips_per_class,
                test_clips_per_class=9,
            )
            source = f"synthetic TAU22, written in {time.perf_counter() - started:.0f} s"
        else:
            data, source = args.data, args.data
        clips = tau22.load_split(data, args.split)
        dirs, dirs_label = _impulse_responses(args.dirs, work_dir)
        augmentations = [DeviceImpulseResponse(dirs, p=0.6), TimeRoll()]
        common = dict(batch_size=args.batch_size, seed=0)
        print(
            f"{len(clips)} clips of split {args.split} ({source}); batch {args.batch_size}; "
            f"{cores} cores; DIR from {dirs_label}; load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
            flush=True,
        )

        results = {}
        wav = make_dataset(data, args.split, waveform_augmentations=augmentations, **common).dataset
        results["wav"] = _time_passes(wav, args.passes)
        results["wav, no aug"] = _time_passes(
            make_dataset(data, args.split, **common).dataset, args.passes
        )
        print(f"  wav measured: {results['wav'][0]:.0f} clips/s", flush=True)

        cache_dir = os.path.join(work_dir, "cache")
        started = time.perf_counter()
        prepare_cache(data, args.split, cache_dir, verbose=0)
        prepare_s = time.perf_counter() - started
        cached = make_dataset(
            data, args.split, waveform_augmentations=augmentations, cache_dir=cache_dir, **common
        ).dataset
        results["cache"] = _time_passes(cached, args.passes)
        plain = make_dataset(data, args.split, cache_dir=cache_dir, **common).dataset
        results["cache, no aug"] = _time_passes(plain, args.passes)
        roll = make_dataset(
            data, args.split, waveform_augmentations=[TimeRoll()], cache_dir=cache_dir, **common
        ).dataset
        results["cache, roll"] = _time_passes(roll, args.passes)
        print(f"  cache measured: {results['cache'][0]:.0f} clips/s", flush=True)

        if not args.no_snapshot:
            paths = np.array([os.path.join(data, clip.filename) for clip in clips])
            labels = np.array([clip.label for clip in clips], np.int32)
            devices = np.array([clip.device for clip in clips])
            snapshot = _snapshot_dataset(
                paths,
                labels,
                devices,
                os.path.join(work_dir, "snapshot"),
                args.batch_size,
                augmentations,
                seed=0,
            )
            results["snapshot"] = _time_passes(snapshot, args.passes)

        train_rate, step_s, params = _training_rate(
            args.model, args.batch_size, args.train_steps, warmup=2
        )
        print(f"  {args.model} ({params:,} params) train step: {step_s * 1000:.0f} ms", flush=True)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)

    print()
    print(f"{'pipeline':<16}{'clips/s':>10}{'CPU ms/clip':>13}{'x training':>12}")
    for name, (rate, cpu_per_clip) in results.items():
        print(f"{name:<16}{rate:>10.0f}{cpu_per_clip * 1000:>13.2f}{rate / train_rate:>11.1f}x")
    print(f"{'train ' + args.model:<16}{train_rate:>10.0f}{'':>13}{1.0:>11.1f}x")
    ratio = results["cache"][0] / train_rate
    verdict = "meets" if ratio >= 4 else "misses"
    print(
        f"\ncache / training = {ratio:.1f}x ({verdict} the 4x target); cache built in {prepare_s:.1f} s"
    )
    if args.json:
        payload = {
            "cores": cores,
            "batch_size": args.batch_size,
            "clips": len(clips),
            "load_average": os.getloadavg()[0],
            "train_clips_per_s": train_rate,
            "train_step_s": step_s,
            "pipelines": {
                name: {"clips_per_s": rate, "cpu_ms_per_clip": cpu * 1000}
                for name, (rate, cpu) in results.items()
            },
            "cache_over_training": ratio,
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
