"""Host latency of an int8 ensemble with its front-ends, per clip, on one thread, in one run.

For the v2 ensemble (or the ensemble file of a run quantised with ``keras-asc quantize``) it
times at batch 1, as the fastest of many calls (the machine may be shared: other processes
only ever add time):

- the front-ends: each member's ``frontend_numpy`` (scipy's float32 FFT, one worker), both
  one after the other (what ``TFLiteClassifier`` did before), both from one framing and FFT
  pass (``frontend_shared.shared_frontends``, what it does now), and the C99 front-end of
  ``keras-asc export-c`` compiled for this host with its plain reference FFT;
- the int8 network alone (spectrograms in): the default file (``low_arena``, for TFLite
  Micro) and the ``--no-low-arena`` file (float pooling for LiteRT's XNNPACK);
- the total, waveform in and logits out (``TFLiteClassifier.predict``), for both files;

and prints ms per clip with the ratio to the old path (front-ends one after the other plus the
default network). Untrained presets get GRN scalars set non-zero as after training (the graph
a trained run has).

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/host_latency.py
    KERAS_BACKEND=tensorflow python benchmarks/host_latency.py --run runs/v2 --repeats 400
"""

import argparse
import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_variable] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def fastest_ms(function, clips, repeats):
    """The fastest call of ``function(clip)`` over ``repeats`` passes through the clips, in ms."""
    function(clips[:1])
    best = float("inf")
    for _ in range(repeats):
        for index in range(len(clips)):
            clip = clips[index : index + 1]
            start = time.perf_counter()
            function(clip)
            best = min(best, time.perf_counter() - start)
    return 1e3 * best


def ensemble_files(args, out):
    """``(default path, --no-low-arena path)`` of the ensemble file."""
    import keras_asc
    from keras_asc.quantization import export_int8, quantize_model

    if args.run:
        folder = os.path.join(args.run, "int8")
        files = sorted(f for f in os.listdir(folder) if f.endswith(".tflite"))
        ensembles = []
        for name in files:
            with open(os.path.join(folder, name[: -len(".tflite")] + ".json")) as handle:
                if json.load(handle).get("members"):
                    ensembles.append(name)
        if not ensembles:
            raise SystemExit(f"{folder}: no ensemble file (run keras-asc quantize on an ensemble)")
        default = os.path.join(folder, ensembles[0])
        from keras_asc.training.quantize import load_float_model, resolve_run

        model = load_float_model(resolve_run(args.run)[0])
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from micro_arena import trained_like_grn

        model = trained_like_grn(keras_asc.build(args.preset))
        default = None
    qat = quantize_model(model)
    if default is None:
        default = export_int8(qat, None, os.path.join(out, "default.tflite"), qat=True).path
    litert = export_int8(
        qat, None, os.path.join(out, "litert.tflite"), qat=True, low_arena=False, micro=False
    ).path
    return default, litert


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="moflenet57_cp_resnet59_v2", help="ensemble preset")
    parser.add_argument("--run", help="a run directory quantised with keras-asc quantize")
    parser.add_argument("--clips", type=int, default=16, help="1-s noise clips per pass")
    parser.add_argument("--repeats", type=int, default=20, help="passes; the fastest call counts")
    args = parser.parse_args(argv)

    from keras_asc.quantization import TFLiteClassifier
    from keras_asc.quantization.export_c import compile_frontend, export_frontend_c
    from keras_asc.quantization.frontend import frontend_numpy
    from keras_asc.quantization.frontend_shared import shared_frontends
    from keras_asc.quantization.graph import make_interpreter, native_output_captured

    out = tempfile.mkdtemp(prefix="host_latency_")
    default, litert = ensemble_files(args, out)
    classifiers = {
        "default": TFLiteClassifier(default, num_threads=1),
        "--no-low-arena": TFLiteClassifier(litert, num_threads=1),
    }
    classifier = classifiers["default"]
    params = classifier.frontends
    clips = np.random.default_rng(0).normal(0, 0.1, (args.clips, 32000)).astype("float32")
    export_frontend_c(params, "ensemble", os.path.join(out, "c"), num_samples=32000)
    compiled = compile_frontend(os.path.join(out, "c"), "ensemble", optimization="-O3 -march=native")

    rows = []
    for index, member in enumerate(params):
        rows.append(
            (f"front-end {index} ({classifier.description['members'][index]}), NumPy",
             fastest_ms(lambda c, p=member: frontend_numpy(c, p), clips, args.repeats))
        )
    separate = fastest_ms(lambda c: [frontend_numpy(c, p) for p in params], clips, args.repeats)
    shared = fastest_ms(lambda c: shared_frontends(c, params), clips, args.repeats)
    c_both = fastest_ms(lambda c: [compiled(c, i) for i in range(len(params))], clips, args.repeats)
    rows += [
        ("both front-ends, NumPy one after the other", separate),
        ("both front-ends, NumPy, one framing/FFT pass", shared),
        ("both front-ends, compiled C (reference FFT)", c_both),
    ]
    networks = {}
    for label, item in classifiers.items():
        interpreter = make_interpreter(model_path=item.path, num_threads=1)
        inputs = interpreter.get_input_details()
        for detail in inputs:
            interpreter.resize_tensor_input(detail["index"], [1, *detail["shape"][1:]])
        with native_output_captured():  # the XNNPACK INFO line
            interpreter.allocate_tensors()
        spectrograms = item.interpreter_inputs(item.spectrograms(clips[:1]))

        def run(_, interpreter=interpreter, inputs=inputs, spectrograms=spectrograms):
            for detail, array in zip(inputs, spectrograms, strict=True):
                interpreter.set_tensor(detail["index"], array)
            interpreter.invoke()

        networks[label] = fastest_ms(run, clips, args.repeats)
        rows.append((f"int8 network, {label} file", networks[label]))
    for label, item in classifiers.items():
        rows.append(
            (f"total (TFLiteClassifier.predict), {label} file",
             fastest_ms(item.predict, clips, args.repeats))
        )
    baseline = separate + networks["default"]
    rows.append(("old total: front-ends one after the other + default network", baseline))
    print(
        f"{classifier.name}: batch 1, one thread, fastest of {args.repeats} passes over "
        f"{args.clips} clips; ratio = old total / row"
    )
    print(f"{'part':62s} {'ms/clip':>8s} {'ratio':>6s}")
    for label, ms in rows:
        print(f"{label:62s} {ms:8.3f} {baseline / ms:6.2f}")


if __name__ == "__main__":
    main()
