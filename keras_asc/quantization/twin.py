"""The tf_keras twin of a trained Keras 3 keras-asc model.

TF-MOT (quantisation-aware training) and its TFLite conversion only accept tf_keras (Keras 2)
models, so ``to_tf_keras`` rebuilds a Keras 3 model layer by layer with tf_keras: the same
layer types, the same constructor arguments (read from each layer's config), the same names,
and the weights copied by name. The Keras 3 graph is read through public attributes only:
``model.layers`` (topological order), ``layer.input``/``layer.output``, ``model.inputs`` and
``model.outputs``; a block layer (anything with ``apply_sublayers``) is expanded into its
sublayers, so the twin is a flat tf_keras graph.

The twin takes log-mel spectrograms, not waveforms: the front-end (``LogMelSpectrogram``) and
the training-only spectrogram augmentations are left out, because a device computes the
front-end outside the int8 network (``keras_asc.quantization.frontend`` exports what it needs).
An ensemble becomes one tf_keras model with one spectrogram input per member, in member
order, and the weighted sum of the member logits.

TensorFlow's CPU depthwise-convolution kernel rejects unequal strides such as MofleNet's
(2, 1), while TFLite's DEPTHWISE_CONV_2D has them. By default (``native_strides=False``) such a
layer therefore becomes a stride-1 depthwise layer of the same name, and a ``Subsample`` layer
after its BatchNormalization and ReLU keeps every stride-th position: both are per position,
so the result is the strided one ("valid" padding), and TF-MOT still sees the
Conv + BN + ReLU pattern it folds. The TFLite converter only traces the model, so the export
uses the ``native_strides=True`` twin (one strided op, no ``Subsample``), built directly or
with ``with_native_strides`` from a twin or a QAT model.

Example:
    >>> import keras_asc
    >>> from keras_asc.quantization import to_tf_keras
    >>> model = keras_asc.build("moflenet57")
    >>> twin = to_tf_keras(model)
    >>> twin.input_shape
    (None, 256, 64, 1)
"""

import dataclasses
import weakref

import keras
import numpy as np
import tensorflow as tf
import tf_keras

from keras_asc.layers.frontend import LogMelSpectrogram
from keras_asc.layers.normalization import ChannelShuffle as KerasChannelShuffle
from keras_asc.layers.normalization import (
    GlobalResponseNormalization as KerasGlobalResponseNormalization,
)
from keras_asc.models.ensemble import WeightedSum as KerasWeightedSum

TWIN_PACKAGE = "keras_asc"


# === tf_keras twins of the keras-asc custom layers ===


def grn_factor(norms, gamma, epsilon):
    """The per-channel factor of GRN: ``GRN(x) = x * grn_factor(norms, gamma, epsilon) + beta``.

    GRN is ``gamma * x * norms / denominator + beta + x`` (``denominator``: the channel mean
    of the norms plus epsilon), written ``x * factor + beta`` with the factor
    ``(gamma * norms + denominator) / denominator`` computed on the (B, 1, 1, C) norms: the
    full-size tensor goes through one multiply and one add (the int8 model's GRN runs in
    float: two fewer full-size float ops per block, and no constant beyond gamma, beta and
    epsilon).

    Args:
        norms: the per-channel L2 norms over time and frequency, (B, 1, 1, C).
        gamma: the scalar gamma.
        epsilon: added to the channel mean of the norms.

    Returns:
        The factor, (B, 1, 1, C).

    Example:
        >>> factor = grn_factor(tf.ones((1, 1, 1, 4)), 0.5, 1e-6)
    """
    denominator = tf.reduce_mean(norms, axis=-1, keepdims=True) + epsilon
    return (gamma * norms + denominator) / denominator


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
        return inputs * grn_factor(norms, self.gamma, self.epsilon) + self.beta

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


