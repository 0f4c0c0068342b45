"""How far keras-asc's resampled audio is from each reference's, before and after the
resampler became part of the front-end configuration, per preset.

Each preset's reference resamples as its original code does: torchaudio's default
``Resample`` for ``dcase24_baseline`` (its outputs stored in
``../shared/data/resample_reference/``, computed with torchaudio itself) and
``librosa.load(sr=32000)`` for the CP-JKU presets (librosa's default resampler, soxr at high
quality; librosa must be installed). On the reference inputs (two real 44.1 kHz recordings,
seconds 2-4, and two chirps with noise at 44.1 and 48 kHz) it prints, per preset:

* ``before``: ``scipy.signal.resample_poly`` with its Kaiser filter, what keras-asc used for
  every model;
* ``after``: the preset's recorded resampler (``model.frontend.resampler``);

each as the RMS and the maximum of the sample difference from the reference (the signal's RMS
beside them), and the largest difference it makes in the preset's inference log-mel
spectrogram (first second of each input).

Example:
    python benchmarks/resampler_difference.py
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_REFERENCE = os.path.join(
    os.path.dirname(os.path.dirname(HERE)), "shared", "data", "resample_reference"
)
PRESETS = ("moflenet57", "cp_resnet59", "moflenet_128k", "cp_resnet_128k", "dcase24_baseline")
INPUTS = ("acoustic_scene", "metro_station-paris", "chirp_noise_44k", "chirp_noise_48k")


def reference_output(resampler, data):
    """What the preset's original code produces from ``data`` (an npz of the reference)."""
    if resampler == "sinc_hann":
        return np.asarray(data["output"], np.float64)  # torchaudio's own output
    import librosa

    rate = int(data["input_rate"])
    return librosa.resample(np.asarray(data["input"]), orig_sr=rate, target_sr=32000).astype(
        np.float64
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", default=DEFAULT_REFERENCE, help="resample_reference folder")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.reference):
        print(f"resampler_difference: {args.reference} not found (it holds torchaudio's outputs)")
        return 2
    import keras

    import keras_asc
    from keras_asc.data.resampling import resample, resampler_of

    data = {name: np.load(os.path.join(args.reference, f"{name}.npz")) for name in INPUTS}
    print(
        f"{'preset':18s} {'resampler':10s} {'input':20s} {'signal RMS':>10s} "
        f"{'before RMS':>10s} {'before max':>10s} {'after RMS':>10s} {'after max':>10s} "
        f"{'log-mel before':>14s} {'log-mel after':>13s}"
    )
    for preset in PRESETS:
        model = keras_asc.build(preset)
        resampler = resampler_of(model)
        totals = {"before": [], "after": []}
        for name, item in data.items():
            rate = int(item["input_rate"])
            reference = reference_output(resampler, item)
            outputs = {
                "before": resample(item["input"], rate, 32000, method="polyphase"),
                "after": resample(item["input"], rate, 32000, method=resampler),
            }
            clip = np.stack(
                [reference[:32000], outputs["before"][:32000], outputs["after"][:32000]]
            )
            logmel = keras.ops.convert_to_numpy(
                model.frontend(clip.astype("float32"), training=False)
            )
            row = [
                f"{preset:18s} {resampler:10s} {name:20s} {np.sqrt(np.mean(reference**2)):10.3g}"
            ]
            for key in ("before", "after"):
                difference = outputs[key] - reference
                totals[key].append(difference)
                row.append(
                    f"{np.sqrt(np.mean(difference**2)):10.2e} {np.abs(difference).max():10.2e}"
                )
            row.append(
                f"{np.abs(logmel[1] - logmel[0]).max():14.2e} {np.abs(logmel[2] - logmel[0]).max():13.2e}"
            )
            print(" ".join(row))
        before, after = (np.concatenate(totals[key]) for key in ("before", "after"))
        print(
            f"{preset:18s} {resampler:10s} {'all inputs':20s} {'':10s} "
            f"{np.sqrt(np.mean(before**2)):10.2e} {np.abs(before).max():10.2e} "
            f"{np.sqrt(np.mean(after**2)):10.2e} {np.abs(after).max():10.2e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
