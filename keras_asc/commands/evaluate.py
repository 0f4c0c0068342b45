"""``keras-asc evaluate MODEL --data DIR``: DCASE metrics, a text table, metrics.json and PNGs."""

from keras_asc.commands import add_on_error_argument


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
    add_on_error_argument(parser)
    parser.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    parser.set_defaults(func=run)


def run(args):
    from keras_asc.training.evaluation import evaluate_and_report

    evaluate_and_report(
        args.model,
        args.data,
        split=args.split,
        out_dir=args.out,
        batch_size=args.batch_size,
        cache_dir=args.cache,
        plots=not args.no_plots,
        on_error=args.on_error,
    )
    return 0
