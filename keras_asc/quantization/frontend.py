"""The log-mel front-end outside the int8 model: its constants and a NumPy reference.

An int8 keras-asc model takes spectrograms; a device computes them from the waveform with the
constants exported here (``frontend_params``): the layer's Hann window (symmetric or periodic)
placed in the FFT frame, its mel filter bank (Kaldi or HTK), and hop, FFT, pre-emphasis, log
offset and normalisation constants. ``frontend_numpy`` is the reference implementation a port
can be checked against; it matches the ``LogMelSpectrogram`` layer at inference
(``training=False``) to about 1e-5, for the CP-JKU and the DCASE 2024 baseline settings alike.

Example:
    >>> params = frontend_params(keras_asc.build("moflenet57").frontend)
    >>> frontend_numpy(np.zeros((1, 32000), "float32"), params).shape
    (1, 256, 64, 1)
"""

import json

import numpy as np

from keras_asc.layers.frontend import LogMelSpectrogram

FRONTEND_FORMAT = "keras_asc.logmel/1"
_SCALARS = (
    "sampling_rate",
    "fft_length",
    "window_length",
    "hop_length",
    "num_mel_bins",
    "min_frequency",
    "max_frequency",
    "pre_emphasis",
    "log_offset",
    "normalize_offset",
    "normalize_scale",
    "window",
    "mel_scale",
)


def frontend_params(frontend):
    """The inference constants of a ``LogMelSpectrogram`` layer (or its config) as a dict.

    Args:
        frontend: a ``keras_asc.layers.LogMelSpectrogram`` or its ``get_config()`` dict.

    Returns:
        A dict with the scalar settings (``sampling_rate``, ``fft_length``, ``window_length``,
        ``hop_length``, ``num_mel_bins``, ``min_frequency``, ``max_frequency``,
        ``pre_emphasis`` (``None`` when off), ``log_offset``, ``normalize_offset``,
        ``normalize_scale``), the names of the window and mel scale (``"window_function"``:
        ``"hann_symmetric"`` or ``"hann_periodic"``; ``"mel_scale"``: ``"kaldi"`` or
        ``"htk"``; informative, the arrays carry the numbers), ``"format"``,
        ``"padding": "reflect"``, and two float32 arrays: ``"window"`` (the layer's Hann
        window zero-padded to ``fft_length`` and centred, shape (fft_length,)) and
        ``"mel_filter_bank"`` (fft_length // 2 + 1, num_mel_bins), the layer's inference bank.
    """
    if isinstance(frontend, dict):
        config = {k: v for k, v in frontend.items() if k not in ("name", "trainable", "dtype")}
        frontend = LogMelSpectrogram(**config)
    if not isinstance(frontend, LogMelSpectrogram):
        raise TypeError(
            f"frontend must be a LogMelSpectrogram layer or its config. Received: {type(frontend).__name__}"
        )
    config = frontend.get_config()
    params = {name: config[name] for name in _SCALARS}
    # "window" names the array below; the window's kind goes under its own key.
    params["window_function"] = params.pop("window")
    if not params["pre_emphasis"]:
        params["pre_emphasis"] = None
    left = (frontend.fft_length - frontend.window_length) // 2
    window = np.zeros(frontend.fft_length, dtype="float32")
    window[left : left + frontend.window_length] = frontend.analysis_window()
    params.update(
        {
            "format": FRONTEND_FORMAT,
            "padding": "reflect",
            "window": window,
            "mel_filter_bank": frontend.mel_filter_bank().astype("float32"),
        }
    )
    return params


def num_frames(num_samples, params):
    """Frames the front-end makes from ``num_samples`` input samples."""
    length = int(num_samples) - (1 if params["pre_emphasis"] else 0)
    return 1 + length // int(params["hop_length"])


def frontend_numpy(waveform, params):
    """Normalised log-mel spectrogram of waveforms, in NumPy (inference mode).

    The steps: pre-emphasis ``y[n] = x[n + 1] - a x[n]`` (if enabled), reflect padding by
    ``fft_length // 2`` on both sides, frames of ``fft_length`` every ``hop_length`` samples
    times the (centred) window, power spectrum ``|rfft|^2``, mel filter bank,
    ``log(mel + log_offset)``, ``(x + normalize_offset) / normalize_scale``.

    Args:
        waveform: (samples,) or (batch, samples) float waveform at ``params["sampling_rate"]``.
        params: a dict from ``frontend_params`` or ``load_frontend_params``.

    Returns:
        float32 array (batch, num_mel_bins, frames, 1) (batch 1 for a 1-D input).
    """
    x = np.asarray(waveform, dtype="float64")
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(
            f"frontend_numpy expects (samples,) or (batch, samples). Received shape {x.shape}"
        )
    fft_length, hop = int(params["fft_length"]), int(params["hop_length"])
    if params["pre_emphasis"]:
        x = x[:, 1:] - float(params["pre_emphasis"]) * x[:, :-1]
    if x.shape[1] <= fft_length // 2:
        raise ValueError(
            f"frontend_numpy: clips must be longer than fft_length // 2 = {fft_length // 2} samples "
            f"after pre-emphasis. Received: {x.shape[1]}"
        )
    x = np.pad(x, ((0, 0), (fft_length // 2, fft_length // 2)), mode="reflect")
    count = 1 + (x.shape[1] - fft_length) // hop
    frames = np.lib.stride_tricks.sliding_window_view(x, fft_length, axis=1)[:, ::hop][:, :count]
    spectrum = np.fft.rfft(frames * np.asarray(params["window"], dtype="float64"), axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    mel = power @ np.asarray(params["mel_filter_bank"], dtype="float64")
    logmel = np.log(mel + float(params["log_offset"]))
    logmel = (logmel + float(params["normalize_offset"])) / float(params["normalize_scale"])
    return np.transpose(logmel, (0, 2, 1))[..., None].astype("float32")


def save_frontend_params(file, params_per_input):
    """Write the front-end of every model input to one ``.npz`` (arrays and JSON constants).

    Args:
        file: path (ending in ``.npz``) or binary file object.
        params_per_input: one ``frontend_params`` dict per model input.

    Keys: ``input{i}_window``, ``input{i}_mel_filter_bank`` and ``constants`` (a JSON string
    with one dict of scalars per input).
    """
    arrays, constants = {}, []
    for index, params in enumerate(params_per_input):
        arrays[f"input{index}_window"] = np.asarray(params["window"], dtype="float32")
        arrays[f"input{index}_mel_filter_bank"] = np.asarray(
            params["mel_filter_bank"], dtype="float32"
        )
        constants.append(scalar_params(params))
    arrays["constants"] = np.array(json.dumps(constants))
    np.savez_compressed(file, **arrays)


def scalar_params(params):
    """The JSON-serialisable part of a front-end params dict (no arrays)."""
    return {k: v for k, v in params.items() if k not in ("window", "mel_filter_bank")}


def load_frontend_params(path):
    """Read a ``save_frontend_params`` file: one params dict per model input."""
    with np.load(path, allow_pickle=False) as data:
        constants = json.loads(str(data["constants"]))
        result = []
        for index, scalars in enumerate(constants):
            if scalars.get("format") != FRONTEND_FORMAT:
                raise ValueError(
                    f"{path}: front-end format {scalars.get('format')!r} is not {FRONTEND_FORMAT!r}."
                )
            result.append(
                {
                    **scalars,
                    "window": data[f"input{index}_window"],
                    "mel_filter_bank": data[f"input{index}_mel_filter_bank"],
                }
            )
    return result
