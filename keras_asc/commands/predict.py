"""``keras-asc predict MODEL FILE...``: the most probable scenes of audio files."""

import json
import math
import sys


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "predict",
        help="classify the scene of audio files",
        description="Classify audio files of any length, sample rate and channel count. "
        "Recordings are resampled to 32 kHz mono and cut into non-overlapping 1-s windows; a "
        "trailing remainder shorter than 1 s is dropped (a recording shorter than 1 s is "
        "repeated to fill one window); the window probabilities are averaged. A file that "
        "cannot be read is reported and the others are still classified; the exit code is 1 "
        "when any file failed. With --json, stdout is always one JSON document: a list with an "
        'entry per file (failed files carry their error), or {"error": ...} when no file '
        "could be classified at all.",
    )
    parser.add_argument("model", help="run directory (with model.keras), .keras or .tflite file")
    parser.add_argument("files", nargs="+", metavar="FILE", help="audio files")
    parser.add_argument("--top", type=int, default=3, help="scenes to show per file (default 3)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=run)


def run(args):
    from keras_asc.training.inference import format_predictions, predict_files

    if args.top < 1:
        print(
            f"keras-asc predict: error: --top must be >= 1. Received: {args.top}", file=sys.stderr
        )
        return 2
    try:
        predictions = predict_files(args.model, args.files, top=args.top)
    except (FileNotFoundError, ValueError, ImportError) as error:
        if args.json:
            # Still valid JSON on stdout: an object whose "error" says why nothing was classified.
            print(json.dumps({"error": " ".join(str(error).split())}, indent=2))
        raise  # cli.main prints the one-line error and sets the exit code
    failed = [p for p in predictions if not p.ok]
    if args.json:
        # allow_nan=False: strict JSON; a non-finite score (never expected) becomes null.
        print(json.dumps(_finite([p.to_dict() for p in predictions]), indent=2, allow_nan=False))
    else:
        # Results on stdout, one error line per failed file on stderr.
        if len(failed) < len(predictions):
            print(format_predictions([p for p in predictions if p.ok]))
    for prediction in failed:
        print(f"keras-asc predict: error: {prediction.error}", file=sys.stderr)
    if failed:
        print(
            f"keras-asc predict: {len(failed)} of {len(predictions)} files failed",
            file=sys.stderr,
        )
        return 1
    return 0


def _finite(value):
    """``value`` with every NaN or infinite float replaced by ``None`` (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
