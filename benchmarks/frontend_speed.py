"""NumPy log-mel front-end speed on one thread: the sparse ``frontend_numpy`` against the dense
implementation it replaced (kept here, in this script only, as the baseline), per preset
front-end, with the max abs difference of both to the Keras ``LogMelSpectrogram`` layer.

With ``--tflite``, also the front-end inside the int8 file: MofleNet57 (random weights,
post-training quantisation on noise) exported with and without it; prints the max abs
difference of the in-file front-end to the layer, the one-thread latency per clip (fastest
call) of the waveform-in file against the spectrogram-in file plus ``frontend_numpy``, and the largest
logit difference and argmax agreement of the two files.

With ``--c``, also the C99 front-end that ``keras-asc export-c`` writes, compiled for this host
with the system C compiler (``-O2``, and ``-O3 -march=native``) and its plain reference FFT:
ms per clip beside ``frontend_numpy``'s, the ratio, and the max abs difference between the two.
A device build points the FFT hook at its own FFT (CMSIS-DSP's ``arm_rfft_fast_f32``); the
reference FFT is written for clarity and double precision, not speed.

Usage:
    python benchmarks/frontend_speed.py [--clips 64] [--repeats 5] [--batch 4] [--tflite] [--c]
"""

import argparse
import os

# One thread for NumPy's BLAS and the FFT, set before NumPy loads.
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_variable] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_asc.layers import LogMelSpectrogram  # noqa: E402
from keras_asc.models.presets import MODEL_PRESETS  # noqa: E402
from keras_asc.quantization.frontend import frontend_numpy, frontend_params  # noqa: E402

PRESETS = ("moflenet57", "cp_resnet59", "dcase24_baseline")


