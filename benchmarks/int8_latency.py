"""Latency of int8 TFLite models next to their float Keras models, on one CPU thread.

For every model (and, for an ensemble, every member and the ensemble file) it times, in one run
on the same 1-s clips, at batch 1 and batch 32:

- front-end: the float model's ``LogMelSpectrogram`` layer(s) (Keras) and the NumPy front-end
  that ``TFLiteClassifier`` runs (``frontend_numpy``, whichever implementation the checkout has);
- network: the float Keras backbone(s) on spectrograms and the int8 TFLite network alone
  (spectrogram in, ``num_threads=1``);
- total: waveform in, logits out (``model.predict_on_batch`` and ``TFLiteClassifier.predict``),

and prints milliseconds per clip for float and int8 and the float / int8 ratio of each part,
plus the op count of each int8 file. ``--profile`` adds a per-op profile of each int8 network
at batch 1: every op of the file is cut out into a one-op LiteRT model (same tensors, same
XNNPACK delegate) and timed alone; the table sums the time per op type after subtracting the
cost of an empty invoke. Ops timed alone miss the fusions XNNPACK makes across ops (a PAD into
the convolution after it), so the sum differs from the network time; it shows where time goes.

Models are preset names (built untrained, GRN scalars set non-zero as after training; a
QAT-structured int8 file is exported for them, which times the same as a trained one), run
directories (their ``model.keras`` and, when present, the files in ``int8/`` written by
``keras-asc quantize``) or ``.keras`` files.

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/int8_latency.py moflenet57 cp_resnet59 \\
        moflenet57_cp_resnet59_v2 --profile
    KERAS_BACKEND=tensorflow python benchmarks/int8_latency.py runs/moflenet57 --seconds 3
    # the int8 files as exported before the channel-shuffle fold:
    KERAS_BACKEND=tensorflow python benchmarks/int8_latency.py moflenet57 --no-fold-shuffle

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
    parser.add_argument(
        "--profile", action="store_true", help="also print a per-op profile of each int8 network"
    )
    parser.add_argument(
        "--no-fold-shuffle",
        action="store_true",
        help="export presets with export_int8(..., fold_shuffle=False) (the GATHER ops stay)",
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
    import keras

    keras.utils.set_random_seed(0)  # the same weights in every run and checkout
    return keras_asc.build(source), None


def int8_files(model, int8_dir, out_dir, export_kwargs=None):
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
            by_name[name],
            None,
            os.path.join(out_dir, f"{name}.tflite"),
            qat=True,
            **(export_kwargs or {}),
        ).path
    return paths


def trained_like_grn(model, seed=0):
    """Give an untrained preset's GRN layers non-zero gamma and beta, as training does: with
    the initial zeros the converter folds most of GRN's float arithmetic away, and the int8
    file would time faster than a trained model's."""
    from keras_asc.layers import GlobalResponseNormalization, leaf_layers

    rng = np.random.default_rng(seed)
    for member in getattr(model, "members", [model]):
        for layer in leaf_layers(member):
            if isinstance(layer, GlobalResponseNormalization):
                layer.gamma.assign(np.float32(rng.uniform(0.2, 0.5)))
                layer.beta.assign(np.float32(rng.uniform(-0.1, 0.1)))


def float_parts(keras_model):
    """``(front-end model, network model)`` of a Keras model or ensemble: waveform ->
    spectrogram(s), and spectrogram(s) -> logits of every member."""
    import keras

    members = list(getattr(keras_model, "members", [keras_model]))
    waveform = keras.Input((keras_model.input_shape[-1],))
    frontend = keras.Model(waveform, [m.frontend(waveform) for m in members])
    inputs = [keras.Input(m.backbone.input_shape[1:]) for m in members]
    network = keras.Model(inputs, [m.backbone(x) for m, x in zip(members, inputs, strict=True)])
    return frontend, network


def benchmark(model, paths, clips, seconds):
    """Rows (model, part, batch, float seconds per clip, int8 seconds per clip)."""
    from keras_asc.quantization import TFLiteClassifier

    rows = []
    keras_models = {model.name: model, **{m.name: m for m in getattr(model, "members", [])}}
    for name, path in paths.items():
        keras_model = keras_models[name]
        frontend, network = float_parts(keras_model)
        classifier = TFLiteClassifier(path, num_threads=1, batch_size=32)
        float_spectrograms = frontend.predict_on_batch(clips[:32])
        float_spectrograms = (
            float_spectrograms if isinstance(float_spectrograms, list) else [float_spectrograms]
        )
        int8_spectrograms = classifier.spectrograms(clips[:32])
        for batch in (1, 32):
            x = clips[:batch]
            f_specs = [s[:batch] for s in float_spectrograms]
            i_specs = [s[:batch] for s in int8_spectrograms]
            parts = {
                "front-end": (
                    lambda x=x, f=frontend: f.predict_on_batch(x),
                    lambda x=x, c=classifier: c.spectrograms(x),
                ),
                "network": (
                    lambda s=f_specs, n=network: n.predict_on_batch(s),
                    lambda s=i_specs, c=classifier: c.predict(s),
                ),
                "total": (
                    lambda x=x, m=keras_model: m.predict_on_batch(x),
                    lambda x=x, c=classifier: c.predict(x),
                ),
            }
            for part, (float_call, int8_call) in parts.items():
                float_time = time_call(float_call, seconds) / batch
                int8_time = time_call(int8_call, seconds) / batch
                rows.append((name, part, batch, float_time, int8_time))
    return rows


