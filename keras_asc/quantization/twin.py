"""The tf_keras twin of a trained Keras 3 keras-asc model.

TF-MOT (quantisation-aware training) and its TFLite conversion only accept tf_keras (Keras 2)
models, so ``to_tf_keras`` rebuilds a Keras 3 functional model layer by layer with tf_keras:
the same layer types, the same constructor arguments, the same names and the same weights.

The twin takes log-mel spectrograms, not waveforms: the front-end (``LogMelSpectrogram``) and
the training-only spectrogram augmentations are left out, because a device computes the
front-end outside the int8 network (``keras_asc.quantization.frontend`` exports what it needs).
An ensemble becomes one tf_keras model with one spectrogram input per member, in member
order, and the weighted sum of the member logits.

TensorFlow's CPU depthwise-convolution kernel rejects unequal strides such as MofleNet's
(2, 1), while TFLite's DEPTHWISE_CONV_2D has them. Such twin layers therefore compute, when
TensorFlow runs them, the stride-1 convolution and keep every stride-th position (identical
for "valid" padding, as ``keras_asc.layers.DepthwiseConv2D`` does); inside
``native_depthwise_strides()`` (used while converting to TFLite) they emit the single strided
op, so the int8 model does not pay for the stride-1 detour.

Example:
    >>> import keras_asc
    >>> from keras_asc.quantization import to_tf_keras
    >>> model = keras_asc.build("moflenet57")
    >>> twin = to_tf_keras(model)
    >>> twin.input_shape
    (None, 256, 64, 1)
"""

import contextlib
import dataclasses

import keras
import numpy as np
import tensorflow as tf
import tf_keras

TWIN_PACKAGE = "keras_asc"


# === tf_keras twins of the keras-asc custom layers ===


