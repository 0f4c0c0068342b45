"""``keras-asc train --model NAME --split N --data DIR``: train with the model's recipe.

``--set KEY=VALUE ...`` changes recipe settings (``keras-asc train --set
device_impulse_response.p=0.5 freq_mixstyle.alpha=0.4``); ``--teachers RUN_DIR ...`` distils
from trained runs.
"""

import ast
import json

from keras_asc import registry
from keras_asc.commands import add_on_error_argument


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "train",
        help="train a model with its recipe on a TAU22 training split",
        description="Train a registered model with its recipe (optimiser, batch size, epochs, "
        "four-phase learning-rate schedule, augmentations) on a DCASE 2024 training split. "
        "Writes a run directory with run_config.json, log.csv, TensorBoard logs, checkpoints "
        "and the final model.keras; running the same command again continues an interrupted "
        "run.",
    )
    parser.add_argument(
        "--model", default="moflenet57", help="registered model (default moflenet57)"
    )
    parser.add_argument(
        "--split", default="25", help="training split: 5, 10, 25, 50 or 100 (default 25)"
    )
    parser.add_argument("--data", required=True, help="TAU22-layout dataset folder")
    parser.add_argument(
        "--epochs", type=int, help="override the recipe's epochs (phases are scaled)"
    )
    parser.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    parser.add_argument(
        "--weight-decay",
        type=float,
        help="override the recipe's weight decay (L2 in the gradient as torch.optim.Adam for "
        "the report's models: 1e-4 MofleNet, 1e-3 CP-ResNet; decoupled AdamW for the DCASE "
        "2024 baseline: 1e-4); 0 turns it off",
    )
    parser.add_argument(
        "--out", help="run directory (default runs/<model>-split<split>-seed<seed>)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--augment",
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME",
        help="extra registered augmentations, applied after the recipe's",
    )
    parser.add_argument(
        "--dirs", help="folder of impulse-response WAVs for DIR (without it DIR is skipped)"
    )
    parser.add_argument(
        "--cache",
        "--cache-dir",
        dest="cache",
        help="cache decoded audio here (reused by later runs)",
    )
    parser.add_argument(
        "--distribution",
        choices=("mirrored", "data_parallel"),
        help="multi-device training: mirrored (TensorFlow) or data_parallel (JAX)",
    )
    parser.add_argument(
        "--teachers",
        nargs="+",
        metavar="RUN_DIR",
        help="knowledge distillation from these trained runs or ensemble folders (trained on "
        "the same split): their mean logits are the soft targets, with the recipe's "
        "kd_temperature (2) and kd_lambda (0.02); continuing a run without --teachers uses "
        "the ones it recorded",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="change a recipe setting: a field (batch_size, kd_lambda, ...) or a dotted key into "
        "the schedule, optimiser, front-end or an augmentation (schedule.max_learning_rate, "
        "freq_mixstyle.alpha, device_impulse_response.p, ...); VALUE is read as JSON or a "
        "Python literal, else taken as a string. A wrong key lists the valid ones",
    )
    add_on_error_argument(parser)
    parser.add_argument("--steps-per-epoch", type=int, help="optimiser steps per epoch")
    parser.add_argument("--validation-split", help="split evaluated after every epoch (e.g. test)")
    parser.add_argument(
        "--no-jit",
        action="store_true",
        help="compile the training step without XLA / jax.jit (faster start on a CPU with "
        "TensorFlow; slower steps on JAX)",
    )
    parser.add_argument(
        "--precision",
        choices=("float32", "mixed"),
        default="float32",
        help="mixed: Keras' mixed-precision policy (float16 on a GPU, bfloat16 on a CPU; "
        "front-end and normalisation statistics stay float32); default float32",
    )
    parser.add_argument(
        "--no-resume",
        action="store_true",
        help="refuse to continue a run already in the run directory",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in --out even if it holds a run or other files: only what a run "
        "writes there is removed first; other files are kept",
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


def parse_overrides(items):
    """``["key=value", ...]`` from ``--set`` as ``{key: value}``; values are read as JSON, then
    as a Python literal, else kept as the string.

    Example:
        >>> parse_overrides(["freq_mixstyle.alpha=0.4", "frontend.max_frequency_jitter=null"])
        {'freq_mixstyle.alpha': 0.4, 'frontend.max_frequency_jitter': None}
    """
    overrides = {}
    for item in items:
        key, equals, text = item.partition("=")
        key = key.strip()
        if not equals or not key:
            raise ValueError(
                f"--set expects KEY=VALUE (e.g. freq_mixstyle.alpha=0.4). Received: {item!r}"
            )
        if key in overrides:
            raise ValueError(f"--set gives {key!r} twice.")
        try:
            value = json.loads(text)
        except ValueError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                value = text
        overrides[key] = value
    return overrides


def run(args):
    from keras_asc.data.tau22 import normalize_split
    from keras_asc.training import get_recipe, train

    # Name errors first, before the pipeline is built; the messages list the known names.
    recipe = get_recipe(args.model)
    for name in args.augment:
        registry.get_augmentation(name)
    overrides = parse_overrides(args.overrides) or None
    if overrides:
        recipe.with_settings(overrides)  # a wrong key or type is reported before any work
    result = train(
        args.model,
        data_dir=args.data,
        split=normalize_split(args.split),
        epochs=args.epochs,
        batch_size=args.batch_size,
        weight_decay=args.weight_decay,
        out_dir=args.out,
        seed=args.seed,
        augment=args.augment,
        dirs_dir=args.dirs,
        cache_dir=args.cache,
        distribution=args.distribution,
        resume=not args.no_resume,
        overwrite=args.overwrite,
        verbose=args.verbose,
        steps_per_epoch=args.steps_per_epoch,
        validation_split=None
        if args.validation_split is None
        else normalize_split(args.validation_split),
        jit_compile=False if args.no_jit else "auto",
        on_error=args.on_error,
        teachers=args.teachers,
        overrides=overrides,
        precision=args.precision,
    )
    history = result.history
    if history.get("epoch"):
        last = {key: values[-1] for key, values in history.items() if key != "epoch"}
        summary = ", ".join(f"{key} {value:.4g}" for key, value in sorted(last.items()))
        print(f"keras-asc train: {len(history['epoch'])} epochs; last epoch: {summary}")
    skipped = result.skipped_clips
    if skipped is not None and len(skipped):
        print(f"keras-asc train: {skipped.summary()}")
    if result.steps_trained is not None:
        print(f"keras-asc train: {result.steps_trained} optimiser steps in all")
    print(f"keras-asc train: model saved to {result.model_path}")
    return 0
