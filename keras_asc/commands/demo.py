"""``keras-asc demo``: the whole workflow on built-in synthetic data, in a few minutes on a CPU.

Generates a small synthetic dataset in the TAU22 layout, trains MofleNet57 and CP-ResNet59
briefly with their recipes, combines them into the v2 ensemble (CP-ResNet59 0.6, MofleNet57
0.4), evaluates all three on the test split (every device, including the unseen s4-s6) and
prints the tables; metrics and PNG plots are written beside each run.
"""

import json
import os
import shutil
import sys
import time

DEMO_MARKER = "demo.json"
MODELS = ("moflenet57", "cp_resnet59")
ENSEMBLE_PRESET = "v2"
# Small enough for a few minutes on 2 CPU cores, large enough to learn well above chance
# (measured: see the project README).
DEFAULT_EPOCHS = 6
DEFAULT_CLIPS_PER_CLASS = 60
DEFAULT_TEST_CLIPS_PER_CLASS = 27
DEFAULT_BATCH_SIZE = 16


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="train, ensemble and evaluate on built-in synthetic data (a few minutes on CPU)",
        description="Run the whole keras-asc workflow on built-in data: generate a small "
        "synthetic dataset in the TAU22 layout, train MofleNet57 and CP-ResNet59 briefly, "
        "build the v2 ensemble (CP-ResNet59 0.6 + MofleNet57 0.4), evaluate all three on the "
        "test split and print the tables. Running it again with the same settings reuses the "
        "finished steps.",
    )
    parser.add_argument(
        "--out", default="keras-asc-demo", help="output folder (default ./keras-asc-demo)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=DEFAULT_EPOCHS,
        help=f"epochs per model (default {DEFAULT_EPOCHS})",
    )
    parser.add_argument(
        "--clips-per-class",
        type=int,
        default=DEFAULT_CLIPS_PER_CLASS,
        help=f"synthetic training clips per scene, >= 20 (default {DEFAULT_CLIPS_PER_CLASS})",
    )
    parser.add_argument(
        "--test-clips-per-class",
        type=int,
        default=DEFAULT_TEST_CLIPS_PER_CLASS,
        help="synthetic test clips per scene, a multiple of 9: one per device "
        f"(default {DEFAULT_TEST_CLIPS_PER_CLASS})",
    )
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"default {DEFAULT_BATCH_SIZE}"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data and training (default 0)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier demo in --out that used other settings",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=2,
        help="Keras training output: 0 silent, 1 progress bars, 2 one line per epoch (default)",
    )
    parser.set_defaults(func=run)


def _prepare_out_dir(out, settings, overwrite):
    """Reuse ``out`` when it holds a demo with the same settings; refuse to touch anything we
    did not write."""
    marker = os.path.join(out, DEMO_MARKER)
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as handle:
            previous = json.load(handle)
        if previous == settings:
            return "reuse"
        if not overwrite:
            raise ValueError(
                f"{out!r} holds a demo run with other settings ({previous}); pass --overwrite to "
                "replace it or choose another --out."
            )
        for name in ("data", "runs", "cache"):
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)
        os.remove(marker)
    elif os.path.isdir(out) and os.listdir(out):
        raise ValueError(
            f"{out!r} is not empty and holds no earlier demo ({DEMO_MARKER}); choose an empty or "
            "new --out."
        )
    os.makedirs(out, exist_ok=True)
    from keras_asc.training.evaluation import atomic_write_text

    atomic_write_text(marker, json.dumps(settings, indent=2) + "\n")
    return "new"


def _stage(message, start):
    print(f"\n=== [{time.perf_counter() - start:6.1f} s] {message}", flush=True)


