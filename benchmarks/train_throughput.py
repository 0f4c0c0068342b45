"""Training throughput of the full recipe step on each Keras backend, in clips per second.

The step timed is what ``keras_asc.train`` runs: the tf.data pipeline with the recipe's waveform
augmentations (device impulse responses, time roll), the model's log-mel front-end with
frequency masking and fmax jitter, Freq-MixStyle, the network, the cross-entropy loss and an
Adam update with the four-phase schedule. It is measured through ``keras_asc.train`` itself, on
a synthetic TAU22 dataset, with a callback that records the time of every batch end; the first
``--warmup`` steps (tracing, compilation, pipeline start-up) are excluded and the throughput is
``batch_size / median step time``. The pipeline alone (iterating the dataset with the same
augmentations) is timed too, to show whether a configuration is input-bound.

Each backend runs in its own subprocess (``KERAS_BACKEND`` is fixed per process).

Example:
    python benchmarks/train_throughput.py                     # all backends, batch 32 and 256
    python benchmarks/train_throughput.py --backends jax --batch-sizes 32 --steps 5
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

BACKENDS = ("tensorflow", "jax", "torch")
MODELS = ("moflenet57", "cp_resnet59")
RESULT_PREFIX = "@@RESULT "
SHARED_DIRS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "micirp_dirs")


def _impulse_dir(work_dir):
    """The real MicIRP responses when ``../shared`` is there, else two synthetic ones."""
    if os.path.isdir(SHARED_DIRS):
        return os.path.abspath(SHARED_DIRS), "MicIRP (66 responses)"
    import numpy as np

    from keras_asc.data.synthetic import write_wav

    folder = os.path.join(work_dir, "dirs")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for index, rate in enumerate((44100, 48000)):
        t = np.arange(int(0.4 * rate)) / rate
        response = rng.normal(size=t.size) * np.exp(-t / 0.05)
        write_wav(
            os.path.join(folder, f"ir{index}.wav"), 0.5 * response / abs(response).max(), rate
        )
    return folder, "2 synthetic responses"


def _worker(args):
    import keras
    import numpy as np

    from keras_asc.augment import DeviceImpulseResponse, TimeRoll
    from keras_asc.data.pipeline import make_dataset
    from keras_asc.training import train

    backend = keras.backend.backend()
    variants = (
        [("tf", False), ("tf+xla", "auto")] if backend == "tensorflow" else [(backend, "auto")]
    )
    if args.no_xla and backend == "tensorflow":
        variants = variants[:1]

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    for batch_size in args.batch_sizes:
        # The pipeline alone: decode (from the cache) + DIR + time roll, per batch.
        dataset = make_dataset(
            args.data,
            100,
            batch_size=batch_size,
            seed=0,
            waveform_augmentations=[DeviceImpulseResponse(args.dirs, p=0.6), TimeRoll()],
            cache_dir=args.cache,
        ).dataset.repeat()
        iterator = iter(dataset)
        for _ in range(args.warmup):
            next(iterator)
        start = time.perf_counter()
        for _ in range(args.steps):
            next(iterator)
        pipeline = batch_size * args.steps / (time.perf_counter() - start)
        print(
            RESULT_PREFIX
            + json.dumps({"kind": "pipeline", "batch_size": batch_size, "clips_per_s": pipeline}),
            flush=True,
        )

        for model in args.models:
            for label, jit_compile in variants:
                timer = StepTimer()
                with tempfile.TemporaryDirectory() as out_dir:
                    train(
                        model,
                        data_dir=args.data,
                        split=100,
                        epochs=1,
                        batch_size=batch_size,
                        steps_per_epoch=args.warmup + args.steps,
                        out_dir=out_dir,
                        dirs_dir=args.dirs,
                        cache_dir=args.cache,
                        verbose=0,
                        tensorboard=False,
                        jit_compile=jit_compile,
                        callbacks=[timer],
                        backup_every_steps=10_000,
                    )
                ends = timer.ends[args.warmup - 1 :]
                steps = list(np.diff(ends))
                result = {
                    "kind": "train",
                    "variant": label,
                    "model": model,
                    "batch_size": batch_size,
                    "clips_per_s": batch_size / statistics.median(steps),
                    "step_s": statistics.median(steps),
                }
                print(RESULT_PREFIX + json.dumps(result), flush=True)


def _orchestrate(args):
    from keras_asc.data.synthetic import make_synthetic_tau22

    with tempfile.TemporaryDirectory() as work_dir:
        # Enough clips for the largest batch to be drawn without repetition inside a batch.
        clips_per_class = max(20, -(-max(args.batch_sizes) // 10) + 10)
        data = make_synthetic_tau22(
            os.path.join(work_dir, "tau22"), clips_per_class=clips_per_class, test_clips_per_class=9
        )
        dirs, dirs_label = _impulse_dir(work_dir)
        cache = os.path.join(work_dir, "cache")
        print(
            f"Training throughput, clips/s (median step after {args.warmup} warm-up steps, "
            f"{args.steps} timed); synthetic TAU22 ({clips_per_class * 10} training clips), "
            f"decoded-audio cache, DIR from {dirs_label}; {os.cpu_count()} CPU cores\n",
            flush=True,
        )
        rows = []
        for backend in args.backends:
            command = [
                sys.executable,
                __file__,
                "--worker",
                "--data",
                data,
                "--dirs",
                dirs,
                "--cache",
                cache,
            ]
            command += ["--batch-sizes", *map(str, args.batch_sizes), "--models", *args.models]
            command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
            if args.no_xla:
                command.append("--no-xla")
            environment = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
            started = time.perf_counter()
            completed = subprocess.run(command, capture_output=True, text=True, env=environment)
            if completed.returncode != 0:
                print(f"{backend}: worker failed\n{completed.stderr[-3000:]}", file=sys.stderr)
                continue
            for line in completed.stdout.splitlines():
                if line.startswith(RESULT_PREFIX):
                    rows.append({"backend": backend, **json.loads(line[len(RESULT_PREFIX) :])})
            print(f"{backend}: done in {time.perf_counter() - started:.0f} s", flush=True)

    print()
    print(f"{'backend':<11}{'variant':<9}{'model':<13}{'batch':>6}{'clips/s':>10}{'step s':>9}")
    for row in rows:
        if row["kind"] == "pipeline":
            print(
                f"{row['backend']:<11}{'pipeline':<9}{'(data only)':<13}{row['batch_size']:>6}{row['clips_per_s']:>10.1f}{'':>9}"
            )
        else:
            print(
                f"{row['backend']:<11}{row['variant']:<9}{row['model']:<13}{row['batch_size']:>6}"
                f"{row['clips_per_s']:>10.1f}{row['step_s']:>9.3f}"
            )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 256])
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    parser.add_argument("--no-xla", action="store_true", help="skip the TensorFlow XLA variant")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--dirs", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 2 or args.warmup < 1:
        parser.error("need --steps >= 2 and --warmup >= 1")
    if args.worker:
        _worker(args)
    else:
        _orchestrate(args)


if __name__ == "__main__":
    main()
