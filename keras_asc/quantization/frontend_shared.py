"""The log-mels of several model inputs from one pass of framing and FFTs (an ensemble's).

The v2 ensemble's members share their front-end up to the hop: the same pre-emphasis, reflect
padding, 4096-point FFT and centred Hann window, with hops of 500 and 750 samples. A frame
that starts at a multiple of both hops (every 1,500 samples) is the same frame for both, so
its power spectrum is computed once: 86 FFTs per clip instead of 64 + 43 = 107. Each input
then applies its own sparse mel bank, log and normalisation to its own frames, and the values
are those of ``frontend.frontend_numpy`` (the same float32 operations on the same frames).
Inputs whose settings differ in more than the hop and the mel bank are computed one by one
with ``frontend_numpy``.

Hand-written: the FFT, framing and the sparse product are SciPy's and NumPy's; what is ours is
sharing the frames, which no library offers across filter banks of different hops.

Example:
    >>> spectrograms = shared_frontends(waveforms, classifier.frontends)
"""

import numpy as np
import scipy.fft

from keras_asc.quantization.frontend import _mel_matrix, frontend_numpy

_SHARED_KEYS = ("fft_length", "pre_emphasis", "sampling_rate")
_BLOCK_FRAMES = 32


def _shareable(params_list):
    first = params_list[0]
    return len(params_list) > 1 and all(
        all(p[k] == first[k] for k in _SHARED_KEYS)
        and np.array_equal(p["window"], first["window"])
        for p in params_list[1:]
    )


def shared_frontends(waveforms, params_list):
    """One spectrogram per params dict, like ``[frontend_numpy(waveforms, p) for p in ...]``.

    Args:
        waveforms: (samples,) or (batch, samples) float waveforms.
        params_list: ``frontend.frontend_params`` dicts, one per model input.

    Returns:
        A list of float32 arrays (batch, num_mel_bins, frames, 1).
    """
    if not _shareable(params_list):
        return [frontend_numpy(waveforms, params) for params in params_list]
    x = np.asarray(waveforms, dtype="float32")
    if x.ndim == 1:
        x = x[None]
    first = params_list[0]
    fft_length = int(first["fft_length"])
    if first["pre_emphasis"]:
        x = x[:, 1:] - np.float32(first["pre_emphasis"]) * x[:, :-1]
    if x.shape[1] <= fft_length // 2:
        # The reference's own one-line error for too short clips.
        return [frontend_numpy(waveforms, params) for params in params_list]
    x = np.pad(x, ((0, 0), (fft_length // 2, fft_length // 2)), mode="reflect")
    hops = [int(p["hop_length"]) for p in params_list]
    counts = [1 + (x.shape[1] - fft_length) // hop for hop in hops]
    starts = np.unique(np.concatenate([np.arange(c) * h for c, h in zip(counts, hops, strict=True)]))
    # Each input's frames as positions in the shared list of frame starts.
    positions = [np.searchsorted(starts, np.arange(c) * h) for c, h in zip(counts, hops, strict=True)]
    window = np.asarray(first["window"], dtype="float32")
    banks = [_mel_matrix(params) for params in params_list]
    outputs = [np.empty((x.shape[0], bank.shape[0], c), "float32") for bank, c in zip(banks, counts, strict=True)]
    frames = np.lib.stride_tricks.sliding_window_view(x, fft_length, axis=1)
    bins = fft_length // 2 + 1
    for clip in range(x.shape[0]):
        power = np.empty((len(starts), bins), "float32")
        for block in range(0, len(starts), _BLOCK_FRAMES):
            chosen = starts[block : block + _BLOCK_FRAMES]
            spectrum = scipy.fft.rfft(frames[clip, chosen] * window, axis=-1, workers=1, overwrite_x=True)
            part = np.square(spectrum.real)
            part += np.square(spectrum.imag)
            power[block : block + len(chosen)] = part
        for output, bank, position in zip(outputs, banks, positions, strict=True):
            output[clip] = bank @ np.ascontiguousarray(power[position].T)
    results = []
    for output, params in zip(outputs, params_list, strict=True):
        logmel = np.log(output + np.float32(params["log_offset"]), out=output)
        if params["normalize_offset"] != 0.0 or params["normalize_scale"] != 1.0:
            logmel += np.float32(params["normalize_offset"])
            logmel /= np.float32(params["normalize_scale"])
        results.append(logmel[..., None])
    return results
