"""``keras-asc evaluate MODEL --data DIR``: DCASE metrics, a text table, metrics.json and PNGs."""

import os
import sys


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained model on a TAU22 split",
        description="Evaluate a run directory, .keras or .tflite model on a TAU22-layout "
        "split: macro class-wise accuracy (the DCASE metric), accuracy per device and device "
        "group, per class, log loss and the confusion matrix. Prints a table and writes "
        "metrics.json, metrics.txt and (with matplotlib) confusion_matrix.png and "
        "device_accuracy.png.",
    )
    parser.add_argument("model", help="run directory (with model.keras), .keras or .tflite file")
    parser.add_argument("--data", required=True, help="TAU22-layout dataset folder")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument(
        "--out",
        help="folder for metrics and plots (default: eval-<split> inside the run directory, "
        "or beside the model file)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="clips per batch (default 64)")
    parser.add_argument(
        "--cache",
        "--cache-dir",
        dest="cache",
        help="cache decoded audio here (reused by later runs)",
    )
    parser.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    parser.set_defaults(func=run)


def default_out_dir(model, split):
    """``<run dir>/eval-<split>``, or ``<folder of the model file>/eval-<split>``."""
    folder = model if os.path.isdir(model) else os.path.dirname(os.path.abspath(model))
    return os.path.join(folder, f"eval-{split}")


def report(result, out_dir, plots=True, command="evaluate"):
    """Print a result and save it; shared by the evaluate, ensemble and demo commands."""
    from keras_asc.training import plots as plots_module

    print(result.format())
    written = result.save(out_dir, plots=plots)
    if plots and not plots_module.matplotlib_available():
        print(
            f"keras-asc {command}: matplotlib is not installed, PNG plots skipped "
            "(pip install 'keras-asc[plot]')"
        )
    for path in written:
        print(f"wrote {path}")
    return written


def run(args):
    from keras_asc.training.evaluation import evaluate

    try:
        result = evaluate(
            args.model,
            args.data,
            split=args.split,
            batch_size=args.batch_size,
            cache_dir=args.cache,
        )
    except (FileNotFoundError, ValueError, ImportError) as error:
        print(f"keras-asc evaluate: error: {error}", file=sys.stderr)
        return 2
    report(result, args.out or default_out_dir(args.model, args.split), plots=not args.no_plots)
    return 0