@tf_keras.saving.register_keras_serializable(package=TWIN_PACKAGE)
class Subsample(tf_keras.layers.Layer):
    """Keep every stride-th position along height and width: a depthwise stride, deferred.

    ``to_tf_keras`` puts it after the BatchNormalization and ReLU that follow a depthwise layer
    with unequal strides, which the twin runs at stride 1 (TensorFlow's CPU kernel rejects
    unequal strides). The QAT code gives it no quantiser of its own (its output keeps the
    ReLU's), and ``with_native_strides`` removes it again for the TFLite conversion.

    Args:
        strides: ``(height stride, width stride)`` of the depthwise layer.
        depthwise: name of that depthwise layer, which gets the strides back in
            ``with_native_strides``.

    Example:
        >>> y = Subsample((2, 1), depthwise="dw")(tf.ones((1, 8, 8, 16)))  # (1, 4, 8, 16)
    """

    def __init__(self, strides, depthwise, **kwargs):
        super().__init__(**kwargs)
        self.strides = tuple(int(s) for s in strides)
        self.depthwise = str(depthwise)

    def call(self, inputs):
        return inputs[:, :: self.strides[0], :: self.strides[1], :]

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        for axis, stride in ((1, self.strides[0]), (2, self.strides[1])):
            if shape[axis] is not None:
                shape[axis] = -(-shape[axis] // stride)
        return tf.TensorShape(shape)

    def get_config(self):
        return {**super().get_config(), "strides": list(self.strides), "depthwise": self.depthwise}


def custom_objects():
    """The tf_keras twin classes by name, for ``tf_keras`` deserialisation and TF-MOT scopes."""
    return {
        "GlobalResponseNormalization": GlobalResponseNormalization,
        "ChannelShuffle": ChannelShuffle,
        "WeightedSum": WeightedSum,
        "LogitPooling": LogitPooling,
        "Subsample": Subsample,
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
        factory: ``factory(keras_layer) -> tf_keras layer`` with the same computation, the
            same name and the same ``get_weights()`` order; the weights are copied after it
            is called, to the twin layer of the Keras layer's name.

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
            twin = factory(layer)
            if getattr(twin, "name", None) != layer.name:
                raise ValueError(
                    f"The twin factory of {type(layer).__name__} must name the tf_keras layer "
                    f"like the Keras one (weights are copied by name). Received: "
                    f"{getattr(twin, 'name', None)!r}, expected: {layer.name!r}"
                )
            return twin
    for keras_class, twin_class, names in _twin_table():
        if isinstance(layer, keras_class):
            return twin_class(**_layer_args(layer, names), name=layer.name)
    raise UnsupportedTwinLayerError(
        f"No tf_keras twin for layer {layer.name!r} of type {type(layer).__module__}."
        f"{type(layer).__name__}. Register one with keras_asc.quantization.register_twin."
    )


# === Twin information ===


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


# Specs are kept beside the tf_keras models, not on them: attributes set on a tf_keras model
# would be tracked (and saved) by it. Weak keys let the models be garbage-collected.
_SPECS = weakref.WeakKeyDictionary()


def attach_spec(model, spec):
    """Record ``spec`` as the ``TwinSpec`` of the tf_keras ``model``; returns the model."""
    if not isinstance(spec, TwinSpec):
        raise TypeError(f"spec must be a TwinSpec. Received: {type(spec).__name__}")
    _SPECS[model] = spec
    return model


def twin_spec(model):
    """The ``TwinSpec`` of a twin (or of a QAT model built from one).

    Example:
        >>> twin_spec(to_tf_keras(keras_asc.build("cp_resnet59"))).frontends[0]["hop_length"]
        750
    """
    spec = _SPECS.get(model)
    if spec is None:
        raise ValueError(
            f"Model {getattr(model, 'name', model)!r} carries no keras-asc twin information: "
            f"build it with keras_asc.quantization.to_tf_keras or quantize_aware_train."
        )
    return spec


def layers_deep(model):
    """Every layer of a tf_keras model: nested models' layers and TF-MOT-wrapped layers too."""
    for layer in model.layers:
        if isinstance(layer, tf_keras.Model):
            yield from layers_deep(layer)
        else:
            yield layer
            inner = getattr(layer, "layer", None)  # TF-MOT QuantizeWrapperV2
            if isinstance(inner, tf_keras.layers.Layer):
                yield inner


# === Building the twin graph ===


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _single(values):
    return values[0] if len(values) == 1 else values


class _Waveform:
    """Stands for a waveform tensor of the Keras model: only a front-end may consume it."""


class _PendingStride:
    """A depthwise stride that ``Subsample`` applies after the following BN and ReLU."""

    def __init__(self, depthwise, strides, stage):
        self.depthwise = depthwise
        self.strides = strides
        self.stage = stage  # the layer type expected next: "batch_norm" or "relu"


def _unequal_strides(layer):
    strides = tuple(getattr(layer, "strides", (1, 1)))
    return isinstance(layer, tf_keras.layers.DepthwiseConv2D) and strides[0] != strides[1]


class _TwinBuilder:
    """Applies tf_keras twins of Keras 3 layers to tf_keras tensors and keeps the bookkeeping.

    ``apply(layer, inputs)`` is the one entry point, used for the layers of a functional graph
    and, through ``apply_sublayers``, for the sublayers of a block layer.
    """

    def __init__(self, native_strides):
        self.native_strides = native_strides
        self.twinned = []  # the Keras layers that got a twin, for the weight copy
        self.pending = {}  # id(tf_keras tensor) -> _PendingStride
        self.tensors = []  # keeps the tensors in `pending` alive, so their ids stay theirs

    def apply(self, layer, inputs, *, logit_pooling=False):
        if hasattr(layer, "apply_sublayers"):
            # A block: its own code runs its structure, every sublayer replaced by its twin.
            return layer.apply_sublayers(inputs, lambda sub: lambda x: self.apply(sub, x))
        pending = [self.pending[id(t)] for t in _as_list(inputs) if id(t) in self.pending]
        if pending:
            return self._apply_after_stride(layer, inputs, pending)
        twin = LogitPooling(name=layer.name) if logit_pooling else twin_layer(layer)
        self.twinned.append(layer)
        if not _unequal_strides(twin):
            return twin(inputs)
        if twin.padding != "valid" or twin.data_format != "channels_last":
            raise ValueError(
                f"Depthwise layer {layer.name!r}: unequal strides {tuple(twin.strides)} need "
                f"padding='valid' and channels_last (put explicit ZeroPadding2D before it). "
                f"Received: padding={twin.padding!r}, data_format={twin.data_format!r}"
            )
        strides = tuple(twin.strides)
        if not self.native_strides:
            twin = type(twin).from_config({**twin.get_config(), "strides": (1, 1)})
        return self._mark(twin(inputs), _PendingStride(layer.name, strides, "batch_norm"))

    def _mark(self, tensor, pending):
        self.pending[id(tensor)] = pending
        self.tensors.append(tensor)
        return tensor

    def _apply_after_stride(self, layer, inputs, pending):
        (stride,) = pending
        expected = {
            "batch_norm": keras.layers.BatchNormalization,
            "relu": keras.layers.ReLU,
        }[stride.stage]
        if len(_as_list(inputs)) != 1 or not isinstance(layer, expected):
            raise ValueError(
                f"Depthwise layer {stride.depthwise!r} has unequal strides {stride.strides}, "
                f"which the twin applies after the BatchNormalization and ReLU that follow it; "
                f"expected {expected.__name__} next, received {type(layer).__name__} "
                f"{layer.name!r}."
            )
        twin = twin_layer(layer)
        self.twinned.append(layer)
        outputs = twin(inputs)
        if stride.stage == "batch_norm":
            return self._mark(outputs, _PendingStride(stride.depthwise, stride.strides, "relu"))
        if self.native_strides:
            return outputs
        return Subsample(stride.strides, stride.depthwise, name=f"{stride.depthwise}_subsample")(
            outputs
        )

    def check_finished(self, outputs):
        for tensor in _as_list(outputs):
            if id(tensor) in self.pending:
                stride = self.pending[id(tensor)]
                raise ValueError(
                    f"Depthwise layer {stride.depthwise!r} has unequal strides "
                    f"{stride.strides} but its output reaches the model output without the "
                    f"BatchNormalization and ReLU after which the twin applies them."
                )

    def copy_weights(self, twin):
        """Copy every twinned Keras layer's weights to the twin layer of the same name."""
        for layer in self.twinned:
            source = [np.asarray(w) for w in layer.get_weights()]
            target = twin.get_layer(layer.name)
            shapes = [w.shape for w in source], [tuple(w.shape) for w in target.get_weights()]
            if shapes[0] != shapes[1]:
                raise ValueError(
                    f"Layer {layer.name!r}: weight shapes {shapes[0]} do not match its tf_keras "
                    f"twin's {shapes[1]}."
                )
            target.set_weights(source)


def _twin_functional(model, builder, *, logits, frontend=None, augmentations=()):
    """Twin inputs and output tensor of a Keras 3 functional graph, walked in layer order.

    Returns ``(twin inputs, twin output, front-end configs)``.
    """
    tensors = {}  # id(Keras tensor) -> tf_keras tensor or a _Waveform
    inputs, frontends = [], []
    augmentation_ids = {id(layer) for layer in augmentations}

    def new_input(keras_tensor, config):
        if config is None:
            raise ValueError(
                f"Model {model.name!r} has no `frontend` attribute (its LogMelSpectrogram); the "
                f"int8 export needs the front-end settings."
            )
        twin_input = tf_keras.Input(shape=tuple(keras_tensor.shape[1:]), name="spectrogram")
        inputs.append(twin_input)
        frontends.append(config)
        return twin_input

    for layer in model.layers:
        outputs = _as_list(layer.output)
        if isinstance(layer, keras.layers.InputLayer):
            (tensor,) = outputs
            if len(tensor.shape) == 4:
                tensors[id(tensor)] = new_input(tensor, frontend)
            else:
                tensors[id(tensor)] = _Waveform()
            continue
        sources = _as_list(layer.input)
        if any(id(t) not in tensors for t in sources):
            raise ValueError(
                f"Model {model.name!r}: layer {layer.name!r} takes a tensor that no earlier "
                f"layer's first call produced (a layer called twice?); twins support layers "
                f"called once."
            )
        values = [tensors[id(t)] for t in sources]
        waveform = any(isinstance(v, _Waveform) for v in values)
        if isinstance(layer, LogMelSpectrogram) and waveform:
            results = [new_input(outputs[0], layer.get_config())]
        elif id(layer) in augmentation_ids:
            results = values  # training-only: the identity at inference
        elif waveform:
            raise ValueError(
                f"Model {model.name!r}: layer {layer.name!r} takes the waveform; the twin "
                f"needs (batch, mel bins, frames, 1) spectrograms or a LogMelSpectrogram "
                f"front-end in between."
            )
        else:
            pooling = outputs[0] is logits and _is_logit_pooling(layer)
            results = _as_list(builder.apply(layer, _single(values), logit_pooling=pooling))
        for tensor, result in zip(outputs, results, strict=True):
            tensors[id(tensor)] = result
    output = tensors[id(logits)]
    builder.check_finished(output)
    return inputs, output, frontends


def _is_logit_pooling(layer):
    return (
        type(layer) is keras.layers.GlobalAveragePooling2D
        and not layer.keepdims
        and layer.data_format == "channels_last"
    )


def _num_samples(model):
    shape = tuple(getattr(model, "inputs", None)[0].shape) if getattr(model, "inputs", None) else ()
    if len(shape) == 2 and shape[1]:
        return int(shape[1])
    return getattr(model, "num_samples", None)


def _check_one_output(model):
    outputs = getattr(model, "outputs", None)
    if not isinstance(model, keras.Model) or not outputs:
        raise TypeError(
            f"to_tf_keras needs a built Keras 3 functional model, a model with a `backbone` or "
            f"an Ensemble. Received: {type(model).__name__}"
        )
    if len(outputs) != 1:
        raise ValueError(
            f"Model {model.name!r} has {len(outputs)} outputs; expected one (the logits)."
        )
    return outputs[0]


def _twin_single(model, native_strides):
    builder = _TwinBuilder(native_strides)
    frontend = getattr(model, "frontend", None)
    frontend_config = frontend.get_config() if frontend is not None else None
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, keras.Model):
        # An AudioClassifier: front-end, then a functional backbone on spectrograms.
        logits = _check_one_output(backbone)
        inputs, outputs, frontends = _twin_functional(
            backbone, builder, logits=logits, frontend=frontend_config
        )
    else:
        logits = _check_one_output(model)
        inputs, outputs, frontends = _twin_functional(
            model,
            builder,
            logits=logits,
            frontend=frontend_config,
            augmentations=getattr(model, "augmentation_layers", ()),
        )
    twin = tf_keras.Model(_single(inputs), outputs, name=model.name)
    builder.copy_weights(twin)
    spec = TwinSpec(name=model.name, frontends=tuple(frontends), num_samples=_num_samples(model))
    return attach_spec(twin, spec)


def _twin_ensemble(model, native_strides):
    inputs, outputs, frontends = [], [], []
    for member in model.members:
        member_twin = to_tf_keras(member, native_strides=native_strides)
        spec = twin_spec(member_twin)
        if len(spec.frontends) != 1:
            raise ValueError(
                f"Model {model.name!r}: member {member.name!r} must take one spectrogram "
                f"(one front-end); its twin takes {len(spec.frontends)}."
            )
        member_input = tf_keras.Input(
            shape=tuple(member_twin.input_shape[1:]), name=f"{member.name}_spectrogram"
        )
        inputs.append(member_input)
        outputs.append(member_twin(member_input))
        frontends.extend(spec.frontends)
    weights = tuple(float(w) for w in model.member_weights)
    summed = WeightedSum(weights, name=f"{model.name}_weighted_sum")(outputs)
    spec = TwinSpec(
        name=model.name,
        frontends=tuple(frontends),
        num_samples=_num_samples(model),
        member_names=tuple(member.name for member in model.members),
        member_weights=weights,
    )
    return attach_spec(tf_keras.Model(inputs, summed, name=model.name), spec)


def is_ensemble(model):
    """True for an ensemble: a model with ``members`` (a list) and ``member_weights``."""
    return isinstance(getattr(model, "members", None), (list, tuple)) and hasattr(
        model, "member_weights"
    )


def to_tf_keras(model, native_strides=False):
    """Build the tf_keras twin of a Keras 3 keras-asc model, weights included.

    The front-end and spectrogram augmentations are left out: the twin takes normalised
    log-mel spectrograms (batch, mel bins, frames, 1). Every other layer is rebuilt with
    the tf_keras layer of the same type, constructor arguments and name (the keras-asc
    layers GRN, ChannelShuffle and WeightedSum have tf_keras twins in this module; block
    layers are expanded into their sublayers) and its weights are copied by layer name,
    moving batch-normalisation statistics included. An ensemble becomes one model with one
    spectrogram input per member (in member order) and the weighted sum of the member logits.

    Args:
        model: a built Keras 3 keras-asc model: a functional model (waveform input with a
            ``LogMelSpectrogram`` layer, or spectrogram input with a ``frontend``
            attribute), a model with a ``frontend`` and a functional ``backbone``, or an
            ``Ensemble`` (``members`` and ``member_weights``).
        native_strides: ``False`` (the default): a depthwise layer with unequal strides runs
            at stride 1 and a ``Subsample`` after its BN and ReLU keeps every stride-th
            position, so TensorFlow can run (and train) the twin. ``True``: the strided
            depthwise layer as it is, which only the TFLite converter can use.

    Returns:
        A tf_keras functional model; ``twin_spec(twin)`` holds the front-end settings of each
        input and, for ensembles, the member names and weights.

    Example:
        >>> twin = to_tf_keras(keras_asc.build("cp_resnet59"))
        >>> twin.output_shape
        (None, 10)
    """
    if is_ensemble(model):
        return _twin_ensemble(model, native_strides)
    return _twin_single(model, native_strides)


# === Native strides for the TFLite converter ===


def _rewire(config, subsamples):
    """Drop the ``Subsample`` layers of a functional config, feeding their consumers their input.

    ``subsamples`` maps each dropped layer name to its inbound reference.
    """
    for entry in config["layers"]:
        for node in entry["inbound_nodes"]:
            for index, reference in enumerate(node):
                if reference[0] in subsamples:
                    node[index] = [*subsamples[reference[0]][:3], *reference[3:]]
    for key in ("output_layers", "input_layers"):
        config[key] = [
            [*subsamples[ref[0]][:3]] if ref[0] in subsamples else ref for ref in config[key]
        ]


def inner_layer_config(entry):
    """The config entry of a layer, or of the layer a TF-MOT ``QuantizeWrapperV2`` wraps."""
    # A TF-MOT QuantizeWrapperV2 keeps the wrapped layer's config under "layer".
    inner = entry["config"].get("layer")
    return inner if isinstance(inner, dict) and "class_name" in inner else entry


def native_strides_config(config):
    """The functional tf_keras config with every ``Subsample`` folded back into its depthwise layer.

    Works on twins and TF-MOT QAT models (wrapped layers) and recurses into nested models
    (ensemble members). The config is changed in place and returned.
    """
    subsamples, strides = {}, {}
    for entry in config["layers"]:
        inner = inner_layer_config(entry)
        if inner["class_name"] in ("Functional", "Model") and "layers" in inner["config"]:
            native_strides_config(inner["config"])
        elif inner["class_name"].split(">")[-1] == "Subsample":
            ((reference,),) = entry["inbound_nodes"]
            subsamples[entry["config"]["name"]] = reference
            strides[inner["config"]["depthwise"]] = list(inner["config"]["strides"])
    if not subsamples:
        return config
    for entry in config["layers"]:
        inner = inner_layer_config(entry)
        if inner["config"].get("name") in strides:
            inner["config"]["strides"] = strides.pop(inner["config"]["name"])
    if strides:
        raise ValueError(
            f"Subsample layers name depthwise layers that the model lacks: {sorted(strides)}"
        )
    config["layers"] = [e for e in config["layers"] if e["config"]["name"] not in subsamples]
    _rewire(config, subsamples)
    return config


def _without_build_configs(config):
    # Built from its "build_config" and then called again by the functional rebuild, TF-MOT's
    # QuantizeLayer adds its range variables twice. Without build configs every layer is built
    # once, on its call, with exactly the weights of the original.
    if isinstance(config, dict):
        config.pop("build_config", None)
        values = config.values()
    else:
        values = config if isinstance(config, list) else ()
    for value in values:
        _without_build_configs(value)
    return config


def copy_weights_by_name(source, target):
    """Set every layer's weights in the tf_keras ``target`` from the ``source`` layer of its name.

    Nested models are matched by name and copied layer by layer. Layers of ``source`` that
    ``target`` lacks (a ``Subsample``) are ignored.

    Example:
        >>> copy_weights_by_name(qat_model, with_native_strides(qat_model))
    """
    for layer in target.layers:
        origin = source.get_layer(layer.name)
        if isinstance(layer, tf_keras.Model):
            copy_weights_by_name(origin, layer)
        elif layer.weights:
            weights = origin.get_weights()
            shapes = [tuple(w.shape) for w in weights], [tuple(w.shape) for w in layer.weights]
            if shapes[0] != shapes[1]:
                raise ValueError(
                    f"Layer {layer.name!r}: the source has weights of shapes {shapes[0]}, the "
                    f"target expects {shapes[1]}."
                )
            layer.set_weights(weights)


def rebuilt(model, rewrite, extra_objects=None):
    """``model`` rebuilt from ``rewrite(config)`` with its weights copied by layer name.

    The graph-rewrite step of the twin options (``with_native_strides``,
    ``low_arena.with_blockwise_grn``): ``rewrite`` changes the functional config (the
    layers' class names, arguments, connections) and returns it, or returns ``None`` when
    nothing applies, and then ``model`` itself is returned. Layer names are kept, so the
    weights copy over and ``twin_spec`` follows.

    Args:
        model: a tf_keras twin or a QAT model built from one.
        rewrite: function of a config dict (a deep copy, free to change).
        extra_objects: extra classes for deserialisation (TF-MOT's quantisation configs,
            the rewrite's layer classes); the twin layers of this module are always known.
    """
    config = rewrite(model.get_config())
    if config is None:
        return model
    config = _without_build_configs(config)
    with tf_keras.utils.custom_object_scope({**custom_objects(), **(extra_objects or {})}):
        result = tf_keras.Model.from_config(config)
    copy_weights_by_name(model, result)
    spec = _SPECS.get(model)
    return attach_spec(result, spec) if spec is not None else result


def with_native_strides(model, extra_objects=None):
    """The twin (or QAT model) with native depthwise strides and no ``Subsample``, same weights.

    The model is rebuilt from its config (``native_strides_config``) and its weights are
    copied by layer name (``rebuilt``); a model without ``Subsample`` layers is returned as it
    is. The result is for the TFLite converter, which traces it; TensorFlow cannot run it on
    CPU.

    Args:
        model: a tf_keras twin from ``to_tf_keras`` or a QAT model built from one.
        extra_objects: extra classes for deserialisation (TF-MOT's quantisation configs);
            the twin layers of this module are always known.

    Example:
        >>> converter_model = with_native_strides(to_tf_keras(keras_asc.build("moflenet57")))
    """
    if not any(isinstance(layer, Subsample) for layer in layers_deep(model)):
        return model
    return rebuilt(model, native_strides_config, extra_objects)
