"""keras-asc at TAU22 scale: prepare time, cache size, peak memory, pipeline and epoch speed.

For each ``--sizes`` value N (training clips) a TAU22-layout tree of N clips is built from a
small rendered synthetic set (``make_synthetic_tau22``): every listed clip is a hard link to
one of the rendered WAVs under its own TAU22 file name, so the tree costs no disk space for
audio while ``prepare`` still decodes and resamples N files (split files 5-100 are nested
random subsets; the test split is the rendered one). Then, each in a fresh subprocess whose
resident memory is sampled every 0.1 s (anonymous memory, i.e. what the process owns, apart
from the file pages of the memory-mapped cache, which the kernel can drop):

- ``prepare``: ``keras-asc prepare`` of split 100 (``prepare_cache``, 2 decoding processes),
  with its time, clips/s and the cache's size on disk;
- ``pipeline``: the training input pipeline (cache, DIR, time roll, batching) for
  ``--pipeline-batches`` batches, with clips/s and the CPU seconds per clip it took, and a
  projection to 16 cores assuming the CPU cost per clip stays the same;
- ``train``: ``keras_asc.train`` of ``--model`` on the TensorFlow backend for
  ``--train-steps`` steps (one short epoch), with its seconds per step and the time a full
  epoch of N clips would take at that rate (extrapolated, not measured).

Memory that must not grow with N is read by comparing the sizes.

Example:
    python benchmarks/train_scale.py --work /tmp/scale --sizes 5000 20000
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time

RESULT_PREFIX = "@@RESULT "
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def _scaled_tree(source, out_dir, num_clips, seed=0):
    """A TAU22 tree of ``num_clips`` training clips hard-linked to the clips of ``source``."""
    import numpy as np

    from keras_asc.data import tau22

    if os.path.isfile(os.path.join(out_dir, "split100.csv")):
        return out_dir
    staging = out_dir + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(os.path.join(staging, "audio"))
    rendered = tau22.load_split(source, 100)
    rows = []
    for index in range(num_clips):
        clip = rendered[index % len(rendered)]
        scene, city, location, _, subsegment, device = os.path.basename(clip.filename)[:-4].split("-")
        name = f"audio/{scene}-{city}-{location}-{200000 + index}-{subsegment}-{device}.wav"
        os.link(os.path.join(source, clip.filename), os.path.join(staging, name))
        rows.append((name, scene))
    order = np.random.default_rng(seed).permutation(num_clips)
    for percentage in (5, 10, 25, 50, 100):
        chosen = sorted(rows[i] for i in order[: max(1, round(num_clips * percentage / 100))])
        with open(os.path.join(staging, f"split{percentage}.csv"), "w", encoding="utf-8") as handle:
            handle.write("filename\tscene_label\n")
            handle.writelines(f"{name}\t{scene}\n" for name, scene in chosen)
    test = tau22.load_split(source, "test")
    with open(os.path.join(staging, "test.csv"), "w", encoding="utf-8") as handle:
        handle.write("filename\tscene_label\n")
        for clip in test:
            os.link(os.path.join(source, clip.filename), os.path.join(staging, clip.filename))
            handle.write(f"{clip.filename}\t{tau22.SCENE_LABELS[clip.label]}\n")
    os.rename(staging, out_dir)
    return out_dir


class _MemorySampler:
    """Peak anonymous and file-backed resident memory of this process, sampled in a thread."""

    def __init__(self, interval=0.1):
        self.interval, self.peak = interval, {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                key = line.split(":")[0]
                if key in self.peak:
                    self.peak[key] = max(self.peak[key], int(line.split()[1]) * 1024)

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


def _cpu_seconds():
    """CPU seconds of this process (all threads) and of its finished child processes."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _children_peak_rss():
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def _worker(args):
    result = {}
    with _MemorySampler() as memory:
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        if args.stage == "prepare":
            from keras_asc.data.pipeline import prepare_cache

            manifest = prepare_cache(args.data, 100, args.cache, num_workers=2, verbose=0)
            result["cache_bytes"] = os.path.getsize(manifest["array_path"])
            result["clips"] = manifest["num_clips"]
        elif args.stage == "pipeline":
            from keras_asc.augment import DeviceImpulseResponse, TimeRoll
            from keras_asc.data.pipeline import make_dataset

            dataset = make_dataset(
                args.data, 100, batch_size=args.batch_size, seed=0, cache_dir=args.cache,
                waveform_augmentations=[DeviceImpulseResponse(args.dirs, p=0.6), TimeRoll()],
            ).dataset.repeat()
            iterator = iter(dataset)
            next(iterator)  # start-up: the shuffle buffer fills here
            result["startup_s"] = time.perf_counter() - started
            started, cpu_started = time.perf_counter(), _cpu_seconds()
            for _ in range(args.pipeline_batches):
                next(iterator)
            result["clips"] = args.pipeline_batches * args.batch_size
        else:
            import tempfile

            import keras
            import numpy as np

            import keras_asc

            ends = []

            class StepEnds(keras.callbacks.Callback):
                def on_train_batch_end(self, batch, logs=None):
                    ends.append(time.perf_counter())

            with tempfile.TemporaryDirectory() as out_dir:
                run = keras_asc.train(
                    args.model, data_dir=args.data, split=100, epochs=1,
                    batch_size=args.batch_size, steps_per_epoch=args.train_steps,
                    out_dir=out_dir, dirs_dir=args.dirs, cache_dir=args.cache, verbose=0,
                    tensorboard=False, callbacks=[StepEnds()],
                )
                result["clips"] = args.train_steps * args.batch_size
                result["train_loss"] = float(run.history["loss"][-1])
            # Steady state: the first two steps carry tracing and the pipeline's start-up.
            result["step_s"] = float(np.median(np.diff(ends[2:])))
        result["seconds"] = time.perf_counter() - started
        result["cpu_seconds"] = _cpu_seconds() - cpu_started
    result["peak_rss_anon"] = memory.peak["RssAnon"]
    result["peak_rss_file"] = memory.peak["RssFile"]
    result["children_peak_rss"] = _children_peak_rss()
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def _run(args, stage, data, cache):
    command = [sys.executable, __file__, "--worker", "--stage", stage, "--data", data,
               "--cache", cache, "--dirs", args.dirs, "--model", args.model,
               "--batch-size", str(args.batch_size), "--train-steps", str(args.train_steps),
               "--pipeline-batches", str(args.pipeline_batches)]
    environment = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    completed = subprocess.run(command, capture_output=True, text=True, env=environment)
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise SystemExit(f"{stage} failed:\n{completed.stderr[-3000:]}")


