"""Seconds for ``keras-asc --help`` and each ``keras-asc COMMAND --help`` in a fresh process.

Help must answer in under 1 s: the command modules import neither Keras nor TensorFlow until a
command runs. Each call is timed ``--repeats`` times in a new ``python -m keras_asc`` process;
the best and the median are printed, and the exit status is 1 when a median reaches the limit.

    python benchmarks/cli_startup.py [--repeats 5] [--limit 1.0]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from keras_asc.cli import COMMANDS  # noqa: E402


def time_help(command, repeats):
    argv = [sys.executable, "-m", "keras_asc", *([command] if command else []), "--help"]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=env, cwd=ROOT)
        seconds.append(time.perf_counter() - start)
    return min(seconds), statistics.median(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--limit", type=float, default=1.0, help="seconds (default 1.0)")
    args = parser.parse_args()
    slow = []
    print(f"{'command':<30} {'best s':>7} {'median s':>9}")
    for command in ("", *COMMANDS):
        best, median = time_help(command, args.repeats)
        label = f"keras-asc {command} --help".replace("  ", " ")
        print(f"{label:<30} {best:7.3f} {median:9.3f}")
        if median >= args.limit:
            slow.append(label)
    if slow:
        print(f"over {args.limit} s: {', '.join(slow)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
