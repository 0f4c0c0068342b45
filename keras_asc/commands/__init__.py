"""Subcommands of the ``keras-asc`` command, one module each (see ``keras_asc/cli.py``)."""


def add_on_error_argument(parser, skipped="leave them out and report how many and which"):
    """The ``--on-error raise|skip`` option that ``train``, ``evaluate`` and ``prepare`` share."""
    parser.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help=f"missing or unreadable audio files: stop with an error naming the file (raise, "
        f"default) or {skipped} (skip)",
    )


def check_positive(flag, value):
    """``value`` (an integer option, or ``None`` when not given), refused below 1 with a
    message naming ``flag``."""
    if value is not None and value < 1:
        raise ValueError(f"{flag} must be a positive integer. Received: {value}")
    return value
