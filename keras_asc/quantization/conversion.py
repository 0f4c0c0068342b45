"""Conversion of a QAT model or a float twin to an int8 TFLite flatbuffer (QAT and PTQ).

``convert_int8`` traces the converter's form of the model (``_traceable``: native depthwise
strides, and with ``low_arena`` the blockwise GRN of ``low_arena.with_blockwise_grn``, both
graph rewrites of a copy) and runs the TFLite converter. A QAT model brings its ranges from
training; a float twin is calibrated on a representative dataset (post-training
quantisation), with the layers that ``policy.QUANTIZATION_POLICY`` keeps in float left out of
int8 (the converter's denylist), as the QAT path leaves them unquantised.
"""

import numpy as np
import tensorflow as tf

from keras_asc.quantization import low_arena as low_arena_module
from keras_asc.quantization import policy, qat
from keras_asc.quantization.frontend import frontend_numpy, frontend_params
from keras_asc.quantization.frontend_tf import (
    _FRONTEND_SCOPE,
    _waveform_function,
    _waveform_samples,
)
from keras_asc.quantization.graph import compact_flatbuffer, native_output_captured, read_graph
from keras_asc.quantization.twin import layers_deep, twin_spec, with_native_strides

DEFAULT_CALIBRATION_SAMPLES = 256


# === Conversion ===


def _is_quantized(model):
    return any(type(layer).__name__.startswith("Quantize") for layer in layers_deep(model))


def _traceable(model, quantized, low_arena=False):
    """The model the converter traces: depthwise strides native, no ``Subsample`` layers, and
    with ``low_arena`` every large GRN computed in blocks (``low_arena.with_blockwise_grn``).

    Both are graph rewrites of a copy (the model passed in is left as it is)."""
    objects = qat.quantize_scope_objects() if quantized else {}
    blockwise = {"BlockwiseGlobalResponseNormalization": low_arena_module.BlockwiseGlobalResponseNormalization}

    def rewrite():
        traced = with_native_strides(model, objects)
        if low_arena:
            traced = low_arena_module.with_blockwise_grn(traced, objects)
        return traced

    if not quantized:
        return rewrite()
    # Rebuilding a QAT model from its config needs TF-MOT's classes and our configs in scope.
    quantize_scope = qat.import_tfmot().quantization.keras.quantize_scope
    with quantize_scope({**objects, **blockwise}):
        return rewrite()


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


def _representative_samples(representative_dataset, frontends, order, max_samples):
    # Samples are keyed by input name: the converter may order an ensemble's inputs
    # differently from the model.
    def generate():
        count = 0
        for arrays in _calibration_batches(representative_dataset, frontends):
            for row in range(arrays[0].shape[0]):
                yield [arrays[index][row : row + 1] for index in order]
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
    low_arena=False,
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
        low_arena: compute every large GRN in blocks along the mel axis
            (``low_arena.with_blockwise_grn``), for ``passes.quantize_before_concatenation``.

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
    model = _traceable(model, quantized, low_arena)
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
        with native_output_captured():
            return compact_flatbuffer(make_converter().convert())
    frontends = [frontend_params(config) for config in spec.frontends]
    float_converter = make_converter()
    float_converter.optimizations = []
    with native_output_captured():
        float_graph = read_graph(float_converter.convert())
    if frontend_in_file:
        samples = _waveform_samples(representative_dataset, int(max_calibration_samples))
    else:
        samples = _representative_samples(
            representative_dataset,
            frontends,
            _input_order(float_graph, [spec.name for spec in specs]),
            int(max_calibration_samples),
        )
    converter = make_converter()
    converter.representative_dataset = samples
    # The layers the policy table keeps in float (GRN, the logit pooling, the weighted sum)
    # stay out of int8, as in the QAT path. Post-training quantisation would otherwise put
    # GRN's division in int8, where a mean norm that rounds to zero divides by zero.
    return compact_flatbuffer(
        _quantize_calibrated(converter, _float_nodes(model, float_graph))
    )


def _quantize_calibrated(converter, denylisted_nodes):
    """Calibrate with the converter, then quantise all ops but ``denylisted_nodes``.

    The steps of TensorFlow's ``QuantizationDebugger.get_nondebug_quantized_model`` (the
    public way to keep nodes out of int8), without the debugger: its constructor also builds
    an instrumented model and a deprecated ``tf.lite.Interpreter`` that this does not need.
    The converter's native quantiser prints its settings on the process's stderr
    (``fully_quantize: 0, ...``); that goes to a captured file descriptor and is shown only
    when the conversion fails.
    """
    from tensorflow.lite.python import convert

    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True
    with native_output_captured():
        calibrated = converter.convert()
        return convert.mlir_quantize(
            calibrated,
            disable_per_channel=converter._experimental_disable_per_channel,
            fully_quantize=False,
            denylisted_nodes=denylisted_nodes,
        )


def _spectrogram_function(model):
    """The ``tf.function`` spectrogram(s) -> ``model``, one argument per model input."""

    @tf.function(autograph=False)
    def function(*inputs):
        return model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)

    return function


def _input_order(graph, names):
    """For each input of the converted ``graph``, the index of the model input it is.

    Calibration samples go to the converter as lists in its input order (the converter may
    order an ensemble's inputs differently from the model; samples keyed by name would make
    TensorFlow's calibrator build a deprecated ``tf.lite.Interpreter`` to map the names).
    """
    order = []
    for index in graph.inputs:
        tensor = graph.tensors[index].name
        matches = [i for i, name in enumerate(names) if name in tensor]
        if not matches:
            raise ValueError(f"converted input {tensor!r} matches none of the inputs {names}.")
        order.append(max(matches, key=lambda i: len(names[i])))
    return order


def _float_nodes(model, graph):
    """Output tensor names of the ops of the float layers (``policy.float_layers``) and outputs.

    Read from the ``graph`` of a float conversion, whose tensor names are the TensorFlow op
    names (``<model>/<layer>/<op>``), the same names the calibrated model has.
    """
    float_layers = policy.float_layers(model)
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


