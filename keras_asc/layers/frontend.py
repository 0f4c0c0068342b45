"""Log-mel spectrogram front-end (CP-JKU "AugmentMelSTFT") as a Keras 3 layer.

Waveform (batch, samples) at 32 kHz -> normalised log-mel (batch, mel bins, frames, 1), the
F x T x C input every model in keras_asc expects. The front-end has no trainable weights and
is not counted in model MACs or parameters (DCASE rule).
"""

import numbers

import keras
import numpy as np
from keras import ops


def _kaldi_mel(frequency):
    """Kaldi mel scale, ``1127 ln(1 + f / 700)``, for NumPy arrays or backend tensors."""
    if isinstance(frequency, (np.ndarray, numbers.Number)):
        return 1127.0 * np.log1p(np.asarray(frequency, dtype="float64") / 700.0)
    return 1127.0 * ops.log1p(frequency / 700.0)


@keras.saving.register_keras_serializable(package="keras_asc")
class LogMelSpectrogram(keras.layers.Layer):
    """Normalised log-mel spectrogram with CP-JKU training augmentations.

    The recipe, in order: pre-emphasis ``y[n] = x[n + 1] - pre_emphasis * x[n]`` (one sample
    shorter); STFT (symmetric Hann window of ``window_length`` centred in an ``fft_length``
    frame, reflect-padded by ``fft_length // 2`` on both sides) and power ``|X|^2``; a
    Kaldi-style triangular mel filter bank (``mel = 1127 ln(1 + f / 700)``, the Nyquist bin
    weighted zero); ``log(mel + log_offset)``; in training only, frequency masking; finally
    ``(x + normalize_offset) / normalize_scale``.

    In training only (``training=True``) two augmentations are active: the upper band edge is
    drawn uniformly from ``max_frequency_jitter`` once per call (one draw for the whole batch)
    and the mel bank is rebuilt from it; and each example gets its own band of
    ``floor(u * freq_mask_bins)`` consecutive mel bins (``u ~ U[0, 1)``, at a uniformly drawn
    start) set to 0 in the log domain, i.e. to ``normalize_offset / normalize_scale`` after
    normalisation. With ``training=False`` the layer is deterministic and uses the bank for
    ``max_frequency``, computed once at construction.

    Args:
        sampling_rate: sampling rate of the input waveform in Hz.
        fft_length: FFT size in samples; gives ``fft_length // 2 + 1`` frequency bins.
        window_length: length of the symmetric Hann window in samples, at most ``fft_length``.
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
        seed: integer seed of the training-time randomness, or ``None``.
        **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Example:

    >>> frontend = LogMelSpectrogram(hop_length=500)
    >>> waveform = np.random.default_rng(0).normal(size=(2, 32000)).astype("float32")
    >>> frontend(waveform).shape
    (2, 256, 64, 1)

    Reference:
        Koutini et al., "Efficient Training of Audio Transformers with Patchout",
        Interspeech 2022 (the ``AugmentMelSTFT`` front-end, reused by the CP-JKU DCASE
        2023/2024 Task 1 systems); mel bank as in Kaldi ``get_mel_banks`` with VTLN off.
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
        seed=None,
        **kwargs,
    ):
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
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

        # Constants built once in NumPy; call() only converts them to tensors.
        self._window = np.hanning(self.window_length).astype("float32")
        self._inference_bank = self.mel_filter_bank()
        # Mel value of each FFT bin below Nyquist, for the training-time bank.
        bin_hz = np.arange(self.fft_length // 2) * self.sampling_rate / self.fft_length
        self._bin_mel = _kaldi_mel(bin_hz).astype("float32")

    @property
    def _emphasis(self):
        return bool(self.pre_emphasis)

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

    def mel_filter_bank(self, max_frequency=None):
        """Kaldi-style mel filter bank as NumPy, shape ``(fft_length // 2 + 1, num_mel_bins)``.

        Args:
            max_frequency: upper band edge in Hz; defaults to the layer's ``max_frequency``
                (the inference bank).

        Returns:
            float32 array; row k weights FFT bin k (``k * sampling_rate / fft_length`` Hz);
            the last row (Nyquist) is zero, as in the CP-JKU front-end.
        """
        if max_frequency is None:
            max_frequency = self.max_frequency
        if not self.min_frequency < max_frequency <= self.sampling_rate / 2:
            raise ValueError(
                "LogMelSpectrogram.mel_filter_bank: need min_frequency < max_frequency <= "
                f"sampling_rate / 2. Received: max_frequency={max_frequency}"
            )
        bin_hz = np.arange(self.fft_length // 2) * self.sampling_rate / self.fft_length
        bin_mel = _kaldi_mel(bin_hz)[:, None]
        mel_low = _kaldi_mel(self.min_frequency)
        delta = (_kaldi_mel(max_frequency) - mel_low) / (self.num_mel_bins + 1)
        left = mel_low + np.arange(self.num_mel_bins)[None, :] * delta
        up = (bin_mel - left) / delta
        down = (left + 2.0 * delta - bin_mel) / delta
        bank = np.maximum(0.0, np.minimum(up, down))
        bank = np.concatenate([bank, np.zeros((1, self.num_mel_bins))], axis=0)
        return bank.astype("float32")

    def _jittered_filter_bank(self):
        """The mel bank for one upper edge drawn from ``max_frequency_jitter`` (backend ops)."""
        low, high = self.max_frequency_jitter
        max_frequency = keras.random.uniform(
            (), minval=low, maxval=high, dtype="float32", seed=self.seed_generator
        )
        mel_low = float(_kaldi_mel(self.min_frequency))
        delta = (_kaldi_mel(max_frequency) - mel_low) / (self.num_mel_bins + 1)
        left = mel_low + ops.arange(self.num_mel_bins, dtype="float32") * delta
        bin_mel = ops.expand_dims(ops.convert_to_tensor(self._bin_mel), -1)
        up = (bin_mel - left) / delta
        down = (left + 2.0 * delta - bin_mel) / delta
        bank = ops.maximum(0.0, ops.minimum(up, down))
        return ops.pad(bank, [(0, 1), (0, 0)])

    def _frequency_mask(self, logmel):
        """Zero one band of up to ``freq_mask_bins`` mel bins per example (log domain)."""
        batch = ops.shape(logmel)[0]
        width = keras.random.uniform((batch,), dtype="float32", seed=self.seed_generator)
        width = width * self.freq_mask_bins
        start = keras.random.uniform((batch,), dtype="float32", seed=self.seed_generator)
        # torchaudio's iid masking: start drawn against the unrounded width, both floored.
        start = ops.floor(start * (self.num_mel_bins - width))
        end = start + ops.floor(width)
        rows = ops.arange(self.num_mel_bins, dtype="float32")[None, :]
        masked = ops.logical_and(rows >= start[:, None], rows < end[:, None])
        return ops.where(masked[:, :, None, None], ops.zeros_like(logmel), logmel)

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

        if training and self.max_frequency_jitter is not None:
            bank = self._jittered_filter_bank()
        else:
            bank = ops.convert_to_tensor(self._inference_bank)
        mel = ops.matmul(power, bank)  # (batch, frames, mel bins)
        logmel = ops.log(mel + self.log_offset)
        logmel = ops.expand_dims(ops.transpose(logmel, (0, 2, 1)), -1)

        if training and self.freq_mask_bins > 0:
            logmel = self._frequency_mask(logmel)
        logmel = (logmel + self.normalize_offset) / self.normalize_scale
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
                "seed": self.seed,
            }
        )
        return config


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
