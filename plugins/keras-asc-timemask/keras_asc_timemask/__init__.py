"""keras-asc plugin: time masking of log-mel spectrograms (SpecAugment-style).

Installing this package registers the augmentation ``time_mask`` (spectrogram stage), so
``keras-asc train --augment time_mask`` uses it and models saved with it reload through
``keras_asc.load_model``.
"""

import keras
from keras import ops

import keras_asc


@keras.saving.register_keras_serializable(package="keras_asc_timemask")
class TimeMasking(keras.layers.Layer):
    """Mask a random run of time frames per example; the identity at inference.

    Args:
        max_mask_frames: masks are up to this many frames wide (uniform in [0, max)).
        mask_value: value written into the masked frames (of the normalised log-mel).
        seed: seed of the layer's ``SeedGenerator``.
        p: probability that an example is masked at all.

    Example:
        >>> y = TimeMasking(max_mask_frames=8, seed=0)(keras.ops.ones((2, 256, 64, 1)), training=True)

    Reference:
        Park et al., "SpecAugment", Interspeech 2019.
    """

    def __init__(self, max_mask_frames=8, mask_value=0.0, seed=None, p=1.0, **kwargs):
        super().__init__(**kwargs)
        if int(max_mask_frames) != max_mask_frames or max_mask_frames < 1:
            raise ValueError(f"max_mask_frames must be an integer >= 1. Received: max_mask_frames={max_mask_frames}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1]. Received: p={p}")
        self.max_mask_frames = int(max_mask_frames)
        self.mask_value = float(mask_value)
        self.seed = seed
        self.p = float(p)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def get_mask(self, shape):
        """The boolean (batch, 1, time, 1) mask for one batch (True = masked)."""
        batch, frames = shape[0], shape[2]
        widths = keras.random.uniform((batch, 1), 0, self.max_mask_frames, seed=self.seed_generator)
        widths = ops.floor(widths)
        starts = ops.floor(keras.random.uniform((batch, 1), seed=self.seed_generator) * (frames - widths))
        apply = keras.random.uniform((batch, 1), seed=self.seed_generator) < self.p
        positions = ops.cast(ops.arange(frames), "float32")[None, :]
        mask = (positions >= starts) & (positions < starts + widths) & apply
        return ops.reshape(mask, (batch, 1, frames, 1))

    def call(self, inputs, training=False):
        if not training:
            return inputs
        mask = self.get_mask(ops.shape(inputs))
        return ops.where(mask, ops.cast(self.mask_value, inputs.dtype), inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "max_mask_frames": self.max_mask_frames,
            "mask_value": self.mask_value,
            "seed": self.seed,
            "p": self.p,
        }


@keras_asc.hookimpl
def register_augmentations(register):
    register(
        "time_mask",
        TimeMasking,
        stage="spectrogram",
        description="Mask a random run of up to max_mask_frames log-mel frames per example.",
    )
