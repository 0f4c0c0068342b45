"""``keras-asc summary MODEL``: per-layer parameters and MACs and the DCASE budget check."""

import os
import sys


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "summary",
        help="per-layer parameters, MACs and the DCASE budget of a model",
        description="Print the per-layer parameters and MACs of a registered model or "
        "ensemble (or of a saved run directory / .keras file) under the DCASE 2024 counting "
        "rules, with the 128 kB / 30 M MAC budget check.",
    )
    parser.add_argument(
        "model", help="registered model or ensemble name, run directory or .keras file"
    )
    parser.add_argument(
        "--bits", type=int, default=8, help="bits per parameter for the memory budget (default 8)"
    )
    parser.set_defaults(func=run)


def run(args):
    import keras_asc
    from keras_asc.training.evaluation import load_keras_model, resolve_model_path

    try:
        if os.path.exists(args.model):
            model_path, _ = resolve_model_path(args.model)
            if not model_path.endswith(".keras"):
                raise ValueError(
                    f"summary reads Keras models; {model_path!r} is not a .keras file."
                )
            model = load_keras_model(model_path)
        else:
            model = keras_asc.build(args.model)
    except (FileNotFoundError, ValueError) as error:
        print(f"keras-asc summary: error: {error}", file=sys.stderr)
        return 2
    print(keras_asc.complexity.summary(model, bits=args.bits))
    return 0
