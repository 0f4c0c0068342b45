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
  op split the delegated graph.
- ``NAME.frontend.npz``: the log-mel front-end of every input (window, mel filter bank,
  constants), computed outside the int8 model; ``frontend.frontend_numpy`` is the reference.
- ``NAME.json``: inputs (names, shapes, quantisation, front-end constants), output, members
  and weights, parameter bytes, file size.

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

import dataclasses
import json
import os
import tempfile

import numpy as np
import tensorflow as tf
import tf_keras
from ai_edge_litert import schema_py_generated as tflite_schema
from ai_edge_litert.interpreter import Interpreter
from tensorflow.lite.tools import flatbuffer_utils

from keras_asc.complexity import MAX_PARAM_BYTES, BudgetExceededError
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


def parameter_bytes(model):
    """Count the parameter memory of a TFLite model from its tensors (see the module doc).

    Args:
        model: ``.tflite`` path or the flatbuffer bytes.

    Returns:
        ``ParameterBytes``; ``.total`` is the byte count checked against the 128,000-byte limit.

    Example:
        >>> print(parameter_bytes("moflenet57.tflite"))
    """
    graph = read_graph(model)
    produced = {i for op in graph.ops for i in op.outputs}
    graph_inputs = set(graph.inputs)
    roles = {}
    for op in graph.ops:
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
    model, representative_dataset=None, *, max_calibration_samples=DEFAULT_CALIBRATION_SAMPLES
):
    """Convert a QAT model (or, with a representative dataset, a float twin) to int8 TFLite.

    Args:
        model: a tf_keras model from ``quantize_aware_train``/``quantize_model`` (its fake
            quantisation gives every range), or a float twin from ``to_tf_keras`` together
            with ``representative_dataset`` (post-training quantisation).
        representative_dataset: for a float twin, an iterable of calibration batches (see
            ``export_int8``); must be ``None`` for a QAT model.
        max_calibration_samples: clips used for post-training calibration.

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
    specs = _input_specs(model)

    @tf.function(autograph=False)
    def function(*inputs):
        return model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)

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
            if index in graph.outputs or any(f"/{layer}/" in name for layer in float_layers):
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
    """Drop tensors no op uses, operator codes no op runs and the data of orphaned buffers."""
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

    def __str__(self):
        return f"{self.path}: {self.file_bytes:,} bytes on disk; {self.parameters}"


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


def _describe(content, spec, frontends, counted, quantization):
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
    names = [t for t in _input_names(spec)]
    for entry in inputs:
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
        fold_shuffle: fold every channel shuffle into the weights of the layers after it
            (``fold_channel_shuffles``): the same int8 logits, bit for bit, without the
            GATHER ops. ``False`` keeps the shuffles in the file.

    Returns:
        ``ExportResult`` (paths, file size, parameter bytes).

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
    content = convert_int8(
        twin,
        None if qat else representative_dataset,
        max_calibration_samples=max_calibration_samples,
    )
    if fold_shuffle:
        content = fold_channel_shuffles(content)
    content = float_average_pools(content)
    counted = parameter_bytes(content)
    check_parameter_bytes(counted, spec.name, max_param_bytes)
    frontends = [frontend_params(config) for config in spec.frontends]
    description = _describe(content, spec, frontends, counted, "qat" if qat else "ptq")
    # The front-end sidecar follows the TFLite input order, like the JSON.
    ordered = [frontends[entry["model_input"]] for entry in description["inputs"]]
    json_path, frontend_path = sidecar_paths(path)
    _atomic_write(frontend_path, lambda stream: save_frontend_params(stream, ordered))
    _atomic_write(json_path, (json.dumps(description, indent=2) + "\n").encode())
    _atomic_write(path, content)
    return ExportResult(
        path, json_path, frontend_path, len(content), counted, description["quantization"]
    )
