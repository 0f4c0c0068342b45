"""keras-asc plugin: TinyMobile, a small ensemble member, and a three-member ensemble.

MofleNet57 + CP-ResNet59 use 118,800 of the 128,000 int8 bytes and 28.8 M of the 30 M MACs;
TinyMobile (2,364 parameters, about 0.31 M MACs on 64 x 32 log-mels) fits in what is left.
Installing this package registers the model ``tiny_mobile`` and the ensemble
``moflenet57_cp_resnet59_tiny``.
"""

import keras

import keras_asc
from keras_asc.layers import LogMelSpectrogram
from keras_asc.models import AudioClassifier, Backbone


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
class TinyMobileBackbone(Backbone):
    """A tiny CNN on coarse log-mels: two strided convolutions, one depthwise-separable block
    and a 1x1 head.

    Args:
        num_classes: number of scenes.
        spectrogram_shape: (mel bins, frames, 1) of its input.
        width: channels after the stem (the block doubles them).

    Example:
        >>> backbone = TinyMobileBackbone(spectrogram_shape=(64, 32, 1))
    """

    def __init__(self, num_classes=10, spectrogram_shape=(64, 32, 1), width=16, name="tiny_mobile", **kwargs):
        inputs = keras.Input(tuple(spectrogram_shape), name="spectrogram")
        x = _conv_bn_relu(inputs, width // 2, 3, 2, f"{name}_stem1")
        x = _conv_bn_relu(x, width, 3, 2, f"{name}_stem2")
        x = _conv_bn_relu(x, width, 3, 1, f"{name}_depthwise", groups="depthwise")
        x = _conv_bn_relu(x, 2 * width, 1, 1, f"{name}_pointwise")
        x = _conv_bn_relu(x, num_classes, 1, 1, f"{name}_head", relu=False)
        outputs = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
        super().__init__(
            inputs=inputs, outputs=outputs, num_classes=num_classes, spectrogram_shape=spectrogram_shape,
            name=name, **kwargs,
        )
        self.width = width

    def get_config(self):
        return {**super().get_config(), "width": self.width}


def tiny_mobile(num_classes=10, width=16, num_mel_bins=64, hop_length=1000, num_samples=32000, name="tiny_mobile"):
    """TinyMobile as a keras-asc classifier: its own 64-band, hop-1000 front-end before
    ``TinyMobileBackbone``.

    Example:
        >>> model = keras_asc.build("tiny_mobile")  # the same, through the plugin registry
    """
    frontend = LogMelSpectrogram(num_mel_bins=num_mel_bins, hop_length=hop_length, name=f"{name}_frontend")
    spectrogram_shape = frontend.compute_output_shape((None, num_samples))[1:]
    backbone = TinyMobileBackbone(num_classes, spectrogram_shape, width, name=name)
    return AudioClassifier(backbone, frontend, num_samples=num_samples, name=name)


@keras_asc.hookimpl
def register_models(register):
    register(
        "tiny_mobile",
        tiny_mobile,
        description="TinyMobile: 2,364 params, 0.31M MACs; joins MofleNet57 + CP-ResNet59 within budget.",
    )


@keras_asc.hookimpl
def register_ensembles(register):
    register(
        "moflenet57_cp_resnet59_tiny",
        {"cp_resnet59": 0.5, "moflenet57": 0.35, "tiny_mobile": 0.15},
        description="CP-ResNet59 0.5 + MofleNet57 0.35 + TinyMobile 0.15.",
    )
