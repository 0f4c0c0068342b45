"""Audio files in, float32 waveforms out: libsndfile decodes, scipy resamples.

Two well-kept libraries do the work:

* ``soundfile`` (libsndfile, bundled in its wheel) decodes: WAV with 8/16/24/32-bit PCM or
  32/64-bit float samples, plain or ``WAVE_FORMAT_EXTENSIBLE`` and with chunks in any order;
  RF64 and W64 (WAV beyond 4 GB), AIFF, FLAC, OGG/Vorbis, Opus and, from libsndfile 1.1, MP3.
  Integer PCM comes out divided by ``2**(bits - 1)``, exactly (a 24-bit sample is exact in
  float32 too).
* ``scipy.signal.resample_poly`` resamples: a polyphase FIR low-pass (Kaiser window, beta 5,
  10 zero crossings per side at the lower rate) for the ratio ``up / down`` in lowest terms,
  computed in float64; the result is returned as float32.

What little is ours:

* mono is the channel mean, in float64;
* every failure is an :class:`AudioDecodeError` with a one-line message naming the file, the
  reason and what was expected;
* a truncated file is an error. libsndfile reads a WAV whose data chunk is cut short without
  complaint: it plays what is there and notes ``data : <declared> (should be <present>)`` in
  its log. That note, and any read that returns fewer frames than the header promised, is
  turned into an error here, so that an interrupted download or copy never becomes a
  zero-padded training clip. A WAV cut inside its header, which libsndfile refuses to open,
  is called truncated when its first 8 bytes (``RIFF`` and the size) promise more bytes than
  the file has;
* ``num_samples`` reads only the input frames that the first ``num_samples`` outputs depend
  on (a 10-s file costs what a 1-s clip costs), then trims or zero-pads; the result equals
  resampling the whole file and cutting it;
* the resampling filter is designed once per pair of rates and handed to ``resample_poly``
  (which then computes exactly what it computes by default): designing the 8,821-tap filter
  for 44.1 -> 32 kHz takes as long as filtering a 1-s clip with it.

This module does not use TensorFlow: the cache is built by worker processes that need none,
and the ``tf.data`` pipeline calls :func:`load_audio` through ``tf.numpy_function``
(``keras_asc.data.pipeline``).

Example:
    >>> from keras_asc.data.audio import load_audio
    >>> waveform = load_audio("audio/airport-lisbon-1000-40000-0-a.wav")  # 32 kHz mono
    >>> waveform.shape, waveform.dtype
    ((32000,), dtype('float32'))
"""

import functools
import math
import os
import re

import numpy as np
import soundfile
from scipy.signal import firwin, resample_poly

__all__ = [
    "AudioDecodeError",
    "input_frames_needed",
    "load_audio",
    "read_audio",
    "resample",
    "resampled_length",
]

