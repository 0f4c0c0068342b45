"""Passes over the converted int8 flatbuffer: shuffle fold, float pooling, int8 I/O, low arena.

Each takes and returns flatbuffer bytes and leaves every int8 value as the converter made it:

- ``fold_channel_shuffles``: MofleNet's channel shuffles (one GATHER per block in the
  converted file) are removed and the constants after each permuted instead (depthwise
  filters, their int32 biases and per-channel quantisation scales, the input-channel axis of
  the 1x1 projection). Done on the converted file rather than in the twin, it is exact by
  construction: no weight is re-quantised, every int8 product and int32 sum stays what it
  was, and the logits are bit-identical. No converter or LiteRT tool removes a GATHER whose
  permutation a later layer could absorb, hence the hand-written pass.
- ``float_average_pools``: the strided shortcuts' 3x3 average pooling in float32 between a
  DEQUANTIZE and a QUANTIZE to the same scale, bit-identical to the int8 pooling, so that
  LiteRT's XNNPACK delegate runs it (the int8 op splits the delegated graph). Used with
  ``low_arena=False``: its float tensors raise the TFLite Micro arena.
- ``with_int8_io``: int8 input spectrograms and int8 logits (``output_interval`` bounds the
  logits).
- ``quantize_before_concatenation``: the blocks of a blockwise GRN are quantised before they
  are joined (the low-arena path), and DEQUANTIZE ops move next to their first reader.
"""

import numpy as np
import tensorflow as tf
from ai_edge_litert import schema_py_generated as tflite_schema
from tensorflow.lite.tools import flatbuffer_utils

from keras_asc.quantization.graph import (
    _OP_NAMES,
    _TENSOR_TYPES,
    compact_flatbuffer,
)

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


# === A smaller TFLite Micro arena ===


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

