"""Sample-rate conversion as the reference systems do it: three named resamplers.

A model hears its training data through the resampler that made it: TAU22 is recorded at
44.1 kHz and every model reads 32 kHz, so the resampler is part of the front-end configuration
(``LogMelSpectrogram(resampler=...)``), recorded in presets, run configs and int8 sidecars,
and used by every path that turns a file into a waveform (cache, evaluate, predict, submit,
the NumPy device front-end). The names:

* ``"sinc_hann"``: what the DCASE 2024 Task 1 baseline uses, torchaudio's default
  ``Resample`` (band-limited interpolation with a windowed sinc: Hann window, 6 zero
  crossings of the low-pass sinc on either side, cut-off at 0.99 of the lower Nyquist rate).
  Its published definition: output sample ``m`` (at time ``m / new``) is
  ``sum_i x[i] * (f / orig) * sinc(t) * cos(pi t / 12)**2`` over input samples ``i`` (at time
  ``i / orig``), with ``f = 0.99 * min(orig, new)``, ``t = f (i / orig - m / new)`` and
  ``|t| <= 6`` (rates divided by their gcd), zeros outside the signal, and
  ``ceil(n * new / orig)`` outputs. The filter is built here from that formula, once per
  pair of rates, and applied by ``scipy.signal.upfirdn`` (a polyphase FIR). It is ours
  because no well-kept library other than torchaudio (a PyTorch extension, not a dependency
  of this project) computes it; the tests check it against torchaudio's own outputs and
  against a direct sum of the formula.
* ``"soxr_hq"``: what the CP-JKU systems (CP-ResNet, CP-Mobile, MofleNet's recipe) use,
  ``librosa.load(path, sr=32000)``, whose default in librosa 0.10+ is the SoX resampler at
  high quality; computed by the ``soxr`` package (libsoxr, LGPL-2.1-or-later, wheels for
  Linux, macOS and Windows) and cut or zero-padded to ``ceil(n * new / orig)`` samples as
  librosa does.
* ``"polyphase"``: ``scipy.signal.resample_poly`` with its default filter (Kaiser window,
  beta 5, 10 zero crossings per side at the lower rate), the generic choice and what
  keras-asc used before the resampler was recorded.

All three compute in float64 and return float32.

Example:
    >>> from keras_asc.data.resampling import resample
    >>> resample(np.zeros(44100), 44100, 32000, method="sinc_hann").shape
    (32000,)
"""

import functools
import math

import numpy as np
from scipy.signal import firwin, resample_poly, upfirdn

__all__ = [
    "DEFAULT_RESAMPLER",
    "RESAMPLERS",
    "check_resampler",
    "input_frames_needed",
    "resample",
    "resampled_length",
    "resampler_of",
    "sinc_hann_kernel",
]

RESAMPLERS = ("sinc_hann", "soxr_hq", "polyphase")
# The resampler of a front-end that does not name one: the CP-JKU systems' (librosa.load).
DEFAULT_RESAMPLER = "soxr_hq"

# resample_poly's default filter: Kaiser window, beta 5, 10 zero crossings per side.
_KAISER_BETA = 5.0
_ZERO_CROSSINGS = 10
# torchaudio's Resample defaults: lowpass_filter_width (zero crossings per side) and rolloff.
_SINC_WIDTH = 6
_SINC_ROLLOFF = 0.99
# soxr's filter reaches a few hundred input samples past the last output it is asked for;
# reading this much more (50 ms) makes a prefix's outputs equal the whole file's (tested).
_SOXR_REACH_SECONDS = 0.05


def check_resampler(resampler, name="resampler"):
    """``resampler`` if it is one of :data:`RESAMPLERS`, else a ``ValueError`` naming them."""
    if resampler not in RESAMPLERS:
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, RESAMPLERS))}. Received: {resampler!r}"
        )
    return resampler


def _own_resamplers(model):
    """``[(name, resampler)]`` that a model, an int8 classifier or an ensemble records."""
    frontend = getattr(model, "frontend", None)
    if getattr(frontend, "resampler", None) is not None:
        return [(getattr(model, "name", "model"), frontend.resampler)]
    frontends = getattr(model, "frontends", None)  # an int8 export's front-end sidecar
    if isinstance(frontends, (list, tuple)) and frontends:
        names = getattr(model, "input_names", None) or [f"input {i}" for i in range(len(frontends))]
        return [
            (name, params.get("resampler") or DEFAULT_RESAMPLER)
            for name, params in zip(names, frontends, strict=False)
        ]
    found = []
    for member in getattr(model, "members", None) or ():
        found.extend(_own_resamplers(member))
    inner = getattr(model, "model", None)  # a predictor wrapping a Keras model
    if not found and inner is not None and inner is not model:
        found = _own_resamplers(inner)
    return found


