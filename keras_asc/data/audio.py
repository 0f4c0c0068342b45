"""Audio files in, float32 waveforms out: libsndfile decodes, a named resampler resamples.

Two well-kept libraries do the work:

* ``soundfile`` (libsndfile, bundled in its wheel) decodes: WAV with 8/16/24/32-bit PCM or
  32/64-bit float samples, plain or ``WAVE_FORMAT_EXTENSIBLE`` and with chunks in any order;
  RF64 and W64 (WAV beyond 4 GB), AIFF, FLAC, OGG/Vorbis, Opus and, from libsndfile 1.1, MP3.
  Integer PCM comes out divided by ``2**(bits - 1)``, exactly (a 24-bit sample is exact in
  float32 too).
* ``keras_asc.data.resampling`` resamples with the resampler the model's front-end names:
  ``"sinc_hann"`` (torchaudio's default, the DCASE 2024 baseline's), ``"soxr_hq"`` (the
  ``soxr`` package, librosa's default, the CP-JKU systems') or ``"polyphase"``
  (``scipy.signal.resample_poly``), computed in float64; the result is returned as float32.

What little is ours:

* mono is the channel mean, in float64;
* every failure is an :class:`AudioDecodeError` with a one-line message naming the file, the
  reason and what was expected, in our words (libsndfile's, such as "SF_INFO struct
  incomplete", are translated; see ``_LIBSNDFILE_REASONS``);
* a sample whose magnitude exceeds :data:`MAX_PEAK` (16, i.e. 24 dB above full scale) is
  refused with the file's peak. Integer PCM cannot exceed full scale (1.0), and a float
  recording or mix overshoots it by a few dB at most; a peak above 16 means the file is in
  another scale (float samples stored in 16-bit integer scale peak near 32768) or garbage
  (1e30). Below the bound every front-end stays finite by a wide margin: a 4,096-point power
  spectrum of a full-scale-16 frame is at most (4096 * 16 * 2)**2 = 1.7e10 (the 2 for
  pre-emphasis), far from float32's 3.4e38;
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

This module does not use TensorFlow: the cache is built by worker processes that need none,
and the ``tf.data`` pipeline calls :func:`load_audio` through ``tf.numpy_function``
(``keras_asc.data.pipeline``).

Example:
    >>> from keras_asc.data.audio import load_audio
    >>> waveform = load_audio("audio/airport-lisbon-1000-40000-0-a.wav")  # 32 kHz mono
    >>> waveform.shape, waveform.dtype
    ((32000,), dtype('float32'))
"""

import math
import os
import re

import numpy as np
import soundfile

from keras_asc.data import resampling as _resampling
from keras_asc.data.resampling import (
    DEFAULT_RESAMPLER,
    RESAMPLERS,
    check_resampler,
    resampled_length,
)

