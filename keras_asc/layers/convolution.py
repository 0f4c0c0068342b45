"""Convolution layers that keep Keras' behaviour and fix TensorFlow and XLA CPU problems.

Both subclass the Keras layer and differ only in ``call`` on the TensorFlow backend, so their
weights, configs, complexity counts and tf_keras twins are those of the parent:

- ``Conv2D``: Keras runs a grouped convolution on TensorFlow inside a nested XLA function
  (TensorFlow's own grouped kernel was unreliable on CPUs), which made every grouped layer of
  MofleNet and CP-ResNet several times slower than the rest of the step. Splitting the input
  and the kernel into their groups, convolving each and concatenating computes the same
  thing with ordinary ops, forward and backward.
- ``DepthwiseConv2D``: TensorFlow's CPU kernel rejects unequal strides such as (2, 1).

On JAX's CPU backend XLA turns every grouped convolution (a depthwise one is grouped with one
channel per group) into an ordinary convolution over all channels with a block-diagonal
kernel, i.e. ``groups`` times the arithmetic: a 3x3 depthwise layer of 96 channels ran its
forward and backward pass about 6x slower than the same sum written as nine shifted
multiply-adds, and MofleNet's and the DCASE baseline's steps were several times slower on JAX
than on TensorFlow (``benchmarks/train_speed.py``). There, grouped convolutions are split per
group as on TensorFlow, and depthwise ones are computed as that sum of shifted slices, which
XLA fuses into one loop; outputs and gradients are the same up to float rounding.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_asc")
class Conv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` whose grouped convolution runs per group on TensorFlow.

    With ``groups > 1`` on the TensorFlow backend the input channels and the kernel's output
    filters are split into ``groups`` parts, each part convolved, and the results
    concatenated, which is the definition of a grouped convolution; identical outputs and
    gradients, about 7x faster forward and backward on a CPU than Keras' XLA path. Every other
    case is the parent layer unchanged.

    Example:
        >>> y = Conv2D(80, 1, groups=2, use_bias=False)(keras.ops.ones((1, 8, 8, 32)))
    """

    def call(self, inputs):
        if self.groups == 1 or keras.backend.backend() not in ("tensorflow", "jax"):
            return super().call(inputs)
        parts = ops.split(inputs, self.groups, axis=-1 if self.data_format == "channels_last" else 1)
        kernels = ops.split(self.kernel, self.groups, axis=-1)
        outputs = ops.concatenate(
            [
                ops.conv(
                    part,
                    kernel,
                    strides=self.strides,
                    padding=self.padding,
                    dilation_rate=self.dilation_rate,
                    data_format=self.data_format,
                )
                for part, kernel in zip(parts, kernels, strict=True)
            ],
            axis=-1 if self.data_format == "channels_last" else 1,
        )
        if self.use_bias:
            bias_shape = (1,) * (len(outputs.shape) - 1) + (self.filters,)
            if self.data_format != "channels_last":
                bias_shape = (1, self.filters) + (1,) * (len(outputs.shape) - 2)
            outputs = outputs + ops.reshape(self.bias, bias_shape)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

@keras.saving.register_keras_serializable(package="keras_asc")
class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` that also runs unequal strides on TensorFlow's CPU.

    MofleNet's down-sampling blocks use depthwise strides such as (2, 1), which TensorFlow's
    CPU kernel rejects ("only supports equal length strides"). On that backend, with "valid"
    padding, this layer computes the stride-1 convolution and keeps every stride-th position,
    which gives identical outputs; every other case is the parent layer unchanged. The layer
    still reports the strided output shape, so complexity counts follow the architecture.

    Example:
        >>> y = DepthwiseConv2D(3, strides=(2, 1))(keras.ops.ones((1, 10, 10, 4)))
    """

    def call(self, inputs):
        strides = tuple(self.strides)
        if (
            keras.backend.backend() == "jax"
            and self.padding == "valid"
            and self.data_format == "channels_last"
        ):
            return self._shifted_sum(inputs, strides)
        if (
            keras.backend.backend() != "tensorflow"
            or strides[0] == strides[1]
            or self.padding != "valid"
            or self.data_format != "channels_last"
        ):
            return super().call(inputs)
        outputs = ops.depthwise_conv(
            inputs,
            self.kernel,
            strides=1,
            padding="valid",
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        )
        outputs = outputs[:, :: strides[0], :: strides[1], :]
        if self.use_bias:
            outputs = outputs + self.bias
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _shifted_sum(self, inputs, strides):
        """The "valid" depthwise convolution as a sum over kernel taps of strided slices of the
        input times that tap's per-channel weights (``depth_multiplier`` copies per channel)."""
        kernel_h, kernel_w, channels, multiplier = self.kernel.shape
        kernel = ops.reshape(self.kernel, (kernel_h, kernel_w, channels * multiplier))
        if multiplier > 1:  # output channel c * multiplier + m reads input channel c
            inputs = ops.repeat(inputs, multiplier, axis=-1)
        dilation_h, dilation_w = self.dilation_rate
        height, width = inputs.shape[1], inputs.shape[2]
        out_h = (height - dilation_h * (kernel_h - 1) - 1) // strides[0] + 1
        out_w = (width - dilation_w * (kernel_w - 1) - 1) // strides[1] + 1
        outputs = None
        for i in range(kernel_h):
            for j in range(kernel_w):
                top, left = i * dilation_h, j * dilation_w
                tap = inputs[
                    :,
                    top : top + (out_h - 1) * strides[0] + 1 : strides[0],
                    left : left + (out_w - 1) * strides[1] + 1 : strides[1],
                    :,
                ] * kernel[i, j]
                outputs = tap if outputs is None else outputs + tap
        if self.use_bias:
            outputs = outputs + self.bias
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs
