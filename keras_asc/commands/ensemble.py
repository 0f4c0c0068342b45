"""``keras-asc ensemble RUN_A RUN_B ... --out DIR``: a weighted-logit ensemble of trained runs."""

import sys


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "ensemble",
        help="combine trained runs into a weighted-logit ensemble",
        description="Combine two or more trained runs (run directories or .keras files) into "
        "one model whose logits are the weighted sum of the members' logits. The combined "
        "parameters and MACs must fit the DCASE budget. Writes model.keras and "
        "run_config.json to --out; with --data, also evaluates the ensemble.",
    )
    parser.add_argument("members", nargs="+", metavar="RUN", help="run directories or .keras files")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument(
        "--weights",
        help="comma-separated logit weights in the order of the runs, e.g. 0.6,0.4",
    )
    weights.add_argument(
        "--preset",
        help="v1 (CP-ResNet59 0.5 / MofleNet57 0.5), v2 (0.6 / 0.4) or a registered ensemble "
        "name; members are matched by the model name in their run_config.json",
    )
    parser.add_argument("--out", required=True, help="folder for the ensemble")
    parser.add_argument("--name", help="model name (default: the preset's name, else 'ensemble')")
    parser.add_argument("--data", help="also evaluate the ensemble on this TAU22-layout dataset")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="with --data, also evaluate every member and print a comparison",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="clips per batch (default 64)")
    parser.add_argument(
        "--cache",
        "--cache-dir",
        dest="cache",
        help="cache decoded audio here (reused by later runs)",
    )
    parser.set_defaults(func=run)


def _parse_weights(text):
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"--weights must be comma-separated numbers, e.g. 0.6,0.4. Received: {text!r}"
        ) from None


def run(args):
    from keras_asc.files import RunDirError
    from keras_asc.training.ensemble import ensemble_and_report

    try:
        ensemble_and_report(
            args.members,
            weights=_parse_weights(args.weights) if args.weights else None,
            preset=args.preset,
            name=args.name,
            out_dir=args.out,
            data_dir=args.data,
            split=args.split,
            compare=args.compare,
            batch_size=args.batch_size,
            cache_dir=args.cache,
        )
    except (FileNotFoundError, FileExistsError, ValueError, TypeError, RunDirError) as error:
        # BudgetExceededError is a ValueError: its message says by how much.
        print(f"keras-asc ensemble: error: {error}", file=sys.stderr)
        return 2
    return 0
