"""The ``keras-asc`` command. Each subcommand lives in ``keras_asc/commands/<name>.py`` and
exposes ``add_parser(subparsers)`` (which sets ``func`` on its parser) and nothing else global.

A command parses its arguments and calls one public library function. It imports the library
inside its ``run`` (only the light ``keras_asc`` root, registry and plugins at module top), so
that ``keras-asc --help`` and argument errors load neither Keras nor TensorFlow."""

import argparse
import importlib
import sys

from keras_asc import __version__

COMMANDS = (
    "list",
    "summary",
    "download",
    "prepare",
    "synth",
    "train",
    "import-torch",
    "evaluate",
    "ensemble",
    "predict",
    "quantize",
    "demo",
)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-asc",
        description="Low-complexity acoustic scene classification (DCASE Task 1) with Keras 3.",
    )
    parser.add_argument("--version", action="version", version=f"keras-asc {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"keras_asc.commands.{name.replace('-', '_')}").add_parser(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("keras-asc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
