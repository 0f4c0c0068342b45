"""``keras-asc quantize RUN_DIR --data DIR``: QAT fine-tuning and int8 TFLite export."""

from keras_asc.commands import check_positive


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "quantize",
        help="quantisation-aware fine-tuning and int8 TFLite export of a trained run",
        description="Fine-tune a trained run with quantisation-aware training (TF-MOT; the "
        "report's recipe, keras_asc.training.QAT_RECIPE: peak learning rate decaying linearly "
        "to 10 %% of it) and export an int8 TFLite model with its front-end constants; with --ptq, "
        "calibrate the float model instead (post-training quantisation, no fine-tuning). An "
        "ensemble is exported as one file and one file per member. The export fails when "
        "the int8 parameters exceed 128,000 bytes. QAT needs KERAS_BACKEND=tensorflow.",
    )
    parser.add_argument(
        "run", metavar="RUN_DIR", help="run directory (with model.keras) or a .keras file"
    )
    parser.add_argument("--data", required=True, help="TAU22-layout dataset folder")
    parser.add_argument(
        "--split",
        help="training split for QAT or calibration (default: the split the run was trained "
        "on; another one is refused); needed only for a .keras file outside a run folder",
    )
    parser.add_argument("--epochs", type=int, help="QAT epochs (default: the recipe's)")
    parser.add_argument(
        "--learning-rate", type=float, help="peak QAT learning rate (default: the recipe's)"
    )
    parser.add_argument("--batch-size", type=int, help="clips per batch (default: the recipe's)")
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
    parser.add_argument(
        "--frontend-in-file",
        action="store_true",
        help="put the float32 log-mel front-end into the .tflite file: it then takes the "
        "waveform (batch, samples) and gives logits, so an app needs only that file",
    )
    parser.add_argument(
        "--int8-io",
        action="store_true",
        help="int8 input spectrograms and int8 output logits (scales and zero points in "
        "NAME.json) instead of float32",
    )
    parser.add_argument(
        "--low-arena",
        action="store_true",
        help="a smaller TFLite Micro tensor arena, same logits: GRN computed in blocks along "
        "time, each quantised before they are joined",
    )
    parser.add_argument(
        "--no-micro",
        dest="micro",
        action="store_false",
        default=None,
        help="skip the TFLite Micro run that records each file's tensor arena in NAME.json "
        "(skipped anyway with --frontend-in-file: TFLite Micro has no RFFT2D kernel)",
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
        default=None,
        help="Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch (default: "
        "a bar on a terminal, one line per epoch into a file or a pipe)",
    )
    parser.set_defaults(func=run)


def _check_args(args):
    """The command's own checks, so that its messages name its flags."""
    import keras

    for name in ("epochs", "batch_size", "steps_per_epoch", "calibration_clips"):
        check_positive(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.ptq:
        given = [
            flag
            for flag, value in (
                ("--epochs", args.epochs),
                ("--learning-rate", args.learning_rate),
                ("--steps-per-epoch", args.steps_per_epoch),
            )
            if value is not None
        ]
        if given:
            raise ValueError(
                f"--ptq calibrates the float model without fine-tuning, so {', '.join(given)} "
                "would have no effect; leave it out, or drop --ptq for QAT fine-tuning."
            )
    if args.int8_io and args.frontend_in_file:
        raise ValueError(
            "--int8-io and --frontend-in-file cannot be combined: a file with the front-end "
            "inside takes float32 waveforms."
        )
    if not args.ptq and keras.backend.backend() != "tensorflow":
        raise ValueError(
            "quantisation-aware training needs KERAS_BACKEND=tensorflow (received "
            f"{keras.backend.backend()!r}); --ptq works on any backend."
        )


def run(args):
    from keras_asc.training.quantize import evaluate_exports, quantize_run

    _check_args(args)
    # Flags left out keep the recipe's value (keras_asc.training.QAT_RECIPE).
    recipe = {
        name: value
        for name, value in (
            ("epochs", args.epochs),
            ("learning_rate", args.learning_rate),
            ("batch_size", args.batch_size),
        )
        if value is not None
    }
    # An int8 export over 128,000 bytes raises BudgetExceededError (a ValueError, exit 2).
    result = quantize_run(
        args.run,
        args.data,
        split=args.split,
        **recipe,
        steps_per_epoch=args.steps_per_epoch,
        ptq=args.ptq,
        calibration_clips=args.calibration_clips,
        int8_io=args.int8_io,
        low_arena=args.low_arena,
        micro=args.micro,
        out_dir=args.out,
        seed=args.seed,
        cache_dir=args.cache,
        verbose=args.verbose,
        frontend_in_file=args.frontend_in_file,
    )
    print(result.summary())
    if args.evaluate:
        # Evaluated after the summary is printed, so the files are listed before the wait.
        result = evaluate_exports(result, args.data, args.evaluate, cache_dir=args.cache)
        print(result.evaluation_report())
    return 0
