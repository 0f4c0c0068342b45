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
"All log messages before absl::InitializeLog()", oneDNN, CUDA stub and cuInit lines) are
silenced.
"""

import argparse
import contextlib
import importlib
import os
import re
import sys
import tempfile
import traceback

from keras_asc import __version__
from keras_asc.files import RunDirError

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

# Native start-up log lines of TensorFlow / XLA / absl, written straight to file descriptor 2.
# TF_CPP_MIN_LOG_LEVEL does not reach the ones logged before absl::InitializeLog() (TF 2.21).
_NATIVE_LOG_LINE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.]+\.(cc|h|cpp):\d+\]"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate)"
)
# Before TensorFlow is imported: its own log level, XLA's (glog) and gRPC's.
QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "TF_CPP_MAX_VLOG_LEVEL": "-1",
    "GLOG_minloglevel": "3",
    "GRPC_VERBOSITY": "ERROR",
    "GRPC_TRACE": "",
}


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
    return os.environ.get("KERAS_ASC_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


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


@contextlib.contextmanager
def native_stderr_filtered():
    """Send file descriptor 2 to a temporary file for the block, then copy to stderr every
    line of it that is not a native TensorFlow / absl log line."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (a detached process): nothing to filter
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line
                for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not _NATIVE_LOG_LINE.match(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def quiet_tensorflow_startup():
    """Import TensorFlow and let it find its devices with its start-up messages filtered out,
    so that later imports are silent. Does nothing when TensorFlow is already loaded."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if "tensorflow" in sys.modules:
        return
    with native_stderr_filtered():
        try:
            import tensorflow as tf
        except ImportError:
            return  # the command's own import reports it
        if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
            # The CUDA platform initialises here (the cuInit error on machines without a GPU).
            tf.config.list_physical_devices()


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE
    debug = debug_requested(args)
    try:
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
