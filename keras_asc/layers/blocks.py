"""The network blocks as Keras layers: ``MofleBlock``, ``CPMobileBlock``, ``CPResNetBasicBlock``.

Each block is one ``keras.layers.Layer`` that holds plain sub-layers (ZeroPadding2D, Conv2D,
BatchNormalization, ReLU, ...) and runs them in ``apply_sublayers``. The same method lets the
complexity counter read every sub-layer's shapes and the tf_keras twin expand a block into flat
tf_keras layers (TF-MOT folds Conv + BN only in flat functional models), so the block structure
is written once. Sub-layers are named ``f"{block.name}_{part}"`` (for example
``moflenet57_stage1_block1_expand_conv``) so that weights match by name across the Keras
model, its tf_keras twin and PyTorch state dicts.

Initialisation follows the CP-JKU reference code, which counts fans as PyTorch does:
``fan_in = in_channels / groups * kh * kw`` and ``fan_out = out_channels * kh * kw``. For
``Conv2D`` kernels (kh, kw, in / groups, out) Keras' ``VarianceScaling`` counts the same. For a
depthwise kernel (kh, kw, C, 1) Keras' fan-out is kh * kw while PyTorch's is kh * kw * C (its
weight is (C, 1, kh, kw)); Keras' fan-*in* of that kernel is kh * kw * C, so
``depthwise_kernel_initializer`` uses ``mode="fan_in"`` to get PyTorch's fan-out.
"""

import keras

from keras_asc.layers.convolution import Conv2D, DepthwiseConv2D
from keras_asc.layers.normalization import (
    BatchNormalization,
    ChannelShuffle,
    GlobalResponseNormalization,
)

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


def _pair(value, name="value"):
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or int(v) != v or v < 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them. Received: {name}={value!r}")
    return tuple(int(v) for v in pair)


def _positive_int(name, value):
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
    return int(value)


