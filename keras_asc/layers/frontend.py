"""Log-mel spectrogram front-end as a Keras 3 layer: CP-JKU ``AugmentMelSTFT`` by default, or
the DCASE 2024 Task 1 baseline's torchaudio front-end as a configuration of the same layer.

Waveform (batch, samples) at 32 kHz -> log-mel (batch, mel bins, frames, 1), the F x T x C input
every model in keras_asc expects. The front-end has no trainable weights and is not counted in
model MACs or parameters (DCASE rule).
"""

import math
import numbers

import keras
import numpy as np
from keras import ops

WINDOWS = ("hann_symmetric", "hann_periodic")
MEL_SCALES = ("kaldi", "htk")
MASK_DOMAINS = ("log", "power")
# How a recording reaches ``sampling_rate`` (``keras_asc.data.resampling``, which this layer
# does not import: the decoding workers run without Keras). The layer itself takes waveforms
# already at its rate; every path that decodes files for a model resamples with its
# front-end's ``resampler``.
RESAMPLERS = ("sinc_hann", "soxr_hq", "polyphase")

# ``LogMelSpectrogram`` arguments of the DCASE 2024 Task 1 baseline front-end (torchaudio
# ``MelSpectrogram(32000, n_fft=4096, win_length=3072, hop_length=500, n_mels=256)``, masking
# on the power mel, ``log(x + 1e-5)`` without normalisation): 256 x 65 for a 1-s clip.
DCASE24_BASELINE_FRONTEND = {
    "hop_length": 500,
    "window": "hann_periodic",
    "mel_scale": "htk",
    "max_frequency": 16000.0,
    "max_frequency_jitter": None,
    "pre_emphasis": None,
    "mask_domain": "power",
    "normalize_offset": 0.0,
    "normalize_scale": 1.0,
    # torchaudio's default Resample (windowed sinc, Hann, width 6, rolloff 0.99).
    "resampler": "sinc_hann",
}

# The mel bank is applied as this many matmuls, one per group of consecutive bands, each over
# only the FFT bins the group can weight (about 14 % of the dense bank for 256 bands).
_BANK_GROUPS = 8


def _kaldi_mel(frequency, xp=np):
    """Kaldi mel scale, ``1127 ln(1 + f / 700)`` (``xp``: ``numpy`` or ``keras.ops``)."""
    if xp is np:
        frequency = np.asarray(frequency, dtype="float64")
    return 1127.0 * xp.log1p(frequency / 700.0)


def _kaldi_hz(mel):
    return 700.0 * np.expm1(np.asarray(mel, dtype="float64") / 1127.0)


def _htk_mel(frequency, xp=np):
    """HTK mel scale, ``2595 log10(1 + f / 700)`` (``xp``: ``numpy`` or ``keras.ops``)."""
    if xp is np:
        frequency = np.asarray(frequency, dtype="float64")
    return 2595.0 * xp.log10(1.0 + frequency / 700.0)


def _htk_hz(mel, xp=np):
    """Inverse of ``_htk_mel``: ``700 (10^(mel / 2595) - 1)``."""
    return 700.0 * (xp.power(10.0, mel / 2595.0) - 1.0)


def hann_window(length, periodic=False):
    """Hann window as float32 NumPy, shape ``(length,)``.

    Args:
        length: number of samples.
        periodic: ``False`` for the symmetric window ``0.5 - 0.5 cos(2 pi n / (length - 1))``
            (``numpy.hanning``; zero at both ends), ``True`` for the periodic one
            ``0.5 - 0.5 cos(2 pi n / length)`` (``torch.hann_window`` default; the symmetric
            window of ``length + 1`` without its last sample).

    Returns:
        float32 array of ``length`` samples.

    Example:

    >>> hann_window(4, periodic=True).tolist()
    [0.0, 0.5, 1.0, 0.5]
    """
    n = np.arange(length, dtype="float64")
    if periodic:
        return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)).astype("float32")
    return np.hanning(length).astype("float32")


