"""TensorFlow Lite for Microcontrollers tensor arena of int8 files, with and without ``low_arena``.

For every preset (and, for an ensemble, every member and the ensemble file) it exports a
QAT-structured int8 file (untrained weights: the arena depends on the graph, not on the
values) twice, as ``keras-asc quantize`` does and with ``low_arena=True``, runs both in the
TFLite Micro interpreter and prints the arena bytes (activations + persistent), the ratio of
the two, and whether TFLite Micro and LiteRT give the same class on a few noise clips.

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/micro_arena.py moflenet57 cp_resnet59 \\
        moflenet57_cp_resnet59_v2
    KERAS_BACKEND=tensorflow python benchmarks/micro_arena.py --all
"""

import argparse
import os
import sys
import tempfile

import numpy as np


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="preset names")
    parser.add_argument("--all", action="store_true", help="every model and ensemble preset")
    parser.add_argument("--clips", type=int, default=8, help="noise clips for the agreement")
    parser.add_argument("--out", help="folder for the int8 files (default: a temporary folder)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import keras_asc
    from keras_asc.models.presets import ENSEMBLE_PRESETS, MODEL_PRESETS
    from keras_asc.quantization import export_int8, member_models, micro_agreement, quantize_model

    names = list(MODEL_PRESETS) + list(ENSEMBLE_PRESETS) if args.all else args.models
    if not names:
        raise SystemExit("name at least one preset, or --all")
    out = args.out or tempfile.mkdtemp(prefix="micro_arena_")
    clips = np.random.default_rng(0).normal(0, 0.1, (args.clips, 32000)).astype("float32")
    rows = []
    for name in names:
        model = keras_asc.build(name)
        qat = quantize_model(model)
        targets = [qat] + (member_models(qat) if hasattr(model, "members") else [])
        for target in targets:
            arenas = []
            for low in (False, True):
                folder = os.path.join(out, "low_arena" if low else "default")
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
                arenas.append((micro["arena_bytes"], micro["arena_head_bytes"], agreement))
            rows.append((target.name, arenas))
            print(f"{target.name}: done", file=sys.stderr, flush=True)
    print(f"files in {out}; arena bytes (activations + persistent), TFLite Micro vs LiteRT class")
    print(
        f"{'model':<28} {'default':>9} {'low_arena':>10} {'ratio':>6}  {'act. default':>12} "
        f"{'act. low':>9}  same class"
    )
    for name, ((default, head, a), (low, low_head, b)) in rows:
        print(
            f"{name:<28} {default:>9,} {low:>10,} {low / default:>6.2f}  {head:>12,} "
            f"{low_head:>9,}  {100 * a.same_class:.0f} % / {100 * b.same_class:.0f} %"
        )


if __name__ == "__main__":
    main()