@tf_keras.saving.register_keras_serializable(package=TWIN_PACKAGE)
class GlobalResponseNormalization(tf_keras.layers.Layer):
    """tf_keras twin of ``keras_asc.layers.GlobalResponseNormalization`` (scalar gamma, beta).

    Args:
        epsilon: added to the channel mean of the per-channel L2 norms.

    Example:
        >>> y = GlobalResponseNormalization()(tf.ones((1, 8, 8, 16)))
    """

    def __init__(self, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="zeros")
        self.beta = self.add_weight(name="beta", shape=(), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        norms = tf.sqrt(tf.reduce_sum(tf.square(inputs), axis=(1, 2), keepdims=True))
        normalized = norms / (tf.reduce_mean(norms, axis=-1, keepdims=True) + self.epsilon)
        return self.gamma * (inputs * normalized) + self.beta + inputs

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@tf_keras.saving.register_keras_serializable(package=TWIN_PACKAGE)
class ChannelShuffle(tf_keras.layers.Layer):
    """tf_keras twin of ``keras_asc.layers.ChannelShuffle``.

    The shuffle is a fixed permutation of the channels, written as one gather so that the
    TFLite model has a single int8 GATHER op (its output keeps the input's quantisation)
    instead of reshape, 5-D transpose and reshape.

    Args:
        groups: number of groups; the channel count must be divisible by it.

    Example:
        >>> y = ChannelShuffle(groups=2)(tf.ones((1, 8, 8, 16)))
    """

    def __init__(self, groups=2, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        if channels % self.groups:
            raise ValueError(
                f"ChannelShuffle twin {self.name!r}: channels ({channels}) must be divisible by "
                f"groups={self.groups}."
            )
        # Output channel j takes input channel (j % groups) * (C // groups) + j // groups.
        self._permutation = shuffle_permutation(channels, self.groups)
        super().build(input_shape)

    def call(self, inputs):
        return tf.gather(inputs, self._permutation, axis=-1)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


def shuffle_permutation(channels, groups):
    """Source channel of every output channel of a ShuffleNet channel shuffle."""
    return np.arange(channels).reshape(groups, channels // groups).T.reshape(-1).astype("int32")


@tf_keras.saving.register_keras_serializable(package=TWIN_PACKAGE)
class WeightedSum(tf_keras.layers.Layer):
    """tf_keras twin of ``keras_asc.models.WeightedSum``: fixed-weight sum of member logits.

    Args:
        member_weights: one float per input tensor.

    Example:
        >>> y = WeightedSum([0.6, 0.4])([tf.ones((1, 10)), tf.zeros((1, 10))])
    """

    def __init__(self, member_weights, **kwargs):
        super().__init__(**kwargs)
        self.member_weights = [float(w) for w in member_weights]

    def call(self, inputs):
        total = inputs[0] * self.member_weights[0]
        for weight, logits in zip(self.member_weights[1:], inputs[1:], strict=True):
            total = total + logits * weight
        return total

    def get_config(self):
        return {**super().get_config(), "member_weights": self.member_weights}


@tf_keras.saving.register_keras_serializable(package=TWIN_PACKAGE)
class LogitPooling(tf_keras.layers.Layer):
    """Global average pooling of the head that produces the logits, written as sum x 1/N.

    The twin uses it for a ``GlobalAveragePooling2D`` whose output is the model output. The
    value is the mean, but the TFLite converter treats MEAN as an int8 op that keeps its
    input's scale, which would round the logits to 8 bits (turning close classes into ties),
    whereas it runs a SUM without quantisation statistics in float after a DEQUANTIZE. The
    QAT code leaves this layer unquantised, so the int8 model's head is int8 up to the pooled
    logits, which keep float resolution (the model output is float32 anyway).

    Example:
        >>> y = LogitPooling()(tf.ones((1, 8, 8, 10)))
    """

    def call(self, inputs):
        positions = int(inputs.shape[1]) * int(inputs.shape[2])
        return tf.reduce_sum(inputs, axis=(1, 2)) * (1.0 / positions)


def custom_objects():
    """The tf_keras twin classes by name, for ``tf_keras`` deserialisation and TF-MOT scopes."""
    return {
        "GlobalResponseNormalization": GlobalResponseNormalization,
        "ChannelShuffle": ChannelShuffle,
        "WeightedSum": WeightedSum,
        "LogitPooling": LogitPooling,
    }


# === Keras 3 layer -> tf_keras layer ===


def _layer_args(layer, names):
    config = layer.get_config()
    missing = [name for name in names if name not in config]
    if missing:
        raise UnsupportedTwinLayerError(
            f"Layer {layer.name!r}: its config lacks {missing}; cannot build its tf_keras twin."
        )
    args = {name: config[name] for name in names}
    if not isinstance(args.get("activation", "linear"), str):
        raise UnsupportedTwinLayerError(
            f"Layer {layer.name!r} uses the activation {args['activation']!r}; tf_keras twins "
            f"support built-in activations given by name only."
        )
    return args


def _twin_table():
    """(Keras 3 class, tf_keras class, constructor arguments copied from the Keras config)."""
    from keras_asc.layers.normalization import ChannelShuffle as KerasChannelShuffle
    from keras_asc.layers.normalization import (
        GlobalResponseNormalization as KerasGlobalResponseNormalization,
    )
    from keras_asc.models.ensemble import WeightedSum as KerasWeightedSum

    K, T = keras.layers, tf_keras.layers
    conv = (
        "kernel_size",
        "strides",
        "padding",
        "data_format",
        "dilation_rate",
        "activation",
        "use_bias",
    )
    pool = ("pool_size", "strides", "padding", "data_format")
    # DepthwiseConv2D before Conv2D: keras_asc.layers.DepthwiseConv2D subclasses the Keras one.
    return (
        (K.ZeroPadding2D, T.ZeroPadding2D, ("padding", "data_format")),
        (K.DepthwiseConv2D, T.DepthwiseConv2D, (*conv, "depth_multiplier")),
        (K.Conv2D, T.Conv2D, (*conv, "filters", "groups")),
        (
            K.BatchNormalization,
            T.BatchNormalization,
            ("axis", "momentum", "epsilon", "center", "scale"),
        ),
        (K.ReLU, T.ReLU, ("max_value", "negative_slope", "threshold")),
        (K.Activation, T.Activation, ("activation",)),
        (K.AveragePooling2D, T.AveragePooling2D, pool),
        (K.MaxPooling2D, T.MaxPooling2D, pool),
        (K.GlobalAveragePooling2D, T.GlobalAveragePooling2D, ("data_format", "keepdims")),
        (K.GlobalMaxPooling2D, T.GlobalMaxPooling2D, ("data_format", "keepdims")),
        (K.Add, T.Add, ()),
        (K.Multiply, T.Multiply, ()),
        (K.Concatenate, T.Concatenate, ("axis",)),
        (K.Dense, T.Dense, ("units", "activation", "use_bias")),
        (K.Flatten, T.Flatten, ("data_format",)),
        (K.Reshape, T.Reshape, ("target_shape",)),
        (K.Dropout, T.Dropout, ("rate",)),
        (KerasGlobalResponseNormalization, GlobalResponseNormalization, ("epsilon",)),
        (KerasChannelShuffle, ChannelShuffle, ("groups",)),
        (KerasWeightedSum, WeightedSum, ("member_weights",)),
    )


_EXTRA_FACTORIES = []


def register_twin(keras_class, factory):
    """Teach ``to_tf_keras`` a layer type it does not know (for plugin layers).

    Args:
        keras_class: the Keras 3 layer class.
        factory: ``factory(keras_layer) -> tf_keras layer`` with the same computation and the
            same ``get_weights()`` order; the weights are copied after it is called.

    Example:
        >>> register_twin(MyGain, lambda layer: MyGainTwin(gain_db=layer.gain_db))
    """
    if not (isinstance(keras_class, type) and issubclass(keras_class, keras.layers.Layer)):
        raise TypeError(f"keras_class must be a Keras 3 layer class. Received: {keras_class!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable. Received: {factory!r}")
    _EXTRA_FACTORIES.insert(0, (keras_class, factory))


class UnsupportedTwinLayerError(TypeError):
    """A Keras 3 layer has no tf_keras twin."""


def twin_layer(layer):
    """A fresh tf_keras layer with the configuration (not yet the weights) of ``layer``."""
    for keras_class, factory in _EXTRA_FACTORIES:
        if isinstance(layer, keras_class):
            return factory(layer)
    for keras_class, twin_class, names in _twin_table():
        if isinstance(layer, keras_class):
            return twin_class(**_layer_args(layer, names), name=layer.name)
    raise UnsupportedTwinLayerError(
        f"No tf_keras twin for layer {layer.name!r} of type {type(layer).__module__}."
        f"{type(layer).__name__}. Register one with keras_asc.quantization.register_twin."
    )


# === Graph walk ===


@dataclasses.dataclass(frozen=True)
class TwinSpec:
    """What a twin (and its int8 export) needs to know about the Keras 3 model it came from.

    Attributes:
        name: name of the Keras 3 model.
        frontends: one ``LogMelSpectrogram`` config per twin input, in input order.
        num_samples: waveform length the Keras 3 model takes (``None`` for a spectrogram model).
        member_names: ensemble member names in input order (empty for a single model).
        member_weights: ensemble logit weights in input order (empty for a single model).
    """

    name: str
    frontends: tuple
    num_samples: int | None
    member_names: tuple = ()
    member_weights: tuple = ()


def twin_spec(model):
    """The ``TwinSpec`` of a twin (or of a QAT model built from one)."""
    spec = getattr(model, "_keras_asc_spec", None)
    if spec is None:
        raise ValueError(
            f"Model {model.name!r} carries no keras-asc twin information: build it with "
            f"keras_asc.quantization.to_tf_keras or quantize_aware_train."
        )
    return spec


def _attach_spec(model, spec):
    # A frozen dataclass is not tracked by tf_keras, so it is stored as it is.
    object.__setattr__(model, "_keras_asc_spec", spec)
    return model


def _spectrogram_source(layer, model):
    """True for the layers whose outputs become twin inputs: the front-end and augmentations."""
    from keras_asc.layers.frontend import LogMelSpectrogram

    augmentation_ids = {id(a) for a in getattr(model, "augmentation_layers", ())}
    return isinstance(layer, LogMelSpectrogram) or id(layer) in augmentation_ids


def _frontend_config(model):
    frontend = getattr(model, "frontend", None)
    if frontend is None:
        raise ValueError(
            f"Model {model.name!r} has no `frontend` attribute (its LogMelSpectrogram); the "
            f"int8 export needs the front-end settings."
        )
    return frontend.get_config()


class _Walker:
    """Rebuild a Keras 3 functional graph with tf_keras layers, memoised per tensor."""

    def __init__(self, model):
        self.model = model
        self.tensors = {}
        self.inputs = []
        self.frontends = []
        self.member_names = []
        self.member_weights = ()

    def convert(self, tensor):
        key = id(tensor)
        if key not in self.tensors:
            self.tensors[key] = self._convert(tensor)
        return self.tensors[key]

    def _new_input(self, shape, name):
        twin_input = tf_keras.Input(shape=tuple(shape[1:]), name=name)
        self.inputs.append(twin_input)
        return twin_input

    def _convert(self, tensor):
        layer, node_index, tensor_index = tensor._keras_history
        node = layer._inbound_nodes[node_index]
        if isinstance(layer, keras.layers.InputLayer):
            if len(tensor.shape) != 4:
                raise ValueError(
                    f"Model {self.model.name!r}: input {layer.name!r} of shape {tensor.shape} "
                    f"feeds the network directly; the twin needs (batch, mel bins, frames, 1) "
                    f"spectrograms or a LogMelSpectrogram front-end in between."
                )
            self.frontends.append(_frontend_config(self.model))
            return self._new_input(tensor.shape, "spectrogram")
        if _spectrogram_source(layer, self.model):
            self.frontends.append(_frontend_config(self.model))
            return self._new_input(tensor.shape, "spectrogram")
        if isinstance(layer, keras.Model):
            return self._convert_member(layer, node)[tensor_index]
        inputs = [self.convert(t) for t in node.input_tensors]
        if isinstance(getattr(layer, "member_weights", None), (list, tuple)):
            self.member_weights = tuple(layer.member_weights)  # the ensemble's WeightedSum
        if self._is_logit_pooling(layer, tensor):
            twin = LogitPooling(name=layer.name)
        else:
            twin = twin_layer(layer)
        outputs = twin(inputs if len(inputs) > 1 else inputs[0])
        self._copy_weights(layer, twin)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return outputs[tensor_index]

    def _is_logit_pooling(self, layer, tensor):
        return (
            type(layer) is keras.layers.GlobalAveragePooling2D
            and not layer.keepdims
            and layer.data_format == "channels_last"
            and tensor is self.model.outputs[0]
        )

    def _convert_member(self, member, node):
        if not all(
            isinstance(t._keras_history[0], keras.layers.InputLayer) for t in node.input_tensors
        ):
            raise ValueError(
                f"Model {self.model.name!r}: nested model {member.name!r} must be fed from the "
                f"outer model's waveform input to become a twin with its own spectrogram input."
            )
        member_twin = to_tf_keras(member)
        spec = twin_spec(member_twin)
        if len(spec.frontends) != 1:
            raise ValueError(
                f"Model {self.model.name!r}: member {member.name!r} must take one spectrogram "
                f"(one front-end); its twin takes {len(spec.frontends)}."
            )
        member_input = self._new_input(member_twin.input_shape, f"{member.name}_spectrogram")
        self.frontends.extend(spec.frontends)
        self.member_names.append(member.name)
        return [member_twin(member_input)]

    def _copy_weights(self, layer, twin):
        source = [np.asarray(w) for w in layer.get_weights()]
        target = twin.get_weights()
        shapes = [w.shape for w in source], [w.shape for w in target]
        if shapes[0] != shapes[1]:
            raise ValueError(
                f"Layer {layer.name!r}: weight shapes {shapes[0]} do not match its tf_keras twin's "
                f"{shapes[1]}."
            )
        twin.set_weights(source)


def to_tf_keras(model):
    """Build the tf_keras twin of a Keras 3 keras-asc model, weights included.

    The front-end and spectrogram augmentations are left out: the twin takes normalised
    log-mel spectrograms (batch, mel bins, frames, 1). Every other layer is rebuilt with
    the tf_keras layer of the same type, constructor arguments and name (the keras-asc
    layers GRN, ChannelShuffle and WeightedSum have tf_keras twins in this module) and its
    weights are copied, moving batch-normalisation statistics included. An ensemble becomes
    one model with one spectrogram input per member (in member order) and the weighted sum
    of the member logits.

    Args:
        model: a built Keras 3 functional keras-asc model (waveform or spectrogram input) or
            an ``Ensemble``.

    Returns:
        A tf_keras functional model; ``twin_spec(twin)`` holds the front-end settings of each
        input and, for ensembles, the member names and weights.

    Example:
        >>> twin = to_tf_keras(keras_asc.build("cp_resnet59"))
        >>> twin.output_shape
        (None, 10)
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "outputs") or not model.outputs:
        raise TypeError(
            f"to_tf_keras needs a built Keras 3 functional model. Received: {type(model).__name__}"
        )
    if len(model.outputs) != 1:
        raise ValueError(
            f"Model {model.name!r} has {len(model.outputs)} outputs; expected one (the logits)."
        )
    walker = _Walker(model)
    outputs = walker.convert(model.outputs[0])
    twin = tf_keras.Model(
        walker.inputs if len(walker.inputs) > 1 else walker.inputs[0], outputs, name=model.name
    )
    input_shape = tuple(model.inputs[0].shape)
    spec = TwinSpec(
        name=model.name,
        frontends=tuple(walker.frontends),
        num_samples=int(input_shape[1]) if len(input_shape) == 2 and input_shape[1] else None,
        member_names=tuple(walker.member_names),
        member_weights=walker.member_weights,
    )
    return _attach_spec(patch_unequal_strides(twin), spec)


# === Unequal depthwise strides ===

_native_strides = [False]


@contextlib.contextmanager
def native_depthwise_strides():
    """Within this context, twin depthwise layers with unequal strides emit the strided op.

    TensorFlow cannot execute that op on CPU, but the TFLite converter only traces it.
    """
    _native_strides.append(True)
    try:
        yield
    finally:
        _native_strides.pop()


def _unequal_stride_call(layer):
    def call(inputs):
        if _native_strides[-1]:
            return type(layer).call(layer, inputs)
        outputs = tf.nn.depthwise_conv2d(
            inputs,
            layer.depthwise_kernel,
            strides=(1, 1, 1, 1),
            padding="VALID",
            dilations=layer.dilation_rate,
        )
        outputs = outputs[:, :: layer.strides[0], :: layer.strides[1], :]
        if layer.use_bias:
            outputs = outputs + layer.bias
        return layer.activation(outputs) if layer.activation is not None else outputs

    return call


def _layers_deep(model):
    for layer in model.layers:
        if isinstance(layer, tf_keras.Model):
            yield from _layers_deep(layer)
        else:
            yield layer
            inner = getattr(layer, "layer", None)  # TF-MOT QuantizeWrapperV2
            if isinstance(inner, tf_keras.layers.Layer):
                yield inner


def patch_unequal_strides(model):
    """Make every depthwise layer with unequal strides in ``model`` runnable by TensorFlow.

    Applied by ``to_tf_keras`` and again by the QAT code (TF-MOT rebuilds the layers). Returns
    the model.
    """
    for layer in _layers_deep(model):
        if not isinstance(layer, tf_keras.layers.DepthwiseConv2D):
            continue
        strides = tuple(layer.strides)
        if strides[0] == strides[1]:
            continue
        if layer.padding != "valid" or layer.data_format != "channels_last":
            raise ValueError(
                f"Depthwise layer {layer.name!r}: unequal strides {strides} need padding='valid' "
                f"and channels_last (put explicit ZeroPadding2D before it). Received: "
                f"padding={layer.padding!r}, data_format={layer.data_format!r}"
            )
        # An instance attribute: tf_keras and TF-MOT's wrapper both look `call` up per call.
        layer.call = _unequal_stride_call(layer)
    return model
