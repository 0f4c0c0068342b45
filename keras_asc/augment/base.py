"""The base class of waveform augmentations run in the tf.data training pipeline."""

import abc
import numbers

import tensorflow as tf


class WaveformAugmentation(abc.ABC):
    """A random transformation of batched waveforms, applied in the tf.data training pipeline.

    The pipeline calls the augmentation once per batch, after batching and inside
    ``Dataset.map``, with a fresh seed for each batch. Implementations use TensorFlow ops only
    (``tf.random.stateless_*`` for randomness), keep static shapes and return the same output
    for the same seed. An augmentation is the identity at inference simply because the
    evaluation pipeline never applies it; it has no ``training`` flag.

    Subclasses implement ``__call__`` and, when their constructor takes arguments,
    ``get_config`` returning exactly those arguments.

    Example:
        >>> class Gain(WaveformAugmentation):
        ...     def __init__(self, gain=0.5):
        ...         self.gain = gain
        ...     def __call__(self, waveforms, devices, seed):
        ...         return waveforms * self.gain
        ...     def get_config(self):
        ...         return {"gain": self.gain}
    """

    @abc.abstractmethod
    def __call__(self, waveforms, devices, seed):
        """Augment one batch.

        Args:
            waveforms: ``tf.float32`` tensor of shape (batch, num_samples).
            devices: ``tf.string`` tensor of shape (batch,) with the recording device of each
                clip ("a", "b", "c", "s1" ... "s6" in TAU22).
            seed: integer tensor of shape [2] for ``tf.random.stateless_*`` ops.

        Returns:
            The augmented waveforms, same shape and dtype.
        """

    def get_config(self):
        """The constructor arguments, so that ``cls.from_config(config)`` rebuilds the object."""
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


def check_probability(p, name="p"):
    """Raise a ValueError unless ``p`` is a number in [0, 1]; return it as a float."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1]. Received: {name}={p!r}")
    return float(p)


def check_waveforms(waveforms, augmentation):
    """Convert to a tensor and raise a ValueError unless it is a (batch, num_samples) batch."""
    waveforms = tf.convert_to_tensor(waveforms)
    if waveforms.shape.rank != 2:
        raise ValueError(
            f"{augmentation} expects batched waveforms of shape (batch, num_samples). "
            f"Received: shape={waveforms.shape}"
        )
    return waveforms
