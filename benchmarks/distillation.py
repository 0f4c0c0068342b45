"""Knowledge distillation measured: the paired gain of a distilled student over the same
student trained on the labels alone, seed by seed, on the learning-parity set.

The data is the learning-parity set of ``benchmarks/learning_parity.py``: the built-in
synthetic TAU22 (``keras_asc.data.synthetic``, seed 0; 40 training and 27 test clips per class
by default), with the real device impulse responses of ``../shared/data/micirp_dirs`` for DIR
when that folder is present. Two teachers (CP-ResNet59 by default, seeds 100 and 101) are
trained on the students' split. Each student seed is then trained twice with the same recipe,
data, epochs and batch size: once on the labels, once with ``teachers=`` (the recipe's
``kd_lambda`` and ``kd_temperature``). Both runs of a pair start from the same initial
weights: the script records a SHA-256 of the student's weights at the start of training and
stops if the two runs of a pair differ.

It prints each pair's macro accuracy (the DCASE metric) on the test split, which holds all
nine devices, the paired gain (KD minus labels) per seed, its mean with the standard error of
the mean (standard deviation of the paired differences over the square root of the number of
pairs), and whether the mean gain is more than two standard errors from zero. Finished runs
are recorded in ``OUT/results.jsonl`` and reused when the script is run again.

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/distillation.py --out /tmp/kd-bench \
        --seeds 0 1 2 3 4 --epochs 8 --teacher-epochs 12
"""

import argparse
import hashlib
import json
import math
import os
import shutil
import statistics
import sys
import time

import keras
import numpy as np

from keras_asc.data.synthetic import make_synthetic_tau22
from keras_asc.training import build_ensemble, evaluate, get_recipe, train

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DIRS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "data", "micirp_dirs")


class _InitialWeights(keras.callbacks.Callback):
    """Records a digest of the model's weights before the first optimiser step."""

    def __init__(self):
        super().__init__()
        self.digest = None

    def on_train_begin(self, logs=None):
        digest = hashlib.sha256()
        for weight in self.model.weights:
            digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
        self.digest = digest.hexdigest()


def _train(model, epochs, out, seed, args, teachers=None):
    if os.path.exists(out):
        shutil.rmtree(out)
    initial = _InitialWeights()
    start = time.perf_counter()
    result = train(
        model,
        data_dir=args.data,
        split=args.split,
        epochs=epochs,
        batch_size=args.batch_size,
        out_dir=out,
        seed=seed,
        dirs_dir=args.dirs,
        cache_dir=args.cache,
        resume=False,
        verbose=0,
        tensorboard=False,
        callbacks=[initial],
        jit_compile=False if keras.backend.backend() == "tensorflow" else "auto",
        teachers=teachers,
    )
    return result.run_dir, time.perf_counter() - start, initial.digest


def _macro(run_dir, args):
    result = evaluate(run_dir, args.data, split="test", cache_dir=args.cache, verbose=False)
    return float(result.macro_accuracy)


def _load(path):
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return {row["key"]: row for row in rows}


