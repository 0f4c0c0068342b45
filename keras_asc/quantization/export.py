"""int8 TFLite export of keras-asc models, with the DCASE parameter-memory check.

``export_int8`` writes three files:

- ``NAME.tflite``: the int8 network. Weights are int8 (per output channel), activations int8
  (per tensor), biases int32 (batch normalisation folded into the convolutions), GRN in
  float32 between a DEQUANTIZE and a QUANTIZE, and the global average pooling of the head
  in float32 on the dequantised int8 head output (the logits keep float resolution). Inputs and outputs are **float32**: the model
  starts with one QUANTIZE op per input and ends with a DEQUANTIZE, so a host feeds the
  front-end output as it is and reads float logits; the input scale and zero point are
  recorded in ``NAME.json`` for a device that prefers to quantise the spectrogram itself.
  The batch dimension is dynamic (resize the input tensors). An ensemble is one file with one
  spectrogram input per member and the weighted sum of the member logits (float32).
  With ``frontend_in_file=True`` the file starts with the float32 log-mel front-end instead
  (builtin ops ahead of the first QUANTIZE) and takes one waveform (batch, num_samples).
  MofleNet's channel shuffles are folded away (``fold_shuffle=True``, the default): the Keras
  model and its tf_keras twin keep the shuffle (one GATHER per block in the converted file),
  and ``fold_channel_shuffles`` then removes each GATHER from the flatbuffer and permutes the
  constants after it instead (depthwise filters, their int32 biases and per-channel
  quantisation scales, the input-channel axis of the 1x1 projection). Done on the converted
  file rather than in the twin, it is exact by construction: no weight is re-quantised, every
  int8 product and int32 sum stays what it was, and the logits are bit-identical, whereas a
  twin without the shuffle would need its QAT quantiser ranges permuted too and converted
  again. No converter or LiteRT tool removes a GATHER whose permutation a later layer could
  absorb, hence the hand-written pass. The strided shortcuts' 3x3 average pooling runs in
  float32 between a DEQUANTIZE and a QUANTIZE to the same scale (``float_average_pools``):
  bit-identical to the int8 pooling, but LiteRT's XNNPACK delegate runs it, where the int8
  op split the delegated graph. With ``low_arena=True`` (a microcontroller build) the
  pooling stays int8: TFLite Micro has an int8 kernel for it, and the float tensors would
  raise its arena.
- ``NAME.frontend.npz``: the log-mel front-end of every input (window, dense and sparse mel
  filter bank, constants), computed outside the int8 model; ``frontend.frontend_numpy`` is the
  reference.
- ``NAME.json``: inputs (names, shapes, quantisation, front-end constants), output, members
  and weights, parameter bytes, file size, and the tensor arena TensorFlow Lite for
  Microcontrollers needs to run the file (``"tflite_micro"``, see ``micro.micro_report``).

With ``int8_io=True`` the QUANTIZE at each input and the float output go: the file takes int8
spectrograms and gives int8 logits, their scales and zero points recorded in ``NAME.json``.

Parameter memory is read back from the flatbuffer (LiteRT's schema module): the constant
input tensors of the ops (not produced by an op, not a model input) are the parameters. The
checked figure follows the DCASE rule (parameters times bytes per parameter at the model's
precision): int8 weights 1 byte per element, the int32 bias inputs of CONV_2D /
DEPTHWISE_CONV_2D / FULLY_CONNECTED 1 byte per element (they are the folded batch
normalisation, whose 2C parameters the rule counts at 1 byte each in an int8 model), float32
constants 4 bytes (GRN gamma, beta and epsilon, the 1/N of the logit pooling, ensemble
weights: counted although only gamma and beta are learned). ``storage_bytes`` gives what the
parameters occupy in the file, int32 biases at 4 bytes. Other integer constants (paddings,
reduction axes, gather indices, shapes) describe the graph, not learned values, and are listed
but not counted; quantisation scales and zero points are metadata of the tensors and are not
counted either (the DCASE convention counts parameters, not their metadata).
"""

import contextlib
import dataclasses
import json
import os
import tempfile
import warnings

import numpy as np
import tensorflow as tf
import tf_keras
from ai_edge_litert import schema_py_generated as tflite_schema
from ai_edge_litert.interpreter import Interpreter
from tensorflow.lite.tools import flatbuffer_utils

from keras_asc.complexity import MAX_PARAM_BYTES, BudgetExceededError
from keras_asc.layers.frontend import LogMelSpectrogram
from keras_asc.quantization import micro as micro_module
from keras_asc.quantization import qat
from keras_asc.quantization import twin as twin_module
from keras_asc.quantization.frontend import (
    frontend_numpy,
    frontend_params,
    save_frontend_params,
    scalar_params,
)
from keras_asc.quantization.twin import layers_deep, to_tf_keras, twin_spec, with_native_strides

EXPORT_FORMAT = "keras_asc.int8/1"
DEFAULT_CALIBRATION_SAMPLES = 256
_BIAS_INPUT = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "TRANSPOSE_CONV": 3}
_BYTES = {"int8": 1, "uint8": 1, "int16": 2, "float16": 2, "int32": 4, "float32": 4, "int64": 8}


# === Interpreter ===


def make_interpreter(model_path=None, model_content=None, num_threads=None):
    """A LiteRT (``ai_edge_litert``) interpreter of a ``.tflite`` path or flatbuffer bytes.

    Example:
        >>> interpreter = make_interpreter(model_path="out/moflenet57.tflite")
    """
    return Interpreter(model_path=model_path, model_content=model_content, num_threads=num_threads)


# === The flatbuffer's graph ===

_OP_NAMES = {
    code: name for name, code in vars(tflite_schema.BuiltinOperator).items() if name.isupper()
}
_TENSOR_TYPES = {
    code: name.lower() for name, code in vars(tflite_schema.TensorType).items() if name.isupper()
}


@dataclasses.dataclass(frozen=True)
class GraphOp:
    """One operator of a TFLite graph: builtin name and tensor indices (-1: optional, absent)."""

    name: str
    inputs: tuple
    outputs: tuple


@dataclasses.dataclass(frozen=True)
class GraphTensor:
    """One tensor of a TFLite graph, as the flatbuffer declares it."""

    name: str
    dtype: str
    shape: tuple


@dataclasses.dataclass(frozen=True)
class TFLiteGraph:
    """Operators (in execution order) and tensors of the main subgraph of a TFLite model."""

    ops: tuple
    tensors: tuple
    inputs: tuple
    outputs: tuple

    @property
    def op_names(self):
        return [op.name for op in self.ops]


def read_graph(model):
    """The main subgraph of a ``.tflite`` file or flatbuffer, read with LiteRT's schema module.

    Args:
        model: ``.tflite`` path or the flatbuffer bytes.

    Returns:
        ``TFLiteGraph``; tensor indices are those of the interpreter's tensor details.

    Example:
        >>> read_graph("out/moflenet57.tflite").op_names[:2]
        ['QUANTIZE', 'PAD']
    """
    if isinstance(model, (bytes, bytearray)):
        content = bytes(model)
    else:
        with open(os.fspath(model), "rb") as stream:
            content = stream.read()
    flatbuffer = tflite_schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    # Operator codes above 127 live in builtinCode only; older files set only the deprecated
    # one-byte field: the larger of the two is the operator.
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in flatbuffer.operatorCodes]
    subgraph = flatbuffer.subgraphs[0]

    def indices(values):
        return tuple(int(i) for i in (values if values is not None else ()))

    ops = tuple(
        GraphOp(
            _OP_NAMES.get(codes[op.opcodeIndex], str(codes[op.opcodeIndex])),
            indices(op.inputs),
            indices(op.outputs),
        )
        for op in subgraph.operators
    )
    tensors = tuple(
        GraphTensor(
            (tensor.name or b"").decode(),
            _TENSOR_TYPES.get(tensor.type, str(tensor.type)),
            indices(tensor.shape),
        )
        for tensor in subgraph.tensors
    )
    return TFLiteGraph(ops, tensors, indices(subgraph.inputs), indices(subgraph.outputs))