@keras.saving.register_keras_serializable(package="keras_asc")
class LogMelSpectrogram(keras.layers.Layer):
    """Log-mel spectrogram with training-time augmentation, CP-JKU or DCASE 2024 baseline style.

    The recipe, in order: pre-emphasis ``y[n] = x[n + 1] - pre_emphasis * x[n]`` (one sample
    shorter); STFT (Hann window of ``window_length`` centred in an ``fft_length`` frame,
    reflect-padded by ``fft_length // 2`` on both sides) and power ``|X|^2``; a triangular mel
    filter bank; ``log(mel + log_offset)``; finally ``(x + normalize_offset) / normalize_scale``.

    Two mel banks, both of ``num_mel_bins`` overlapping triangles from ``min_frequency`` to the
    upper band edge, without area normalisation:

    - ``mel_scale="kaldi"`` (CP-JKU): band edges equally spaced in ``1127 ln(1 + f / 700)``,
      triangles linear in mel, the Nyquist bin weighted zero (Kaldi ``get_mel_banks``).
    - ``mel_scale="htk"`` (torchaudio ``melscale_fbanks`` with ``norm=None``): band edges
      equally spaced in ``2595 log10(1 + f / 700)`` and mapped back to Hz, triangles linear in
      Hz, evaluated on all ``fft_length // 2 + 1`` bins including Nyquist (for an upper edge
      at Nyquist the top band falls to zero exactly there).

    In training only (``training=True``) two augmentations are active: the upper band edge is
    drawn uniformly from ``max_frequency_jitter`` once per call (one draw for the whole batch)
    and the bank rebuilt for it; and each example gets its own band of
    ``floor(u * freq_mask_bins)`` consecutive mel bins (``u ~ U[0, 1)``, start
    ``floor(u' * (num_mel_bins - u * freq_mask_bins))``, ``u' ~ U[0, 1)``), as torchaudio
    ``FrequencyMasking(freq_mask_bins, iid_masks=True)``. With ``mask_domain="log"`` the band
    is set to 0 in the log domain (``normalize_offset / normalize_scale`` after
    normalisation); with ``mask_domain="power"`` the power mel is set to 0, so the band reads
    ``log(log_offset)`` before normalisation. With ``training=False`` the layer is
    deterministic and uses the bank for ``max_frequency``, computed once at construction.

    The defaults are the CP-JKU front-end (pre-emphasis 0.97, symmetric window, Kaldi bank to
    15.5 kHz jittered in [15,001, 16,000] Hz, log-domain masking, ``(x + 4.5) / 5``).
    ``DCASE24_BASELINE_FRONTEND`` holds the arguments of the DCASE 2024 Task 1 baseline:
    periodic window, HTK bank to 16 kHz without jitter, no pre-emphasis, masking on the power
    mel, no normalisation.

    Args:
        sampling_rate: sampling rate of the input waveform in Hz.
        fft_length: FFT size in samples; gives ``fft_length // 2 + 1`` frequency bins.
        window_length: length of the Hann window in samples, at most ``fft_length``.
        hop_length: frame step in samples (500 for MofleNet/CP-Mobile, 750 for CP-ResNet).
        num_mel_bins: number of mel bands.
        min_frequency: lower edge of the mel bank in Hz.
        max_frequency: upper edge of the mel bank in Hz at inference, at most Nyquist.
        max_frequency_jitter: ``(low, high)`` range in Hz for the training-time upper edge,
            or ``None`` to keep ``max_frequency`` in training too.
        freq_mask_bins: maximum width of the training-time frequency mask in mel bins;
            0 disables masking.
        pre_emphasis: pre-emphasis coefficient; ``None`` or 0 disables pre-emphasis (and the
            clip keeps all its samples).
        log_offset: added to the mel energies before the logarithm.
        normalize_offset: added to the log-mel before scaling.
        normalize_scale: the log-mel (plus offset) is divided by this.
        window: ``"hann_symmetric"`` (``numpy.hanning``) or ``"hann_periodic"``
            (``torch.hann_window``); see ``hann_window``.
        mel_scale: ``"kaldi"`` or ``"htk"``, the mel bank described above.
        mask_domain: ``"log"`` or ``"power"``, where the frequency mask sets values to 0.
        seed: integer seed of the training-time randomness, or ``None``.
        resampler: how a recording at another rate is brought to ``sampling_rate`` before
            this layer: ``"soxr_hq"`` (``librosa.load``'s default, the CP-JKU systems'),
            ``"sinc_hann"`` (torchaudio's default ``Resample``, the DCASE 2024 baseline's) or
            ``"polyphase"`` (``scipy.signal.resample_poly``). Recorded in the config; used by
            the cache, evaluate, predict, submit and the int8 front-end sidecar.
        **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Example:

    >>> frontend = LogMelSpectrogram(hop_length=500)
    >>> waveform = np.random.default_rng(0).normal(size=(2, 32000)).astype("float32")
    >>> tuple(frontend(waveform).shape)
    (2, 256, 64, 1)
    >>> baseline = LogMelSpectrogram(**DCASE24_BASELINE_FRONTEND)
    >>> tuple(baseline(waveform).shape)
    (2, 256, 65, 1)

    Reference:
        Koutini et al., "Efficient Training of Audio Transformers with Patchout",
        Interspeech 2022 (the ``AugmentMelSTFT`` front-end, reused by the CP-JKU DCASE
        2023/2024 Task 1 systems); mel bank as in Kaldi ``get_mel_banks`` with VTLN off.
        DCASE 2024 Task 1 baseline (CPJKU/dcase2024_task1_baseline, ``run_training.py``):
        torchaudio ``MelSpectrogram`` and ``FrequencyMasking(48, iid_masks=True)``.
    """

    def __init__(
        self,
        sampling_rate=32000,
        fft_length=4096,
        window_length=3072,
        hop_length=500,
        num_mel_bins=256,
        min_frequency=0.0,
        max_frequency=15500.0,
        max_frequency_jitter=(15001.0, 16000.0),
        freq_mask_bins=48,
        pre_emphasis=0.97,
        log_offset=1e-5,
        normalize_offset=4.5,
        normalize_scale=5.0,
        window="hann_symmetric",
        mel_scale="kaldi",
        mask_domain="log",
        seed=None,
        resampler="soxr_hq",
        **kwargs,
    ):
        # Float32 under any global policy (mixed precision): the waveform is not rounded to
        # 16 bits on the way in, and the STFT, filter bank and log run in float32; the
        # network's first layer casts the output to its own compute dtype.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        for arg, value in (
            ("sampling_rate", sampling_rate),
            ("fft_length", fft_length),
            ("window_length", window_length),
            ("hop_length", hop_length),
            ("num_mel_bins", num_mel_bins),
        ):
            if not _is_int(value) or value <= 0:
                raise ValueError(
                    f"LogMelSpectrogram: `{arg}` must be a positive integer. Received: {arg}={value!r}"
                )
        if window_length > fft_length:
            raise ValueError(
                "LogMelSpectrogram: `window_length` must be at most `fft_length`. "
                f"Received: window_length={window_length}, fft_length={fft_length}"
            )
        nyquist = sampling_rate / 2
        if not 0.0 <= min_frequency < max_frequency <= nyquist:
            raise ValueError(
                "LogMelSpectrogram: need 0 <= min_frequency < max_frequency <= sampling_rate / 2 "
                f"(= {nyquist}). Received: min_frequency={min_frequency}, "
                f"max_frequency={max_frequency}"
            )
        if max_frequency_jitter is not None:
            if len(max_frequency_jitter) != 2:
                raise ValueError(
                    "LogMelSpectrogram: `max_frequency_jitter` must be None or a (low, high) "
                    f"pair in Hz. Received: max_frequency_jitter={max_frequency_jitter!r}"
                )
            low, high = (float(v) for v in max_frequency_jitter)
            if not min_frequency < low <= high <= nyquist:
                raise ValueError(
                    "LogMelSpectrogram: `max_frequency_jitter` (low, high) needs "
                    f"min_frequency < low <= high <= sampling_rate / 2 (= {nyquist}). "
                    f"Received: max_frequency_jitter={max_frequency_jitter!r}, "
                    f"min_frequency={min_frequency}"
                )
            max_frequency_jitter = (low, high)
        if not _is_int(freq_mask_bins) or not 0 <= freq_mask_bins <= num_mel_bins:
            raise ValueError(
                "LogMelSpectrogram: `freq_mask_bins` must be an integer in [0, num_mel_bins] "
                f"(= {num_mel_bins}). Received: freq_mask_bins={freq_mask_bins!r}"
            )
        if pre_emphasis is not None and not 0.0 <= pre_emphasis < 1.0:
            raise ValueError(
                "LogMelSpectrogram: `pre_emphasis` must be None or in [0, 1). "
                f"Received: pre_emphasis={pre_emphasis!r}"
            )
        if not log_offset > 0:
            raise ValueError(
                f"LogMelSpectrogram: `log_offset` must be > 0. Received: log_offset={log_offset!r}"
            )
        if normalize_scale == 0:
            raise ValueError("LogMelSpectrogram: `normalize_scale` must be non-zero. Received: 0")
        for arg, value, accepted in (
            ("window", window, WINDOWS),
            ("mel_scale", mel_scale, MEL_SCALES),
            ("mask_domain", mask_domain, MASK_DOMAINS),
            ("resampler", resampler, RESAMPLERS),
        ):
            if value not in accepted:
                raise ValueError(
                    f"LogMelSpectrogram: `{arg}` must be one of {', '.join(map(repr, accepted))}. "
                    f"Received: {arg}={value!r}"
                )

        self.sampling_rate = int(sampling_rate)
        self.fft_length = int(fft_length)
        self.window_length = int(window_length)
        self.hop_length = int(hop_length)
        self.num_mel_bins = int(num_mel_bins)
        self.min_frequency = float(min_frequency)
        self.max_frequency = float(max_frequency)
        self.max_frequency_jitter = max_frequency_jitter
        self.freq_mask_bins = int(freq_mask_bins)
        self.pre_emphasis = None if pre_emphasis is None else float(pre_emphasis)
        self.log_offset = float(log_offset)
        self.normalize_offset = float(normalize_offset)
        self.normalize_scale = float(normalize_scale)
        self.window = window
        self.mel_scale = mel_scale
        self.mask_domain = mask_domain
        self.resampler = resampler
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

        # Constants built once in NumPy; call() only converts them to tensors.
        self._window = hann_window(self.window_length, periodic=window == "hann_periodic")
        num_bins = self.fft_length // 2 + 1
        self._bin_hz = np.arange(num_bins) * self.sampling_rate / self.fft_length
        self._bin_mel = _kaldi_mel(self._bin_hz)
        self._bank_blocks = tuple(self._bank_layout())
        inference_bank = self.mel_filter_bank()
        self._inference_blocks = tuple(
            inference_bank[rows[0] : rows[1], bands[0] : bands[1]]
            for rows, bands in self._bank_blocks
        )

    @property
    def _emphasis(self):
        return bool(self.pre_emphasis)

    def analysis_window(self):
        """The STFT window as float32 NumPy, shape ``(window_length,)``; the layer centres it
        in each ``fft_length`` frame (zeros on both sides)."""
        return self._window.copy()

    def num_frames(self, num_samples):
        """Number of STFT frames for a clip of ``num_samples`` input samples."""
        length = int(num_samples) - (1 if self._emphasis else 0)
        return 1 + length // self.hop_length

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(
                "LogMelSpectrogram expects a (batch, num_samples) waveform. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        num_samples = input_shape[-1]
        frames = None if num_samples is None else self.num_frames(num_samples)
        return (input_shape[0], self.num_mel_bins, frames, 1)

    def build(self, input_shape):
        num_samples = input_shape[-1]
        if num_samples is not None:
            length = num_samples - (1 if self._emphasis else 0)
            # Reflect padding by fft_length // 2 needs more samples than the pad.
            if length <= self.fft_length // 2:
                raise ValueError(
                    f"LogMelSpectrogram: clips must be longer than fft_length // 2 "
                    f"(= {self.fft_length // 2}) samples after pre-emphasis. "
                    f"Received: num_samples={num_samples}"
                )

    # --- mel filter bank ----------------------------------------------------------------------

    def _band_edges_hz(self, max_frequency):
        """The ``num_mel_bins + 2`` band edges in Hz (NumPy float64) for an upper edge."""
        points = np.arange(self.num_mel_bins + 2)
        if self.mel_scale == "kaldi":
            low = _kaldi_mel(self.min_frequency)
            step = (_kaldi_mel(max_frequency) - low) / (self.num_mel_bins + 1)
            return _kaldi_hz(low + points * step)
        low = _htk_mel(self.min_frequency)
        step = (_htk_mel(max_frequency) - low) / (self.num_mel_bins + 1)
        return _htk_hz(low + points * step)

    def _bank_layout(self):
        """``((first row, end row), (first band, end band))`` of the bank blocks ``call`` uses.

        Band j can be non-zero only strictly between its outer edges, and both edges rise with
        the upper band edge, so the rows a group of bands may weight, for any upper edge the
        layer uses (``max_frequency`` and the jitter range), lie between the group's lowest
        left edge at the smallest upper edge and its highest right edge at the largest (with
        a bin or two of margin). Falls back to the dense bank when blocking saves little.
        """
        num_bins = self.fft_length // 2 + 1
        upper_edges = [self.max_frequency, *(self.max_frequency_jitter or ())]
        left = self._band_edges_hz(min(upper_edges))[:-2]
        right = self._band_edges_hz(max(upper_edges))[2:]
        bin_width = self.sampling_rate / self.fft_length
        bounds = np.linspace(0, self.num_mel_bins, min(_BANK_GROUPS, self.num_mel_bins) + 1)
        bounds = np.unique(np.round(bounds).astype(int))
        blocks = []
        for first, end in zip(bounds[:-1], bounds[1:], strict=True):
            row_first = max(0, math.floor(left[first] / bin_width) - 1)
            row_end = min(num_bins, math.ceil(right[end - 1] / bin_width) + 2)
            row_end = max(row_end, row_first + 1)
            blocks.append(((row_first, row_end), (int(first), int(end))))
        blocked = sum((r[1] - r[0]) * (b[1] - b[0]) for r, b in blocks)
        if blocked > 0.5 * num_bins * self.num_mel_bins:
            return [((0, num_bins), (0, self.num_mel_bins))]
        return blocks

    def _filter_bank(self, max_frequency, xp):
        """The dense mel bank ``(fft_length // 2 + 1, num_mel_bins)`` for an upper edge.

        ``xp`` is ``numpy`` (float64, ``max_frequency`` a number) or ``keras.ops`` (float32,
        ``max_frequency`` a scalar tensor, for the training-time jitter).
        """
        dtype = "float64" if xp is np else "float32"

        def constant(array):
            array = np.asarray(array)[:, None]
            return array if xp is np else ops.convert_to_tensor(array.astype("float32"))

        if self.mel_scale == "kaldi":
            # Triangles linear in mel: rise over [left, left + step], fall to left + 2 step.
            low = float(_kaldi_mel(self.min_frequency))
            step = (_kaldi_mel(max_frequency, xp) - low) / (self.num_mel_bins + 1)
            left = low + xp.arange(self.num_mel_bins, dtype=dtype) * step
            position = constant(self._bin_mel)
            rising = (position - left) / step
            falling = (left + 2.0 * step - position) / step
        else:
            # Triangles linear in Hz between band edges equally spaced in HTK mel.
            low = float(_htk_mel(self.min_frequency))
            step = (_htk_mel(max_frequency, xp) - low) / (self.num_mel_bins + 1)
            edges = _htk_hz(low + xp.arange(self.num_mel_bins + 2, dtype=dtype) * step, xp)
            left, center, right = edges[:-2], edges[1:-1], edges[2:]
            position = constant(self._bin_hz)
            rising = (position - left) / (center - left)
            falling = (right - position) / (right - center)
        bank = xp.maximum(0.0, xp.minimum(rising, falling))
        if self.mel_scale == "kaldi":
            # Kaldi's bank has fft_length // 2 rows: the Nyquist bin gets weight zero.
            bank = bank * constant(np.arange(self._bin_hz.size) < self._bin_hz.size - 1)
        return bank

    def mel_filter_bank(self, max_frequency=None):
        """The mel filter bank as NumPy, shape ``(fft_length // 2 + 1, num_mel_bins)``.

        Args:
            max_frequency: upper band edge in Hz; defaults to the layer's ``max_frequency``
                (the inference bank).

        Returns:
            float32 array; row k weights FFT bin k (``k * sampling_rate / fft_length`` Hz).
            With ``mel_scale="kaldi"`` the last row (Nyquist) is zero, as in the CP-JKU
            front-end; with ``"htk"`` it is computed like the others.

        Example:

        >>> bank = LogMelSpectrogram(**DCASE24_BASELINE_FRONTEND).mel_filter_bank()
        >>> bank.shape
        (2049, 256)
        """
        if max_frequency is None:
            max_frequency = self.max_frequency
        if not self.min_frequency < max_frequency <= self.sampling_rate / 2:
            raise ValueError(
                "LogMelSpectrogram.mel_filter_bank: need min_frequency < max_frequency <= "
                f"sampling_rate / 2. Received: max_frequency={max_frequency}"
            )
        return self._filter_bank(float(max_frequency), np).astype("float32")

    def _jittered_filter_bank(self):
        """The mel bank for one upper edge drawn from ``max_frequency_jitter`` (backend ops)."""
        low, high = self.max_frequency_jitter
        max_frequency = keras.random.uniform(
            (), minval=low, maxval=high, dtype="float32", seed=self.seed_generator
        )
        return self._filter_bank(max_frequency, ops)

    def _apply_filter_bank(self, power, training):
        """(batch, frames, fft bins) power -> (batch, frames, mel bins), one matmul per block."""
        if training and self.max_frequency_jitter is not None:
            # Built dense (a few ops on 2049 x 256, cheap next to the STFT), then cut up.
            bank = self._jittered_filter_bank()
            weights = [
                bank[rows[0] : rows[1], bands[0] : bands[1]] for rows, bands in self._bank_blocks
            ]
        else:
            weights = [ops.convert_to_tensor(block) for block in self._inference_blocks]
        if len(weights) == 1 and self._bank_blocks[0][0] == (0, self.fft_length // 2 + 1):
            return ops.matmul(power, weights[0])
        return ops.concatenate(
            [
                ops.matmul(power[..., first:end], block)
                for ((first, end), _), block in zip(self._bank_blocks, weights, strict=True)
            ],
            axis=-1,
        )

    # --- augmentation and forward pass ----------------------------------------------------------

    def _frequency_mask(self, batch):
        """(batch, num_mel_bins) booleans: per example one band of up to ``freq_mask_bins``."""
        width = keras.random.uniform((batch,), dtype="float32", seed=self.seed_generator)
        width = width * self.freq_mask_bins
        start = keras.random.uniform((batch,), dtype="float32", seed=self.seed_generator)
        # torchaudio's iid masking: start drawn against the unrounded width, both floored.
        start = ops.floor(start * (self.num_mel_bins - width))
        end = start + ops.floor(width)
        rows = ops.arange(self.num_mel_bins, dtype="float32")[None, :]
        return ops.logical_and(rows >= start[:, None], rows < end[:, None])

    def call(self, inputs, training=False):
        x = ops.cast(inputs, "float32")
        if self._emphasis:
            x = x[:, 1:] - self.pre_emphasis * x[:, :-1]
        real, imag = ops.stft(
            x,
            sequence_length=self.window_length,
            sequence_stride=self.hop_length,
            fft_length=self.fft_length,
            window=ops.convert_to_tensor(self._window),
            center=True,
        )
        power = ops.square(real) + ops.square(imag)  # (batch, frames, fft bins)
        mel = self._apply_filter_bank(power, training)  # (batch, frames, mel bins)

        masked = None
        if training and self.freq_mask_bins > 0:
            masked = self._frequency_mask(ops.shape(mel)[0])
            if self.mask_domain == "power":
                mel = ops.where(masked[:, None, :], ops.zeros_like(mel), mel)
        logmel = ops.log(mel + self.log_offset)
        logmel = ops.expand_dims(ops.transpose(logmel, (0, 2, 1)), -1)
        if masked is not None and self.mask_domain == "log":
            logmel = ops.where(masked[:, :, None, None], ops.zeros_like(logmel), logmel)
        if self.normalize_offset != 0.0:
            logmel = logmel + self.normalize_offset
        if self.normalize_scale != 1.0:
            logmel = logmel / self.normalize_scale
        return ops.cast(logmel, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "sampling_rate": self.sampling_rate,
                "fft_length": self.fft_length,
                "window_length": self.window_length,
                "hop_length": self.hop_length,
                "num_mel_bins": self.num_mel_bins,
                "min_frequency": self.min_frequency,
                "max_frequency": self.max_frequency,
                "max_frequency_jitter": self.max_frequency_jitter,
                "freq_mask_bins": self.freq_mask_bins,
                "pre_emphasis": self.pre_emphasis,
                "log_offset": self.log_offset,
                "normalize_offset": self.normalize_offset,
                "normalize_scale": self.normalize_scale,
                "window": self.window,
                "mel_scale": self.mel_scale,
                "mask_domain": self.mask_domain,
                "seed": self.seed,
                "resampler": self.resampler,
            }
        )
        return config


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
