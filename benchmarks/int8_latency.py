"""Latency of int8 TFLite models next to their float Keras models, on one CPU thread.

For every model (and, for an ensemble, every member and the ensemble file) it times, on the
same 1-s clips:

- the float Keras model on waveforms (front-end included), batch 1 and batch 32;
- the int8 TFLite network alone (spectrogram in, ``num_threads=1``), batch 1 and batch 32;
- the int8 network plus the NumPy front-end (waveform in, what ``TFLiteClassifier`` does),
  batch 1.

and prints milliseconds per clip, clips per second and the speed-up over the float model at
batch 1. Models are preset names (built untrained; a QAT-structured int8 file is exported for
them, which times the same as a trained one), run directories (their ``model.keras`` and, when
present, the files in ``int8/`` written by ``keras-asc quantize``) or ``.keras`` files.

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/int8_latency.py moflenet57 cp_resnet59 \\
        moflenet57_cp_resnet59_v2
    KERAS_BACKEND=tensorflow python benchmarks/int8_latency.py runs/moflenet57 --seconds 3

The float Keras model also runs on one thread unless ``--float-threads 0`` (TensorFlow's
default) is given; the thread settings are printed with the table.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="preset names, run directories or .keras files")
    parser.add_argument(
        "--seconds",
        type=float,
        default=2.0,
        help="minimum timed seconds per measurement (default 2)",
    )
    parser.add_argument(
        "--float-threads",
        type=int,
        default=1,
        help="TensorFlow threads for the float Keras model (default 1; 0 = TensorFlow default)",
    )
    parser.add_argument(
        "--out", help="folder for exported int8 files (default: a temporary folder)"
    )
    return parser.parse_args(argv)


def time_call(function, seconds, warmup=2):
    """Median seconds per call of ``function()`` over at least ``seconds`` (and 5 calls)."""
    for _ in range(warmup):
        function()
    durations = []
    start = time.perf_counter()
    while len(durations) < 5 or time.perf_counter() - start < seconds:
        begin = time.perf_counter()
        function()
        durations.append(time.perf_counter() - begin)
    return float(np.median(durations))


def load_float_model(source):
    """``(Keras model, int8 folder or None)`` for a preset name, run directory or .keras file."""
    import keras_asc
    from keras_asc.training.quantize import load_float_model as load

    if os.path.isdir(source):
        return load(os.path.join(source, "model.keras")), os.path.join(source, "int8")
    if source.endswith(".keras"):
        folder = os.path.dirname(os.path.abspath(source))
        return load(source), os.path.join(folder, "int8")
    return keras_asc.build(source), None


def int8_files(model, int8_dir, out_dir):
    """``{name: .tflite path}`` for the model and (ensembles) its members, exporting if needed."""
    from keras_asc.quantization import export_int8, member_models, quantize_model

    qat = None
    names = [model.name] + [m.name for m in getattr(model, "members", [])]
    paths = {}
    for name in names:
        existing = os.path.join(int8_dir, f"{name}.tflite") if int8_dir else None
        if existing and os.path.isfile(existing):
            paths[name] = existing
            continue
        if qat is None:
            qat = quantize_model(model)
            print(
                f"{model.name}: exporting QAT-structured int8 files to {out_dir}", file=sys.stderr
            )
        by_name = {m.name: m for m in [qat, *member_models(qat)]}
        paths[name] = export_int8(
            by_name[name], None, os.path.join(out_dir, f"{name}.tflite"), qat=True
        ).path
    return paths


def benchmark(model, paths, clips, seconds):
    """Rows (model, engine, batch, seconds per clip) for one Keras model and its int8 files."""
    from keras_asc.quantization import TFLiteClassifier

    rows = []
    keras_models = {model.name: model, **{m.name: m for m in getattr(model, "members", [])}}
    for name, path in paths.items():
        keras_model = keras_models[name]
        for batch in (1, 32):
            x = clips[:batch]
            seconds_per_call = time_call(lambda x=x, m=keras_model: m.predict_on_batch(x), seconds)
            rows.append((name, "keras float32, waveform", batch, seconds_per_call / batch))
        classifier = TFLiteClassifier(path, num_threads=1, batch_size=32)
        spectrograms = classifier.spectrograms(clips[:32])
        for batch in (1, 32):
            inputs = [s[:batch] for s in spectrograms]
            seconds_per_call = time_call(
                lambda inputs=inputs, c=classifier: c.predict(inputs), seconds
            )
            rows.append((name, "tflite int8, spectrogram", batch, seconds_per_call / batch))
        seconds_per_call = time_call(lambda c=classifier: c.predict(clips[:1]), seconds)
        rows.append((name, "tflite int8 + numpy front-end", 1, seconds_per_call))
    return rows


def format_table(rows):
    reference = {(r[0]): r[3] for r in rows if r[1].startswith("keras") and r[2] == 1}
    header = ("model", "engine", "batch", "ms/clip", "clips/s", "speed-up vs float b1")
    lines = [header] + [
        (name, engine, str(batch), f"{1000 * t:.2f}", f"{1 / t:.1f}", f"{reference[name] / t:.2f}x")
        for name, engine, batch, t in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = []
    for index, line in enumerate(lines):
        text.append(
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
        if index == 0:
            text.append("-" * len(text[0]))
    return "\n".join(text)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    if args.float_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.float_threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.float_threads)
    import keras

    if keras.backend.backend() != "tensorflow":
        raise SystemExit(
            f"int8_latency.py needs KERAS_BACKEND=tensorflow (got {keras.backend.backend()!r})."
        )
    clips = np.random.default_rng(0).normal(0.0, 0.1, (32, 32000)).astype("float32")
    out_dir = args.out or tempfile.mkdtemp(prefix="keras-asc-int8-")
    rows = []
    for source in args.models:
        model, int8_dir = load_float_model(source)
        rows += benchmark(model, int8_files(model, int8_dir, out_dir), clips, args.seconds)
    threads = args.float_threads or "TensorFlow default"
    print(
        f"TFLite interpreter: 1 thread; float Keras ({keras.backend.backend()}): {threads} thread(s); "
        f"CPU: {os.cpu_count()} logical cores"
    )
    print(format_table(rows))


if __name__ == "__main__":
    main()
