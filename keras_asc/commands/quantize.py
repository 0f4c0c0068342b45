"""``keras-asc quantize RUN_DIR --data DIR``: QAT fine-tuning and int8 TFLite export."""

import os
import sys


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "quantize",
        help="quantisation-aware fine-tuning and int8 TFLite export of a trained run",
        description="Fine-tune a trained run with quantisation-aware training (TF-MOT; the "
        "report's recipe: 24 epochs, peak learning rate 5e-5 decaying linearly to 10 %% by "
        "epoch 16) and export an int8 TFLite model with its front-end constants; with --ptq, "
        "calibrate the float model instead (post-training quantisation, no fine-tuning). An "
        "ensemble is exported as one file and one file per member. The export fails when "
        "the int8 parameters exceed 128,000 bytes. QAT needs KERAS_BACKEND=tensorflow.",
    )
    parser.add_argument(
        "run", metavar="RUN_DIR", help="run directory (with model.keras) or a .keras file"
    )
    parser.add_argument("--data", required=True, help="TAU22-layout dataset folder")
    parser.add_argument(
        "--split", default="25", help="training split for QAT or calibration (default 25)"
    )
    parser.add_argument("--epochs", type=int, default=24, help="QAT epochs (default 24)")
    parser.add_argument(
        "--learning-rate", type=float, default=5e-5, help="peak QAT learning rate (default 5e-5)"
    )
    parser.add_argument("--batch-size", type=int, default=256, help="clips per batch (default 256)")
    parser.add_argument(
        "--steps-per-epoch", type=int, help="QAT batches per epoch (default: the whole split)"
    )
    parser.add_argument(
        "--ptq", action="store_true", help="post-training quantisation only (calibration, no QAT)"
    )
    parser.add_argument(
        "--calibration-clips",
        type=int,
        default=256,
        help="clips for post-training calibration (default 256)",
    )
    parser.add_argument("--out", help="output folder (default: int8 inside the run directory)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data order (default 0)")
    parser.add_argument(
        "--cache",
        "--cache-dir",
        dest="cache",
        help="cache decoded audio here (reused by later runs)",
    )
    parser.add_argument(
        "--evaluate",
        metavar="SPLIT",
        help="afterwards, evaluate the float model and every int8 file on this split (e.g. test)",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="Keras progress output (default 1)",
    )
    parser.set_defaults(func=run)


