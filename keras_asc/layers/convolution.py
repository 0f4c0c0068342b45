import keras
from keras import ops


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