# === Parameter memory ===


@dataclasses.dataclass(frozen=True)
class ParameterTensor:
    name: str
    dtype: str
    shape: tuple
    role: str  # "weight", "bias", "float" or "structure" (not counted)

    @property
    def size(self):
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def bytes(self):
        return 0 if self.role == "structure" else self.size * _BYTES[self.dtype]


@dataclasses.dataclass(frozen=True)
class ParameterBytes:
    """Parameter memory of a TFLite model, read from its constant tensors."""

    tensors: tuple

    def _sum(self, role, what="size"):
        return sum(getattr(t, what) for t in self.tensors if t.role == role)

    @property
    def int8_weights(self):
        """Elements of 8-bit weight tensors."""
        return self._sum("weight")

    @property
    def int32_biases(self):
        """Elements of int32 bias tensors (the folded batch normalisation)."""
        return self._sum("bias")

    @property
    def float_parameters(self):
        """Elements of float constants (GRN gamma/beta/epsilon, ensemble weights)."""
        return self._sum("float")

    @property
    def parameters(self):
        return self.int8_weights + self.int32_biases + self.float_parameters

    @property
    def total(self):
        """Parameter memory in bytes under the DCASE rule, the figure checked.

        Parameters times bytes per parameter at the model's precision: int8 weights and the
        int32 biases 1 byte each (the biases are the folded batch normalisation, whose 2C
        parameters the rule counts at 1 byte in an int8 model), float32 constants 4 bytes.
        """
        return self.int8_weights + self.int32_biases + self._sum("float", "bytes")

    @property
    def storage_bytes(self):
        """Bytes the parameters occupy in the file: int32 biases 4 bytes each."""
        return sum(t.bytes for t in self.tensors)

    def __str__(self):
        return (
            f"{self.total:,} parameter bytes (DCASE rule) = {self.int8_weights:,} int8 weights + "
            f"{self.int32_biases:,} biases + {self._sum('float', 'bytes'):,} float bytes "
            f"({self.float_parameters:,} float32 constants); stored: {self.storage_bytes:,} "
            f"bytes (int32 biases)"
        )


def parameter_bytes(model, *, skip_frontend=False):
    """Count the parameter memory of a TFLite model from its tensors (see the module doc).

    Args:
        model: ``.tflite`` path or the flatbuffer bytes.
        skip_frontend: leave out the constants of a float front-end inside the file (window,
            mel bank: see ``frontend_ops``); the front-end is not part of the model's
            complexity.

    Returns:
        ``ParameterBytes``; ``.total`` is the byte count checked against the 128,000-byte limit.

    Example:
        >>> print(parameter_bytes("moflenet57.tflite"))
    """
    graph = read_graph(model)
    produced = {i for op in graph.ops for i in op.outputs}
    graph_inputs = set(graph.inputs)
    roles = {}
    skipped = frontend_ops(graph) if skip_frontend else ()
    for op in (op for position, op in enumerate(graph.ops) if position not in skipped):
        for position, index in enumerate(op.inputs):
            if index < 0 or index in produced or index in graph_inputs or index in roles:
                continue
            dtype = graph.tensors[index].dtype
            if dtype in ("int8", "uint8"):
                role = "weight"
            elif dtype == "int32" and _BIAS_INPUT.get(op.name) == position:
                role = "bias"
            elif dtype.startswith("float"):
                role = "float"
            else:
                role = "structure"
            roles[index] = role
    tensors = tuple(
        ParameterTensor(graph.tensors[i].name, graph.tensors[i].dtype, graph.tensors[i].shape, role)
        for i, role in sorted(roles.items())
    )
    return ParameterBytes(tensors)


def check_parameter_bytes(counted, name, max_param_bytes=MAX_PARAM_BYTES):
    """Raise ``BudgetExceededError`` naming the excess when ``counted.total`` is over the limit."""
    if max_param_bytes is not None and counted.total > max_param_bytes:
        raise BudgetExceededError(
            f"{name}: the int8 model needs {counted.total:,} parameter bytes, "
            f"{counted.total - max_param_bytes:,} bytes over the {max_param_bytes:,}-byte DCASE "
            f"limit ({counted})."
        )


# === Conversion ===


def _is_quantized(model):
    return any(type(layer).__name__.startswith("Quantize") for layer in layers_deep(model))


def _traceable(model, quantized):
    """The model the converter traces: depthwise strides native, no ``Subsample`` layers."""
    if not quantized:
        return with_native_strides(model)
    # Rebuilding a QAT model from its config needs TF-MOT's classes and our configs in scope.
    quantize_scope = qat.import_tfmot().quantization.keras.quantize_scope
    with quantize_scope(qat.quantize_scope_objects()):
        return with_native_strides(model)


def _input_specs(model):
    shapes = model.input_shape if isinstance(model.input_shape, list) else [model.input_shape]
    names = [t.name.split(":")[0] for t in model.inputs]
    return [
        tf.TensorSpec((None, *shape[1:]), tf.float32, name=name)
        for shape, name in zip(shapes, names, strict=True)
    ]


def _as_list(batch):
    return list(batch) if isinstance(batch, (list, tuple)) else [batch]


def _calibration_batches(representative_dataset, frontends):
    """Spectrogram batches (one list entry per input) from a representative dataset."""
    for element in representative_dataset:
        if isinstance(element, tuple):
            element = element[0]  # (inputs, labels[, devices]) from a dataset
        arrays = [np.asarray(x, dtype="float32") for x in _as_list(element)]
        if len(arrays) == 1 and arrays[0].ndim == 2:
            # Waveforms: every input's spectrogram from its own front-end.
            arrays = [frontend_numpy(arrays[0], params) for params in frontends]
        if len(arrays) != len(frontends) or any(a.ndim != 4 for a in arrays):
            raise ValueError(
                f"The representative dataset must yield waveform batches (B, samples) or one "
                f"spectrogram batch (B, mel bins, frames, 1) per model input ({len(frontends)}). "
                f"Received shapes {[a.shape for a in arrays]}"
            )
        yield arrays


def _representative_samples(representative_dataset, frontends, input_names, max_samples):
    # Samples are keyed by input name: the converter may order an ensemble's inputs
    # differently from the model.
    def generate():
        count = 0
        for arrays in _calibration_batches(representative_dataset, frontends):
            for row in range(arrays[0].shape[0]):
                yield {name: a[row : row + 1] for name, a in zip(input_names, arrays, strict=True)}
                count += 1
                if count >= max_samples:
                    return

    return generate


