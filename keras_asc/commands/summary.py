"""``keras-asc summary MODEL``: per-layer parameters and MACs and the DCASE budget check."""


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
    from keras_asc import complexity
    from keras_asc.training.evaluation import load_or_build_model

    model = load_or_build_model(args.model)
    print(complexity.summary(model, bits=args.bits))
    return 0
