"""Circular time roll of waveforms."""

import numbers

import tensorflow as tf

from keras_asc.augment.base import WaveformAugmentation, check_probability, check_waveforms


class TimeRoll(WaveformAugmentation):
    """Roll each clip circularly in time by a random whole number of samples.

    With probability ``p`` per clip, the clip is rolled by a shift drawn uniformly from the
    integers in [-max_shift, +max_shift], ``max_shift = round(max_shift_seconds *
    sampling_rate)`` (4,000 samples for 125 ms at 32 kHz). Samples leaving one end re-enter at
    the other, so the clip's content and energy are kept. Applies to every device.

    Args:
        max_shift_seconds: largest shift in either direction, in seconds.
        sampling_rate: sampling rate of the waveforms, in Hz.
        p: probability of rolling each clip.

    Example:
        >>> roll = TimeRoll(max_shift_seconds=0.125, sampling_rate=32000)
        >>> rolled = roll(waveforms, devices, seed=tf.constant([1, 2]))

    Reference:
        MofleNet technical report, DCASE 2024 Task 1 (roll of +-125 ms after the device
        impulse response, following the CP-JKU Task 1 systems).
    """

    def __init__(self, max_shift_seconds=0.125, sampling_rate=32000, p=1.0):
        if (
            isinstance(max_shift_seconds, bool)
            or not isinstance(max_shift_seconds, numbers.Real)
            or max_shift_seconds < 0
        ):
            raise ValueError(
                f"max_shift_seconds must be a number >= 0. Received: max_shift_seconds={max_shift_seconds!r}"
            )
        if (
            isinstance(sampling_rate, bool)
            or not isinstance(sampling_rate, numbers.Integral)
            or sampling_rate <= 0
        ):
            raise ValueError(
                f"sampling_rate must be a positive integer (Hz). Received: sampling_rate={sampling_rate!r}"
            )
        self.max_shift_seconds = float(max_shift_seconds)
        self.sampling_rate = int(sampling_rate)
        self.p = check_probability(p)

    @property
    def max_shift(self):
        """The largest shift in samples."""
        return int(round(self.max_shift_seconds * self.sampling_rate))

    def draw(self, batch_size, seed):
        """The random choices for one batch.

        Args:
            batch_size: number of clips (int or scalar tensor).
            seed: integer tensor of shape [2].

        Returns:
            ``{"shift": int32 tensor (batch,)}``: the shift of each clip in samples (positive
            moves content later), 0 for clips not selected by ``p``.
        """
        apply_seed, shift_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
        apply = tf.random.stateless_uniform([batch_size], seed=apply_seed) < self.p
        shift = tf.random.stateless_uniform(
            [batch_size],
            seed=shift_seed,
            minval=-self.max_shift,
            maxval=self.max_shift + 1,
            dtype=tf.int32,
        )
        return {"shift": tf.where(apply, shift, tf.zeros_like(shift))}

    def __call__(self, waveforms, devices, seed):
        waveforms = check_waveforms(waveforms, "TimeRoll")
        if self.p == 0.0 or self.max_shift == 0:
            return waveforms
        shift = self.draw(tf.shape(waveforms)[0], seed)["shift"]
        num_samples = (
            waveforms.shape[1] if waveforms.shape[1] is not None else tf.shape(waveforms)[1]
        )
        # A per-row roll as one gather: output[i, t] = input[i, (t - shift_i) mod n].
        indices = tf.math.floormod(
            tf.range(num_samples)[tf.newaxis, :] - shift[:, tf.newaxis], num_samples
        )
        rolled = tf.gather(waveforms, indices, batch_dims=1)
        rolled.set_shape(waveforms.shape)
        return rolled

    def get_config(self):
        return {
            "max_shift_seconds": self.max_shift_seconds,
            "sampling_rate": self.sampling_rate,
            "p": self.p,
        }
