"""TensorFlow Lite for Microcontrollers tensor arena of int8 files: fresh presets and the user's path.

The arena depends on the graph, and a fresh preset's graph is not a trained model's: GRN's
gamma and beta start at zero, and the converter then folds most of GRN's float arithmetic away
(MofleNet57: 16 ADD ops instead of 22, 17 fewer tensors, a smaller arena). So for every preset
(and, for an ensemble, every member and the ensemble file) it exports a QAT-structured int8
file three ways:

- ``fresh``: the preset as built (GRN scalars zero), as this benchmark measured before;
- ``trained``: the same with GRN's scalars set non-zero as training leaves them;

and, for each run directory given with ``--run`` (``keras-asc train`` output; a short training
on a few clips is enough, the arena depends on the graph), the user's path:

- ``run``: the run's ``model.keras`` loaded and quantised as ``keras-asc quantize RUN`` does
  (the same QAT structure; fine-tuning changes values, not the graph);
- ``run int8/``: the arena recorded in the ``.json`` files that ``keras-asc quantize RUN``
  wrote into ``RUN/int8`` (when it has been run).

Each is exported with the default (``low_arena=True``: GRN in blocks along the mel axis, int8
pooling) and with ``low_arena=False`` (GRN whole, float pooling for LiteRT's XNNPACK), run in
the TFLite Micro interpreter, and the table gives the arena bytes (activations + persistent),
their ratio, and whether TFLite Micro and LiteRT give the same class on a few noise clips.

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/micro_arena.py moflenet57 cp_resnet59 \\
        moflenet57_cp_resnet59_v2
    KERAS_BACKEND=tensorflow python benchmarks/micro_arena.py --run runs/v2-tiny
    KERAS_BACKEND=tensorflow python benchmarks/micro_arena.py --all
"""

import argparse
import glob
import json
import os
import sys
import tempfile

import numpy as np
from int8_latency import trained_like_grn  # benchmarks/ is on the path of its scripts


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="preset names")
    parser.add_argument("--all", action="store_true", help="every model and ensemble preset")
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        help="a run directory from keras-asc train (repeatable): the user's path",
    )
    parser.add_argument("--clips", type=int, default=8, help="noise clips for the agreement")
    parser.add_argument("--out", help="folder for the int8 files (default: a temporary folder)")
    return parser.parse_args(argv)


def measure(model, label, out, clips):
    """Rows ``(label, target name, [(arena, activations, same class, ADD ops)] x 2)``."""
    from keras_asc.quantization import (
        export_int8,
        member_models,
        micro_agreement,
        quantize_model,
        read_graph,
    )

    qat = quantize_model(model)
    targets = [qat] + (member_models(qat) if hasattr(model, "members") else [])
    rows = []
    for target in targets:
        arenas = []
        for low in (True, False):
            folder = os.path.join(out, label.replace(" ", "_"), "default" if low else "litert")
            result = export_int8(
                target,
                None,
                os.path.join(folder, f"{target.name}.tflite"),
                qat=True,
                max_param_bytes=None,
                low_arena=low,
            )
            micro = result.tflite_micro
            agreement = micro_agreement(result.path, clips)
            adds = read_graph(result.path).op_names.count("ADD")
            arenas.append((micro["arena_bytes"], micro["arena_head_bytes"], agreement.same_class, adds))
        rows.append((label, target.name, arenas))
        print(f"{label} {target.name}: done", file=sys.stderr, flush=True)
    return rows


def recorded_rows(run):
    """The arenas ``keras-asc quantize RUN`` recorded in ``RUN/int8/*.json``."""
    rows = []
    for path in sorted(glob.glob(os.path.join(run, "int8", "*.json"))):
        with open(path, encoding="utf-8") as handle:
            description = json.load(handle)
        micro = description.get("tflite_micro") or {}
        if micro.get("arena_bytes"):
            low = "default" if description.get("low_arena") else "--no-low-arena"
            rows.append((description["model"], low, micro["arena_bytes"]))
    return rows


def main(argv=None):
    args = parse_args(argv)
    import keras_asc
    from keras_asc.models.presets import ENSEMBLE_PRESETS, MODEL_PRESETS
    from keras_asc.training.quantize import load_float_model, resolve_run

    names = list(MODEL_PRESETS) + list(ENSEMBLE_PRESETS) if args.all else args.models
    if not names and not args.run:
        raise SystemExit("name at least one preset or --run RUN, or --all")
    out = args.out or tempfile.mkdtemp(prefix="micro_arena_")
    clips = np.random.default_rng(0).normal(0, 0.1, (args.clips, 32000)).astype("float32")
    rows = []
    for name in names:
        rows += measure(keras_asc.build(name), "fresh", out, clips)
        trained = keras_asc.build(name)
        trained_like_grn(trained)
        rows += measure(trained, "trained", out, clips)
    recorded = {}
    for run in args.run:
        model_path, _ = resolve_run(run)
        rows += measure(load_float_model(model_path), "run", out, clips)
        recorded[run] = recorded_rows(run)
    print(f"files in {out}; arena bytes (activations + persistent), TFLite Micro vs LiteRT class")
    print(
        f"{'graph':<8} {'model':<28} {'default':>9} {'no-low':>9} {'ratio':>6}  "
        f"{'act. default':>12} {'act. no-low':>11}  {'ADD ops':>7}  same class"
    )
    for label, name, ((low, low_head, a, adds), (high, head, b, high_adds)) in rows:
        print(
            f"{label:<8} {name:<28} {low:>9,} {high:>9,} {low / high:>6.2f}  {low_head:>12,} "
            f"{head:>11,}  {adds:>3}/{high_adds:<3}  {100 * a:.0f} % / {100 * b:.0f} %"
        )
    for run, entries in recorded.items():
        for model, low, arena in entries:
            print(f"{run}/int8 (keras-asc quantize, {low}): {model} {arena:,} bytes")


if __name__ == "__main__":
    main()
