"""Building blocks as functions over the functional graph.

Blocks add plain Keras layers (Conv2D, BatchNormalization, ...) to a functional model instead of
being composite layers, so that every convolution and batch normalisation stays visible to the
complexity counter and to TF-MOT, which folds Conv + BN only in flat functional models.

Initialisation follows the CP-JKU reference code, which counts fans as PyTorch does:
``fan_in = in_channels / groups * kh * kw`` and ``fan_out = out_channels * kh * kw``. For
``Conv2D`` kernels (kh, kw, in / groups, out) Keras' ``VarianceScaling`` counts the same. For a
depthwise kernel (kh, kw, C, 1) Keras' fan-out is kh * kw while PyTorch's is kh * kw * C (its
weight is (C, 1, kh, kw)); Keras' fan-*in* of that kernel is kh * kw * C, so
``depthwise_kernel_initializer`` uses ``mode="fan_in"`` to get PyTorch's fan-out.
"""

import keras

from keras_asc.layers.convolution import Conv2D, DepthwiseConv2D
from keras_asc.layers.normalization import ChannelShuffle, GlobalResponseNormalization

# PyTorch BatchNorm2d defaults (eps 1e-5, momentum 0.1 == Keras momentum 0.9).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def conv_kernel_initializer(mode="fan_out", scale=2.0):
    """He-normal, as ``torch.nn.init.kaiming_normal_(mode=mode, nonlinearity="relu")``.

    Args:
        mode: ``"fan_out"`` (CP-Mobile, MofleNet) or ``"fan_in"`` (CP-ResNet), counted as
            PyTorch counts them (identical to Keras' count for ``Conv2D`` kernels).
        scale: the variance numerator: std = sqrt(scale / fan).
    """
    return keras.initializers.VarianceScaling(scale=scale, mode=mode, distribution="untruncated_normal")


def depthwise_kernel_initializer():
    """He-normal with PyTorch's fan-out of a depthwise kernel: std = sqrt(2 / (kh * kw * C)).

    Keras counts a (kh, kw, C, 1) depthwise kernel's fan-out as kh * kw, which would start the
    weights sqrt(C) times larger than the reference; its fan-in is kh * kw * C, the PyTorch
    fan-out of the same weights.
    """
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_in", distribution="untruncated_normal")


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


def conv_bn(
    x,
    filters,
    kernel_size,
    *,
    strides=1,
    padding=0,
    groups=1,
    activation=True,
    kernel_initializer=None,
    name,
):
    """Zero padding (symmetric, PyTorch style), convolution without bias, BN and optional ReLU.

    TensorFlow's "same" pads asymmetrically for strided convolutions on even sizes, so padding
    is explicit and the convolution itself is "valid". ``kernel_initializer`` defaults to
    He-normal with fan-out (``conv_kernel_initializer()``).
    """
    padding = _pair(padding)
    if any(padding):
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    x = Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="valid",
        groups=groups,
        use_bias=False,
        kernel_initializer=kernel_initializer or conv_kernel_initializer(),
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
        depthwise_initializer=depthwise_kernel_initializer(),
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


def cp_resnet_basic_block(x, out_channels, kernel_sizes, *, groups=1, fixup_depth=1, name):
    """The CP-ResNet basic block with receptive-field-controlled kernel sizes.

    conv k1 x k1 (padding k1 // 3) -> BN -> ReLU -> conv k2 x k2 (padding k2 // 3) -> BN; the
    shortcut is the identity when widths match, else a 1x1 convolution + BN with the same
    groups; ReLU after the add.

    Initialisation is the reference's Fixup-style one: the first convolution is drawn from a
    normal with std ``fixup_depth ** -0.5 * sqrt(2 / (k1 * k1 * out_channels))``, the second
    convolution starts at zero (so each block starts as its shortcut), and a shortcut
    convolution gets std ``sqrt(2 / out_channels)``.

    Args:
        x: channels-last feature map.
        out_channels: output width.
        kernel_sizes: (k1, k2).
        groups: groups of every convolution in the block.
        fixup_depth: Fixup's L, the number of basic blocks in the whole network.
        name: prefix of every layer name.

    Example:
        >>> y = cp_resnet_basic_block(keras.Input((63, 10, 32)), 32, (3, 1), name="b1")

    Reference:
        Koutini et al., "Receptive field regularization techniques for audio classification
        and tagging with deep convolutional neural networks", IEEE/ACM TASLP 2021; Zhang et al.,
        "Fixup Initialization", ICLR 2019.
    """
    if int(fixup_depth) != fixup_depth or fixup_depth < 1:
        raise ValueError(f"{name}: fixup_depth must be an integer >= 1. Received: fixup_depth={fixup_depth!r}")
    k1, k2 = kernel_sizes
    y = conv_bn(
        x,
        out_channels,
        k1,
        padding=k1 // 3,
        groups=groups,
        kernel_initializer=conv_kernel_initializer("fan_out", scale=2.0 / fixup_depth),
        name=f"{name}_conv1",
    )
    y = conv_bn(
        y,
        out_channels,
        k2,
        padding=k2 // 3,
        groups=groups,
        activation=False,
        kernel_initializer="zeros",
        name=f"{name}_conv2",
    )
    shortcut = x
    if x.shape[-1] != out_channels:
        shortcut = conv_bn(
            x,
            out_channels,
            1,
            groups=groups,
            activation=False,
            kernel_initializer=conv_kernel_initializer("fan_out"),
            name=f"{name}_shortcut",
        )
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out_relu")(y)
