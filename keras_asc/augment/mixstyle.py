"""Freq-MixStyle: mix frequency-wise statistics of log-mel spectrograms across a batch."""

import numbers

import keras
from keras import ops

from keras_asc.augment.base import check_probability


@keras.saving.register_keras_serializable(package="keras_asc")
class FreqMixStyle(keras.layers.Layer):
    """Mix each example's per-frequency mean and standard deviation with another example's.

    For log-mel batches of shape (batch, freq, time, channels). With probability ``p`` per
    batch: for each example and frequency bin, the mean ``mu`` and the unbiased variance over
    (time, channels) give ``sigma = sqrt(var + eps)``; each example gets a partner from a random
    permutation of the batch and a weight ``lambda ~ Beta(alpha, alpha)``, and becomes
    ``(x - mu) / sigma * (lambda sigma + (1 - lambda) sigma_p) + lambda mu + (1 - lambda) mu_p``.
    The statistics carry no gradient. Mixing the frequency profile of recordings from different
    devices simulates device mismatch. Identity when ``training`` is false.

    Args:
        alpha: concentration of the symmetric Beta distribution of ``lambda`` (> 0); small
            values keep examples close to their own statistics or their partner's.
        p: probability of mixing a batch.
        eps: added to the variance before the square root (> 0).
        seed: integer seed of the layer's ``keras.random.SeedGenerator``.
        **kwargs: base ``keras.layers.Layer`` arguments such as ``name``.

    Example:
        >>> mixstyle = FreqMixStyle(alpha=0.3, p=0.4, seed=0)
        >>> y = mixstyle(keras.random.normal((8, 256, 64, 1)), training=True)

    Reference:
        Zhou et al., "Domain Generalization with MixStyle", ICLR 2021; the frequency-wise
        variant of Kim et al. (Qualcomm, DCASE 2022) as used by Schmid et al. (CP-JKU,
        CP-Mobile, DCASE 2023/2024).
    """

    def __init__(self, alpha=0.3, p=0.4, eps=1e-6, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # statistics of the float32 front-end output
        super().__init__(**kwargs)
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0:
            raise ValueError(f"alpha must be a number > 0. Received: alpha={alpha!r}")
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
            raise ValueError(f"eps must be a number > 0. Received: eps={eps!r}")
        self.alpha = float(alpha)
        self.p = check_probability(p)
        self.eps = float(eps)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"FreqMixStyle expects log-mel batches of shape (batch, freq, time, channels). "
                f"Received: input_shape={input_shape}"
            )
        time, channels = input_shape[2], input_shape[3]
        if time is not None and channels is not None and time * channels < 2:
            raise ValueError(
                "FreqMixStyle needs at least two values per frequency bin (time x channels) for "
                f"an unbiased variance. Received: input_shape={input_shape}"
            )

    def draw(self, batch_size):
        """The random choices for one batch, drawn from the layer's seed generator.

        Args:
            batch_size: number of examples.

        Returns:
            ``{"apply": bool scalar, "lambda": float32 (batch, 1, 1, 1), "partner": int32
            (batch,)}``: whether the batch is mixed, each example's weight of its own statistics
            and the index of its partner.
        """
        apply = keras.random.uniform((), seed=self.seed_generator) < self.p
        weight = keras.random.beta(
            (batch_size, 1, 1, 1), self.alpha, self.alpha, seed=self.seed_generator
        )
        partner = keras.random.shuffle(
            ops.arange(batch_size, dtype="int32"), seed=self.seed_generator
        )
        return {"apply": apply, "lambda": weight, "partner": partner}

    def call(self, inputs, training=None):
        if not training or self.p == 0.0:
            return inputs
        draws = self.draw(ops.shape(inputs)[0])
        mixed = mix_frequency_statistics(inputs, draws["lambda"], draws["partner"], self.eps)
        return ops.where(draws["apply"], mixed, inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "p": self.p,
            "eps": self.eps,
            "seed": self.seed,
        }


def mix_frequency_statistics(inputs, weight, partner, eps=1e-6):
    """The Freq-MixStyle transform for given draws (``FreqMixStyle`` without the randomness).

    Args:
        inputs: tensor (batch, freq, time, channels).
        weight: ``lambda``, broadcastable to (batch, 1, 1, 1): the weight of each example's own
            statistics.
        partner: int tensor (batch,): the example whose statistics are mixed in.
        eps: added to the variance before the square root.

    Returns:
        The mixed tensor, same shape and dtype as ``inputs``; the statistics and the mix are
        computed in float32 (also for 16-bit inputs under mixed precision).
    """
    inputs = ops.convert_to_tensor(inputs)
    dtype = inputs.dtype
    inputs = ops.cast(inputs, "float32")
    weight = ops.cast(weight, inputs.dtype)
    partner = ops.convert_to_tensor(partner, dtype="int32")
    shape = ops.shape(inputs)
    count = ops.cast(shape[2] * shape[3], inputs.dtype)
    mean = ops.mean(inputs, axis=(2, 3), keepdims=True)
    variance = ops.sum(ops.square(inputs - mean), axis=(2, 3), keepdims=True) / (count - 1)
    std = ops.sqrt(variance + eps)
    # The statistics are treated as constants, as in MixStyle: only the normalised content
    # passes gradient back to the input.
    mean, std = ops.stop_gradient(mean), ops.stop_gradient(std)
    partner_mean = ops.take(mean, partner, axis=0)
    partner_std = ops.take(std, partner, axis=0)
    mixed_mean = weight * mean + (1 - weight) * partner_mean
    mixed_std = weight * std + (1 - weight) * partner_std
    return ops.cast((inputs - mean) / std * mixed_std + mixed_mean, dtype)
