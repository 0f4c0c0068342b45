"""Building blocks as functions over the functional graph.

Blocks add plain Keras layers (Conv2D, BatchNormalization, ...) to a functional model instead of
being composite layers, so that every convolution and batch normalisation stays visible to the
complexity counter and to TF-MOT, which folds Conv + BN only in flat functional models.
"""

import keras

from keras_asc.layers.convolution import DepthwiseConv2D
from keras_asc.layers.normalization import ChannelShuffle, GlobalResponseNormalization

# PyTorch BatchNorm2d defaults (eps 1e-5, momentum 0.1 == Keras momentum 0.9).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def conv_kernel_initializer():
    """He-normal with fan_out, as torch.nn.init.kaiming_normal_(mode="fan_out")."""
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")


def make_divisible(value, divisor=8, min_value=None):
    """Round ``value`` to a multiple of ``divisor`` without going more than 10 % below it.

    Example:
        >>> make_divisible(32 * 2.6)
        80
    """
    min_value = divisor if min_value is None else min_value
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def batch_norm(x, name):
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def conv_bn(x, filters, kernel_size, *, strides=1, padding=0, groups=1, activation=True, name):
    """Zero padding (symmetric, PyTorch style), convolution without bias, BN and optional ReLU.

    TensorFlow's "same" pads asymmetrically for strided convolutions on even sizes, so padding
    is explicit and the convolution itself is "valid".
    """
    padding = _pair(padding)
    if any(padding):
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="valid",
        groups=groups,
        use_bias=False,
        kernel_initializer=conv_kernel_initializer(),
        name=f"{name}_conv",
    )(x)
    x = batch_norm(x, f"{name}_bn")
    if activation:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x


def depthwise_conv_bn(x, *, strides, name):
    """3x3 depthwise convolution with symmetric padding 1, no bias, BN and ReLU."""
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    x = DepthwiseConv2D(
        3,
        strides=strides,
        padding="valid",
        use_bias=False,
        depthwise_initializer=conv_kernel_initializer(),
        name=f"{name}_conv",
    )(x)
    x = batch_norm(x, f"{name}_bn")
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _inverted_residual(x, out_channels, expansion_channels, strides, pointwise_groups, use_grn, name):
    in_channels = x.shape[-1]
    strides = _pair(strides)
    shortcut = x
    y = conv_bn(x, expansion_channels, 1, groups=pointwise_groups, name=f"{name}_expand")
    if pointwise_groups > 1:
        y = ChannelShuffle(pointwise_groups, name=f"{name}_shuffle")(y)
    y = depthwise_conv_bn(y, strides=strides, name=f"{name}_depthwise")
    y = conv_bn(y, out_channels, 1, activation=False, name=f"{name}_project")
    if in_channels == out_channels:
        if strides != (1, 1):
            # PyTorch AvgPool2d(3, stride, padding=1) divides by 9 at borders (count_include_pad).
            shortcut = keras.layers.ZeroPadding2D(1, name=f"{name}_shortcut_pad")(shortcut)
            shortcut = keras.layers.AveragePooling2D(
                3, strides=strides, padding="valid", name=f"{name}_shortcut_pool"
            )(shortcut)
        y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    if use_grn:
        y = GlobalResponseNormalization(name=f"{name}_grn")(y)
    return keras.layers.ReLU(name=f"{name}_out_relu")(y)


def mofle_block(x, out_channels, expansion_channels, *, strides=1, pointwise_groups=2, use_grn=True, name):
    """The MofleNet (MobileShuffleNet) block.

    Grouped 1x1 expansion (``pointwise_groups``), channel shuffle, 3x3 depthwise convolution with
    the block stride, 1x1 projection; a residual connection when input and output widths match
    (identity at stride 1, 3x3 average pooling when strided), GRN after the add, then ReLU.
    Standard (S), down-sampling (D) and transition (T) blocks differ only in ``strides`` and
    ``out_channels``.

    Args:
        x: channels-last feature map of the functional graph.
        out_channels: output width.
        expansion_channels: width of the expanded representation (divisible by the groups).
        strides: int or (freq, time) stride of the depthwise convolution.
        pointwise_groups: groups of the expansion convolution (2 in MofleNet).
        use_grn: whether to apply GRN after the residual add.
        name: prefix of every layer name.

    Example:
        >>> y = mofle_block(keras.Input((64, 16, 32)), 32, 80, strides=(2, 1), name="b3")

    Reference:
        "Low complexity acoustic scene classification with MofleNet", DCASE 2024 Task 1 report.
    """
    if expansion_channels % pointwise_groups or x.shape[-1] % pointwise_groups:
        raise ValueError(
            f"{name}: input ({x.shape[-1]}) and expansion ({expansion_channels}) channels must be "
            f"divisible by pointwise_groups={pointwise_groups}."
        )
    return _inverted_residual(x, out_channels, expansion_channels, strides, pointwise_groups, use_grn, name)


def cp_mobile_block(x, out_channels, expansion_channels, *, strides=1, use_grn=False, name):
    """The CP-Mobile inverted-residual block (plain 1x1 expansion, no shuffle).

    Same structure as ``mofle_block`` with an ungrouped expansion; the DCASE 2024 baseline uses
    it without GRN.

    Example:
        >>> y = cp_mobile_block(keras.Input((64, 17, 32)), 32, 64, name="b1")

    Reference:
        Schmid et al., "CP-Mobile", DCASE 2023 Workshop; DCASE 2024 Task 1 baseline.
    """
    return _inverted_residual(x, out_channels, expansion_channels, strides, 1, use_grn, name)


def cp_resnet_basic_block(x, out_channels, kernel_sizes, *, groups=1, name):
    """The CP-ResNet basic block with receptive-field-controlled kernel sizes.

    conv k1 x k1 (padding k1 // 3) -> BN -> ReLU -> conv k2 x k2 (padding k2 // 3) -> BN; the
    shortcut is the identity when widths match, else a 1x1 convolution + BN with the same
    groups; ReLU after the add.

    Args:
        x: channels-last feature map.
        out_channels: output width.
        kernel_sizes: (k1, k2).
        groups: groups of every convolution in the block.
        name: prefix of every layer name.

    Example:
        >>> y = cp_resnet_basic_block(keras.Input((63, 10, 32)), 32, (3, 1), name="b1")

    Reference:
        Koutini et al., "Receptive field regularization techniques for audio classification
        and tagging with deep convolutional neural networks", IEEE/ACM TASLP 2021.
    """
    k1, k2 = kernel_sizes
    y = conv_bn(x, out_channels, k1, padding=k1 // 3, groups=groups, name=f"{name}_conv1")
    y = conv_bn(y, out_channels, k2, padding=k2 // 3, groups=groups, activation=False, name=f"{name}_conv2")
    shortcut = x
    if x.shape[-1] != out_channels:
        shortcut = conv_bn(x, out_channels, 1, groups=groups, activation=False, name=f"{name}_shortcut")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out_relu")(y)