def convert_int8(
    model,
    representative_dataset=None,
    *,
    max_calibration_samples=DEFAULT_CALIBRATION_SAMPLES,
    frontend_in_file=False,
):
    """Convert a QAT model (or, with a representative dataset, a float twin) to int8 TFLite.

    Args:
        model: a tf_keras model from ``quantize_aware_train``/``quantize_model`` (its fake
            quantisation gives every range), or a float twin from ``to_tf_keras`` together
            with ``representative_dataset`` (post-training quantisation).
        representative_dataset: for a float twin, an iterable of calibration batches (see
            ``export_int8``); must be ``None`` for a QAT model.
        max_calibration_samples: clips used for post-training calibration.
        frontend_in_file: put the float32 log-mel front-end of every input into the file,
            which then takes one (batch, num_samples) waveform (see ``export_int8``).

    Returns:
        The flatbuffer as bytes.
    """
    quantized = _is_quantized(model)
    if quantized and representative_dataset is not None:
        raise ValueError(
            f"{model.name!r} is a quantisation-aware model: its ranges come from training, so "
            f"representative_dataset must be None."
        )
    if not quantized and representative_dataset is None:
        raise ValueError(
            f"{model.name!r} is a float model: post-training quantisation needs a "
            f"representative_dataset of spectrogram or waveform batches."
        )
    spec = twin_spec(model)
    model = _traceable(model, quantized)
    if frontend_in_file:
        function, specs = _waveform_function(model, spec)
    else:
        function, specs = _spectrogram_function(model), _input_specs(model)
    # The converter saves its trackable object first; a bare module with the variables and the
    # one inference function saves in seconds, the tf_keras model (every layer traced) in minutes.
    holder = tf.Module()
    holder.model_variables = list(model.variables)
    holder.inference = function
    concrete = function.get_concrete_function(*specs)

    def make_converter():
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter

    if quantized:
        return compact_flatbuffer(make_converter().convert())
    frontends = [frontend_params(config) for config in spec.frontends]
    if frontend_in_file:
        samples = _waveform_samples(representative_dataset, int(max_calibration_samples))
    else:
        samples = _representative_samples(
            representative_dataset,
            frontends,
            [spec.name for spec in specs],
            int(max_calibration_samples),
        )
    converter = make_converter()
    converter.representative_dataset = samples
    # GRN and the logit pooling stay in float as in the QAT path. Post-training quantisation
    # would otherwise put GRN's division in int8, where a mean norm that rounds to zero divides
    # by zero. The converter's public debugger API quantises everything but the listed nodes.
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter,
        debug_dataset=samples,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=_float_nodes(model, make_converter)
        ),
    )
    return compact_flatbuffer(debugger.get_nondebug_quantized_model())


def _spectrogram_function(model):
    """The ``tf.function`` spectrogram(s) -> ``model``, one argument per model input."""

    @tf.function(autograph=False)
    def function(*inputs):
        return model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)

    return function


def _float_nodes(model, make_converter):
    """Output tensor names of the ops of GRN, logit pooling and weighted-sum layers and outputs.

    Read from a float conversion, whose tensor names are the TensorFlow op names
    (``<model>/<layer>/<op>``), the same names the calibrated model has.
    """
    float_layers = [
        layer.name
        for layer in layers_deep(model)
        if isinstance(
            layer,
            (
                twin_module.GlobalResponseNormalization,
                twin_module.LogitPooling,
                twin_module.WeightedSum,
            ),
        )
    ]
    converter = make_converter()
    converter.optimizations = []
    graph = read_graph(converter.convert())
    nodes = []
    for op in graph.ops:
        for index in op.outputs:
            name = graph.tensors[index].name
            in_frontend = f"{_FRONTEND_SCOPE}_" in name
            if (
                index in graph.outputs
                or in_frontend
                or any(f"/{layer}/" in name for layer in float_layers)
            ):
                nodes.append(name)
    return nodes


def compact_flatbuffer(content):
    """Shorten internal tensor names and drop the converter's bookkeeping metadata.

    The converter names every tensor after the fused TensorFlow ops (about 10 kB for
    MofleNet57); inputs and outputs keep their names, the others become ``t<index>``. Only the
    ``min_runtime_version`` metadata is kept. Weights, quantisation and ops are untouched.
    """
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    for subgraph in model.subgraphs:
        keep = {int(i) for i in subgraph.inputs} | {int(i) for i in subgraph.outputs}
        for index, tensor in enumerate(subgraph.tensors):
            if index not in keep:
                tensor.name = f"t{index}".encode()
    model.metadata = [
        entry for entry in model.metadata or [] if entry.name == b"min_runtime_version"
    ]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


# === The front-end inside the file ===

_FRONTEND_SCOPE = "waveform_frontend"


def tf_frontend(waveform, layer):
    """The inference log-mel of a ``LogMelSpectrogram`` layer, in TensorFlow ops that the
    TFLite converter maps to builtin float32 ops.

    Reflect padding (MIRROR_PAD), framing (``tf.signal.frame``: GATHER), window (MUL),
    ``tf.signal.rfft`` (RFFT2D), power (REAL, IMAG, SQUARE), the layer's mel bank as its
    non-zero blocks (FULLY_CONNECTED per block; about a seventh of the dense bank), log and
    normalisation.

    Args:
        waveform: float32 tensor (batch, num_samples).
        layer: a ``LogMelSpectrogram`` (made outside any ``tf.function``: it owns a seed
            variable).

    Returns:
        float32 tensor (batch, num_mel_bins, frames, 1), as the layer at ``training=False``.
    """
    params = frontend_params(layer)
    fft_length = layer.fft_length
    x = waveform
    if layer.pre_emphasis:
        x = x[:, 1:] - layer.pre_emphasis * x[:, :-1]
    x = tf.pad(x, [[0, 0], [fft_length // 2, fft_length // 2]], mode="REFLECT")
    frames = tf.signal.frame(x, fft_length, layer.hop_length) * params["window"]
    spectrum = tf.signal.rfft(frames, [fft_length])
    power = tf.square(tf.math.real(spectrum)) + tf.square(tf.math.imag(spectrum))
    mel = tf.concat(
        [
            tf.matmul(power[..., first:end], tf.constant(block))
            for ((first, end), _), block in zip(
                layer._bank_blocks, layer._inference_blocks, strict=True
            )
        ],
        axis=-1,
    )
    logmel = tf.math.log(mel + layer.log_offset)
    if layer.normalize_offset != 0.0:
        logmel = logmel + layer.normalize_offset
    if layer.normalize_scale != 1.0:
        logmel = logmel / layer.normalize_scale
    # expand_dims, not [..., None]: the latter is a StridedSlice TFLite has no builtin for.
    return tf.expand_dims(tf.transpose(logmel, (0, 2, 1)), -1)


def _waveform_function(model, spec):
    """``(tf.function, [input spec])``: waveform -> every input's front-end -> ``model``."""
    if spec.num_samples is None:
        raise ValueError(
            f"{spec.name!r} takes spectrograms: the front-end can go into the file only for a "
            f"model that takes waveforms."
        )

    layers = [
        LogMelSpectrogram(**{k: v for k, v in c.items() if k not in ("name", "trainable", "dtype")})
        for c in spec.frontends
    ]

    @tf.function(autograph=False)
    def function(waveform):
        spectrograms = []
        for index, layer in enumerate(layers):
            with tf.name_scope(f"{_FRONTEND_SCOPE}_{index}"):
                spectrograms.append(tf_frontend(waveform, layer))
        return model(spectrograms if len(spectrograms) > 1 else spectrograms[0], training=False)

    return function, [tf.TensorSpec((None, spec.num_samples), tf.float32, name="waveform")]


def _waveform_samples(representative_dataset, max_samples):
    """Calibration samples ``{"waveform": (1, samples)}`` for a file with its front-end."""

    def generate():
        count = 0
        for element in representative_dataset:
            if isinstance(element, tuple):
                element = element[0]
            waveforms = np.asarray(element, dtype="float32")
            if waveforms.ndim != 2:
                raise ValueError(
                    f"With the front-end in the file the representative dataset must yield "
                    f"waveform batches (B, samples). Received shape {waveforms.shape}"
                )
            for row in waveforms:
                yield {"waveform": row[None]}
                count += 1
                if count >= max_samples:
                    return

    return generate


def frontend_ops(graph):
    """Positions (in ``graph.ops``) of the float ops ahead of the int8 network.

    An op belongs to the front-end when it is not a QUANTIZE, none of its inputs is 8-bit,
    and every input an op produces comes from a front-end op, with at least one input that
    is a model input or a front-end op's output (constants alone are not enough). Empty for a
    file that takes spectrograms.

    Args:
        graph: a ``TFLiteGraph`` (``read_graph``).

    Returns:
        A set of op positions.
    """
    producer = {index: position for position, op in enumerate(graph.ops) for index in op.outputs}
    inputs = set(graph.inputs)
    found = set()
    for position, op in enumerate(graph.ops):
        used = [i for i in op.inputs if i >= 0]
        if op.name == "QUANTIZE" or any(graph.tensors[i].dtype in ("int8", "uint8") for i in used):
            continue
        fed = [i for i in used if i in inputs or i in producer]
        if fed and all(i in inputs or producer[i] in found for i in fed):
            found.add(position)
    return found


# === Folding the channel shuffle ===

# Ops that treat every channel alike and hold no per-channel constants: a channel permutation
# passes through them unchanged.
_CHANNELWISE = {"RELU", "RELU6", "RELU_N1_TO_1", "MAX_POOL_2D", "AVERAGE_POOL_2D"}


def _op_name(model, op):
    code = model.operatorCodes[op.opcodeIndex]
    return _OP_NAMES.get(max(code.builtinCode, code.deprecatedBuiltinCode))


def _constant(model, tensor):
    """The data of a constant tensor as a NumPy array of its shape, or ``None``."""
    buffer = model.buffers[tensor.buffer]
    if buffer.data is None or len(buffer.data) == 0:
        return None
    dtype = np.dtype(_TENSOR_TYPES[tensor.type])
    raw = bytes(np.asarray(buffer.data, dtype=np.uint8))
    return np.frombuffer(raw, dtype=dtype).reshape([int(d) for d in tensor.shape])


def _quantization_key(tensor):
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    return (tuple(np.asarray(q.scale).tolist()), tuple(np.asarray(q.zeroPoint).tolist()))


def _set_constant(model, index, subgraph, values):
    """Store ``values`` in tensor ``index``, in a buffer of its own if it shared one."""
    tensor = subgraph.tensors[index]
    shared = sum(
        1 for graph in model.subgraphs for other in graph.tensors if other.buffer == tensor.buffer
    )
    if shared > 1:
        model.buffers.append(tflite_schema.BufferT())
        tensor.buffer = len(model.buffers) - 1
    model.buffers[tensor.buffer].data = np.frombuffer(
        np.ascontiguousarray(values).tobytes(), dtype=np.uint8
    )


def _permute_tensor(model, subgraph, index, axis, order):
    """Reorder tensor ``index`` (its constant data, if any, and per-channel quantisation)
    along ``axis`` so that position ``i`` holds what position ``order[i]`` held."""
    tensor = subgraph.tensors[index]
    axis %= len(tensor.shape)
    values = _constant(model, tensor)
    if values is not None:
        _set_constant(model, index, subgraph, np.take(values, order, axis=axis))
    q = tensor.quantization
    if q is not None and q.scale is not None and len(q.scale) > 1 and q.quantizedDimension == axis:
        q.scale = np.asarray(q.scale)[order]
        q.zeroPoint = np.asarray(q.zeroPoint)[order]
        for field in ("min", "max"):
            if getattr(q, field) is not None and len(getattr(q, field)) == len(order):
                setattr(q, field, np.asarray(getattr(q, field))[order])


def _shuffle_permutation(model, subgraph, op):
    """The channel permutation of a GATHER that only reorders the last axis, or ``None``."""
    if len(op.inputs) != 2 or len(op.outputs) != 1:
        return None
    source, indices_tensor = (subgraph.tensors[i] for i in op.inputs)
    output = subgraph.tensors[op.outputs[0]]
    options = op.builtinOptions
    rank = len(source.shape)
    if (
        rank < 2
        or options is None
        or getattr(options, "batchDims", 0) != 0
        or getattr(options, "axis", 0) % rank != rank - 1
        or list(output.shape) != list(source.shape)
        or _quantization_key(source) != _quantization_key(output)
    ):
        return None
    indices = _constant(model, indices_tensor)
    channels = int(source.shape[-1])
    if indices is None or indices.shape != (channels,):
        return None
    if not np.array_equal(np.sort(indices), np.arange(channels)):
        return None
    return indices.astype(np.int64)


def _absorbing_chain(model, subgraph, tensor, channels):
    """The ops from ``tensor`` to the first convolution that sums over its channels.

    Returns ``[(op, kind)]`` with kind ``"depthwise"``, ``"channelwise"`` or ``"conv"`` (the
    last one), or ``None`` when the tensor does not flow, through single-consumer per-channel
    ops, into a convolution over all ``channels`` (then the permutation cannot be folded).
    """
    chain = []
    outputs = {int(i) for i in subgraph.outputs}
    while True:
        users = [
            (op, position)
            for op in subgraph.operators
            for position, index in enumerate(op.inputs)
            if index == tensor
        ]
        if tensor in outputs or len(users) != 1 or users[0][1] != 0:
            return None
        op, _ = users[0]
        kind = _op_name(model, op)
        shape = [int(d) for d in subgraph.tensors[op.inputs[1]].shape] if len(op.inputs) > 1 else []
        if kind == "CONV_2D" and shape[-1:] == [channels]:
            return [*chain, (op, "conv")]
        if kind == "DEPTHWISE_CONV_2D" and shape[-1:] == [channels]:
            chain.append((op, "depthwise"))
        elif kind in ("PAD", "PADV2"):
            paddings = _constant(model, subgraph.tensors[op.inputs[1]])
            if paddings is None or np.any(paddings[-1]):
                return None
            chain.append((op, "channelwise"))
        elif kind in _CHANNELWISE:
            chain.append((op, "channelwise"))
        else:
            return None
        if len(op.outputs) != 1:
            return None
        tensor = int(op.outputs[0])


def _fold_gather(model, subgraph, op):
    permutation = _shuffle_permutation(model, subgraph, op)
    if permutation is None:
        return False
    chain = _absorbing_chain(model, subgraph, int(op.outputs[0]), len(permutation))
    if chain is None:
        return False
    # Without the GATHER, channel i holds what the GATHER moved to position inverse[i]; every
    # per-channel constant downstream moves the same way, so each value meets the weights it
    # met before and the convolution that sums over the channels sees the same products.
    inverse = np.argsort(permutation)
    for consumer, kind in chain:
        if kind == "conv":
            _permute_tensor(model, subgraph, int(consumer.inputs[1]), -1, inverse)
            break
        if kind == "depthwise":
            _permute_tensor(model, subgraph, int(consumer.inputs[1]), -1, inverse)
            if len(consumer.inputs) > 2 and consumer.inputs[2] >= 0:
                _permute_tensor(model, subgraph, int(consumer.inputs[2]), 0, inverse)
        _permute_tensor(model, subgraph, int(consumer.outputs[0]), -1, inverse)
    first = chain[0][0]
    first.inputs = [int(op.inputs[0]) if i == op.outputs[0] else int(i) for i in first.inputs]
    subgraph.operators = [other for other in subgraph.operators if other is not op]
    return True


def _prune(model):
    """Drop tensors no op uses, operator codes no op runs and the data of orphaned buffers.

    The remaining tensors are renumbered in the subgraphs, the ops and the signatures.
    """
    for number, subgraph in enumerate(model.subgraphs):
        used = {int(i) for i in subgraph.inputs} | {int(i) for i in subgraph.outputs}
        for op in subgraph.operators:
            for field in (op.inputs, op.outputs, op.intermediates):
                used.update(int(i) for i in (field if field is not None else ()) if i >= 0)
        order = sorted(used)
        new_index = {old: new for new, old in enumerate(order)}

        def remap(values, new_index=new_index):
            return [new_index[int(i)] if i >= 0 else -1 for i in values]

        subgraph.tensors = [subgraph.tensors[i] for i in order]
        subgraph.inputs, subgraph.outputs = remap(subgraph.inputs), remap(subgraph.outputs)
        for op in subgraph.operators:
            op.inputs, op.outputs = remap(op.inputs), remap(op.outputs)
            if op.intermediates is not None:
                op.intermediates = remap(op.intermediates)
        for signature in model.signatureDefs or []:
            if signature.subgraphIndex == number:
                for entry in [*(signature.inputs or []), *(signature.outputs or [])]:
                    entry.tensorIndex = new_index[int(entry.tensorIndex)]
    referenced = {t.buffer for graph in model.subgraphs for t in graph.tensors}
    referenced |= {entry.buffer for entry in model.metadata or []}
    for index, buffer in enumerate(model.buffers):
        if index not in referenced:
            buffer.data = None
    codes = sorted({op.opcodeIndex for graph in model.subgraphs for op in graph.operators})
    new_code = {old: new for new, old in enumerate(codes)}
    model.operatorCodes = [model.operatorCodes[i] for i in codes]
    for graph in model.subgraphs:
        for op in graph.operators:
            op.opcodeIndex = new_code[op.opcodeIndex]


def _opcode_index(model, builtin):
    """Index of ``builtin`` in the model's operator codes, added if absent."""
    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return index
    code = tflite_schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)  # the one-byte field of older readers
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _float_twin_tensor(subgraph, index):
    """Add a float32 tensor of the shape of tensor ``index``; returns its index."""
    source = subgraph.tensors[index]
    tensor = tflite_schema.TensorT()
    tensor.shape = list(source.shape)
    tensor.shapeSignature = None if source.shapeSignature is None else list(source.shapeSignature)
    tensor.type = tflite_schema.TensorType.FLOAT32
    tensor.buffer = 0
    tensor.name = (source.name or b"") + b"_float"
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def float_average_pools(content):
    """Run every int8 ``AVERAGE_POOL_2D`` without padding as DEQUANTIZE, float pooling, QUANTIZE.

    LiteRT's XNNPACK delegate runs the int8 network but not an int8 average pooling, so each
    one (MofleNet's strided shortcuts) runs in LiteRT's own kernel and splits the delegated
    graph around it. In float the delegate runs it, and the result is the same int8 tensor:
    the int8 kernel (input and output share scale and zero point; explicit PAD ops, "valid"
    pooling, so every window has all N = kh * kw elements) returns ``sum(q) / N`` rounded
    half away from zero, and the float path returns ``round(sum(q) / N - z) + z`` up to float
    error. For an odd N (9 for MofleNet's 3x3), ``sum(q) / N`` is never closer than 1/(2N)
    to a half-integer, far more than the float error, so both round to the same integer.
    Pools that do not meet these conditions (an even N, unequal quantisation, "same"
    padding, a fused activation) stay as they are.

    Args:
        content: the flatbuffer bytes of a TFLite model.

    Returns:
        The flatbuffer bytes (``content`` itself when no pooling qualifies).
    """
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    rewritten = 0
    for subgraph in model.subgraphs:
        operators = []
        for op in subgraph.operators:
            if _op_name(model, op) == "AVERAGE_POOL_2D" and _exact_in_float(subgraph, op):
                source, target = int(op.inputs[0]), int(op.outputs[0])
                float_source = _float_twin_tensor(subgraph, source)
                float_target = _float_twin_tensor(subgraph, target)
                dequantize = tflite_schema.OperatorT()
                dequantize.opcodeIndex = _opcode_index(
                    model, tflite_schema.BuiltinOperator.DEQUANTIZE
                )
                dequantize.inputs, dequantize.outputs = [source], [float_source]
                quantize = tflite_schema.OperatorT()
                quantize.opcodeIndex = _opcode_index(model, tflite_schema.BuiltinOperator.QUANTIZE)
                quantize.inputs, quantize.outputs = [float_target], [target]
                op.inputs, op.outputs = [float_source], [float_target]
                operators += [dequantize, op, quantize]
                rewritten += 1
            else:
                operators.append(op)
        subgraph.operators = operators
    if not rewritten:
        return bytes(content)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _exact_in_float(subgraph, op):
    source = subgraph.tensors[op.inputs[0]]
    target = subgraph.tensors[op.outputs[0]]
    options = op.builtinOptions
    if source.type != tflite_schema.TensorType.INT8 or target.type != source.type:
        return False
    key = _quantization_key(source)
    if key is None or len(key[0]) != 1 or key != _quantization_key(target):
        return False
    window = options.filterHeight * options.filterWidth
    return (
        options.padding == tflite_schema.Padding.VALID
        and options.fusedActivationFunction == tflite_schema.ActivationFunctionType.NONE
        and window % 2 == 1
    )


def fold_channel_shuffles(content):
    """Remove every channel shuffle (a GATHER over the channel axis) that the following
    per-channel layers can absorb, permuting their weights instead.

    A shuffle is folded when its output flows, through ops that each have one consumer and act
    on every channel separately (PAD, ReLU, pooling, depthwise convolutions with one filter per
    channel), into a convolution that sums over all its input channels. The depthwise filters,
    their int32 biases, their per-channel quantisation scales and zero points and the input-
    channel axis of that convolution's filter are permuted with the inverse of the shuffle, and
    the GATHER is removed. Every int8 product and every int32 sum of the network is then
    exactly what it was (only the order of the terms of the convolution's channel sum changes,
    and integer sums do not depend on it), so the logits are bit-identical. A GATHER that does
    not match (another consumer, a grouped convolution after it, an output) stays.

    Args:
        content: the flatbuffer bytes of a TFLite model.

    Returns:
        The flatbuffer bytes without the folded GATHER ops (compacted as by
        ``compact_flatbuffer``); ``content`` itself when there is nothing to fold.

    Example:
        >>> folded = fold_channel_shuffles(convert_int8(qat_model))
    """
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    folded = 0
    for subgraph in model.subgraphs:
        for op in list(subgraph.operators):
            if _op_name(model, op) == "GATHER":
                folded += _fold_gather(model, subgraph, op)
    if not folded:
        return bytes(content)
    _prune(model)
    return compact_flatbuffer(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))


# === Export ===


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """Files and figures of one ``export_int8`` call."""

    path: str
    json_path: str
    frontend_path: str
    file_bytes: int
    parameters: ParameterBytes
    quantization: str
    tflite_micro: dict = None  # the "tflite_micro" entry of NAME.json (None: not checked)

    def __str__(self):
        text = f"{self.path}: {self.file_bytes:,} bytes on disk; {self.parameters}"
        if self.tflite_micro and self.tflite_micro.get("arena_bytes"):
            text += f"; TFLite Micro arena {self.tflite_micro['arena_bytes']:,} bytes"
        return text


def _atomic_write(path, data):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=directory, prefix=".tmp-", suffix=os.path.basename(path)
    )
    try:
        with os.fdopen(handle, "wb") as stream:
            if callable(data):
                data(stream)
            else:
                stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def sidecar_paths(path):
    """``(json_path, frontend_path)`` that belong beside a ``.tflite`` path."""
    stem = (
        os.fspath(path)[: -len(".tflite")]
        if os.fspath(path).endswith(".tflite")
        else os.fspath(path)
    )
    return f"{stem}.json", f"{stem}.frontend.npz"


def _input_quantization(interpreter, graph):
    """Scale and zero point of the QUANTIZE op that follows each float input."""
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    result = {}
    for op in graph.ops:
        if op.name == "QUANTIZE" and op.inputs[0] in graph.inputs:
            scale, zero_point = details[op.outputs[0]]["quantization"]
            result[op.inputs[0]] = {"scale": float(scale), "zero_point": int(zero_point)}
    return result


def _describe(content, spec, frontends, counted, quantization, frontend_in_file=False):
    interpreter = make_interpreter(model_content=content)
    quant = _input_quantization(interpreter, read_graph(content))
    inputs = []
    for detail in interpreter.get_input_details():
        inputs.append(
            {
                "name": detail["name"],
                "shape": [int(d) for d in detail["shape_signature"]],
                "dtype": np.dtype(detail["dtype"]).name,
                "int8_quantization": quant.get(detail["index"]),
            }
        )
    # Each input's front-end, matched by name (the converter may reorder the inputs).
    names = _input_names(spec)
    for entry in inputs if frontend_in_file else ():
        entry["frontends"] = [scalar_params(params) for params in frontends]
    for entry in () if frontend_in_file else inputs:
        index = _match_input(entry["name"], names)
        entry["model_input"] = index
        entry["frontend"] = scalar_params(frontends[index])
    output = interpreter.get_output_details()[0]
    return {
        "format": EXPORT_FORMAT,
        "model": spec.name,
        "members": list(spec.member_names),
        "member_weights": list(spec.member_weights),
        "num_samples": spec.num_samples,
        "quantization": quantization,
        "frontend_in_file": bool(frontend_in_file),
        "inputs": inputs,
        "output": {
            "name": output["name"],
            "shape": [int(d) for d in output["shape_signature"]],
            "dtype": np.dtype(output["dtype"]).name,
            "meaning": "logits (no softmax)",
        },
        "parameter_bytes": {
            "total": counted.total,
            "storage_bytes": counted.storage_bytes,
            "int8_weights": counted.int8_weights,
            "int32_biases": counted.int32_biases,
            "float_parameters": counted.float_parameters,
            "limit": MAX_PARAM_BYTES,
        },
        "file_bytes": len(content),
    }


def _input_names(spec):
    if spec.member_names:
        return [f"{name}_spectrogram" for name in spec.member_names]
    return ["spectrogram"]


def _match_input(tflite_name, names):
    """Index of the model input whose name the TFLite input name contains (longest match)."""
    matches = [i for i, name in enumerate(names) if name in tflite_name]
    if not matches:
        raise ValueError(f"TFLite input {tflite_name!r} matches none of the model inputs {names}.")
    return max(matches, key=lambda i: len(names[i]))


def export_int8(
    model,
    representative_dataset,
    path,
    qat=False,
    *,
    max_param_bytes=MAX_PARAM_BYTES,
    max_calibration_samples=DEFAULT_CALIBRATION_SAMPLES,
    frontend_in_file=False,
    int8_io=False,
    micro=None,
    low_arena=False,
    fold_shuffle=True,
):
    """Export an int8 TFLite model, its front-end constants and a JSON description.

    Args:
        model: with ``qat=True``, the tf_keras model from ``quantize_aware_train``;
            with ``qat=False`` (post-training quantisation, no fine-tuning), a trained Keras 3
            keras-asc model or ensemble, or its tf_keras twin.
        representative_dataset: ``qat=False`` only (pass ``None`` with ``qat=True``): an
            iterable of calibration batches, each a waveform batch (B, samples), one
            spectrogram batch (B, mel bins, frames, 1), a list with one spectrogram batch
            per model input (a list, in the model's input order), or an (inputs,
            labels[, devices]) tuple of any of these (a tuple is always read this way, as
            tf.data yields it). Waveforms are turned into spectrograms with each input's
            inference front-end.
        path: the ``.tflite`` file to write; ``.json`` and ``.frontend.npz`` go beside it.
        qat: whether ``model`` is a quantisation-aware model.
        max_param_bytes: the parameter-memory limit (128,000 bytes, DCASE); ``None`` skips
            the check.
        max_calibration_samples: clips used for post-training calibration.
        frontend_in_file: with ``True`` the file holds the log-mel front-end too, as float32
            builtin ops (reflect padding, framing, window, RFFT2D, power, the non-zero blocks
            of the mel bank, log, normalisation) ahead of the first QUANTIZE: it takes one
            float32 waveform (batch, num_samples), shared by all members of an ensemble
            (each computes its own spectrogram), and gives the logits, so an app needs the
            one file. ``NAME.json`` says ``"frontend_in_file": true``; the calibration
            batches must then be waveforms. The front-end's constants are not counted in the
            parameter bytes. Cannot be combined with ``int8_io``.
        int8_io: int8 input spectrograms and int8 output logits instead of float32 (no
            QUANTIZE/DEQUANTIZE at the ends: a device quantises its front-end output
            itself); the scales and zero points are recorded in ``NAME.json`` under
            ``inputs[i]["int8_quantization"]`` and ``output["int8_quantization"]``. The
            output range bounds every logit the model can produce.
        micro: run the file once in TensorFlow Lite for Microcontrollers (the
            ``tflite-micro`` package) and record its tensor arena in ``NAME.json`` under
            ``"tflite_micro"`` (``keras_asc.quantization.micro.micro_report``). A model TFLM
            cannot run is still written, with the reason recorded and a warning. ``None``
            (the default): ``True``, except with ``frontend_in_file=True``, whose RFFT2D
            TFLite Micro has no kernel for: the run is skipped and ``"tflite_micro"`` says
            why (``"runs": false``), without a warning. ``True`` runs it anyway.
        low_arena: a smaller TFLite Micro tensor arena, the same values: GRN (kept in
            float) is computed in ``LOW_ARENA_GRN_BLOCKS`` blocks along time, each block
            quantised before the blocks are joined (``quantize_before_concatenation``), so
            the largest float tensors are a quarter of their size. The shortcuts' average
            pooling stays int8 (no ``float_average_pools``, a LiteRT/XNNPACK speed pass whose
            float tensors would raise the arena; TFLite Micro has an int8 kernel for it).
            Recorded in ``NAME.json`` as ``"low_arena"``.
        fold_shuffle: fold every channel shuffle into the weights of the layers after it
            (``fold_channel_shuffles``): the same int8 logits, bit for bit, without the
            GATHER ops. ``False`` keeps the shuffles in the file.

    Returns:
        ``ExportResult`` (paths, file size, parameter bytes, TFLite Micro arena).

    Raises:
        BudgetExceededError: the int8 parameters exceed ``max_param_bytes``; nothing is
            written.

    Example:
        >>> result = export_int8(qat_model, None, "out/moflenet57.tflite", qat=True)
        >>> print(result)
    """
    path = os.fspath(path)
    if not path.endswith(".tflite"):
        raise ValueError(f"path must end with .tflite. Received: path={path!r}")
    if qat:
        if not isinstance(model, tf_keras.Model) or not _is_quantized(model):
            raise TypeError(
                f"qat=True needs the tf_keras model returned by quantize_aware_train. Received: "
                f"{type(model).__name__} {getattr(model, 'name', '')!r}"
            )
        twin = model
    else:
        twin = model if isinstance(model, tf_keras.Model) else to_tf_keras(model)
        if _is_quantized(twin):
            raise ValueError(
                f"{twin.name!r} is a quantisation-aware model: export it with qat=True (and "
                f"representative_dataset=None)."
            )
    spec = twin_spec(twin)
    if int8_io and frontend_in_file:
        raise ValueError(
            "int8_io=True and frontend_in_file=True cannot be combined: a file with the "
            "front-end inside takes float32 waveforms."
        )
    with _BlockwiseGRN() if low_arena else contextlib.nullcontext():
        content = convert_int8(
            twin,
            None if qat else representative_dataset,
            max_calibration_samples=max_calibration_samples,
            frontend_in_file=frontend_in_file,
        )
    if fold_shuffle:
        content = fold_channel_shuffles(content)
    if low_arena:
        # A microcontroller build keeps the int8 pooling (TFLite Micro has an int8
        # AVERAGE_POOL_2D kernel): the float pooling's tensors, four times the int8 ones,
        # would raise the arena.
        content = quantize_before_concatenation(content)
    else:
        content = float_average_pools(content)
    if int8_io:
        content = with_int8_io(content)
    counted = parameter_bytes(content, skip_frontend=frontend_in_file)
    check_parameter_bytes(counted, spec.name, max_param_bytes)
    frontends = [frontend_params(config) for config in spec.frontends]
    description = _describe(
        content, spec, frontends, counted, "qat" if qat else "ptq", frontend_in_file
    )
    description = _io_quantization(description, content)
    description["low_arena"] = bool(low_arena)
    if micro is None and frontend_in_file:
        description["tflite_micro"] = {"runs": False, "reason": MICRO_SKIPPED_IN_FILE_FRONTEND}
    elif micro is None or micro:
        description["tflite_micro"] = _micro_description(content, os.path.basename(path))
    # The front-end sidecar follows the TFLite input order, like the JSON (with the front-end
    # in the file: the model's input order, the order of ``inputs[0]["frontends"]``).
    ordered = (
        frontends
        if frontend_in_file
        else [frontends[entry["model_input"]] for entry in description["inputs"]]
    )
    json_path, frontend_path = sidecar_paths(path)
    _atomic_write(frontend_path, lambda stream: save_frontend_params(stream, ordered))
    _atomic_write(json_path, (json.dumps(description, indent=2) + "\n").encode())
    _atomic_write(path, content)
    return ExportResult(
        path,
        json_path,
        frontend_path,
        len(content),
        counted,
        description["quantization"],
        description.get("tflite_micro"),
    )