def batch_norm(x, name):
    """PyTorch-default batch normalisation (eps 1e-5, momentum 0.1) on a functional tensor."""
    return BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def conv_bn_layers(filters, kernel_size, *, strides=1, padding=0, groups=1, activation=True,
                   kernel_initializer=None, name):
    """The layers of one "zero padding, convolution without bias, BN, optional ReLU" unit.

    TensorFlow's "same" pads asymmetrically for strided convolutions on even sizes, so padding
    is symmetric (PyTorch style) and explicit, and the convolution itself is "valid".
    ``kernel_initializer`` defaults to He-normal with fan-out (``conv_kernel_initializer()``).
    """
    padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
    layers = []
    if any(padding):
        layers.append(keras.layers.ZeroPadding2D(padding, name=f"{name}_pad"))
    layers.append(
        Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding="valid",
            groups=groups,
            use_bias=False,
            kernel_initializer=kernel_initializer or conv_kernel_initializer(),
            name=f"{name}_conv",
        )
    )
    layers.append(BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn"))
    if activation:
        layers.append(keras.layers.ReLU(name=f"{name}_relu"))
    return layers


def conv_bn(x, filters, kernel_size, *, name, **kwargs):
    """Apply ``conv_bn_layers(...)`` to a functional tensor (the stems use it)."""
    for layer in conv_bn_layers(filters, kernel_size, name=name, **kwargs):
        x = layer(x)
    return x


def _sequence(x, layers, layer_fn):
    for layer in layers:
        x = layer_fn(layer)(x)
    return x


class Block(keras.layers.Layer):
    """A layer made of plain Keras sub-layers, run by ``apply_sublayers``.

    Subclasses create their sub-layers in ``build`` (which ones can depend on the input width,
    for example a residual connection) and write their computation once, in
    ``apply_sublayers(inputs, layer_fn)``, calling ``layer_fn(sublayer)(x)`` wherever they use
    a sub-layer. ``call`` runs it with the sub-layers themselves; other code runs the same
    structure with something else in their place: ``keras_asc.complexity`` with each
    sub-layer's ``compute_output_shape``, the tf_keras twin with a tf_keras copy of each one.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._parts = []

    @property
    def sublayers(self):
        """The sub-layers in the order ``apply_sublayers`` first uses them (empty before build)."""
        return list(self._parts)

    def apply_sublayers(self, inputs, layer_fn):
        """Run the block on ``inputs`` with ``layer_fn(sublayer)`` in place of each sub-layer."""
        raise NotImplementedError(f"{type(self).__name__} must implement apply_sublayers.")

    def _make_sublayers(self, input_shape):
        raise NotImplementedError(f"{type(self).__name__} must implement _make_sublayers.")

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} {self.name!r} takes channels-last feature maps "
                f"(batch, freq, time, channels) with known channels. Received: input_shape={input_shape}"
            )
        self._parts = list(self._make_sublayers(input_shape))
        shape = tuple(input_shape)

        def build_sublayer(layer):
            def run(layer_input_shape):
                layer.build(layer_input_shape)
                return layer.compute_output_shape(layer_input_shape)

            return run

        self.apply_sublayers(shape, build_sublayer)
        self.built = True

    def call(self, inputs):
        return self.apply_sublayers(inputs, lambda layer: layer)

    def compute_output_shape(self, input_shape):
        if not self.built:
            self.build(input_shape)
        return self.apply_sublayers(tuple(input_shape), lambda layer: layer.compute_output_shape)


class _InvertedResidualBlock(Block):
    """Grouped or plain 1x1 expansion, optional shuffle, 3x3 depthwise, 1x1 projection, residual."""

    def __init__(self, out_channels, expansion_channels, strides=1, pointwise_groups=1, use_grn=False, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.expansion_channels = _positive_int("expansion_channels", expansion_channels)
        self.strides = _pair(strides, "strides")
        self.pointwise_groups = _positive_int("pointwise_groups", pointwise_groups)
        self.use_grn = bool(use_grn)
        if self.expansion_channels % self.pointwise_groups:
            raise ValueError(
                f"{self.name}: expansion_channels ({self.expansion_channels}) must be divisible by "
                f"pointwise_groups={self.pointwise_groups}."
            )

    def _make_sublayers(self, input_shape):
        in_channels = int(input_shape[-1])
        if in_channels % self.pointwise_groups:
            raise ValueError(
                f"{self.name}: input channels ({in_channels}) must be divisible by "
                f"pointwise_groups={self.pointwise_groups}."
            )
        name = self.name
        self.expand = conv_bn_layers(
            self.expansion_channels, 1, groups=self.pointwise_groups, name=f"{name}_expand"
        )
        self.shuffle = (
            [ChannelShuffle(self.pointwise_groups, name=f"{name}_shuffle")] if self.pointwise_groups > 1 else []
        )
        self.depthwise = [
            keras.layers.ZeroPadding2D(1, name=f"{name}_depthwise_pad"),
            DepthwiseConv2D(
                3,
                strides=self.strides,
                padding="valid",
                use_bias=False,
                depthwise_initializer=depthwise_kernel_initializer(),
                name=f"{name}_depthwise_conv",
            ),
            BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_depthwise_bn"),
            keras.layers.ReLU(name=f"{name}_depthwise_relu"),
        ]
        self.project = conv_bn_layers(self.out_channels, 1, activation=False, name=f"{name}_project")
        self.residual = in_channels == self.out_channels
        self.shortcut = []
        if self.residual and self.strides != (1, 1):
            # PyTorch AvgPool2d(3, stride, padding=1) divides by 9 at borders (count_include_pad).
            self.shortcut = [
                keras.layers.ZeroPadding2D(1, name=f"{name}_shortcut_pad"),
                keras.layers.AveragePooling2D(3, strides=self.strides, padding="valid", name=f"{name}_shortcut_pool"),
            ]
        self.add = [keras.layers.Add(name=f"{name}_add")] if self.residual else []
        self.grn = [GlobalResponseNormalization(name=f"{name}_grn")] if self.use_grn else []
        self.out_relu = keras.layers.ReLU(name=f"{name}_out_relu")
        return [
            *self.expand, *self.shuffle, *self.depthwise, *self.project, *self.shortcut,
            *self.add, *self.grn, self.out_relu,
        ]

    def apply_sublayers(self, inputs, layer_fn):
        y = _sequence(inputs, self.expand + self.shuffle + self.depthwise + self.project, layer_fn)
        if self.residual:
            shortcut = _sequence(inputs, self.shortcut, layer_fn)
            y = layer_fn(self.add[0])([y, shortcut])
        y = _sequence(y, self.grn, layer_fn)
        return layer_fn(self.out_relu)(y)

    def get_config(self):
        return {
            **super().get_config(),
            "out_channels": self.out_channels,
            "expansion_channels": self.expansion_channels,
            "strides": list(self.strides),
            "use_grn": self.use_grn,
        }


@keras.saving.register_keras_serializable(package="keras_asc")
class MofleBlock(_InvertedResidualBlock):
    """The MofleNet (MobileShuffleNet) block.

    Grouped 1x1 expansion (``pointwise_groups``), channel shuffle, 3x3 depthwise convolution with
    the block stride, 1x1 projection; a residual connection when input and output widths match
    (identity at stride 1, 3x3 average pooling when strided), GRN after the add, then ReLU.
    Standard (S), down-sampling (D) and transition (T) blocks differ only in ``strides`` and
    ``out_channels``.

    Args:
        out_channels: output width.
        expansion_channels: width of the expanded representation (divisible by the groups).
        strides: int or (freq, time) stride of the depthwise convolution.
        pointwise_groups: groups of the expansion convolution (2 in MofleNet).
        use_grn: whether to apply GRN after the residual add.
        **kwargs: ``name`` (prefix of every sub-layer name) and other ``Layer`` arguments.

    Example:
        >>> model = keras.Sequential([keras.Input((64, 16, 32)), MofleBlock(32, 80, strides=(2, 1))])
        >>> model.output_shape
        (None, 32, 16, 32)

    Reference:
        "Low complexity acoustic scene classification with MofleNet", DCASE 2024 Task 1 report.
    """

    def __init__(self, out_channels, expansion_channels, strides=1, pointwise_groups=2, use_grn=True, **kwargs):
        super().__init__(
            out_channels, expansion_channels, strides=strides, pointwise_groups=pointwise_groups,
            use_grn=use_grn, **kwargs,
        )

    def get_config(self):
        return {**super().get_config(), "pointwise_groups": self.pointwise_groups}


@keras.saving.register_keras_serializable(package="keras_asc")
class CPMobileBlock(_InvertedResidualBlock):
    """The CP-Mobile inverted-residual block: ``MofleBlock`` with an ungrouped expansion and no shuffle.

    The DCASE 2024 baseline uses it without GRN.

    Args:
        out_channels: output width.
        expansion_channels: width of the expanded representation.
        strides: int or (freq, time) stride of the depthwise convolution.
        use_grn: whether to apply GRN after the residual add.
        **kwargs: ``name`` (prefix of every sub-layer name) and other ``Layer`` arguments.

    Example:
        >>> y = CPMobileBlock(32, 64, name="b1")(keras.ops.zeros((1, 64, 17, 32)))

    Reference:
        Schmid et al., "CP-Mobile", DCASE 2023 Workshop; DCASE 2024 Task 1 baseline.
    """

    def __init__(self, out_channels, expansion_channels, strides=1, use_grn=False, **kwargs):
        super().__init__(
            out_channels, expansion_channels, strides=strides, pointwise_groups=1, use_grn=use_grn, **kwargs
        )


@keras.saving.register_keras_serializable(package="keras_asc")
class CPResNetBasicBlock(Block):
    """The CP-ResNet basic block with receptive-field-controlled kernel sizes.

    conv k1 x k1 (padding k1 // 3) -> BN -> ReLU -> conv k2 x k2 (padding k2 // 3) -> BN; the
    shortcut is the identity when widths match, else a 1x1 convolution + BN with the same
    groups; ReLU after the add.

    Initialisation is the reference's Fixup-style one: the first convolution is drawn from a
    normal with std ``fixup_depth ** -0.5 * sqrt(2 / (k1 * k1 * out_channels))``, the second
    convolution starts at zero (so each block starts as its shortcut), and a shortcut
    convolution gets std ``sqrt(2 / out_channels)``.

    Args:
        out_channels: output width.
        kernel_sizes: (k1, k2).
        groups: groups of every convolution in the block.
        fixup_depth: Fixup's L, the number of basic blocks in the whole network.
        **kwargs: ``name`` (prefix of every sub-layer name) and other ``Layer`` arguments.

    Example:
        >>> y = CPResNetBasicBlock(32, (3, 1), name="b1")(keras.ops.zeros((1, 63, 10, 32)))

    Reference:
        Koutini et al., "Receptive field regularization techniques for audio classification
        and tagging with deep convolutional neural networks", IEEE/ACM TASLP 2021; Zhang et al.,
        "Fixup Initialization", ICLR 2019.
    """

    def __init__(self, out_channels, kernel_sizes=(3, 3), groups=1, fixup_depth=1, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.kernel_sizes = _pair(kernel_sizes, "kernel_sizes")
        self.groups = _positive_int("groups", groups)
        self.fixup_depth = _positive_int("fixup_depth", fixup_depth)
        if self.out_channels % self.groups:
            raise ValueError(
                f"{self.name}: out_channels ({self.out_channels}) must be divisible by groups={self.groups}."
            )

    def _make_sublayers(self, input_shape):
        in_channels = int(input_shape[-1])
        if in_channels % self.groups:
            raise ValueError(f"{self.name}: input channels ({in_channels}) must be divisible by groups={self.groups}.")
        name = self.name
        k1, k2 = self.kernel_sizes
        self.conv1 = conv_bn_layers(
            self.out_channels,
            k1,
            padding=k1 // 3,
            groups=self.groups,
            kernel_initializer=conv_kernel_initializer("fan_out", scale=2.0 / self.fixup_depth),
            name=f"{name}_conv1",
        )
        self.conv2 = conv_bn_layers(
            self.out_channels,
            k2,
            padding=k2 // 3,
            groups=self.groups,
            activation=False,
            kernel_initializer="zeros",
            name=f"{name}_conv2",
        )
        self.shortcut = []
        if in_channels != self.out_channels:
            self.shortcut = conv_bn_layers(
                self.out_channels,
                1,
                groups=self.groups,
                activation=False,
                kernel_initializer=conv_kernel_initializer("fan_out"),
                name=f"{name}_shortcut",
            )
        self.add = keras.layers.Add(name=f"{name}_add")
        self.out_relu = keras.layers.ReLU(name=f"{name}_out_relu")
        return [*self.conv1, *self.conv2, *self.shortcut, self.add, self.out_relu]

    def apply_sublayers(self, inputs, layer_fn):
        y = _sequence(inputs, self.conv1 + self.conv2, layer_fn)
        shortcut = _sequence(inputs, self.shortcut, layer_fn)
        y = layer_fn(self.add)([y, shortcut])
        return layer_fn(self.out_relu)(y)

    def get_config(self):
        return {
            **super().get_config(),
            "out_channels": self.out_channels,
            "kernel_sizes": list(self.kernel_sizes),
            "groups": self.groups,
            "fixup_depth": self.fixup_depth,
        }


def leaf_layers(model):
    """Every layer of ``model`` that is neither a model nor a ``Block``, blocks and nested
    models expanded, in order: where weights live, for matching them by name.

    Example:
        >>> names = [layer.name for layer in leaf_layers(keras_asc.build("moflenet57"))]
    """
    for layer in model.layers if isinstance(model, keras.Model) else model.sublayers:
        if isinstance(layer, (keras.Model, Block)):
            yield from leaf_layers(layer)
        else:
            yield layer
