"""Full training-step throughput per preset and Keras backend against a plain PyTorch pipeline.

What is timed is a whole training epoch: the data pipeline, the front-end, the augmentations,
the network and the optimiser, on both sides, at equal arithmetic:

- ``tensorflow`` / ``jax`` / ``torch``: ``keras_asc.train`` exactly as a user runs it (tf.data
  pipeline from the decoded-audio cache with DIR and time roll, the log-mel front-end with
  fmax jitter and masking, Freq-MixStyle, the network, ``AdamL2`` with the recipe's
  schedule, the per-epoch checkpoint and backup), ``jit_compile="auto"`` (XLA where Keras
  supports it, ``jax.jit`` on JAX, eager PyTorch);
- ``pytorch``: the plain PyTorch pipeline of ``learning_parity.py`` (NumPy DIR and roll, the
  ``torch.stft`` front-ends and networks of ``torch_reference.py``, Freq-MixStyle,
  ``torch.optim.Adam``), on the same clips with the same recipe and batch size;
- ``pipeline``: the keras-asc input pipeline alone (cache, DIR, roll, batching), i.e. the
  ceiling of what it can feed.

Every side runs in its own subprocess (``KERAS_BACKEND`` is fixed per process) and the sides
alternate within each round, so that they meet the same machine load; the first epoch
(tracing, compilation, start-up) is left out and a side's figure is clips per second over the
later epochs. Ratios are taken within a round against the PyTorch pipeline (and JAX against
TensorFlow), and the median over rounds is printed with the range.

``--device gpu`` runs the PyTorch pipeline on CUDA and lets the Keras backends see the GPU;
``--device cpu`` (default) hides any GPU. ``--precision mixed`` trains the Keras sides with
the mixed-precision policy (float16 compute on a GPU, bfloat16 on a CPU).

Example:
    python benchmarks/train_speed.py                                  # 3 presets, CPU, batch 32
    python benchmarks/train_speed.py --models dcase24_baseline --rounds 3 --epochs 4
    python benchmarks/train_speed.py --device gpu --batch-size 256 --clips-per-class 520
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

MODELS = ("moflenet57", "cp_resnet59", "dcase24_baseline")
SIDES = ("pytorch", "tensorflow", "jax", "torch", "pipeline")
KERAS_SIDES = ("tensorflow", "jax", "torch")
RESULT_PREFIX = "@@RESULT "


def _timer(sink, profile_steps=0):
    """Epoch times into ``sink["epochs"]``; after the first epoch, the time of each step from
    its batch's arrival to its end (``"step"``) and from one step's end to the next batch
    (``"wait"``: the input pipeline, Keras' iterator and the callbacks). With
    ``profile_steps`` on the PyTorch backend, ``torch.profiler`` records that many steps of the
    second epoch and the table of its top operators goes to ``sink["profile"]``."""
    import keras

    class Timer(keras.callbacks.Callback):
        epoch = 0
        last_end = None
        profiler = None

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch, self.started, self.last_end = epoch, time.perf_counter(), None
            if epoch == 1 and profile_steps and keras.backend.backend() == "torch":
                import torch.profiler

                self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                self.profiler.__enter__()

        def on_train_batch_begin(self, batch, logs=None):
            now = time.perf_counter()
            if self.epoch > 0 and self.last_end is not None:
                sink["wait"].append(now - self.last_end)
            self.begin = now

        def on_train_batch_end(self, batch, logs=None):
            if logs and "loss" in logs:  # wait for the step: JAX dispatches asynchronously
                keras.ops.convert_to_numpy(logs["loss"])
            now = time.perf_counter()
            if self.epoch > 0:
                sink["step"].append(now - self.begin)
            self.last_end = now
            if self.profiler is not None and batch + 1 >= profile_steps:
                self.profiler.__exit__(None, None, None)
                sink["profile"] = self.profiler.key_averages().table(
                    sort_by="self_cpu_time_total", row_limit=25
                )
                self.profiler = None

        def on_epoch_end(self, epoch, logs=None):
            sink["epochs"].append(time.perf_counter() - self.started)

    return Timer()


def _keras_worker(args, steps):
    import keras_asc

    sink = {"epochs": [], "step": [], "wait": []}
    with tempfile.TemporaryDirectory() as out_dir:
        keras_asc.train(
            args.model,
            data_dir=args.data,
            split=100,
            epochs=args.epochs,
            batch_size=args.batch_size,
            out_dir=out_dir,
            seed=0,
            dirs_dir=args.dirs,
            cache_dir=args.cache,
            resume=False,
            verbose=0,
            tensorboard=False,
            callbacks=[_timer(sink, args.profile_steps)],
            **({"precision": args.precision} if args.precision != "float32" else {}),
        )
    if "profile" in sink:
        print(sink["profile"], file=sys.stderr)
    shares = {"compute_s": statistics.median(sink["step"]), "wait_s": statistics.median(sink["wait"])}
    return [seconds / steps for seconds in sink["epochs"][1:]], shares


def _pytorch_worker(args):
    import learning_parity

    from keras_asc.training import get_recipe

    recipe = get_recipe(args.model).with_overrides(epochs=args.epochs, batch_size=args.batch_size)
    train_data = learning_parity._load_split_arrays(args.data, 100)
    test_data = tuple(array[:64] for array in learning_parity._load_split_arrays(args.data, "test"))
    dirs = learning_parity._load_dirs(args.dirs)
    timings = []
    device = "cuda" if args.device == "gpu" else "cpu"
    learning_parity.train_torch(args.model, recipe, train_data, test_data, dirs, 0, timings,
                                device=device)
    return timings


def _pipeline_worker(args, steps):
    from keras_asc.augment import DeviceImpulseResponse, TimeRoll
    from keras_asc.data.pipeline import make_dataset

    dataset = make_dataset(
        args.data,
        100,
        batch_size=args.batch_size,
        seed=0,
        waveform_augmentations=[DeviceImpulseResponse(args.dirs, p=0.6), TimeRoll()],
        cache_dir=args.cache,
    ).dataset
    timings = []
    for epoch in range(args.epochs):
        started = time.perf_counter()
        for _ in dataset:
            pass
        if epoch > 0:
            timings.append((time.perf_counter() - started) / steps)
    return timings


def _worker(args):
    from keras_asc.data import tau22

    steps = len(tau22.load_split(args.data, 100)) // args.batch_size
    shares = {}
    if args.side == "pytorch":
        step_seconds = _pytorch_worker(args)
    elif args.side == "pipeline":
        step_seconds = _pipeline_worker(args, steps)
    else:
        step_seconds, shares = _keras_worker(args, steps)
    result = {
        **shares,
        "step_s": statistics.median(step_seconds),
        "clips_per_s": args.batch_size / statistics.median(step_seconds),
        "steps_per_epoch": steps,
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def _environment(args, side):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    environment["KERAS_BACKEND"] = side if side in KERAS_SIDES else "tensorflow"
    if args.device == "cpu":
        environment["CUDA_VISIBLE_DEVICES"] = ""
        environment["JAX_PLATFORMS"] = "cpu"
    return environment


def _run_side(args, side, model, data, dirs, cache):
    command = [sys.executable, __file__, "--worker", "--side", side, "--model", model,
               "--data", data, "--dirs", dirs, "--cache", cache,
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
               "--device", args.device, "--precision", args.precision,
               "--profile-steps", str(args.profile_steps)]
    completed = subprocess.run(command, capture_output=True, text=True,
                               env=_environment(args, side))
    if args.profile_steps and side == "torch":
        print(completed.stderr[completed.stderr.find("---"):], flush=True)
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    print(f"{side} {model}: worker failed\n{completed.stderr[-3000:]}", file=sys.stderr)
    return None


def _ratios(rows, side, baseline):
    """Per-round ratios of ``side`` over ``baseline`` (clips/s), for rounds holding both."""
    by_round = {}
    for row in rows:
        by_round.setdefault(row["round"], {})[row["side"]] = row["clips_per_s"]
    return [sides[side] / sides[baseline] for sides in by_round.values()
            if side in sides and baseline in sides]


def _describe(values, suffix=""):
    if not values:
        return "-"
    text = f"{statistics.median(values):.2f}{suffix}"
    if len(values) > 1:
        text += f" ({min(values):.2f}-{max(values):.2f})"
    return text


def report(results, models, sides):
    lines = ["", f"{'model':18s} {'side':11s} {'clips/s per round':28s} {'x pytorch':>20s}"]
    for model in models:
        rows = [row for row in results if row["model"] == model]
        for side in sides:
            values = [row["clips_per_s"] for row in rows if row["side"] == side]
            ratio = _describe(_ratios(rows, side, "pytorch"), "x") if side != "pytorch" else ""
            shown = " / ".join(f"{value:.1f}" for value in values) or "-"
            lines.append(f"{model:18s} {side:11s} {shown:28s} {ratio:>20s}")
        if "jax" in sides and "tensorflow" in sides:
            lines.append(f"{model:18s} {'jax / tensorflow':40s} "
                         f"{_describe(_ratios(rows, 'jax', 'tensorflow'), 'x'):>20s}")
    return "\n".join(lines)


def _orchestrate(args):
    import pipeline_throughput

    from keras_asc.data.pipeline import prepare_cache
    from keras_asc.data.synthetic import make_synthetic_tau22

    models = args.models.split(",")
    sides = args.sides.split(",")
    results = []
    with tempfile.TemporaryDirectory() as work_dir:
        data = args.data or make_synthetic_tau22(
            os.path.join(work_dir, "tau22"), clips_per_class=args.clips_per_class,
            test_clips_per_class=9,
        )
        dirs, dirs_label = pipeline_throughput._impulse_responses(args.dirs, work_dir)
        cache = args.cache or os.path.join(work_dir, "cache")
        for split in (100, "test"):
            prepare_cache(data, split, cache)
        try:
            load = "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
        except OSError:
            load = "load average unknown"
        print(f"train_speed: {args.device}, {os.cpu_count()} cores ({load}), batch "
              f"{args.batch_size}, {args.epochs} epochs per run (the first not timed), "
              f"precision {args.precision}, DIR from {dirs_label}", flush=True)
        for round_index in range(1, args.rounds + 1):
            for model in models:
                for side in sides:
                    if side == "pipeline" and model != models[0]:
                        continue  # the pipeline does not depend on the model
                    started = time.perf_counter()
                    result = _run_side(args, side, model, data, dirs, cache)
                    if result is None:
                        continue
                    result.update(round=round_index, model=model if side != "pipeline" else "(any)",
                                  side=side)
                    results.append(result)
                    if side == "pipeline":
                        for other in models[1:]:
                            results.append({**result, "model": other})
                    print(f"round {round_index} {model:18s} {side:11s} "
                          f"{result['clips_per_s']:8.1f} clips/s  "
                          f"({time.perf_counter() - started:.0f} s)", flush=True)

    for row in results:
        if row["side"] == "pipeline" and row["model"] == "(any)":
            row["model"] = models[0]
    print(report(results, models, sides))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--sides", default=",".join(SIDES),
                        help="which of pytorch, tensorflow, jax, torch, pipeline to run, in order")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is not timed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--clips-per-class", type=int, default=32,
                        help="synthetic training clips per scene (10 scenes)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--precision", choices=("float32", "mixed"), default="float32")
    parser.add_argument("--data", help="a TAU22 folder instead of the synthetic one")
    parser.add_argument("--cache", help="decoded-audio cache folder (default: a temporary one)")
    parser.add_argument("--dirs", help="impulse-response folder (default: MicIRP beside the "
                        "project when present, else two synthetic responses)")
    parser.add_argument("--json", help="also write every run's figures here")
    parser.add_argument("--profile-steps", type=int, default=0,
                        help="torch backend: print torch.profiler's top operators over this many "
                        "steps of the second epoch")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args)
        return 0
    for model in args.models.split(","):
        if model not in MODELS:
            parser.error(f"--models: {model!r} is not one of {', '.join(MODELS)}")
    for side in args.sides.split(","):
        if side not in SIDES:
            parser.error(f"--sides: {side!r} is not one of {', '.join(SIDES)}")
    if args.epochs < 2 or args.rounds < 1 or args.batch_size < 1:
        parser.error("need --epochs >= 2, --rounds >= 1 and --batch-size >= 1")
    if args.clips_per_class * 10 < 2 * args.batch_size:
        parser.error("--clips-per-class too small: an epoch needs at least two batches")
    _orchestrate(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
