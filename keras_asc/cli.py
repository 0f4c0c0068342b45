"""The ``keras-asc`` command. Each subcommand lives in ``keras_asc/commands/<name>.py`` and
exposes ``add_parser(subparsers)`` (which sets ``func`` on its parser) and nothing else global.

A command parses its arguments and calls one public library function. It imports the library
inside its ``run`` (only the light ``keras_asc`` root, registry and plugins at module top), so
that ``keras-asc --help`` and argument errors load neither Keras nor TensorFlow.

Errors: a command lets exceptions rise; ``main`` prints each as one line,
``keras-asc COMMAND: error: MESSAGE``, and returns an exit code (``--debug`` or
``KERAS_ASC_DEBUG=1`` prints the traceback as well). Exit codes:

- 0 success;
- 1 runtime failure: the input was accepted but the work failed (a network or disk error, a
  failed download, a bug), or, for ``predict`` and ``list``, some files or plugins failed;
- 2 usage or bad input: an argument argparse refuses, a bad value, an unknown name, a missing,
  unreadable or malformed input file, a model over the DCASE budget;
- 130 interrupted (Ctrl-C).

Unless ``--debug`` is given, the TensorFlow / XLA start-up messages on stderr (absl's
"All log messages before absl::InitializeLog()", oneDNN, CUDA stub and cuInit lines),
TensorFlow's deprecation and retracing warnings and other libraries' deprecation warnings are
silenced, and keras-asc's own warnings are one line each (see ``keras_asc/logs.py``).
"""

import argparse
import importlib
import os
import sys
import traceback

from keras_asc import __version__, logs
from keras_asc.files import RunDirError
from keras_asc.logs import native_stderr_filtered, quiet_tensorflow_startup  # noqa: F401

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
    "export-c",
    "submit",
    "demo",
    "reproduce",
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Commands that never import TensorFlow; every other one does (through Keras or tf.data).
LIGHT_COMMANDS = frozenset({"download"})

# Errors that say the input given was wrong (exit 2); any other exception is a runtime
# failure (exit 1). MissingFilesError, AudioDecodeError, BudgetExceededError, ... are
# ValueErrors; FileNotFoundError, FileExistsError, NotADirectoryError are OSErrors named here.
# RunDirError: a run folder that cannot be used as it is (locked, holding other files, a corrupt
# backup, a full or read-only disk); its message says what the user has to do.
USAGE_ERRORS = (
    RunDirError,
    ValueError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
)
# Errors whose message is written for the user; others get their class name in front.
PLAIN_ERRORS = USAGE_ERRORS + (OSError, ImportError, RuntimeError)

def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-asc",
        description="Low-complexity acoustic scene classification (DCASE Task 1) with Keras 3.",
        epilog="Exit codes: 0 success, 1 runtime failure, 2 usage or bad input, 130 "
        "interrupted. Errors are one line; --debug (or KERAS_ASC_DEBUG=1) adds the traceback "
        "and TensorFlow's start-up messages.",
    )
    parser.add_argument("--version", action="version", version=f"keras-asc {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False,
        help="print tracebacks and TensorFlow's start-up messages (also KERAS_ASC_DEBUG=1)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"keras_asc.commands.{name.replace('-', '_')}").add_parser(subparsers)
    for subparser in subparsers.choices.values():
        # Also accepted after the command; SUPPRESS keeps the top-level value when absent.
        subparser.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="print tracebacks and TensorFlow's start-up messages",
        )
    return parser


def debug_requested(args=None):
    if args is not None and getattr(args, "debug", False):
        return True
    return logs.debug_requested()


def error_line(command, error):
    """The one line printed for ``error`` raised by ``command``."""
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    if not isinstance(error, PLAIN_ERRORS) or not message:
        message = f"{type(error).__name__}: {message}" if message else type(error).__name__
        message += " (run with --debug for the traceback)"
    return f"keras-asc {command}: error: {message}"


def exit_code(error):
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_USAGE if isinstance(error, USAGE_ERRORS) else EXIT_FAILURE


def check_data_argument(args):
    """``--data`` names the dataset folder: refuse a regular file by saying so (the library
    would only say that the folder does not exist)."""
    data = getattr(args, "data", None)
    if isinstance(data, str) and os.path.exists(data) and not os.path.isdir(data):
        raise NotADirectoryError(
            f"--data {data!r} is a file; expected the dataset folder (with audio/ and the "
            "split files, as `keras-asc download` or `keras-asc synth` write it)."
        )


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE
    debug = debug_requested(args)
    if debug:
        logs.uninstall()  # `import keras_asc` made the process quiet
    else:
        logs.install()  # again, after an earlier --debug call in this process
    try:
        check_data_argument(args)
        if not debug and args.command not in LIGHT_COMMANDS:
            quiet_tensorflow_startup()
        return args.func(args) or EXIT_OK
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"keras-asc {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if debug:
            traceback.print_exc()
        print(error_line(args.command, error), file=sys.stderr)
        return exit_code(error)


if __name__ == "__main__":
    sys.exit(main())