__all__ = [
    "DEFAULT_RESAMPLER",
    "MAX_PEAK",
    "RESAMPLERS",
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
# libsndfile's error strings (lower-cased fragments) in our words. Any other string becomes
# the generic reason below; libsndfile's own wording never reaches the user.
_LIBSNDFILE_REASONS = (
    ("format not recognised", "its first bytes are not the header of any audio format"),
    ("no 'data' chunk", "its WAV header has no data chunk (no samples follow the header)"),
    ("'fmt ' chunk", "its WAV format chunk (rate, channels, sample type) is malformed"),
    ("format chunk", "its WAV format chunk (rate, channels, sample type) is malformed"),
    ("unimplemented format", "its samples are in an encoding this decoder does not read"),
    ("too many channels", "its header declares an impossible channel count"),
    ("channel count is zero", "its header declares 0 channels"),
    (
        "sf_info struct incomplete",
        "its header gives no usable sampling rate, channel count or sample format",
    ),
    ("bit width", "its header declares an invalid sample width"),
    ("unsupported", "its samples are in an encoding this decoder does not read"),
)
_GENERIC_REASON = "its header is corrupt or not of an audio format"
# A sample above this magnitude (full scale is 1.0) is refused: see the module docstring.
MAX_PEAK = 16.0

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
# Resampling (keras_asc.data.resampling; re-exported here with the same defaults)


def input_frames_needed(num_samples, orig_rate, target_rate, resampler=DEFAULT_RESAMPLER):
    """Input frames the first ``num_samples`` outputs of :func:`resample` depend on.

    See ``keras_asc.data.resampling.input_frames_needed``; reading this many leading frames and
    cutting the resampled result equals resampling the whole file and cutting it.

    Example:
        >>> input_frames_needed(32000, 44100, 32000, "polyphase")
        44115
    """
    return _resampling.input_frames_needed(num_samples, orig_rate, target_rate, resampler)


def resample(waveform, orig_rate, target_rate=32000, axis=-1, resampler=DEFAULT_RESAMPLER):
    """Resample with a named resampler (``keras_asc.data.resampling.resample``), float64 inside.

    Args:
        waveform: array of samples; any real dtype.
        orig_rate: rate of ``waveform`` in Hz.
        target_rate: rate to produce in Hz, 32000 by default.
        axis: the time axis.
        resampler: ``"sinc_hann"``, ``"soxr_hq"`` or ``"polyphase"``.

    Returns:
        float32 ``np.ndarray`` with ``ceil(n * target_rate / orig_rate)`` samples along
        ``axis`` (a float32 copy when the rates are equal).

    Example:
        >>> resample(np.zeros((2, 44100)), 44100).shape
        (2, 32000)
    """
    return _resampling.resample(waveform, orig_rate, target_rate, axis=axis, method=resampler)


# --------------------------------------------------------------------------------------------
# Decoding


def _libsndfile_reason(error):
    """libsndfile's complaint in our words (see ``_LIBSNDFILE_REASONS``)."""
    text = (getattr(error, "error_string", None) or str(error)).lower()
    for fragment, reason in _LIBSNDFILE_REASONS:
        if fragment in text:
            return reason
    return _GENERIC_REASON


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


def _wav_header_reason(path):
    """For a WAV that libsndfile refuses: its declared rate or channel count when out of
    bounds (the precise reason, where libsndfile says "SF_INFO struct incomplete"), else None."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        return None
    position = 12
    while position + 8 <= len(head):
        chunk, size = (
            head[position : position + 4],
            int.from_bytes(head[position + 4 : position + 8], "little"),
        )
        if chunk == b"fmt " and position + 16 <= len(head):
            channels = int.from_bytes(head[position + 10 : position + 12], "little")
            rate = int.from_bytes(head[position + 12 : position + 16], "little")
            try:
                _check_header(path, rate, channels)
            except AudioDecodeError as error:
                return error.reason
            return None
        position += 8 + size + (size & 1)
    return None


def _decode(path, frames=None, target_rate=None, resampler=DEFAULT_RESAMPLER):
    """``(samples float64 [num_frames, num_channels], rate)``; ``frames(rate)`` caps the read;
    ``target_rate``, when given, must be a rate the file's rate can be resampled to with
    ``resampler``.

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
                f"only {shortfall[1]}"
            )
        else:
            reason = _wav_header_reason(path) or f"{_libsndfile_reason(error)}; {_EXPECTED}"
        raise AudioDecodeError(path, reason) from error
    with handle:
        rate, declared, channels = handle.samplerate, handle.frames, handle.channels
        truncated = _truncation(handle.extra_info)
        if truncated:
            raise AudioDecodeError(path, truncated)
        _check_header(path, rate, channels)
        taps = (
            None if target_rate is None else _resampling.filter_taps(rate, target_rate, resampler)
        )
        if taps is not None and max(_ratio(rate, target_rate)) > MAX_RATIO_TERM:
            up, down = _ratio(rate, target_rate)
            raise AudioDecodeError(
                path,
                f"resampling its {rate} Hz to {target_rate} Hz takes the ratio {up}/{down}, "
                f"whose filter would need {taps} taps; expected a rate whose ratio to "
                f"{target_rate} Hz has terms <= {MAX_RATIO_TERM}",
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
                "corrupt or truncated: decoding stopped part-way through its audio data",
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
    peak = float(np.max(np.abs(samples)))
    if peak > MAX_PEAK:
        frame = int(np.argmax(np.abs(samples).max(axis=1)))
        raise AudioDecodeError(
            path,
            f"its peak sample magnitude is {peak:.6g} (at frame {frame}), far outside full "
            f"scale (1.0); expected samples within +-{MAX_PEAK:g} (float samples in integer "
            "scale must be divided by 2**(bits - 1))",
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


def load_audio(path, sampling_rate=32000, mono=True, num_samples=None, resampler=DEFAULT_RESAMPLER):
    """Decode an audio file to float32 samples at ``sampling_rate``.

    Args:
        path: the audio file (any format :func:`read_audio` reads).
        sampling_rate: output rate in Hz (32 kHz by default); any source rate is resampled.
        mono: average the channels (shape ``[num_samples]``); ``False`` keeps them
            (``[num_samples, num_channels]``).
        num_samples: output length: the start is kept and a shorter file is zero-padded at
            the end. ``None`` keeps the whole resampled file.
        resampler: how another rate is brought to ``sampling_rate``: ``"soxr_hq"`` (the
            default, as ``librosa.load``), ``"sinc_hann"`` (as torchaudio's ``Resample``)
            or ``"polyphase"`` (``scipy.signal.resample_poly``); a model's is
            ``model.frontend.resampler``.

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
    check_resampler(resampler)
    frames = None
    if num_samples is not None:
        if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(
                f"num_samples must be a positive integer or None. Received: {num_samples!r}"
            )
        num_samples = int(num_samples)

        def frames(rate):
            return input_frames_needed(num_samples, rate, sampling_rate, resampler)

    samples, rate = _decode(path, frames, sampling_rate, resampler)
    if mono:
        samples = samples.mean(axis=1)
    waveform = resample(samples, rate, sampling_rate, axis=0, resampler=resampler)
    if num_samples is not None:
        waveform = _fit_length(waveform, num_samples)
    return np.ascontiguousarray(waveform)
