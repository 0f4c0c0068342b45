"""keras-asc plugin: TinyMobile, a small ensemble member, and a three-member ensemble.

MofleNet57 + CP-ResNet59 use 118,800 of the 128,000 int8 bytes and 28.8 M of the 30 M MACs;
TinyMobile (2,364 parameters, about 0.31 M MACs on 64 x 32 log-mels) fits in what is left.
Installing this package registers the model ``tiny_mobile`` and the ensemble
``moflenet57_cp_resnet59_tiny``.
"""

import keras

import keras_asc
from keras_asc.layers import LogMelSpectrogram


def _conv_bn_relu(x, filters, kernel_size, strides, name, groups=1, relu=True):
    if kernel_size > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
    if groups == "depthwise":
        x = keras.layers.DepthwiseConv2D(kernel_size, strides=strides, use_bias=False, name=f"{name}_conv")(x)
    else:
        x = keras.layers.Conv2D(filters, kernel_size, strides=strides, use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


@keras.saving.register_keras_serializable(package="keras_asc_tinymobile")
class TinyMobile(keras.Model):
    """A tiny CNN on coarse log-mels (64 bands, hop 1000): two strided convolutions, one
    depthwise-separable block and a 1x1 head.

    Args:
        num_classes: number of scenes.
        width: channels after the stem (the block doubles them).
        num_mel_bins: mel bands of its own front-end.
        hop_length: front-end hop in samples at 32 kHz.
        num_samples: waveform length.

    Example:
        >>> model = keras_asc.build("tiny_mobile")
    """

    def __init__(self, num_classes=10, width=16, num_mel_bins=64, hop_length=1000, num_samples=32000, name="tiny_mobile", **kwargs):
        inputs = keras.Input((num_samples,), name="waveform")
        x = LogMelSpectrogram(num_mel_bins=num_mel_bins, hop_length=hop_length, name=f"{name}_frontend")(inputs)
        x = _conv_bn_relu(x, width // 2, 3, 2, f"{name}_stem1")
        x = _conv_bn_relu(x, width, 3, 2, f"{name}_stem2")
        x = _conv_bn_relu(x, width, 3, 1, f"{name}_depthwise", groups="depthwise")
        x = _conv_bn_relu(x, 2 * width, 1, 1, f"{name}_pointwise")
        x = _conv_bn_relu(x, num_classes, 1, 1, f"{name}_head", relu=False)
        outputs = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.num_classes = num_classes
        self.width = width
        self.num_mel_bins = num_mel_bins
        self.hop_length = hop_length
        self.num_samples = num_samples

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "width": self.width,
            "num_mel_bins": self.num_mel_bins,
            "hop_length": self.hop_length,
            "num_samples": self.num_samples,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras_asc.hookimpl
def register_models(register):
    register(
        "tiny_mobile",
        TinyMobile,
        config={"name": "tiny_mobile"},
        description="TinyMobile: 2,364 params, 0.31M MACs; joins MofleNet57 + CP-ResNet59 within budget.",
    )


@keras_asc.hookimpl
def register_ensembles(register):
    register(
        "moflenet57_cp_resnet59_tiny",
        {"cp_resnet59": 0.5, "moflenet57": 0.35, "tiny_mobile": 0.15},
        description="CP-ResNet59 0.5 + MofleNet57 0.35 + TinyMobile 0.15.",
    )
