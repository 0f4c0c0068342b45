"""The log-mel front-end outside the int8 model: its constants and a NumPy reference.

An int8 keras-asc model takes spectrograms; a device computes them from the waveform with the
constants exported here (``frontend_params``): the layer's Hann window (symmetric or periodic)
placed in the FFT frame, its mel filter bank (Kaldi or HTK), and hop, FFT, pre-emphasis, log
offset and normalisation constants. The mel bank comes dense and sparse (``sparse_mel_bank``:
per band its first FFT bin and its run of weights; each FFT bin feeds at most two bands).
``frontend_numpy`` is the reference implementation a port can be checked against, and a fast
one (real FFT, sparse bank, float32); it matches the ``LogMelSpectrogram`` layer at inference
(``training=False``) within 1e-4 (about 1e-6 on broadband audio), for the CP-JKU and the DCASE
2024 baseline settings alike.

Example:
    >>> params = frontend_params(keras_asc.build("moflenet57").frontend)
    >>> frontend_numpy(np.zeros((1, 32000), "float32"), params).shape
    (1, 256, 64, 1)
"""

import hashlib
import json
import math
import zipfile

import numpy as np
import scipy.fft
import scipy.sparse

from keras_asc.layers.frontend import RESAMPLERS, LogMelSpectrogram