def dense_frontend(waveform, params):
    """The previous ``frontend_numpy``: float64, ``np.fft.rfft`` and the dense 2049 x 256 bank."""
    x = np.asarray(waveform, dtype="float64")
    fft_length, hop = int(params["fft_length"]), int(params["hop_length"])
    if params["pre_emphasis"]:
        x = x[:, 1:] - float(params["pre_emphasis"]) * x[:, :-1]
    x = np.pad(x, ((0, 0), (fft_length // 2, fft_length // 2)), mode="reflect")
    count = 1 + (x.shape[1] - fft_length) // hop
    frames = np.lib.stride_tricks.sliding_window_view(x, fft_length, axis=1)[:, ::hop][:, :count]
    spectrum = np.fft.rfft(frames * np.asarray(params["window"], dtype="float64"), axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    mel = power @ np.asarray(params["mel_filter_bank"], dtype="float64")
    logmel = np.log(mel + float(params["log_offset"]))
    logmel = (logmel + float(params["normalize_offset"])) / float(params["normalize_scale"])
    return np.transpose(logmel, (0, 2, 1))[..., None].astype("float32")


def ms_per_clip(function, waveforms, params, batch, repeats):
    """The fastest call over ``repeats`` passes through all clips, in ms per clip.

    The minimum over many calls, not the mean: on a shared machine the other processes only
    ever add time, so the fastest call is the closest to the cost on a free core.
    """
    function(waveforms[:batch], params)  # warm-up (plans, caches)
    best = float("inf")
    for _ in range(repeats):
        for first in range(0, len(waveforms), batch):
            chunk = waveforms[first : first + batch]
            start = time.perf_counter()
            function(chunk, params)
            best = min(best, (time.perf_counter() - start) / len(chunk))
    return 1e3 * best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64, help="1-s clips timed per pass")
    parser.add_argument("--repeats", type=int, default=5, help="passes; the fastest call counts")
    parser.add_argument("--batch", type=int, default=4, help="clips per front-end call")
    parser.add_argument(
        "--tflite", action="store_true", help="also the front-end inside the int8 file"
    )
    parser.add_argument(
        "--c", action="store_true", help="also the compiled C99 front-end of keras-asc export-c"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    waveforms = rng.normal(0.0, 0.1, (args.clips, 32000)).astype("float32")
    checks = waveforms[:4].copy()
    checks[1] *= 1e-3  # quiet clip: the log offset matters
    checks[2] = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(32000) / 32000)
    print(
        f"{args.clips} clips of 1 s at 32 kHz, calls of {args.batch} clips, fastest call of "
        f"{args.repeats} passes, one thread"
    )
    print(
        f"{'preset':18s} {'dense ms/clip':>14s} {'sparse ms/clip':>15s} {'ratio':>6s} "
        f"{'dense-Keras':>12s} {'sparse-Keras':>13s}"
    )
    for preset in PRESETS:
        layer = LogMelSpectrogram(**MODEL_PRESETS[preset]["frontend"])
        params = frontend_params(layer)
        expected = keras.ops.convert_to_numpy(layer(checks, training=False))
        dense_error = np.abs(dense_frontend(checks, params) - expected).max()
        sparse_error = np.abs(frontend_numpy(checks, params) - expected).max()
        dense = ms_per_clip(dense_frontend, waveforms, params, args.batch, args.repeats)
        sparse = ms_per_clip(frontend_numpy, waveforms, params, args.batch, args.repeats)
        print(
            f"{preset:18s} {dense:14.3f} {sparse:15.3f} {dense / sparse:6.1f} "
            f"{dense_error:12.2e} {sparse_error:13.2e}"
        )
    if args.c:
        c_figures(waveforms, checks, args.batch, args.repeats)
    if args.tflite:
        tflite_figures(waveforms, checks, args.repeats)


def c_figures(waveforms, checks, batch, repeats):
    """ms per clip of the compiled C front-end (reference FFT) beside ``frontend_numpy``."""
    import tempfile

    from keras_asc.quantization.export_c import compile_frontend, export_frontend_c

    print()
    print(
        f"{'preset':18s} {'flags':>18s} {'C ms/clip':>10s} {'NumPy ms/clip':>14s} "
        f"{'C / NumPy':>10s} {'max |C-NumPy|':>14s}"
    )
    for preset in ("moflenet57", "cp_resnet59"):
        params = frontend_params(LogMelSpectrogram(**MODEL_PRESETS[preset]["frontend"]))
        folder = tempfile.mkdtemp(prefix="frontend_c_")
        export_frontend_c([params], preset, folder, num_samples=waveforms.shape[1])
        numpy_ms = ms_per_clip(frontend_numpy, waveforms, params, batch, repeats)
        for flags in ("-O2", "-O3 -march=native"):
            compiled = compile_frontend(
                folder, preset, build_dir=tempfile.mkdtemp(), optimization=flags
            )
            error = np.abs(compiled(checks) - frontend_numpy(checks, params)).max()
            c_ms = ms_per_clip(lambda x, _, f=compiled: f(x), waveforms, params, batch, repeats)
            print(
                f"{preset:18s} {flags:>18s} {c_ms:10.3f} {numpy_ms:14.3f} "
                f"{c_ms / numpy_ms:10.2f} {error:14.2e}"
            )


def tflite_figures(waveforms, checks, repeats):
    import tempfile

    import tensorflow as tf

    import keras_asc
    from keras_asc.quantization import TFLiteClassifier, export_int8, tf_frontend
    from keras_asc.quantization.export import make_interpreter

    for preset in PRESETS:
        layer = LogMelSpectrogram(**MODEL_PRESETS[preset]["frontend"])
        function = tf.function(lambda x, layer=layer: tf_frontend(x, layer))
        concrete = function.get_concrete_function(tf.TensorSpec([None, 32000], tf.float32))
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], function)
        interpreter = make_interpreter(model_content=converter.convert(), num_threads=1)
        detail = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(detail["index"], checks.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], checks)
        interpreter.invoke()
        output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        expected = keras.ops.convert_to_numpy(layer(checks, training=False))
        errors = np.abs(output - expected).max(axis=(1, 2, 3))
        print(
            f"in-file front-end vs Keras, {preset}: max abs diff noise {errors[0]:.2e}, "
            f"quiet {errors[1]:.2e}, 1 kHz tone {errors[2]:.2e}"
        )

    model = keras_asc.build("moflenet57")
    model(waveforms[:1])
    calibration = [waveforms[i : i + 8] for i in range(0, 32, 8)]
    with tempfile.TemporaryDirectory() as folder:
        plain = export_int8(
            model, calibration, f"{folder}/plain.tflite", max_calibration_samples=32
        )
        inside = export_int8(
            model,
            calibration,
            f"{folder}/inside.tflite",
            max_calibration_samples=32,
            frontend_in_file=True,
        )
        spectrogram_in = TFLiteClassifier(plain.path, num_threads=1, batch_size=1)
        waveform_in = TFLiteClassifier(inside.path, num_threads=1, batch_size=1)
        clips = waveforms[:16]
        times = {}
        for name, predict in (
            ("spectrogram-in file + frontend_numpy", spectrogram_in.predict),
            ("waveform-in file", waveform_in.predict),
        ):
            predict(clips[:1])
            best = float("inf")
            for _ in range(repeats):
                for clip in clips:
                    start = time.perf_counter()
                    predict(clip[None])
                    best = min(best, time.perf_counter() - start)
            times[name] = 1e3 * best
            print(f"{name:38s} {times[name]:7.2f} ms/clip (1 thread, batch 1)")
        ratio = times["waveform-in file"] / times["spectrogram-in file + frontend_numpy"]
        print(f"ratio waveform-in / spectrogram-in: {ratio:.2f}")
        a, b = waveform_in.predict(waveforms), spectrogram_in.predict(waveforms)
        print(
            f"logits, waveform-in vs spectrogram-in file: max abs diff {np.abs(a - b).max():.3g} "
            f"(logit range {np.ptp(b):.3g}), same argmax on "
            f"{np.mean(a.argmax(1) == b.argmax(1)):.1%} of {len(waveforms)} clips; parameter "
            f"bytes {inside.parameters.total:,} vs {plain.parameters.total:,}; file bytes "
            f"{inside.file_bytes:,} vs {plain.file_bytes:,}"
        )


if __name__ == "__main__":
    main()
