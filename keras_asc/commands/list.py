"""``keras-asc list``: registered models, ensembles and augmentations, with their plugin."""

import json

from keras_asc import registry


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "list",
        help="list registered models, ensembles and augmentations",
        description="List the registered models, ensembles and augmentations and the plugin "
        "(distribution) that registered each.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(func=run)


def run(args):
    description = registry.describe()
    problems = description["problems"]
    if args.json:
        print(json.dumps(description, indent=2))
        return 1 if problems else 0
    print(registry.format_description(description))
    for problem in problems:
        print(f"keras-asc list: warning: {problem}")
    # A broken plugin is worth a non-zero exit so scripts notice it.
    return 1 if problems else 0
