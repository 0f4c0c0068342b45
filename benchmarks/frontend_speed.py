"""NumPy log-mel front-end speed on one thread: the sparse ``frontend_numpy`` against the dense
implementation it replaced (kept here, in this script only, as the baseline), per preset
front-end, with the max abs difference of both to the Keras ``LogMelSpectrogram`` layer.

Usage:
    python benchmarks/frontend_speed.py [--clips 64] [--repeats 5] [--batch 16]
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
    """Best of ``repeats`` passes over all clips, in ms per clip."""
    function(waveforms[:batch], params)  # warm-up (plans, caches)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for first in range(0, len(waveforms), batch):
            function(waveforms[first : first + batch], params)
        best = min(best, time.perf_counter() - start)
    return 1e3 * best / len(waveforms)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64, help="1-s clips timed per pass")
    parser.add_argument("--repeats", type=int, default=5, help="passes; the best one counts")
    parser.add_argument("--batch", type=int, default=16, help="clips per front-end call")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    waveforms = rng.normal(0.0, 0.1, (args.clips, 32000)).astype("float32")
    checks = waveforms[:4].copy()
    checks[1] *= 1e-3  # quiet clip: the log offset matters
    checks[2] = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(32000) / 32000)
    print(f"{args.clips} clips of 1 s at 32 kHz, batches of {args.batch}, best of {args.repeats}")
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


if __name__ == "__main__":
    main()
