"""What every keras-asc backbone shares: the spectrogram input, the head and the config.

A backbone maps log-mel spectrograms (batch, mel bins, frames, 1) to logits; the classifier
(``keras_asc.models.AudioClassifier``) puts a front-end before it.
"""

import keras

from keras_asc.layers.blocks import batch_norm, conv_kernel_initializer


class Backbone(keras.Model):
    """Base class of the keras-asc network families: a functional model from spectrograms to logits.

    Subclasses build their graph in ``__init__`` and pass ``inputs``/``outputs`` here, then set
    their own configuration attributes; ``get_config`` returns exactly the constructor arguments.
    """

    def __init__(self, *, inputs, outputs, num_classes, spectrogram_shape, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.num_classes = num_classes
        self.spectrogram_shape = tuple(spectrogram_shape)

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "spectrogram_shape": list(self.spectrogram_shape),
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def spectrogram_input(spectrogram_shape, num_classes):
    """Validate the shared arguments and return the ``keras.Input`` of (mel bins, frames, 1) spectrograms."""
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2. Received: num_classes={num_classes!r}")
    shape = tuple(spectrogram_shape)
    if len(shape) != 3 or shape[-1] != 1 or any(d is not None and int(d) < 1 for d in shape):
        raise ValueError(
            f"spectrogram_shape must be (mel bins, frames, 1); frames may be None. "
            f"Received: spectrogram_shape={spectrogram_shape!r}"
        )
    return keras.Input(shape=shape, name="spectrogram")


def classifier_head(x, num_classes, name, kernel_initializer=None):
    """1x1 convolution to the classes (no bias), BN, global average pooling: logits.

    ``kernel_initializer`` defaults to He-normal with fan-out (CP-Mobile, MofleNet); CP-ResNet
    starts its classifier at zero.
    """
    x = keras.layers.Conv2D(
        num_classes,
        1,
        use_bias=False,
        kernel_initializer=kernel_initializer or conv_kernel_initializer(),
        name=f"{name}_head_conv",
    )(x)
    x = batch_norm(x, f"{name}_head_bn")
    return keras.layers.GlobalAveragePooling2D(name=f"{name}_head_pool")(x)