def resampler_of(model):
    """The resampler a model's inputs must be made with: its front-end's ``resampler``.

    Reads a Keras classifier's ``model.frontend.resampler``, an int8 classifier's front-end
    sidecar (``model.frontends``), a predictor's wrapped ``model``, or an ensemble's members (which must agree: they share one
    waveform input); anything else gets :data:`DEFAULT_RESAMPLER`.

    Example:
        >>> resampler_of(keras_asc.build("dcase24_baseline"))
        'sinc_hann'
    """
    found = _own_resamplers(model)
    choices = sorted({resampler for _, resampler in found})
    if len(choices) > 1:
        listed = ", ".join(f"{name}: {resampler}" for name, resampler in found)
        raise ValueError(
            f"{getattr(model, 'name', 'the model')}: its members resample differently "
            f"({listed}); they share one waveform input, so expected one resampler (set "
            "frontend.resampler of the members to the same value)"
        )
    return check_resampler(choices[0]) if choices else DEFAULT_RESAMPLER


def _ratio(orig_rate, target_rate):
    divisor = math.gcd(int(orig_rate), int(target_rate))
    return int(target_rate) // divisor, int(orig_rate) // divisor


def resampled_length(num_samples, orig_rate, target_rate):
    """Output length of every resampler: ``ceil(num_samples * target_rate / orig_rate)``.

    Example:
        >>> resampled_length(44100, 44100, 32000)
        32000
    """
    up, down = _ratio(orig_rate, target_rate)
    return -(-int(num_samples) * up // down)


def _reach(up, down, method, orig_rate):
    """Input frames an output's filter reaches past the input it is centred on."""
    if method == "polyphase":
        return _ZERO_CROSSINGS * max(up, down) // up + 2
    if method == "sinc_hann":
        return math.ceil(_SINC_WIDTH * down / (_SINC_ROLLOFF * min(up, down))) + 2
    return math.ceil(_SOXR_REACH_SECONDS * orig_rate) + 64


def input_frames_needed(num_samples, orig_rate, target_rate, method=DEFAULT_RESAMPLER):
    """Input frames that the first ``num_samples`` outputs of :func:`resample` depend on.

    Output ``m`` is centred on input ``m * orig_rate / target_rate``; its filter reaches a
    fixed number of inputs to either side (``polyphase``: 10 zero crossings at the lower
    rate; ``sinc_hann``: 6 zero crossings at 0.99 of it; ``soxr_hq``: 50 ms, more than its
    filter spans). Resampling this many leading frames and keeping the first ``num_samples``
    outputs equals resampling the whole signal and cutting it (tested for each resampler).

    Example:
        >>> input_frames_needed(32000, 44100, 32000, "polyphase")
        44115
    """
    check_resampler(method, "method")
    up, down = _ratio(orig_rate, target_rate)
    if up == down == 1:
        return int(num_samples)
    return -(-int(num_samples) * down // up) + _reach(up, down, method, int(orig_rate))


@functools.lru_cache(maxsize=16)
def _kaiser_lowpass(up, down):
    """The filter ``resample_poly(x, up, down)`` designs by default (before its gain ``up``)."""
    max_rate = max(up, down)
    taps = firwin(
        2 * _ZERO_CROSSINGS * max_rate + 1, 1.0 / max_rate, window=("kaiser", _KAISER_BETA)
    )
    taps.setflags(write=False)
    return taps


def sinc_hann_kernel(up, down, width=_SINC_WIDTH, rolloff=_SINC_ROLLOFF):
    """The ``sinc_hann`` interpolation filter on the fine grid of ``up * down`` points.

    Tap ``d`` weights input ``i`` for output ``m`` where ``d = i * up - m * down``:
    ``(f / down) sinc(t) cos(pi t / (2 width))**2`` with ``f = rolloff * min(up, down)`` and
    ``t = f (k / down - j / up)``, zero for ``|t| > width``; ``j = m mod up`` is the output's
    phase and ``k = i - (m // up) down`` the input's offset from the phase's first input, so
    ``k / down - j / up = d / (up * down)``. torchaudio computes ``j / up`` in float32 (its
    default dtype) and the rest in float64, which moves the taps by up to about 1e-5 at
    44.1 -> 32 kHz; that rounding is reproduced here, so the outputs agree within 1e-6.

    Args:
        up: output rate divided by the gcd of the two rates.
        down: input rate divided by the same gcd.
        width: zero crossings of the sinc on either side.
        rolloff: cut-off as a fraction of the lower rate's Nyquist frequency.

    Returns:
        ``(taps, half)``: float64 taps of length ``2 * half + 1``, tap ``half`` at ``d = 0``.

    Example:
        >>> taps, half = sinc_hann_kernel(320, 441)
        >>> len(taps), half
        (5987, 2993)
    """
    cutoff = rolloff * min(up, down)
    # One input sample more than the support on each side, for taps the rounding brings in.
    half = math.floor(width * up * down / cutoff) + up
    d = np.arange(-half, half + 1, dtype=np.int64)
    phase = (-d * (pow(down, -1, up) if up > 1 else 0)) % up  # j: d + j * down = k * up
    offset = (d + phase * down) // up  # k
    phase_time = np.float32(1.0) * phase.astype(np.float32) / np.float32(up)
    t = cutoff * (offset / down - phase_time.astype(np.float64))
    taps = (cutoff / down) * np.sinc(t) * np.cos(np.pi * t / (2 * width)) ** 2
    taps[np.abs(t) > width] = 0.0
    return taps, half


@functools.lru_cache(maxsize=16)
def _sinc_filter(up, down):
    """``sinc_hann_kernel`` delayed by a whole number ``q`` of outputs: ``(taps, q)``."""
    taps, half = sinc_hann_kernel(up, down)
    # upfirdn weights input i for output p by taps[p * down - i * up], i.e. by tap -d: the
    # kernel is reversed (the float32 rounding makes it slightly asymmetric), and delayed by
    # q outputs so that its centre lands on q * down.
    delay = -(-half // down)
    taps = np.concatenate([np.zeros(delay * down - half), taps[::-1]])
    taps.setflags(write=False)
    return taps, delay


def _sinc_hann(samples, up, down, axis):
    taps, delay = _sinc_filter(up, down)
    length = resampled_length(samples.shape[axis], down, up)
    full = upfirdn(taps, samples, up=up, down=down, axis=axis)
    index = [slice(None)] * samples.ndim
    index[axis] = slice(delay, delay + length)
    out = full[tuple(index)]
    if out.shape[axis] < length:  # not reached for the rates checked; kept exact anyway
        padding = [(0, 0)] * samples.ndim
        padding[axis] = (0, length - out.shape[axis])
        out = np.pad(out, padding)
    return out


def _soxr_hq(samples, orig_rate, target_rate, axis):
    import soxr  # noqa: PLC0415 - a compiled extension; loaded only when this resampler runs

    moved = np.moveaxis(samples, axis, 0)
    flat = moved.reshape(moved.shape[0], -1)
    length = resampled_length(flat.shape[0], orig_rate, target_rate)
    out = soxr.resample(np.ascontiguousarray(flat), orig_rate, target_rate, quality="HQ")
    out = np.asarray(out, dtype=np.float64).reshape(len(out), -1)
    if len(out) >= length:
        out = out[:length]
    else:
        out = np.pad(out, [(0, length - len(out)), (0, 0)])
    return np.moveaxis(out.reshape((length,) + moved.shape[1:]), 0, axis)


def resample(waveform, orig_rate, target_rate=32000, axis=-1, method=DEFAULT_RESAMPLER):
    """Resample ``waveform`` from ``orig_rate`` to ``target_rate`` with a named resampler.

    Args:
        waveform: array of samples; any real dtype (computed in float64).
        orig_rate: rate of ``waveform`` in Hz (a positive integer).
        target_rate: rate to produce in Hz, 32000 by default.
        axis: the time axis.
        method: one of :data:`RESAMPLERS` (see the module docstring).

    Returns:
        float32 ``np.ndarray`` with ``ceil(n * target_rate / orig_rate)`` samples along
        ``axis`` (a float32 copy when the rates are equal).

    Example:
        >>> resample(np.zeros((2, 44100)), 44100, method="polyphase").shape
        (2, 32000)
    """
    check_resampler(method, "method")
    for value, name in ((orig_rate, "orig_rate"), (target_rate, "target_rate")):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer in Hz. Received: {name}={value!r}")
    orig_rate, target_rate = int(orig_rate), int(target_rate)
    samples = np.asarray(waveform, dtype=np.float64)
    up, down = _ratio(orig_rate, target_rate)
    if up == down == 1:
        return samples.astype(np.float32)
    axis = axis % samples.ndim
    if method == "polyphase":
        out = resample_poly(samples, up, down, axis=axis, window=_kaiser_lowpass(up, down))
    elif method == "sinc_hann":
        out = _sinc_hann(samples, up, down, axis)
    else:
        out = _soxr_hq(samples, orig_rate, target_rate, axis)
    return np.asarray(out).astype(np.float32)


def filter_taps(orig_rate, target_rate, method):
    """Taps of the FIR filter ``method`` designs for the ratio (``soxr_hq``: not exposed, None).

    Used to bound the memory a strange rate would cost before any is allocated.
    """
    up, down = _ratio(orig_rate, target_rate)
    if method == "polyphase":
        return 2 * _ZERO_CROSSINGS * max(up, down) + 1
    if method == "sinc_hann":
        return 2 * math.floor(_SINC_WIDTH * up * down / (_SINC_ROLLOFF * min(up, down))) + 1
    return None