def _gb(value):
    return f"{value / 1e9:.2f} GB"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="folder for the trees and caches (required)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--model", default="moflenet57")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument("--pipeline-batches", type=int, default=100)
    parser.add_argument("--dirs", help="impulse-response folder (default: MicIRP beside the "
                        "project when present, else two synthetic responses)")
    parser.add_argument("--keep", action="store_true", help="keep the caches afterwards")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args)
        return 0
    if args.train_steps < 5:
        parser.error("--train-steps must be at least 5 (the first two are not timed)")
    if not args.work:
        parser.error("--work is required: a folder for the trees and caches")
    import pipeline_throughput

    from keras_asc.data.synthetic import make_synthetic_tau22

    os.makedirs(args.work, exist_ok=True)
    args.dirs, dirs_label = pipeline_throughput._impulse_responses(args.dirs, args.work)
    source = os.path.join(args.work, "rendered")
    if not os.path.isfile(os.path.join(source, "split100.csv")):
        make_synthetic_tau22(source, clips_per_class=100, test_clips_per_class=9)
    print(f"train_scale: {os.cpu_count()} cores, load average "
          + " ".join(f"{value:.1f}" for value in os.getloadavg())
          + f"; DIR from {dirs_label}; {args.model} batch {args.batch_size}", flush=True)
    rows = []
    for size in args.sizes:
        data = _scaled_tree(source, os.path.join(args.work, f"tau22-{size}"), size)
        cache = os.path.join(args.work, f"cache-{size}")
        shutil.rmtree(cache, ignore_errors=True)
        row = {"size": size}
        for stage in ("prepare", "pipeline", "train"):
            row[stage] = _run(args, stage, data, cache)
            print(f"{size} clips {stage}: {json.dumps(row[stage])}", flush=True)
        rows.append(row)
        if not args.keep:
            shutil.rmtree(cache, ignore_errors=True)

    split100 = 139_970
    print(f"\n{'clips':>8} {'prepare s':>10} {'clips/s':>8} {'cache':>9} {'prepare anon':>13} "
          f"{'pipeline clips/s':>17} {'CPU ms/clip':>12} {'16-core proj.':>14} "
          f"{'pipeline anon':>14} {'train s/step':>13} {'train anon':>11} {'epoch (extrap.)':>16}")
    for row in rows:
        prepare, pipeline, train = row["prepare"], row["pipeline"], row["train"]
        cpu_per_clip = pipeline["cpu_seconds"] / pipeline["clips"]
        step = train["step_s"]
        epoch = step * (row["size"] // args.batch_size)
        print(f"{row['size']:>8} {prepare['seconds']:>10.0f} {row['size'] / prepare['seconds']:>8.0f} "
              f"{_gb(prepare['cache_bytes']):>9} {_gb(max(prepare['peak_rss_anon'], prepare['children_peak_rss'])):>13} "
              f"{pipeline['clips'] / pipeline['seconds']:>17.0f} {1000 * cpu_per_clip:>12.2f} "
              f"{16 / cpu_per_clip:>14.0f} {_gb(pipeline['peak_rss_anon']):>14} {step:>13.3f} "
              f"{_gb(train['peak_rss_anon']):>11} {epoch / 60:>13.1f} min")
    last = rows[-1]
    scale = split100 / last["size"]
    print(f"\nsplit 100 ({split100:,} clips), extrapolated linearly from {last['size']:,}: "
          f"prepare {last['prepare']['seconds'] * scale / 3600:.1f} h on 2 cores, cache "
          f"{_gb(last['prepare']['cache_bytes'] * scale)}, one epoch "
          f"{last['train']['step_s'] * (split100 // args.batch_size) / 3600:.1f} h "
          f"at this machine's {args.model} training rate")
    with open(os.path.join(args.work, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