# Version 2 adds the sparse mel bank (``mel_band_start``, ``mel_band_length``,
# ``mel_band_weights``) beside the dense one; version 3 the resampler (how a recording reaches
# ``sampling_rate``) and a SHA-256 digest of the content, which the loader verifies. Files of
# versions 1 (dense bank only) and 2 still load: their resampler is the default one and
# they carry no digest (their constants are checked all the same).
FRONTEND_FORMAT = "keras_asc.logmel/3"
FRONTEND_FORMATS = ("keras_asc.logmel/1", "keras_asc.logmel/2", FRONTEND_FORMAT)
# The resampler of a file that names none (format 1 and 2): the layer's default.
_DEFAULT_RESAMPLER = "soxr_hq"
_DIGEST_KEY = "sha256"
_ARRAYS = ("window", "mel_filter_bank", "mel_band_start", "mel_band_length", "mel_band_weights")
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
    "resampler",
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
        ``"htk"``; informative, the arrays carry the numbers), ``"resampler"`` (how a
        recording at another rate is brought to ``sampling_rate``: ``"soxr_hq"``,
        ``"sinc_hann"`` or ``"polyphase"``, see ``keras_asc.data.resampling``), ``"format"``,
        ``"padding": "reflect"``, and two float32 arrays: ``"window"`` (the layer's Hann
        window zero-padded to ``fft_length`` and centred, shape (fft_length,)) and
        ``"mel_filter_bank"`` (fft_length // 2 + 1, num_mel_bins), the layer's inference bank;
        and the same bank without its zeros (see ``sparse_mel_bank``): int32
        ``"mel_band_start"`` and ``"mel_band_length"`` (num_mel_bins,) and float32
        ``"mel_band_weights"``.
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
    start, length, weights = sparse_mel_bank(params["mel_filter_bank"])
    params.update({"mel_band_start": start, "mel_band_length": length, "mel_band_weights": weights})
    return params


def num_frames(num_samples, params):
    """Frames the front-end makes from ``num_samples`` input samples."""
    length = int(num_samples) - (1 if params["pre_emphasis"] else 0)
    return 1 + length // int(params["hop_length"])


def sparse_mel_bank(mel_filter_bank):
    """The non-zero part of a dense mel bank: per band a first FFT bin and its weights.

    Each triangular band weights one run of consecutive FFT bins, so band ``j`` is stored as
    ``start[j]`` (its first non-zero bin), ``length[j]`` (how many bins) and its weights at
    ``weights[offset[j] : offset[j] + length[j]]`` with ``offset = cumsum(length) - length``.

    Args:
        mel_filter_bank: (fft_length // 2 + 1, num_mel_bins) array.

    Returns:
        ``(start, length, weights)``: int32 (num_mel_bins,), int32 (num_mel_bins,) and float32
        (sum(length),). Zeros inside a band's run are kept, so the run is exact.

    Example:
        >>> start, length, weights = sparse_mel_bank(params["mel_filter_bank"])
        >>> int(length.sum())  # 3,940 weights instead of 2049 x 256 for MofleNet57
        3940
    """
    bank = np.asarray(mel_filter_bank, dtype="float32")
    if bank.ndim != 2:
        raise ValueError(
            f"mel_filter_bank must be 2-D (fft bins, mel bins). Received: {bank.shape}"
        )
    nonzero = bank != 0
    any_weight = nonzero.any(axis=0)
    first = np.where(any_weight, nonzero.argmax(axis=0), 0)
    last = np.where(any_weight, bank.shape[0] - nonzero[::-1].argmax(axis=0), 0)
    length = (last - first).astype("int32")
    weights = np.concatenate(
        [bank[s : s + n, j] for j, (s, n) in enumerate(zip(first, length, strict=True))]
        or [np.zeros(0, "float32")]
    )
    return first.astype("int32"), length, weights.astype("float32")


def _band_matrix(start, length, weights, num_bins):
    """The sparse bank as a SciPy CSR matrix (num_mel_bins, num_bins): row j holds band j's
    run of weights, so ``matrix @ power`` (bins first) gives mel energies (bands first)."""
    start, length = np.asarray(start, "int64"), np.asarray(length, "int64")
    weights = np.asarray(weights, "float32")
    if len(weights) != length.sum() or np.any(length < 0) or np.any(start + length > num_bins):
        raise ValueError(
            f"sparse mel bank: runs (start, length) must lie in {num_bins} FFT bins and hold "
            f"{int(length.sum())} weights. Received {len(weights)} weights."
        )
    row_pointer = np.concatenate([[0], np.cumsum(length)])
    columns = np.repeat(start - row_pointer[:-1], length) + np.arange(len(weights))
    return scipy.sparse.csr_matrix(
        (weights, columns, row_pointer), shape=(len(start), int(num_bins))
    )


_PLANS = {}
_BLOCK_FRAMES = 32


def _mel_matrix(params):
    """The ``_band_matrix`` of a params dict, cached by the identity of its bank arrays."""
    arrays = tuple(params.get(k) for k in ("mel_band_start", "mel_band_length", "mel_band_weights"))
    if any(a is None for a in arrays):
        arrays = (params["mel_filter_bank"],)
    key = tuple(id(a) for a in arrays)
    cached = _PLANS.get(key)
    if cached is None or any(a is not b for a, b in zip(cached[0], arrays, strict=True)):
        num_bins = int(params["fft_length"]) // 2 + 1
        sparse = arrays if len(arrays) == 3 else sparse_mel_bank(arrays[0])
        if len(_PLANS) >= 16:
            _PLANS.clear()
        cached = (arrays, _band_matrix(*sparse, num_bins))
        _PLANS[key] = cached
    return cached[1]


def frontend_numpy(waveform, params):
    """Normalised log-mel spectrogram of waveforms, in NumPy (inference mode).

    The steps: pre-emphasis ``y[n] = x[n + 1] - a x[n]`` (if enabled), reflect padding by
    ``fft_length // 2`` on both sides, frames of ``fft_length`` every ``hop_length`` samples
    times the (centred) window, power spectrum ``|rfft|^2``, mel filter bank,
    ``log(mel + log_offset)``, ``(x + normalize_offset) / normalize_scale``.

    Written for speed on one core: a real FFT (``scipy.fft.rfft``, one worker) and the mel
    bank applied as a SciPy sparse matrix (each FFT bin weights at most two bands, so about
    4,000 of the 2049 x 256 dense weights are used, see ``sparse_mel_bank``); float32
    throughout, like the layer.

    Args:
        waveform: (samples,) or (batch, samples) float waveform at ``params["sampling_rate"]``.
        params: a dict from ``frontend_params`` or ``load_frontend_params``.

    Returns:
        float32 array (batch, num_mel_bins, frames, 1) (batch 1 for a 1-D input).
    """
    x = np.asarray(waveform, dtype="float32")
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(
            f"frontend_numpy expects (samples,) or (batch, samples). Received shape {x.shape}"
        )
    fft_length, hop = int(params["fft_length"]), int(params["hop_length"])
    if params["pre_emphasis"]:
        x = x[:, 1:] - np.float32(params["pre_emphasis"]) * x[:, :-1]
    if x.shape[1] <= fft_length // 2:
        raise ValueError(
            f"frontend_numpy: clips must be longer than fft_length // 2 = {fft_length // 2} samples "
            f"after pre-emphasis. Received: {x.shape[1]}"
        )
    x = np.pad(x, ((0, 0), (fft_length // 2, fft_length // 2)), mode="reflect")
    count = 1 + (x.shape[1] - fft_length) // hop
    frames = np.lib.stride_tricks.sliding_window_view(x, fft_length, axis=1)[:, ::hop][:, :count]
    window = np.asarray(params["window"], dtype="float32")
    bank = _mel_matrix(params)
    mel = np.empty((x.shape[0], bank.shape[0], count), dtype="float32")
    # A block of frames at a time keeps the spectrum in the CPU cache.
    for clip in range(x.shape[0]):
        for first in range(0, count, _BLOCK_FRAMES):
            block = frames[clip, first : first + _BLOCK_FRAMES] * window
            spectrum = scipy.fft.rfft(block, axis=-1, workers=1, overwrite_x=True)
            power = np.square(spectrum.real)
            power += np.square(spectrum.imag)
            # Bins first: the sparse product then runs along contiguous frames and gives the
            # (mel bins, frames) layout of the output.
            mel[clip, :, first : first + _BLOCK_FRAMES] = bank @ np.ascontiguousarray(power.T)
    logmel = np.log(mel + np.float32(params["log_offset"]), out=mel)
    if params["normalize_offset"] != 0.0 or params["normalize_scale"] != 1.0:
        logmel += np.float32(params["normalize_offset"])
        logmel /= np.float32(params["normalize_scale"])
    return logmel[..., None]


def save_frontend_params(file, params_per_input):
    """Write the front-end of every model input to one ``.npz`` (arrays and JSON constants).

    Args:
        file: path (ending in ``.npz``) or binary file object.
        params_per_input: one ``frontend_params`` dict per model input.

    Keys: ``input{i}_window``, ``input{i}_mel_filter_bank`` (dense), the sparse bank
    ``input{i}_mel_band_start``, ``input{i}_mel_band_length``, ``input{i}_mel_band_weights``,
    ``constants`` (a JSON string with one dict of scalars per input, the resampler among
    them) and ``sha256``: the hex SHA-256 of everything else (see ``content_digest``), which
    ``load_frontend_params`` verifies (format ``keras_asc.logmel/3``).
    """
    arrays, constants = {}, []
    for index, params in enumerate(params_per_input):
        bank = np.asarray(params["mel_filter_bank"], dtype="float32")
        start, length, weights = sparse_mel_bank(bank)
        arrays[f"input{index}_window"] = np.asarray(params["window"], dtype="float32")
        arrays[f"input{index}_mel_filter_bank"] = bank
        arrays[f"input{index}_mel_band_start"] = start
        arrays[f"input{index}_mel_band_length"] = length
        arrays[f"input{index}_mel_band_weights"] = weights
        scalars = {**scalar_params(params), "format": FRONTEND_FORMAT}
        scalars["resampler"] = scalars.get("resampler") or _DEFAULT_RESAMPLER
        constants.append(scalars)
    arrays["constants"] = np.array(json.dumps(constants))
    arrays[_DIGEST_KEY] = np.array(content_digest(arrays))
    np.savez_compressed(file, **arrays)


def content_digest(arrays):
    """SHA-256 (hex) of a sidecar's content: every entry but the digest, in name order, each
    as its name, dtype, shape and bytes (C order). The same on every platform."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        if name == _DIGEST_KEY:
            continue
        value = np.asarray(arrays[name])
        if value.dtype.kind == "U":  # the JSON constants: hash the text, not NumPy's UCS-4
            payload = str(value).encode("utf-8")
        else:
            payload = np.ascontiguousarray(value.astype(value.dtype.newbyteorder("<"))).tobytes()
        header = f"{name}|{value.dtype.kind}{value.dtype.itemsize}|{value.shape}|{len(payload)}|"
        digest.update(header.encode("utf-8"))
        digest.update(payload)
    return digest.hexdigest()


def scalar_params(params):
    """The JSON-serialisable part of a front-end params dict (no arrays)."""
    return {k: v for k, v in params.items() if k not in _ARRAYS}


class FrontendFileError(ValueError):
    """A ``.frontend.npz`` sidecar that cannot be used; the message names the file first."""


def _fail(path, reason):
    raise FrontendFileError(f"{path}: {reason}")


def _finite_number(path, index, scalars, name, positive=False):
    value = scalars.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(path, f"input {index}: {name} must be a finite number. Received: {value!r}")
    if positive and not value > 0:
        _fail(path, f"input {index}: {name} must be > 0. Received: {value!r}")
    return value


def _check_params(path, index, params):
    """Refuse constants a front-end cannot use: non-finite, misshapen or out of order."""
    for name in ("sampling_rate", "fft_length", "window_length", "hop_length", "num_mel_bins"):
        value = params.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            _fail(path, f"input {index}: {name} must be a positive integer. Received: {value!r}")
    fft_length, mels = params["fft_length"], params["num_mel_bins"]
    if params["window_length"] > fft_length:
        _fail(
            path,
            f"input {index}: window_length {params['window_length']} > fft_length {fft_length}",
        )
    _finite_number(path, index, params, "log_offset", positive=True)
    _finite_number(path, index, params, "normalize_offset")
    if _finite_number(path, index, params, "normalize_scale") == 0:
        _fail(path, f"input {index}: normalize_scale must be non-zero")
    low = _finite_number(path, index, params, "min_frequency")
    high = _finite_number(path, index, params, "max_frequency")
    if not 0 <= low < high <= params["sampling_rate"] / 2:
        _fail(
            path,
            f"input {index}: expected 0 <= min_frequency < max_frequency <= sampling_rate / 2. "
            f"Received: {low}, {high}",
        )
    emphasis = params.get("pre_emphasis")
    if emphasis is not None and not (
        isinstance(emphasis, (int, float)) and math.isfinite(emphasis) and 0 <= emphasis < 1
    ):
        _fail(
            path, f"input {index}: pre_emphasis must be None or in [0, 1). Received: {emphasis!r}"
        )
    if params.get("resampler") not in RESAMPLERS:
        _fail(
            path,
            f"input {index}: resampler must be one of {', '.join(map(repr, RESAMPLERS))}. "
            f"Received: {params.get('resampler')!r}",
        )
    bins = fft_length // 2 + 1
    expected = {
        "window": (fft_length,),
        "mel_filter_bank": (bins, mels),
        "mel_band_start": (mels,),
        "mel_band_length": (mels,),
    }
    for name, shape in expected.items():
        if tuple(np.shape(params[name])) != shape:
            _fail(
                path, f"input {index}: {name} has shape {np.shape(params[name])}; expected {shape}"
            )
    for name in ("window", "mel_filter_bank", "mel_band_weights"):
        values = np.asarray(params[name])
        if values.dtype.kind != "f" or not np.isfinite(values).all():
            _fail(
                path,
                f"input {index}: {name} holds non-finite values (NaN or Inf); expected finite {name}",
            )
        if values.size and (values.min() < 0 or values.max() > 1 + 1e-6):
            _fail(path, f"input {index}: {name} has values outside [0, 1]")
    start = np.asarray(params["mel_band_start"])
    length = np.asarray(params["mel_band_length"])
    if start.dtype.kind not in "iu" or length.dtype.kind not in "iu":
        _fail(path, f"input {index}: mel_band_start and mel_band_length must be integers")
    if (
        length.sum() != np.size(params["mel_band_weights"])
        or np.any(length < 0)
        or np.any(start < 0)
        or np.any(start + length > bins)
    ):
        _fail(
            path,
            f"input {index}: the sparse mel bank's runs must lie in {bins} FFT bins and hold "
            f"{np.size(params['mel_band_weights'])} weights",
        )
    used = length > 0  # a band narrower than an FFT bin may weight none
    if np.any(np.diff(start[used]) < 0) or np.any(np.diff((start + length)[used]) < 0):
        _fail(path, f"input {index}: mel bands are not in ascending frequency order")
    dense_start, dense_length, dense_weights = sparse_mel_bank(params["mel_filter_bank"])
    if not (
        np.array_equal(dense_start[used], start[used])
        and np.array_equal(dense_length, length)
        and np.array_equal(dense_weights, np.asarray(params["mel_band_weights"], "float32"))
    ):
        _fail(path, f"input {index}: the sparse mel bank differs from the dense one")


def load_frontend_params(path):
    """Read a ``save_frontend_params`` file: one params dict per model input.

    Reads format ``keras_asc.logmel/3`` and the older ``/2`` and ``/1`` (dense bank only;
    the sparse bank is derived from it). Every fault is a :class:`FrontendFileError` (a
    ``ValueError``) that names this file: not a ``.npz`` archive, a digest that does not match
    the content (changed after export), a missing entry, or constants a front-end cannot
    use (non-finite, misshapen, bands out of order, an unknown resampler).
    """
    if not zipfile.is_zipfile(path):
        _fail(
            path,
            "unreadable front-end constants: not a NumPy .npz archive (a zip file) as "
            "keras-asc exports write; re-export the model",
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, KeyError) as error:
        _fail(
            path,
            f"unreadable front-end constants (damaged archive: {type(error).__name__}); "
            "re-export the model",
        )
    if "constants" not in arrays:
        _fail(path, "unreadable front-end constants: no 'constants' entry; re-export the model")
    if _DIGEST_KEY in arrays:
        recorded, computed = str(arrays[_DIGEST_KEY]), content_digest(arrays)
        if recorded != computed:
            _fail(
                path,
                f"content digest mismatch: the file records SHA-256 {recorded[:16]}... but its "
                f"content hashes to {computed[:16]}... (changed after export); re-export the model",
            )
    try:
        constants = json.loads(str(arrays["constants"]))
    except json.JSONDecodeError:
        _fail(path, "unreadable front-end constants: 'constants' is not JSON")
    if not isinstance(constants, list) or not all(isinstance(c, dict) for c in constants):
        _fail(path, "unreadable front-end constants: expected one JSON object per model input")
    result = []
    for index, scalars in enumerate(constants):
        if scalars.get("format") not in FRONTEND_FORMATS:
            _fail(
                path,
                f"front-end format {scalars.get('format')!r} is not one of "
                f"{', '.join(map(repr, FRONTEND_FORMATS))}.",
            )
        if scalars["format"] == FRONTEND_FORMAT and _DIGEST_KEY not in arrays:
            _fail(path, f"format {FRONTEND_FORMAT} without its content digest; re-export the model")
        missing = [
            f"input{index}_{name}"
            for name in ("window", "mel_filter_bank")
            if f"input{index}_{name}" not in arrays
        ]
        if missing:
            _fail(path, f"unreadable front-end constants: no {', '.join(missing)} entry")
        params = {
            **scalars,
            "window": arrays[f"input{index}_window"],
            "mel_filter_bank": arrays[f"input{index}_mel_filter_bank"],
        }
        params["resampler"] = params.get("resampler") or _DEFAULT_RESAMPLER
        if f"input{index}_mel_band_start" in arrays:
            sparse = (
                arrays.get(f"input{index}_mel_band_{k}") for k in ("start", "length", "weights")
            )
        else:
            bank = np.asarray(params["mel_filter_bank"])
            if bank.ndim != 2 or bank.dtype.kind != "f":
                _fail(path, f"input {index}: mel_filter_bank has shape {bank.shape}; expected 2-D")
            sparse = sparse_mel_bank(bank)
        params.update(
            zip(("mel_band_start", "mel_band_length", "mel_band_weights"), sparse, strict=True)
        )
        if any(
            params[k] is None for k in ("mel_band_start", "mel_band_length", "mel_band_weights")
        ):
            _fail(
                path,
                f"unreadable front-end constants: input {index}'s sparse mel bank is incomplete",
            )
        _check_params(path, index, params)
        params["format"] = FRONTEND_FORMAT
        result.append(params)
    return result
