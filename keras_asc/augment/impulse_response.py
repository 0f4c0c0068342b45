"""Device impulse response (DIR) augmentation."""

import numbers
import os

import numpy as np
import tensorflow as tf

from keras_asc.augment.base import WaveformAugmentation, check_probability, check_waveforms
from keras_asc.data.audio import load_audio


class DeviceImpulseResponse(WaveformAugmentation):
    """Convolve clips of chosen devices with a microphone impulse response drawn at random.

    Every ``.wav`` file in ``directory`` is read once, at construction, and resampled to
    ``sampling_rate``. Per clip, with probability ``p`` and only when the clip's device is in
    ``devices``, one response is picked uniformly; the clip is convolved with it (full
    convolution, first ``len(x)`` samples kept, no normalisation), which makes a device-A
    recording sound as if captured by another microphone. Other clips are returned unchanged.

    Args:
        directory: folder of impulse responses as WAV files (for example the 66 MicIRP
            responses). Subfolders are not searched.
        p: probability of convolving each eligible clip.
        devices: device ids whose clips are eligible.
        sampling_rate: sampling rate of the waveforms, in Hz; responses are resampled to it.

    Example:
        >>> dir_augment = DeviceImpulseResponse("micirp_dirs", p=0.6)
        >>> augmented = dir_augment(waveforms, devices, seed=tf.constant([1, 2]))

    Reference:
        Morocutti et al., "Device-Robust Acoustic Scene Classification via Impulse Response
        Augmentation", EUSIPCO 2023; MofleNet technical report, DCASE 2024 Task 1 (p = 0.6).
    """

    def __init__(self, directory, p=0.6, devices=("a",), sampling_rate=32000):
        if isinstance(devices, str) or not all(isinstance(d, str) and d for d in devices):
            raise ValueError(
                f"devices must be a sequence of device ids such as ('a',). Received: devices={devices!r}"
            )
        if len(devices) == 0:
            raise ValueError(
                f"devices must name at least one device. Received: devices={devices!r}"
            )
        if (
            isinstance(sampling_rate, bool)
            or not isinstance(sampling_rate, numbers.Integral)
            or sampling_rate <= 0
        ):
            raise ValueError(
                f"sampling_rate must be a positive integer (Hz). Received: sampling_rate={sampling_rate!r}"
            )
        self.directory = os.fspath(directory)
        self.p = check_probability(p)
        self.devices = tuple(devices)
        self.sampling_rate = int(sampling_rate)
        self.filenames, responses = _load_impulse_responses(self.directory, self.sampling_rate)
        self.lengths = tf.constant([len(r) for r in responses], dtype=tf.int32)
        padded = np.zeros((len(responses), max(len(r) for r in responses)), dtype=np.float32)
        for row, response in zip(padded, responses, strict=True):
            row[: len(response)] = response
        # Zero padding at the end leaves the first len(x) samples of the convolution unchanged,
        # so one padded tensor serves every response.
        self.impulse_responses = tf.constant(padded)
        self._device_ids = tf.constant(self.devices)

    @property
    def num_impulse_responses(self):
        """How many responses were loaded (one per ``.wav`` file)."""
        return len(self.filenames)

    def draw(self, devices, seed):
        """The random choices for one batch.

        Args:
            devices: ``tf.string`` tensor (batch,) of device ids.
            seed: integer tensor of shape [2].

        Returns:
            ``{"apply": bool (batch,), "impulse_response": int32 (batch,)}``: whether each clip
            is convolved and the index (into ``filenames``) of the response drawn for it.
        """
        devices = tf.convert_to_tensor(devices, dtype=tf.string)
        batch_size = tf.shape(devices)[0]
        apply_seed, choice_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
        eligible = tf.reduce_any(
            tf.equal(devices[:, tf.newaxis], self._device_ids[tf.newaxis, :]), axis=1
        )
        apply = tf.logical_and(
            eligible, tf.random.stateless_uniform([batch_size], seed=apply_seed) < self.p
        )
        choice = tf.random.stateless_uniform(
            [batch_size],
            seed=choice_seed,
            minval=0,
            maxval=self.num_impulse_responses,
            dtype=tf.int32,
        )
        return {"apply": apply, "impulse_response": choice}

    def __call__(self, waveforms, devices, seed):
        waveforms = check_waveforms(waveforms, "DeviceImpulseResponse")
        if self.p == 0.0:
            return waveforms
        devices = tf.convert_to_tensor(devices, dtype=tf.string)
        if devices.shape.rank != 1 or not devices.shape[:1].is_compatible_with(waveforms.shape[:1]):
            raise ValueError(
                "DeviceImpulseResponse expects one device id per clip. "
                f"Received: devices shape {devices.shape} for waveforms shape {waveforms.shape}"
            )
        with tf.control_dependencies(
            [
                tf.debugging.assert_equal(
                    tf.shape(devices)[0], tf.shape(waveforms)[0], message="one device id per clip"
                )
            ]
        ):
            draws = self.draw(devices, seed)
        responses = tf.gather(self.impulse_responses, draws["impulse_response"])
        convolved = _convolve_head(waveforms, responses)
        return tf.where(draws["apply"][:, tf.newaxis], convolved, waveforms)

    def get_config(self):
        return {
            "directory": self.directory,
            "p": self.p,
            "devices": list(self.devices),
            "sampling_rate": self.sampling_rate,
        }


def _convolve_head(signals, kernels):
    """Row-wise full convolution via FFT, keeping the first ``signals.shape[1]`` samples."""
    num_samples = signals.shape[1] if signals.shape[1] is not None else tf.shape(signals)[1]
    kernel_length = kernels.shape[1]
    # A power of two >= len(x) + len(h) - 1 makes the circular convolution equal the linear one.
    if isinstance(num_samples, int):
        fft_length = 1 << (num_samples + kernel_length - 2).bit_length()
    else:
        full_length = tf.cast(num_samples + kernel_length - 1, tf.float64)
        fft_length = tf.cast(2.0 ** tf.math.ceil(tf.math.log(full_length) / np.log(2.0)), tf.int32)
    spectrum = tf.signal.rfft(signals, fft_length=[fft_length]) * tf.signal.rfft(
        kernels, fft_length=[fft_length]
    )
    convolved = tf.signal.irfft(spectrum, fft_length=[fft_length])[:, :num_samples]
    convolved.set_shape(signals.shape)
    return convolved


def _load_impulse_responses(directory, sampling_rate):
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"Impulse response directory {directory!r} does not exist or is not a directory."
        )
    filenames = sorted(name for name in os.listdir(directory) if name.lower().endswith(".wav"))
    if not filenames:
        raise ValueError(f"Impulse response directory {directory!r} contains no .wav files.")
    responses = []
    for name in filenames:
        path = os.path.join(directory, name)
        response = np.asarray(load_audio(path, sampling_rate=sampling_rate), dtype=np.float32)
        if response.ndim != 1 or response.size == 0:
            raise ValueError(
                f"Impulse response {path!r} must be a non-empty mono signal. Received: shape={response.shape}"
            )
        responses.append(response)
    return filenames, responses