def run(args):
    problems = [
        f"{name} must be >= {minimum}. Received: {value}"
        for name, value, minimum in (
            ("--epochs", args.epochs, 1),
            ("--batch-size", args.batch_size, 1),
            ("--clips-per-class", args.clips_per_class, 20),
            ("--seed", args.seed, 0),
        )
        if value < minimum
    ]
    if args.test_clips_per_class < 9 or args.test_clips_per_class % 9:
        problems.append(
            "--test-clips-per-class must be a positive multiple of 9 (one clip per device). "
            f"Received: {args.test_clips_per_class}"
        )
    if problems:
        for problem in problems:
            print(f"keras-asc demo: error: {problem}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    out = os.path.abspath(args.out)
    settings = {
        "epochs": args.epochs,
        "clips_per_class": args.clips_per_class,
        "test_clips_per_class": args.test_clips_per_class,
        "batch_size": args.batch_size,
        "seed": args.seed,
    }
    try:
        return _run(args, out, settings, start)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"keras-asc demo: error: {error}", file=sys.stderr)
        return 2


def _run(args, out, settings, start):
    from keras_asc.commands.evaluate import report
    from keras_asc.data.synthetic import make_synthetic_tau22
    from keras_asc.training import plots
    from keras_asc.training.ensemble import build_ensemble
    from keras_asc.training.evaluation import evaluate, format_comparison
    from keras_asc.training.train import train

    state = _prepare_out_dir(out, settings, args.overwrite)
    data_dir = os.path.join(out, "data")
    cache_dir = os.path.join(out, "cache")
    runs_dir = os.path.join(out, "runs")

    if state == "reuse" and os.path.isdir(os.path.join(data_dir, "audio")):
        _stage(f"Reusing the synthetic dataset in {data_dir}", start)
    else:
        _stage(
            f"Generating a synthetic TAU22-layout dataset ({args.clips_per_class} training and "
            f"{args.test_clips_per_class} test clips per scene) in {data_dir}",
            start,
        )
        make_synthetic_tau22(
            data_dir,
            clips_per_class=args.clips_per_class,
            test_clips_per_class=args.test_clips_per_class,
            seed=args.seed,
        )

    run_dirs = {}
    for model in MODELS:
        _stage(f"Training {model} for {args.epochs} epochs (batch {args.batch_size})", start)
        result = train(
            model,
            data_dir=data_dir,
            split=100,
            epochs=args.epochs,
            batch_size=args.batch_size,
            out_dir=os.path.join(runs_dir, model),
            seed=args.seed,
            cache_dir=cache_dir,
            verbose=args.verbose,
        )
        run_dirs[model] = result.run_dir

    ensemble_dir = os.path.join(runs_dir, f"ensemble_{ENSEMBLE_PRESET}")
    _stage(f"Building the {ENSEMBLE_PRESET} ensemble (CP-ResNet59 0.6 + MofleNet57 0.4)", start)
    ensemble = build_ensemble(
        [run_dirs["cp_resnet59"], run_dirs["moflenet57"]],
        preset=ENSEMBLE_PRESET,
        out_dir=ensemble_dir,
    )
    from keras_asc import complexity

    print(complexity.check_budget(ensemble))

    results = {}
    for name, target in (
        ("moflenet57", run_dirs["moflenet57"]),
        ("cp_resnet59", run_dirs["cp_resnet59"]),
        (f"ensemble {ENSEMBLE_PRESET}", ensemble_dir),
    ):
        _stage(f"Evaluating {name} on the test split", start)
        result = evaluate(target, data_dir, split="test", cache_dir=cache_dir, verbose=False)
        report(result, os.path.join(target, "eval-test"), command="demo")
        results[name] = result

    _stage("Summary (test split; chance is 10 %)", start)
    print(format_comparison(results))
    if plots.matplotlib_available():
        path = plots.plot_model_comparison(results, os.path.join(out, plots.COMPARISON_PNG))
        print(f"wrote {path}")
    print(
        "\nThese models trained for minutes on synthetic clips; the report's accuracies "
        "need the real TAU22 data and 150 epochs: keras-asc download, then keras-asc train."
    )
    print(f"keras-asc demo finished in {time.perf_counter() - start:.0f} s; everything is in {out}")
    return 0