# === int8 input and output ===

# Float ops that may follow the last int8 tensor (logit pooling, ensemble weighted sum), and
# how each maps the value interval of its inputs to its output's.
_INTERVAL_SAME = ("MEAN", "RESHAPE", "SQUEEZE", "AVERAGE_POOL_2D")


def _interval_product(a, b):
    products = [x * y for x in a for y in b]
    return min(products), max(products)


def _constant_interval(model, tensor):
    data = model.buffers[tensor.buffer].data
    if data is None or not len(data) or tensor.type not in _NUMPY:
        return None
    values = np.frombuffer(bytes(np.asarray(data, np.uint8)), dtype=_NUMPY[tensor.type])
    return float(values.min()), float(values.max())


_NUMPY = {tflite_schema.TensorType.FLOAT32: np.float32, tflite_schema.TensorType.INT32: np.int32}


def output_interval(model):
    """Bounds of the float output of a flatbuffer object, propagated from the int8 tensors.

    The logits are computed in float from dequantised int8 tensors by a few ops (pooling
    sum, scaling, ensemble weights and sum); each maps intervals exactly, so the result
    bounds every logit the model can produce, without data.
    """
    subgraph = model.subgraphs[0]
    intervals = {}
    for op in subgraph.operators:
        name = _op_name(model, op)
        inputs = [int(i) for i in op.inputs if i >= 0]
        output = int(op.outputs[0])
        tensor = subgraph.tensors[output]

        def interval(index):
            if index in intervals:
                return intervals[index]
            return _constant_interval(model, subgraph.tensors[index])

        if name == "DEQUANTIZE":
            source = subgraph.tensors[inputs[0]].quantization
            info = np.iinfo(np.int8)
            scale, zero = float(source.scale[0]), int(source.zeroPoint[0])
            intervals[output] = (scale * (info.min - zero), scale * (info.max - zero))
            continue
        known = [interval(i) for i in inputs]
        if tensor.type != tflite_schema.TensorType.FLOAT32 or not known or known[0] is None:
            continue
        if name in _INTERVAL_SAME:
            intervals[output] = known[0]
        elif name == "SUM":
            count = np.prod(subgraph.tensors[inputs[0]].shape) / np.prod(tensor.shape)
            intervals[output] = (known[0][0] * count, known[0][1] * count)
        elif name == "MUL" and known[1] is not None:
            intervals[output] = _interval_product(known[0], known[1])
        elif name == "ADD" and known[1] is not None:
            intervals[output] = (known[0][0] + known[1][0], known[0][1] + known[1][1])
    index = int(subgraph.outputs[0])
    if index not in intervals:
        raise ValueError(
            "int8 output: the logits are not computed from int8 tensors by pooling, scaling "
            "and sums only, so no int8 range can be derived for them."
        )
    return intervals[index]


def _quantize_output(content):
    """Append QUANTIZE then DEQUANTIZE to the float output, with the range of ``output_interval``.

    ``modify_model_io_type`` then drops the DEQUANTIZE, leaving an int8 output.
    """
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    subgraph = model.subgraphs[0]
    low, high = output_interval(model)
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255.0 or 1.0
    zero_point = int(np.clip(np.round(-128 - low / scale), -128, 127))
    output = int(subgraph.outputs[0])
    source = subgraph.tensors[output]

    def add_tensor(dtype, quantization, name):
        tensor = tflite_schema.TensorT()
        tensor.name = name
        tensor.type = dtype
        tensor.shape = np.array(source.shape, np.int32)
        tensor.shapeSignature = (
            None if source.shapeSignature is None else np.array(source.shapeSignature, np.int32)
        )
        buffer = tflite_schema.BufferT()
        model.buffers.append(buffer)
        tensor.buffer = len(model.buffers) - 1
        tensor.quantization = quantization
        subgraph.tensors.append(tensor)
        return len(subgraph.tensors) - 1

    quantization = tflite_schema.QuantizationParametersT()
    quantization.scale = np.array([scale], np.float32)
    quantization.zeroPoint = np.array([zero_point], np.int64)
    int8 = add_tensor(tflite_schema.TensorType.INT8, quantization, b"logits_int8")
    float_out = add_tensor(tflite_schema.TensorType.FLOAT32, None, b"logits")

    for builtin, inputs, outputs in (
        (tflite_schema.BuiltinOperator.QUANTIZE, [output], [int8]),
        (tflite_schema.BuiltinOperator.DEQUANTIZE, [int8], [float_out]),
    ):
        op = tflite_schema.OperatorT()
        op.opcodeIndex = _opcode_index(model, builtin)
        op.inputs = np.array(inputs, np.int32)
        op.outputs = np.array(outputs, np.int32)
        subgraph.operators.append(op)
    subgraph.outputs = np.array([float_out], np.int32)
    # The signature names the new output too (``modify_model_io_type`` then moves it to the
    # int8 tensor, as it does for the inputs).
    for signature in model.signatureDefs or []:
        if signature.subgraphIndex == 0:
            for entry in signature.outputs or []:
                if int(entry.tensorIndex) == output:
                    entry.tensorIndex = float_out
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def with_int8_io(content):
    """The model with int8 inputs (the spectrograms quantised as the first QUANTIZE ops did)
    and an int8 output (the logits quantised over the range they can take).

    The input side is TensorFlow Lite's own ``modify_model_io_type``; the float logits get a
    QUANTIZE op whose range bounds every value they can take (``output_interval``).
    """
    from tensorflow.lite.python.util import modify_model_io_type

    names = _io_names(content)
    content = bytes(modify_model_io_type(_quantize_output(content), tf.int8, tf.int8))
    # The int8 tensors that become the inputs and output keep the float ones' names.
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    subgraph = model.subgraphs[0]
    for index, name in zip([*subgraph.inputs, *subgraph.outputs], names, strict=True):
        subgraph.tensors[int(index)].name = name
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _io_names(content):
    subgraph = flatbuffer_utils.convert_bytearray_to_object(bytearray(content)).subgraphs[0]
    return [subgraph.tensors[int(i)].name for i in [*subgraph.inputs, *subgraph.outputs]]


