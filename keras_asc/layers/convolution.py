"""Convolution layers that keep Keras' behaviour and fix two TensorFlow CPU problems.

Both subclass the Keras layer and differ only in ``call`` on the TensorFlow backend, so their
weights, configs, complexity counts and tf_keras twins are those of the parent:

- ``Conv2D``: Keras runs a grouped convolution on TensorFlow inside a nested XLA function
  (TensorFlow's own grouped kernel was unreliable on CPUs), which made every grouped layer of
  MofleNet and CP-ResNet several times slower than the rest of the step. Splitting the input
  and the kernel into their groups, convolving each and concatenating computes the same
  thing with ordinary ops, forward and backward.
- ``DepthwiseConv2D``: TensorFlow's CPU kernel rejects unequal strides such as (2, 1).
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
        if self.groups == 1 or keras.backend.backend() != "tensorflow":
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
