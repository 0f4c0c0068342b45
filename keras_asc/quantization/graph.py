"""The int8 file's graph: reading a TFLite flatbuffer, its parameter memory, compacting it.

``read_graph`` reads the main subgraph of a ``.tflite`` file with LiteRT's schema module (ops
in execution order, tensors with their types and shapes). ``parameter_bytes`` counts the
parameter memory from it under the DCASE rule (parameters times bytes per parameter at the
model's precision): int8 weights 1 byte per element, the int32 bias inputs of CONV_2D /
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
import os
import sys
import tempfile

import numpy as np
from ai_edge_litert import schema_py_generated as tflite_schema
from ai_edge_litert.interpreter import Interpreter
from tensorflow.lite.tools import flatbuffer_utils

from keras_asc.complexity import MAX_PARAM_BYTES, BudgetExceededError

_BIAS_INPUT = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "TRANSPOSE_CONV": 3}
_BYTES = {"int8": 1, "uint8": 1, "int16": 2, "float16": 2, "int32": 4, "float32": 4, "int64": 8}


# === Interpreter ===


def make_interpreter(model_path=None, model_content=None, num_threads=None):
    """A LiteRT (``ai_edge_litert``) interpreter of a ``.tflite`` path or flatbuffer bytes.

    LiteRT announces its XNNPACK delegate on the process's stderr when it builds one
    (``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.``); that line goes to a
    captured file descriptor (``native_output_captured``).

    Example:
        >>> interpreter = make_interpreter(model_path="out/moflenet57.tflite")
    """
    with native_output_captured():
        return Interpreter(
            model_path=model_path, model_content=model_content, num_threads=num_threads
        )


@contextlib.contextmanager
def native_output_captured():
    """Keep what native code (the TFLite converter, LiteRT) prints on stderr out of the output.

    File descriptor 2 points at a temporary file while the block runs; if the block raises,
    the captured text is written to stderr after all, since it may explain the failure. With
    ``KERAS_ASC_DEBUG=1`` nothing is captured. Python's own ``sys.stderr`` is untouched.
    """
    if os.environ.get("KERAS_ASC_DEBUG", "") not in ("", "0"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    failed = False
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                capture.seek(0)
                text = capture.read().decode(errors="replace")
                if text:
                    sys.stderr.write(text)


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