def resolve_run(path):
    """``(model_path, default_out_dir)`` for a run directory or a ``.keras`` file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        model_path = os.path.join(path, "model.keras")
        if not os.path.isfile(model_path):
            raise FileNotFoundError(
                f"{path!r} has no model.keras: expected a run directory written by "
                f"`keras-asc train` or `keras-asc ensemble`, or a .keras file."
            )
        return model_path, os.path.join(path, "int8")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No run directory or .keras file at {path!r}.")
    if not path.endswith(".keras"):
        raise ValueError(f"Expected a run directory or a .keras file. Received: {path!r}")
    return path, os.path.join(os.path.dirname(os.path.abspath(path)), "int8")


def load_float_model(model_path):
    """Load a trained ``.keras`` model for quantisation (without its training state)."""
    import keras_asc

    # Classes that saved runs reference but keras_asc.load_model does not import (yet): the
    # spectrogram augmentations and, inside ensemble members, the training schedule.
    import keras_asc.augment  # noqa: F401
    import keras_asc.training.schedule  # noqa: F401

    # The optimizer state is not needed: QAT compiles its own.
    return keras_asc.load_model(model_path, compile=False)


def _check_positive(name, value):
    if value is not None and value < 1:
        raise ValueError(f"{name} must be a positive integer. Received: {value}")


def quantize_run(args):
    """Do the work of the command.

    Returns:
        ``(model, exports)``: the float Keras model and a list of (tf_keras model exported,
        ``ExportResult``): the model or ensemble first, then each ensemble member.
    """
    import itertools

    import keras

    from keras_asc.data.pipeline import make_dataset
    from keras_asc.data.tau22 import normalize_split
    from keras_asc.quantization import export_int8, member_models, quantize_aware_train
    from keras_asc.quantization.twin import to_tf_keras

    for name in ("epochs", "batch_size", "steps_per_epoch", "calibration_clips"):
        _check_positive(f"--{name.replace('_', '-')}", getattr(args, name))
    if not args.ptq and keras.backend.backend() != "tensorflow":
        raise ValueError(
            "quantisation-aware training needs KERAS_BACKEND=tensorflow (received "
            f"{keras.backend.backend()!r}); --ptq works on any backend."
        )
    model_path, default_out = resolve_run(args.run)
    out_dir = args.out or default_out
    model = load_float_model(model_path)
    split = normalize_split(args.split)

    if args.ptq:
        calibration = make_dataset(
            args.data,
            split,
            batch_size=args.batch_size,
            training=False,
            shuffle=True,
            seed=args.seed,
            cache_dir=args.cache,
        )
        batches = -(-args.calibration_clips // args.batch_size)
        calibration = [
            waveforms
            for waveforms, *_ in itertools.islice(calibration.as_numpy_iterator(), batches)
        ]
        quantized = to_tf_keras(model)
    else:
        train_dataset = make_dataset(
            args.data,
            split,
            batch_size=args.batch_size,
            training=True,
            seed=args.seed,
            cache_dir=args.cache,
        )
        quantized = quantize_aware_train(
            model,
            train_dataset,
            epochs=args.epochs,
            peak_learning_rate=args.learning_rate,
            steps_per_epoch=args.steps_per_epoch,
            verbose=args.verbose,
        )
        calibration = None
    members = member_models(quantized)
    targets = [quantized] + (members if len(members) > 1 else [])
    exports = []
    for target in targets:
        path = os.path.join(out_dir, f"{target.name}.tflite")
        result = export_int8(
            target,
            calibration,
            path,
            qat=not args.ptq,
            max_calibration_samples=args.calibration_clips,
        )
        exports.append((target, result))
    return model, exports


def _evaluate(args, model, exports):
    from keras_asc.data.pipeline import make_dataset
    from keras_asc.data.tau22 import normalize_split
    from keras_asc.quantization import TFLiteClassifier
    from keras_asc.quantization.interpreter import prediction_agreement
    from keras_asc.training.evaluation import evaluate, format_comparison

    split = normalize_split(args.evaluate)
    floats = [model, *getattr(model, "members", [])]
    classifiers = [TFLiteClassifier(result.path) for _, result in exports]
    results = [
        evaluate(predictor, args.data, split, cache_dir=args.cache, verbose=False)
        for predictor in floats + classifiers
    ]
    print(format_comparison(results))
    dataset = make_dataset(args.data, split, batch_size=64, training=False, cache_dir=args.cache)
    reference = "float" if args.ptq else "QAT"
    for (target, _), classifier in zip(exports, classifiers, strict=True):
        agreement, clips = prediction_agreement(classifier, target, dataset.as_numpy_iterator())
        print(
            f"{classifier.name}: same class as the {reference} model on {100 * agreement:.2f} % "
            f"of {clips} clips"
        )


def run(args):
    from keras_asc.complexity import BudgetExceededError

    try:
        model, exports = quantize_run(args)
    except BudgetExceededError as error:
        print(f"keras-asc quantize: over budget: {error}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as error:
        print(f"keras-asc quantize: error: {error}", file=sys.stderr)
        return 2
    print(f"{'file':<40} {'parameter bytes':>16} {'file bytes':>11}  quantisation")
    for _, result in exports:
        print(
            f"{os.path.basename(result.path):<40} {result.parameters.total:>16,} "
            f"{result.file_bytes:>11,}  {result.quantization}"
        )
    for _, result in exports:
        print(
            f"wrote {result.path} (+ {os.path.basename(result.json_path)}, "
            f"{os.path.basename(result.frontend_path)})"
        )
    if args.evaluate:
        _evaluate(args, model, exports)
    return 0