def _io_quantization(description, content):
    """Record the scale and zero point of int8 inputs and output in the description."""
    interpreter = make_interpreter(model_content=content)
    by_name = {d["name"]: d for d in interpreter.get_input_details()}
    for entry in description["inputs"]:
        detail = by_name[entry["name"]]
        if np.dtype(detail["dtype"]) == np.int8:
            scale, zero_point = detail["quantization"]
            entry["int8_quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
    output = interpreter.get_output_details()[0]
    if np.dtype(output["dtype"]) == np.int8:
        scale, zero_point = output["quantization"]
        description["output"]["int8_quantization"] = {
            "scale": float(scale),
            "zero_point": int(zero_point),
        }
        description["output"]["meaning"] = "int8 logits (no softmax): (q - zero_point) * scale"
    return description


# === TFLite Micro ===


def _micro_description(content, name):
    """The ``"tflite_micro"`` entry of the description: the arena, or why it was not measured."""
    if not micro_module.micro_available():
        warnings.warn(
            f"{name}: tflite-micro is not installed, so the TFLite Micro arena is not measured "
            f"(pip install keras-asc[micro]).",
            stacklevel=3,
        )
        return {"runs": None, "reason": "tflite-micro is not installed"}
    try:
        return micro_module.micro_report(content, name=name).as_json()
    except micro_module.MicroUnsupportedError as error:
        warnings.warn(str(error), stacklevel=3)
        return {
            "runs": False,
            "reason": str(error),
            "interpreter": f"tflite-micro {micro_module.micro_version()}",
        }


# Why export_int8 does not run a file with the front-end inside in TFLite Micro by default.
MICRO_SKIPPED_IN_FILE_FRONTEND = (
    "not run: the file holds the front-end, whose RFFT2D TFLite Micro has no kernel for "
    "(micro=True runs it anyway)"
)


# === A smaller TFLite Micro arena ===

# Row blocks of the float GRN under ``low_arena``; each block's float copy is a quarter of
# the layer's float tensor.
LOW_ARENA_GRN_BLOCKS = 4
# GRN layers whose float tensor is smaller stay whole: each block adds ops, and every op
# costs TFLite Micro persistent arena (node, tensor and quantisation structures).
LOW_ARENA_MIN_BYTES = 65536


def _blockwise_grn_call(self, inputs):
    """GRN computed block by block along the time axis: the same values, smaller float tensors.

    The statistics pass splits the int8 input (one SPLIT) and sums the squares of each
    dequantised block; the per-channel factor comes from those norms as in the twin
    (``twin.grn_factor``), and the output pass computes ``block * factor + beta`` on each
    block, taken again with its own slice so that the converter does not merge the two
    passes' blocks and keep every float block alive between them.
    """
    rows = inputs.shape[1]
    if 4 * np.prod(inputs.shape[1:]) < LOW_ARENA_MIN_BYTES:
        return _BlockwiseGRN.call(self, inputs)  # small enough: the extra ops cost more
    blocks = min(LOW_ARENA_GRN_BLOCKS, rows)
    sizes = [rows // blocks + (1 if i < rows % blocks else 0) for i in range(blocks)]
    squares = [
        tf.reduce_sum(tf.square(block), axis=(1, 2), keepdims=True)
        for block in tf.split(inputs, sizes, axis=1)
    ]
    factor = twin_module.grn_factor(tf.sqrt(tf.add_n(squares)), self.gamma, self.epsilon)
    blocks = [
        inputs[:, start : start + size]
        for start, size in zip(np.cumsum([0, *sizes[:-1]]), sizes, strict=True)
    ]
    # The twin's own formula, x * factor + beta, per block: no new constant (parameter).
    return tf.concat([block * factor + self.beta for block in blocks], axis=1)


class _BlockwiseGRN:
    """While the converter traces, the twin's GRN layers compute block by block."""

    call = twin_module.GlobalResponseNormalization.call

    def __enter__(self):
        twin_module.GlobalResponseNormalization.call = _blockwise_grn_call

    def __exit__(self, *error):
        twin_module.GlobalResponseNormalization.call = _BlockwiseGRN.call


def quantize_before_concatenation(content):
    """Quantise each block of a float concatenation before concatenating, not after.

    The converter leaves ``CONCATENATION -> [RELU ->] QUANTIZE`` in float when the blocks
    come from float ops (GRN computed block by block): all float blocks and their float
    concatenation are alive at once. Each block goes through the ReLU (if any) and the
    QUANTIZE right after the op that makes it, and the concatenation joins int8 blocks with
    the same scale and zero point: the same int8 values, a quarter of the memory. Tensors
    left without an op are removed (``_prune``, which renumbers the signature too), and every DEQUANTIZE is moved next to the op that first
    reads it (``_dequantize_when_needed``).

    Args:
        content: the flatbuffer bytes.

    Returns:
        The rewritten flatbuffer bytes (``content`` itself when nothing matched).
    """
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    subgraph = model.subgraphs[0]

    def name(op):
        return _op_name(model, op)

    consumers = {}
    for op in subgraph.operators:
        for index in op.inputs:
            consumers.setdefault(int(index), []).append(op)
    producer = {int(i): op for op in subgraph.operators for i in op.outputs}
    float32 = tflite_schema.TensorType.FLOAT32
    rewritten = False
    for concat in list(subgraph.operators):
        if name(concat) != "CONCATENATION":
            continue
        chain, tensor = [], int(concat.outputs[0])
        while len(consumers.get(tensor, [])) == 1 and tensor not in subgraph.outputs:
            (next_op,) = consumers[tensor]
            if name(next_op) not in ("RELU", "QUANTIZE"):
                break
            chain.append(next_op)
            tensor = int(next_op.outputs[0])
            if name(next_op) == "QUANTIZE":
                break
        if not chain or name(chain[-1]) != "QUANTIZE":
            continue
        if subgraph.tensors[int(concat.outputs[0])].type != float32:
            continue
        if concat.builtinOptions is not None and concat.builtinOptions.fusedActivationFunction:
            continue
        quantized = subgraph.tensors[int(chain[-1].outputs[0])]
        new_inputs = []
        for block in [int(i) for i in concat.inputs]:
            current = block
            after = producer.get(block)
            for op in chain:
                tensor = tflite_schema.TensorT()
                source = subgraph.tensors[current]
                is_quantize = name(op) == "QUANTIZE"
                tensor.name = f"t{len(subgraph.tensors)}".encode()
                tensor.type = quantized.type if is_quantize else float32
                tensor.shape = np.array(source.shape, np.int32)
                tensor.quantization = quantized.quantization if is_quantize else None
                model.buffers.append(tflite_schema.BufferT())
                tensor.buffer = len(model.buffers) - 1
                subgraph.tensors.append(tensor)
                new = tflite_schema.OperatorT()
                new.opcodeIndex = op.opcodeIndex
                new.builtinOptionsType = op.builtinOptionsType
                new.builtinOptions = op.builtinOptions
                new.inputs = np.array([current], np.int32)
                new.outputs = np.array([len(subgraph.tensors) - 1], np.int32)
                position = subgraph.operators.index(after) + 1 if after is not None else 0
                subgraph.operators.insert(position, new)
                after, current = new, len(subgraph.tensors) - 1
            new_inputs.append(current)
        concat.inputs = np.array(new_inputs, np.int32)
        concat.outputs = np.array(chain[-1].outputs, np.int32)
        for op in chain:
            subgraph.operators.remove(op)
        rewritten = True
    if rewritten:
        # TFLite Micro would plan memory for the tensors left without an op; the signature
        # follows the renumbered tensors.
        _prune(model)
    rewritten = _dequantize_when_needed(subgraph, name) or rewritten
    if not rewritten:
        return content
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _dequantize_when_needed(subgraph, name):
    """Move each DEQUANTIZE to just before the first op that reads its float output.

    The converter may dequantise all blocks of a layer first and use them later, keeping
    every float block alive at once; run one op later, a DEQUANTIZE's float output (four
    times its int8 input) lives only while it is used.
    """
    moved = False
    for op in [op for op in subgraph.operators if name(op) == "DEQUANTIZE"]:
        output = int(op.outputs[0])
        position = subgraph.operators.index(op)
        first = next(
            (
                k
                for k, other in enumerate(subgraph.operators)
                if k > position and output in [int(i) for i in other.inputs]
            ),
            None,
        )
        if first is None or first == position + 1:
            continue
        subgraph.operators.remove(op)
        subgraph.operators.insert(first - 1, op)
        moved = True
    return moved