def format_table(rows):
    header = ("model", "part", "batch", "float ms/clip", "int8 ms/clip", "float / int8")
    lines = [header] + [
        (name, part, str(batch), f"{1000 * f:.3f}", f"{1000 * i:.3f}", f"{f / i:.2f}x")
        for name, part, batch, f, i in rows
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


# === Per-op profile ===


def _interpreter(content):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=bytes(content), num_threads=1)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        if detail["dtype"] == np.float32:
            value = rng.normal(0.0, 1.0, detail["shape"]).astype("float32")
        else:
            value = np.zeros(detail["shape"], detail["dtype"])
        interpreter.set_tensor(detail["index"], value)
    return interpreter


def _invoke_seconds(interpreter, calls=100, repeats=7):
    """Fastest mean seconds per ``invoke`` over ``repeats`` runs of ``calls`` (a loaded
    machine only ever adds time)."""
    for _ in range(3):
        interpreter.invoke()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            interpreter.invoke()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def op_profile(path):
    """``(network seconds, empty-invoke seconds, [(op name, seconds)])`` of a .tflite file at
    batch 1, each op timed alone as a one-op model (see the module doc)."""
    import copy

    from tensorflow.lite.tools import flatbuffer_utils

    from keras_asc.quantization import read_graph

    content = open(path, "rb").read()
    graph = read_graph(content)
    network = _invoke_seconds(_interpreter(content))
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    subgraph = model.subgraphs[0]
    produced = {i for op in graph.ops for i in op.outputs} | set(graph.inputs)
    timings = []
    for op, described in zip(subgraph.operators, graph.ops, strict=True):
        alone = copy.copy(subgraph)
        alone.operators = [op]
        alone.inputs = [int(i) for i in op.inputs if i >= 0 and int(i) in produced]
        alone.outputs = [int(i) for i in op.outputs]
        single = copy.copy(model)
        single.subgraphs = [alone]
        single.signatureDefs = []
        content = flatbuffer_utils.convert_object_to_bytearray(single)
        timings.append((described.name, _invoke_seconds(_interpreter(content))))
    empty = min(t for _, t in timings)  # the cheapest op: about the cost of invoke itself
    return network, empty, [(name, t - empty) for name, t in timings]


def format_profile(name, path):
    network, empty, timings = op_profile(path)
    totals, counts = {}, {}
    for op, seconds in timings:
        totals[op] = totals.get(op, 0.0) + seconds
        counts[op] = counts.get(op, 0) + 1
    alone = sum(totals.values())
    lines = [
        f"{name}: {len(timings)} ops; network {1e3 * network:.3f} ms per invoke; ops timed "
        f"alone sum to {1e3 * alone:.3f} ms (minus {1e6 * empty:.1f} us per empty invoke)",
        f"  {'op':20s} {'count':>5s} {'ms':>8s} {'share':>6s}",
    ]
    for op in sorted(totals, key=totals.get, reverse=True):
        share = totals[op] / alone if alone else 0.0
        lines.append(f"  {op:20s} {counts[op]:5d} {1e3 * totals[op]:8.3f} {100 * share:5.1f}%")
    return "\n".join(lines)


def op_counts(paths):
    from keras_asc.quantization import read_graph

    return {name: len(read_graph(path).ops) for name, path in paths.items()}


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
    export_kwargs = {"fold_shuffle": False} if args.no_fold_shuffle else {}
    rows, profiles, counts = [], [], {}
    for source in args.models:
        model, int8_dir = load_float_model(source)
        if int8_dir is None:
            trained_like_grn(model)
        paths = int8_files(model, int8_dir, out_dir, export_kwargs)
        counts.update(op_counts(paths))
        rows += benchmark(model, paths, clips, args.seconds)
        if args.profile:
            profiles += [format_profile(name, path) for name, path in paths.items()]
    threads = args.float_threads or "TensorFlow default"
    print(
        f"TFLite interpreter: 1 thread; float Keras ({keras.backend.backend()}): {threads} "
        f"thread(s); CPU: {os.cpu_count()} logical cores; int8 files in {out_dir}"
    )
    print("int8 ops: " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    print(format_table(rows))
    for profile in profiles:
        print()
        print(profile)


if __name__ == "__main__":
    main()