# Every decoding error reads "Cannot decode audio file <path>: <reason>" on one line.
_PREFIX = "Cannot decode audio file "
_EXPECTED = (
    f"expected WAV, FLAC, OGG, MP3 or another format libsndfile "
    f"{soundfile.__libsndfile_version__} reads"
)
# libsndfile's log notes a chunk that claims more bytes than the file holds as
# "<chunk> : <declared> (should be <present>)": "data" in WAV, "SSND" in AIFF, "Riff size" in
# RF64, "riff" in W64. The RIFF/FORM size of WAV and AIFF is left out on purpose: some writers
# get it wrong on files whose audio is complete, and the data chunk tells the truth.
_SHORT_CHUNK = re.compile(r"^\s*(data|SSND|Riff size|riff)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.M)
_CHUNK_NAMES = {
    "data": "the data chunk",
    "SSND": "the SSND (sound data) chunk",
    "Riff size": "the RF64 header",
    "riff": "the W64 riff chunk",
}
# A WAV written to a pipe cannot seek back to fill in its sizes and leaves them at 0xFFFFFFFF;
# libsndfile then reads to the end of the file, which is right.
_UNKNOWN_SIZE = 0xFFFFFFFF
# resample_poly's default filter: Kaiser window, beta 5, 10 zero crossings per side.
_KAISER_BETA = 5.0
_ZERO_CROSSINGS = 10

# What a header may declare before anything is allocated for it. A corrupt or hostile header
# can declare any rate, channel count or length; these bounds keep memory bounded (the read
# allocates frames x channels x 8 bytes, the resampling filter 8 x 20 x max(up, down) bytes).
MIN_SAMPLING_RATE = 1000
MAX_SAMPLING_RATE = 768000
MAX_CHANNELS = 64
# Samples (frames x channels) one read may decode: 2**28 float64 values are 2 GiB, e.g. 2.3 h
# of 32 kHz mono or 46 min of 48 kHz stereo.
MAX_SAMPLES = 2**28
# max(up, down) of the rate ratio, which sizes the resampling filter (20 taps per unit): a rate
# such as 44101 Hz, coprime with 32000, needs 882,021 taps; 2**17 keeps the filter under 21 MB.
MAX_RATIO_TERM = 2**17


class AudioDecodeError(ValueError):
    """An audio file could not be decoded; names the file and the reason, on one line.

    Args:
        path: the file.
        reason: what is wrong with it, e.g. ``"truncated: the data chunk declares ..."``.

    Example:
        >>> try:
        ...     load_audio("notes.txt")
        ... except AudioDecodeError as error:
        ...     print(error.path, error.reason)
    """

    def __init__(self, path, reason):
        self.path = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
        self.reason = " ".join(str(reason).split())  # one line
        super().__init__(f"{_PREFIX}{self.path}: {self.reason}")

    def __reduce__(self):
        return type(self), (self.path, self.reason)


def _positive_int(value, name):
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer in Hz. Received: {name}={value!r}")
    return int(value)


def _ratio(orig_rate, target_rate):
    divisor = math.gcd(orig_rate, target_rate)
    return target_rate // divisor, orig_rate // divisor


# --------------------------------------------------------------------------------------------
# Resampling


@functools.lru_cache(maxsize=16)
def _lowpass(up, down):
    """The filter ``resample_poly(x, up, down)`` designs by default (before its gain ``up``)."""
    max_rate = max(up, down)
    taps = firwin(
        2 * _ZERO_CROSSINGS * max_rate + 1, 1.0 / max_rate, window=("kaiser", _KAISER_BETA)
    )
    taps.setflags(write=False)
    return taps


def resampled_length(num_samples, orig_rate, target_rate):
    """Output length of :func:`resample` (and of ``resample_poly``): ``ceil(n * up / down)``.

    Args:
        num_samples: input length.
        orig_rate: input rate in Hz.
        target_rate: output rate in Hz.

    Returns:
        The number of output samples, an int.

    Example:
        >>> resampled_length(44100, 44100, 32000)
        32000
    """
    up, down = _ratio(int(orig_rate), int(target_rate))
    return -(-int(num_samples) * up // down)


def input_frames_needed(num_samples, orig_rate, target_rate):
    """Input frames that the first ``num_samples`` outputs of :func:`resample` depend on.

    Output ``m`` is centred on input ``m * down / up`` and its filter reaches
    ``10 * max(up, down) / up`` inputs to either side, so resampling this many leading frames
    and keeping the first ``num_samples`` outputs equals resampling the whole signal and
    cutting it (the tests check it sample for sample).

    Args:
        num_samples: how many leading outputs are wanted.
        orig_rate: input rate in Hz.
        target_rate: output rate in Hz.

    Returns:
        The number of leading input frames to read, an int.

    Example:
        >>> input_frames_needed(32000, 44100, 32000)
        44115
    """
    up, down = _ratio(int(orig_rate), int(target_rate))
    if up == down == 1:
        return int(num_samples)
    reach = _ZERO_CROSSINGS * max(up, down) // up + 2
    return -(-int(num_samples) * down // up) + reach


def resample(waveform, orig_rate, target_rate=32000, axis=-1):
    """Band-limited resampling with ``scipy.signal.resample_poly``, float64 inside.

    ``up / down = target_rate / orig_rate`` in lowest terms; the filter is the one
    ``resample_poly`` designs by default (Kaiser window, beta 5), and the result equals
    ``resample_poly(waveform.astype(np.float64), up, down)`` cast to float32.

    Args:
        waveform: array of samples; any real dtype.
        orig_rate: rate of ``waveform`` in Hz.
        target_rate: rate to produce in Hz, 32000 by default.
        axis: the time axis.

    Returns:
        float32 ``np.ndarray`` with ``ceil(n * target_rate / orig_rate)`` samples along
        ``axis`` (a float32 copy when the rates are equal).

    Example:
        >>> resample(np.zeros((2, 44100)), 44100).shape
        (2, 32000)
    """
    orig_rate = _positive_int(orig_rate, "orig_rate")
    target_rate = _positive_int(target_rate, "target_rate")
    samples = np.asarray(waveform, dtype=np.float64)
    up, down = _ratio(orig_rate, target_rate)
    if up == down == 1:
        return samples.astype(np.float32)
    return resample_poly(samples, up, down, axis=axis, window=_lowpass(up, down)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Decoding


def _libsndfile_reason(error):
    text = getattr(error, "error_string", None) or str(error)
    return " ".join(text.replace("'", "").split()).rstrip(".")


def _truncation(log):
    """The reason a libsndfile log shows a truncated file, or ``None``."""
    for chunk, declared, present in _SHORT_CHUNK.findall(log):
        declared, present = int(declared), int(present)
        if declared > present and declared != _UNKNOWN_SIZE:
            return (
                f"truncated: {_CHUNK_NAMES[chunk]} declares {declared} bytes but only "
                f"{present} are present"
            )
    return None


def _riff_shortfall(path):
    """``(declared, present)`` bytes when a RIFF file is shorter than its header says."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if len(head) < 8 or head[:4] != b"RIFF":
        return None
    declared, present = int.from_bytes(head[4:], "little"), os.path.getsize(path)
    if declared == _UNKNOWN_SIZE or declared + 8 <= present:
        return None
    return declared + 8, present


def _decode(path, frames=None, target_rate=None):
    """``(samples float64 [num_frames, num_channels], rate)``; ``frames(rate)`` caps the read;
    ``target_rate``, when given, must be a rate the file's rate can be resampled to.

    Raises FileNotFoundError or AudioDecodeError.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Audio file not found: {os.fspath(path)!r}.")
    if os.path.getsize(path) == 0:
        raise AudioDecodeError(path, f"the file is empty (0 bytes); {_EXPECTED}")
    try:
        handle = soundfile.SoundFile(path)
    except soundfile.LibsndfileError as error:
        shortfall = _riff_shortfall(path)
        if shortfall:
            reason = (
                f"truncated: the RIFF header declares {shortfall[0]} bytes but the file has "
                f"only {shortfall[1]} (libsndfile: {_libsndfile_reason(error)})"
            )
        else:
            reason = f"libsndfile cannot open it ({_libsndfile_reason(error)}); {_EXPECTED}"
        raise AudioDecodeError(path, reason) from error
    with handle:
        rate, declared, channels = handle.samplerate, handle.frames, handle.channels
        truncated = _truncation(handle.extra_info)
        if truncated:
            raise AudioDecodeError(path, truncated)
        _check_header(path, rate, channels)
        if target_rate is not None and max(_ratio(rate, target_rate)) > MAX_RATIO_TERM:
            up, down = _ratio(rate, target_rate)
            raise AudioDecodeError(
                path,
                f"resampling its {rate} Hz to {target_rate} Hz takes the ratio {up}/{down}, "
                f"whose filter would need {2 * _ZERO_CROSSINGS * max(up, down) + 1} taps; "
                f"expected a rate whose ratio to {target_rate} Hz has terms <= {MAX_RATIO_TERM}",
            )
        if declared < 1:
            raise AudioDecodeError(path, "it holds no audio samples (0 frames)")
        wanted = declared if frames is None else min(declared, frames(rate))
        if wanted * channels > MAX_SAMPLES:
            raise AudioDecodeError(
                path,
                f"its header declares {declared} frames x {channels} channels; reading "
                f"{wanted * channels} samples exceeds the limit of {MAX_SAMPLES} "
                f"(keras_asc.data.audio.MAX_SAMPLES)",
            )
        try:
            samples = handle.read(wanted, dtype="float64", always_2d=True)
        except soundfile.LibsndfileError as error:
            raise AudioDecodeError(
                path,
                "corrupt or truncated: libsndfile failed while decoding it "
                f"({_libsndfile_reason(error)})",
            ) from error
    if len(samples) < wanted:
        raise AudioDecodeError(
            path,
            f"truncated: only {len(samples)} of the {wanted} frames its header declares could "
            "be read",
        )
    finite = np.isfinite(samples)
    if not finite.all():
        frame = int(np.argmin(finite.all(axis=1)))
        raise AudioDecodeError(
            path,
            f"non-finite sample ({samples[frame][~finite[frame]][0]}) at frame {frame}; "
            "expected finite samples (no NaN or Inf)",
        )
    return samples, rate


def _check_header(path, rate, channels):
    """Refuse a declared rate or channel count outside the sane bounds, before any read."""
    if not MIN_SAMPLING_RATE <= rate <= MAX_SAMPLING_RATE:
        raise AudioDecodeError(
            path,
            f"its header declares a sampling rate of {rate} Hz; expected "
            f"{MIN_SAMPLING_RATE} to {MAX_SAMPLING_RATE} Hz",
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioDecodeError(
            path,
            f"its header declares {channels} channels; expected 1 to {MAX_CHANNELS}",
        )


def read_audio(path, dtype="float32"):
    """Read an audio file as it is stored: all channels, its own sampling rate.

    Args:
        path: the audio file.
        dtype: ``"float32"`` or ``"float64"``; integer PCM is divided by ``2**(bits - 1)``.

    Returns:
        ``(samples, sampling_rate)``: ``[num_frames, num_channels]`` in [-1, 1) and an int.

    Raises:
        FileNotFoundError: the file does not exist.
        AudioDecodeError: the file cannot be decoded; names the file and the reason.

    Example:
        >>> samples, rate = read_audio("../shared/data/audio/acoustic_scene.wav")
        >>> samples.shape, rate
        ((441001, 2), 44100)
    """
    samples, rate = _decode(path)
    return samples.astype(dtype, copy=False), rate


def _fit_length(samples, num_samples):
    """Keep the first ``num_samples`` frames, zero-padding at the end if there are fewer."""
    if len(samples) >= num_samples:
        return samples[:num_samples]
    padding = [(0, num_samples - len(samples))] + [(0, 0)] * (samples.ndim - 1)
    return np.pad(samples, padding)


def load_audio(path, sampling_rate=32000, mono=True, num_samples=None):
    """Decode an audio file to float32 samples at ``sampling_rate``.

    Args:
        path: the audio file (any format :func:`read_audio` reads).
        sampling_rate: output rate in Hz (32 kHz by default); any source rate is resampled.
        mono: average the channels (shape ``[num_samples]``); ``False`` keeps them
            (``[num_samples, num_channels]``).
        num_samples: output length: the start is kept and a shorter file is zero-padded at
            the end. ``None`` keeps the whole resampled file.

    Returns:
        float32 ``np.ndarray``.

    Raises:
        FileNotFoundError: the file does not exist.
        AudioDecodeError: the file cannot be decoded; names the file and the reason.

    Example:
        >>> load_audio("audio/airport-lisbon-1000-40000-0-a.wav", num_samples=32000).shape
        (32000,)
    """
    sampling_rate = _positive_int(sampling_rate, "sampling_rate")
    frames = None
    if num_samples is not None:
        if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(
                f"num_samples must be a positive integer or None. Received: {num_samples!r}"
            )
        num_samples = int(num_samples)

        def frames(rate):
            return input_frames_needed(num_samples, rate, sampling_rate)

    samples, rate = _decode(path, frames, sampling_rate)
    if mono:
        samples = samples.mean(axis=1)
    waveform = resample(samples, rate, sampling_rate, axis=0)
    if num_samples is not None:
        waveform = _fit_length(waveform, num_samples)
    return np.ascontiguousarray(waveform)
