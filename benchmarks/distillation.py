"""Knowledge distillation on the synthetic TAU22 set: MofleNet57 distilled from two
CP-ResNet-128k teachers versus MofleNet57 trained on the labels alone, over several seeds.

Everything runs on the built-in synthetic data (``keras_asc.data.synthetic``), so the figures
say whether distillation works end to end, not what it gains on TAU22. The teachers are two
CP-ResNet-128k runs (seeds 100 and 101) on the same split as the students; each student seed
is trained twice, with and without ``teachers=``, with the same recipe, data and epochs.
Macro accuracy (the DCASE metric) is measured on the synthetic test split, which holds all
nine devices. Runs are kept in ``--out`` and reused when the script is run again.

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/distillation.py --out /tmp/kd-bench \
        --clips-per-class 40 --epochs 8 --teacher-epochs 8 --seeds 0 1 2
"""

import argparse
import json
import os
import statistics
import time

import keras

from keras_asc.data.synthetic import make_synthetic_tau22
from keras_asc.training import build_ensemble, evaluate, train


def _train(model, epochs, data, cache, out, seed, args, teachers=None):
    start = time.perf_counter()
    result = train(
        model,
        data_dir=data,
        split=args.split,
        epochs=epochs,
        batch_size=args.batch_size,
        out_dir=out,
        seed=seed,
        cache_dir=cache,
        verbose=0,
        tensorboard=False,
        jit_compile=False if keras.backend.backend() == "tensorflow" else "auto",
        teachers=teachers,
    )
    return result.run_dir, time.perf_counter() - start


def _macro(run_dir, data, cache):
    return evaluate(run_dir, data, split="test", cache_dir=cache, verbose=False).macro_accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="working folder (data, cache, runs)")
    parser.add_argument("--clips-per-class", type=int, default=40)
    parser.add_argument("--test-clips-per-class", type=int, default=18)
    parser.add_argument("--split", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=8, help="student epochs")
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher", default="cp_resnet_128k")
    parser.add_argument("--student", default="moflenet57")
    args = parser.parse_args(argv)

    out = os.path.abspath(args.out)
    data = os.path.join(out, "data")
    cache = os.path.join(out, "cache")
    if not os.path.isdir(data):
        make_synthetic_tau22(
            data,
            clips_per_class=args.clips_per_class,
            test_clips_per_class=args.test_clips_per_class,
            seed=0,
        )
    runs = os.path.join(out, "runs")
    rows = {}

    teachers = []
    for index in range(2):
        run_dir, seconds = _train(
            args.teacher,
            args.teacher_epochs,
            data,
            cache,
            os.path.join(runs, f"teacher{index}"),
            100 + index,
            args,
        )
        teachers.append(run_dir)
        rows.setdefault("teacher", []).append(_macro(run_dir, data, cache))
        print(
            f"teacher {index}: {rows['teacher'][-1]:.4f} macro accuracy ({seconds:.0f} s)",
            flush=True,
        )
    ensemble_dir = os.path.join(runs, "teacher_ensemble")
    build_ensemble(teachers, weights=[0.5, 0.5], out_dir=ensemble_dir, enforce_budget=False)
    rows["teacher ensemble (mean logits)"] = [_macro(ensemble_dir, data, cache)]

    for seed in args.seeds:
        for label, kd in (("student", None), ("student + KD", teachers)):
            name = f"{args.student}-e{args.epochs}-seed{seed}" + ("-kd" if kd else "")
            run_dir, seconds = _train(
                args.student,
                args.epochs,
                data,
                cache,
                os.path.join(runs, name),
                seed,
                args,
                teachers=kd,
            )
            rows.setdefault(label, []).append(_macro(run_dir, data, cache))
            print(f"{name}: {rows[label][-1]:.4f} macro accuracy ({seconds:.0f} s)", flush=True)

    print()
    print(
        f"Synthetic TAU22 ({args.clips_per_class} clips/class, split{args.split}, "
        f"test {args.test_clips_per_class * 10} clips), backend {keras.backend.backend()}, "
        f"student {args.epochs} epochs, teachers {args.teacher_epochs} epochs, batch "
        f"{args.batch_size}"
    )
    print(f"{'model':<34} {'runs':>4}  macro accuracy (mean +- std)")
    summary = {}
    for label, values in rows.items():
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        summary[label] = {"values": values, "mean": mean, "std": std}
        shown = {"student": args.student, "student + KD": f"{args.student} + KD"}.get(label, label)
        if label == "teacher":
            shown = f"{args.teacher} teacher"
        print(f"{shown:<34} {len(values):>4}  {100 * mean:.1f} % +- {100 * std:.1f}")
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump({"settings": vars(args), "results": summary}, handle, indent=2)


if __name__ == "__main__":
    main()
