"""``keras-asc demo``: the whole workflow on built-in synthetic data, in a few minutes on a CPU.

Generates a small synthetic dataset in the TAU22 layout, trains MofleNet57 and CP-ResNet59
briefly with their recipes, combines them into the v2 ensemble (CP-ResNet59 0.6, MofleNet57
0.4), evaluates all three on the test split (every device, including the unseen s4-s6) and
prints the tables; metrics and PNG plots are written beside each run. The workflow is
``keras_asc.training.demo.run_demo``; this module parses and checks the arguments.
"""

import sys

# The defaults of keras_asc.training.demo.run_demo, repeated here so that `keras-asc --help`
# shows them without importing the training layer (Keras, TensorFlow).
DEFAULT_EPOCHS = 6
DEFAULT_CLIPS_PER_CLASS = 60
DEFAULT_TEST_CLIPS_PER_CLASS = 27
DEFAULT_BATCH_SIZE = 16
MOFLENET_EPOCH_FACTOR = 3
MOFLENET_LEARNING_RATE_FACTOR = 2


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="train, ensemble and evaluate on built-in synthetic data (a few minutes on CPU)",
        description="Run the whole keras-asc workflow on built-in data: generate a small "
        "synthetic dataset in the TAU22 layout, train MofleNet57 and CP-ResNet59 briefly (MofleNet57, "
        "which learns more slowly on small sets, for three times the epochs at twice its learning rate), "
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
        help=f"CP-ResNet59's epochs; MofleNet57, which learns more slowly on small sets, trains "
        f"{MOFLENET_EPOCH_FACTOR} times as many at {MOFLENET_LEARNING_RATE_FACTOR} times its "
        f"recipe's peak learning rate (default {DEFAULT_EPOCHS})",
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

    from keras_asc.training.demo import run_demo

    run_demo(
        args.out,
        epochs=args.epochs,
        clips_per_class=args.clips_per_class,
        test_clips_per_class=args.test_clips_per_class,
        batch_size=args.batch_size,
        seed=args.seed,
        overwrite=args.overwrite,
        verbose=args.verbose,
    )
    return 0