def _append(path, row):
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def paired_gain(pairs):
    """Mean paired difference (KD - labels) in percentage points, its standard error and the
    differences, from ``[(labels_accuracy, kd_accuracy), ...]`` (fractions)."""
    differences = [100.0 * (kd - plain) for plain, kd in pairs]
    mean = statistics.fmean(differences)
    se = (
        statistics.stdev(differences) / math.sqrt(len(differences))
        if len(differences) > 1
        else math.nan
    )
    return mean, se, differences


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="working folder (data, cache, runs, results)")
    parser.add_argument("--clips-per-class", type=int, default=40)
    parser.add_argument("--test-clips-per-class", type=int, default=27)
    parser.add_argument("--split", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=8, help="student epochs")
    parser.add_argument("--teacher-epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--teacher", default="cp_resnet59")
    parser.add_argument("--student", default="moflenet57")
    parser.add_argument(
        "--dirs",
        default=DEFAULT_DIRS if os.path.isdir(DEFAULT_DIRS) else None,
        help="impulse responses for DIR (default ../shared/data/micirp_dirs when present)",
    )
    args = parser.parse_args(argv)
    if len(args.seeds) < 2:
        parser.error("--seeds: give at least two seeds (the standard error needs two pairs)")

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    args.data = os.path.join(out, "data")
    args.cache = os.path.join(out, "cache")
    if not os.path.exists(os.path.join(args.data, "keras_asc_synthetic.json")):
        make_synthetic_tau22(
            args.data,
            clips_per_class=args.clips_per_class,
            test_clips_per_class=args.test_clips_per_class,
            seed=0,
        )
    runs = os.path.join(out, "runs")
    results_path = os.path.join(out, "results.jsonl")
    done = _load(results_path)
    recipe = get_recipe(args.student)
    settings = (
        f"{args.clips_per_class * 10} training / {args.test_clips_per_class * 10} test clips "
        f"(synthetic TAU22, split {args.split}), DIR from {args.dirs}, backend "
        f"{keras.backend.backend()}, batch {args.batch_size}; student {args.student} "
        f"{args.epochs} epochs; teachers 2 x {args.teacher} {args.teacher_epochs} epochs; "
        f"kd_lambda {recipe.kd_lambda}, temperature {recipe.kd_temperature}"
    )
    print(f"knowledge distillation: {settings}", flush=True)

    teachers = []
    for index in range(2):
        key = f"teacher{index}-{args.teacher}-e{args.teacher_epochs}"
        run_dir = os.path.join(runs, key)
        if key not in done or not os.path.isfile(os.path.join(run_dir, "model.keras")):
            _, seconds, _ = _train(args.teacher, args.teacher_epochs, run_dir, 100 + index, args)
            done[key] = {"key": key, "accuracy": _macro(run_dir, args), "seconds": seconds}
            _append(results_path, done[key])
        teachers.append(run_dir)
        print(f"teacher {index} ({args.teacher}): {100 * done[key]['accuracy']:.2f} %", flush=True)
    ensemble_dir = os.path.join(runs, "teacher-ensemble")
    if os.path.exists(ensemble_dir):
        shutil.rmtree(ensemble_dir)
    build_ensemble(teachers, weights=[0.5, 0.5], out_dir=ensemble_dir, enforce_budget=False)
    print(f"teacher ensemble (mean logits): {100 * _macro(ensemble_dir, args):.2f} %", flush=True)

    pairs = []
    for seed in args.seeds:
        pair = {}
        for kind, kd in (("labels", None), ("kd", teachers)):
            # A label-only run does not depend on the teachers: one serves every teacher setting.
            key = f"{args.student}-e{args.epochs}-seed{seed}-labels"
            if kd is not None:
                key = f"{args.student}-e{args.epochs}-{args.teacher}-e{args.teacher_epochs}-seed{seed}-kd"
            if key not in done:
                run_dir, seconds, digest = _train(
                    args.student, args.epochs, os.path.join(runs, key), seed, args, teachers=kd
                )
                done[key] = {
                    "key": key,
                    "accuracy": _macro(run_dir, args),
                    "seconds": seconds,
                    "initial_weights": digest,
                }
                _append(results_path, done[key])
            pair[kind] = done[key]
        if pair["labels"]["initial_weights"] != pair["kd"]["initial_weights"]:
            print(f"seed {seed}: the two runs started from different weights", file=sys.stderr)
            return 1
        pairs.append((pair["labels"]["accuracy"], pair["kd"]["accuracy"]))
        print(
            f"seed {seed}: labels {100 * pairs[-1][0]:6.2f} %  KD {100 * pairs[-1][1]:6.2f} %  "
            f"gain {100 * (pairs[-1][1] - pairs[-1][0]):+6.2f} pp  (same initial weights "
            f"{pair['kd']['initial_weights'][:12]})",
            flush=True,
        )

    mean, se, differences = paired_gain(pairs)
    plain = [100 * p for p, _ in pairs]
    distilled = [100 * k for _, k in pairs]
    print()
    print(f"settings: {settings}")
    print(
        f"{'student':<22} {statistics.fmean(plain):6.2f} % +- {statistics.stdev(plain):5.2f} (n={len(plain)})"
    )
    print(
        f"{'student + KD':<22} {statistics.fmean(distilled):6.2f} % +- {statistics.stdev(distilled):5.2f}"
    )
    print(f"paired gain (KD - labels): {mean:+.2f} pp, standard error {se:.2f} pp, n={len(pairs)}")
    verdict = "a gain" if mean > 2 * se else ("a loss" if mean < -2 * se else "no measurable gain")
    print(
        f"differences per seed: {', '.join(f'{d:+.2f}' for d in differences)} -> {verdict} "
        "(|mean| > 2 standard errors counts)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
