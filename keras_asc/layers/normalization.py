import keras
from keras import ops


def safe_l2_norm(x, axis):
    """L2 norm over ``axis`` (kept) whose gradient is 0, not NaN, where the norm is 0.

    ``sqrt`` has an infinite derivative at 0, so a channel that is exactly zero for one example
    (common after a ReLU) would make the whole update NaN; ``torch.linalg.vector_norm``, which
    the reference GRN uses, defines that gradient as 0. Both ``where`` branches are finite, so
    no NaN reaches the backward pass.
    """
    squares = ops.sum(ops.square(x), axis=axis, keepdims=True)
    positive = squares > 0
    return ops.where(positive, ops.sqrt(ops.where(positive, squares, ops.ones_like(squares))), 0.0)


@keras.saving.register_keras_serializable(package="keras_asc")
class GlobalResponseNormalization(keras.layers.Layer):
    """Global response normalisation with one scalar gamma and beta (the CP-Mobile variant).

    For channels-last input ``x`` of shape (batch, freq, time, channels): ``g`` is the L2 norm of
    each channel over (freq, time), ``n = g / (mean_c(g) + epsilon)`` and the output is
    ``gamma * (x * n) + beta + x``. Gamma and beta are scalars initialised to zero, so a fresh
    layer is the identity.

    Args:
        epsilon: added to the channel mean of the norms before dividing.

    Example:
        >>> y = GlobalResponseNormalization()(keras.ops.ones((2, 8, 8, 16)))

    Reference:
        Woo et al., "ConvNeXt V2", CVPR 2023 (GRN); Schmid et al., CP-Mobile, DCASE 2023.
    """

    def __init__(self, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        if epsilon <= 0:
            raise ValueError(f"epsilon must be > 0. Received: epsilon={epsilon}")
        self.epsilon = epsilon

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"GlobalResponseNormalization expects (batch, freq, time, channels). "
                f"Received: input_shape={input_shape}"
            )
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="zeros")
        self.beta = self.add_weight(name="beta", shape=(), initializer="zeros")

    def call(self, inputs):
        # The norms sum over the whole feature map: float32 also under a 16-bit policy.
        norms = safe_l2_norm(ops.cast(inputs, "float32"), axis=(1, 2))
        normalized = norms / (ops.mean(norms, axis=-1, keepdims=True) + self.epsilon)
        normalized = ops.cast(normalized, inputs.dtype)
        return self.gamma * (inputs * normalized) + self.beta + inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def dcase_complexity(self, input_shape, output_shape):
        # Two scalar parameters; torchinfo (the DCASE checker) counts MACs only for tensors
        # named weight/bias, so the normalisation arithmetic counts zero.
        return 2, 0

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="keras_asc")
class ChannelShuffle(keras.layers.Layer):
    """ShuffleNet channel shuffle for channels-last feature maps.

    Channels are viewed as (groups, channels // groups), the two axes swapped and flattened, so
    every group of a following grouped convolution sees channels from every input group.

    Args:
        groups: number of groups; the channel count must be divisible by it.

    Example:
        >>> y = ChannelShuffle(groups=2)(keras.ops.ones((2, 8, 8, 16)))

    Reference:
        Zhang et al., "ShuffleNet", CVPR 2018.
    """

    def __init__(self, groups=2, **kwargs):
        super().__init__(**kwargs)
        if int(groups) != groups or groups < 1:
            raise ValueError(f"groups must be a positive integer. Received: groups={groups}")
        self.groups = int(groups)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ValueError(
                f"ChannelShuffle needs a channel count divisible by groups={self.groups}. "
                f"Received: input_shape={input_shape}"
            )

    def call(self, inputs):
        _, height, width, channels = inputs.shape
        shape = ops.shape(inputs)
        height = shape[1] if height is None else height
        width = shape[2] if width is None else width
        x = ops.reshape(inputs, (-1, height, width, self.groups, channels // self.groups))
        x = ops.transpose(x, (0, 1, 2, 4, 3))
        return ops.reshape(x, (-1, height, width, channels))

    def compute_output_shape(self, input_shape):
        return input_shape

    def dcase_complexity(self, input_shape, output_shape):
        return 0, 0

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package="keras_asc")
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose training step runs one fused kernel on PyTorch.

    Keras computes batch normalisation from separate ops (moments, subtract, scale, shift) on
    every backend. TensorFlow and XLA fuse them; eager PyTorch runs each op as its own pass
    over the tensor, and autograd runs as many again backwards, which made elementwise ops
    about half of a PyTorch-backend training step of the DCASE baseline (``torch.profiler``
    in ``benchmarks/train_speed.py --profile-steps``). On that backend a float32 training call
    therefore uses ATen's ``native_batch_norm`` (one pass forwards, one fused backward kernel)
    and updates the moving statistics as Keras does (with the biased batch variance). Every
    other case, inference included, is the parent layer unchanged; weights and config are the
    parent's.

    Example:
        >>> y = BatchNormalization()(keras.ops.ones((2, 8, 8, 4)), training=True)
    """

    def call(self, inputs, training=None, mask=None):
        if (
            not training
            or not self.trainable
            or mask is not None
            or keras.backend.backend() != "torch"
            or keras.backend.standardize_dtype(inputs.dtype) != "float32"
            or getattr(self, "synchronized", False)
        ):
            return super().call(inputs, training=training, mask=mask)
        import torch

        axis = self.axis if self.axis >= 0 else len(inputs.shape) + self.axis
        x = torch.movedim(inputs, axis, 1)  # a view: channels-last memory, NCHW shape
        outputs, mean, inverse_std = torch.ops.aten.native_batch_norm(
            x,
            self.gamma.value if self.scale else None,
            self.beta.value if self.center else None,
            None,
            None,
            True,
            0.0,
            self.epsilon,
        )
        with torch.no_grad():
            variance = torch.clamp(inverse_std.pow(-2) - self.epsilon, min=0.0)
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean.value * momentum + mean * (1 - momentum))
            self.moving_variance.assign(
                self.moving_variance.value * momentum + variance * (1 - momentum)
            )
        return torch.movedim(outputs, 1, axis)
