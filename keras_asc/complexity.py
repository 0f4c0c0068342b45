"""Parameters, MACs and bytes per layer under the DCASE 2024 Task 1 counting rules.

The rules follow the torchinfo convention of the official checker: every trainable parameter
counts (batch normalisation as 2C: gamma and beta, moving statistics excluded); a convolution
costs its kernel elements times the output positions (plus one per output value for a bias);
batch normalisation costs 2C; activations, pooling, padding, shuffles and additions cost nothing.
The log-mel front-end is excluded; block layers (``keras_asc.layers.Block``) are counted
sub-layer by sub-layer. A layer type with no
known rule is an error naming it, never a silent zero; a custom layer can declare its own cost
with a ``dcase_complexity(input_shape, output_shape) -> (params, macs)`` method.

Example:
    >>> import keras_asc
    >>> print(keras_asc.complexity.summary(keras_asc.build("moflenet57")))
"""

import dataclasses
import math

import keras

from keras_asc.layers.blocks import Block
from keras_asc.layers.frontend import LogMelSpectrogram
from keras_asc.text import format_table

MAX_PARAM_BYTES = 128_000
MAX_MACS = 30_000_000

_FREE_LAYERS = (
    keras.layers.InputLayer,
    keras.layers.ReLU,
    keras.layers.Activation,
    keras.layers.ZeroPadding2D,
    keras.layers.AveragePooling2D,
    keras.layers.MaxPooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Add,
    keras.layers.Reshape,
    keras.layers.Flatten,
    keras.layers.Dropout,
)


class UnsupportedLayerError(TypeError):
    """A layer type has no DCASE counting rule."""


class BudgetExceededError(ValueError):
    """A model is over the DCASE parameter-memory or MAC limit."""


@dataclasses.dataclass(frozen=True)
class LayerComplexity:
    name: str
    type: str
    output_shape: tuple
    params: int
    macs: int
    note: str = ""


@dataclasses.dataclass(frozen=True)
class ModelComplexity:
    """Per-layer and total complexity of one model."""

    name: str
    layers: tuple

    @property
    def params(self):
        return sum(layer.params for layer in self.layers)

    @property
    def macs(self):
        return sum(layer.macs for layer in self.layers)

    def param_bytes(self, bits=8):
        """Parameter memory in bytes at ``bits`` per parameter."""
        return math.ceil(self.params * bits / 8)


@dataclasses.dataclass(frozen=True)
class BudgetReport:
    """Result of ``check_budget``: ``ok`` and, when not, by how much each limit is exceeded."""

    params: int
    param_bytes: int
    macs: int
    bits: int
    max_param_bytes: int
    max_macs: int

    @property
    def bytes_over(self):
        return max(0, self.param_bytes - self.max_param_bytes)

    @property
    def macs_over(self):
        return max(0, self.macs - self.max_macs)

    @property
    def ok(self):
        return not self.bytes_over and not self.macs_over

    def __str__(self):
        lines = [
            f"parameters: {self.params:,} = {self.param_bytes:,} bytes at {self.bits} bit "
            f"(limit {self.max_param_bytes:,}): "
            + ("ok" if not self.bytes_over else f"OVER by {self.bytes_over:,} bytes"),
            f"MACs: {self.macs:,} (limit {self.max_macs:,}): "
            + ("ok" if not self.macs_over else f"OVER by {self.macs_over:,}"),
        ]
        return "\n".join(lines)


def _spatial_positions(shape):
    return math.prod(int(d) for d in shape[1:-1])


def _weights_size(layer):
    return sum(math.prod(w.shape) for w in layer.trainable_weights)


def _layer_cost(layer, input_shape, output_shape):
    if hasattr(layer, "dcase_complexity"):
        params, macs = layer.dcase_complexity(input_shape, output_shape)
        return int(params), int(macs)
    if isinstance(layer, keras.layers.BatchNormalization):
        channels = int(output_shape[-1])
        params = 2 * channels if layer.scale and layer.center else channels * (layer.scale + layer.center)
        return params, params
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Conv1D)):
        positions = _spatial_positions(output_shape)
        kernel = math.prod(layer.kernel.shape)
        bias = math.prod(layer.bias.shape) if layer.use_bias else 0
        return kernel + bias, (kernel + bias) * positions
    if isinstance(layer, keras.layers.Dense):
        positions = _spatial_positions(output_shape) if len(output_shape) > 2 else 1
        params = _weights_size(layer)
        return params, params * positions
    if isinstance(layer, _FREE_LAYERS):
        return 0, 0
    raise UnsupportedLayerError(
        f"complexity: no DCASE counting rule for layer {layer.name!r} of type "
        f"{type(layer).__module__}.{type(layer).__name__}. Give the layer a "
        f"dcase_complexity(input_shape, output_shape) -> (params, macs) method."
    )


def _shape(tensor_or_list):
    if isinstance(tensor_or_list, (list, tuple)):
        return [tuple(t.shape) for t in tensor_or_list]
    return tuple(tensor_or_list.shape)


def _block_rows(block, input_shape, prefix):
    rows = []

    def record(layer):
        def run(shape):
            output_shape = tuple(layer.compute_output_shape(shape))
            params, macs = _layer_cost(layer, shape, output_shape)
            rows.append(LayerComplexity(f"{prefix}{layer.name}", type(layer).__name__, output_shape, params, macs))
            return output_shape

        return run

    block.apply_sublayers(tuple(input_shape), record)
    return rows


def _walk(model, prefix=""):
    rows = []
    for layer in model.layers:
        name = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            rows.extend(_walk(layer, prefix=f"{name}/"))
            continue
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, Block):
            # Sub-layer names already start with the block's name.
            rows.extend(_block_rows(layer, _shape(layer.input), prefix=prefix))
            continue
        output_shape = _shape(layer.output)
        kind = type(layer).__name__
        if isinstance(layer, LogMelSpectrogram):
            rows.append(LayerComplexity(name, kind, output_shape, 0, 0, "front-end, excluded"))
            continue
        params, macs = _layer_cost(layer, _shape(layer.input), output_shape)
        rows.append(LayerComplexity(name, kind, output_shape, params, macs))
    return rows


def profile(model):
    """Count parameters and MACs per layer of a built Keras model (nested models included).

    Args:
        model: a functional keras-asc model (waveform or spectrogram input) or ensemble.

    Returns:
        ``ModelComplexity`` with one ``LayerComplexity`` row per counted layer.
    """
    return ModelComplexity(model.name, tuple(_walk(model)))


def check_budget(model, bits=8, max_param_bytes=MAX_PARAM_BYTES, max_macs=MAX_MACS):
    """Check a model (or a ``ModelComplexity``) against the DCASE limits.

    Args:
        model: Keras model or ``ModelComplexity``.
        bits: bits per parameter (8 for int8 deployment).
        max_param_bytes: parameter-memory limit in bytes.
        max_macs: MAC limit for one 1-s clip.

    Returns:
        ``BudgetReport``; ``report.ok`` is False when a limit is exceeded and ``str(report)``
        says by how much.
    """
    counted = model if isinstance(model, ModelComplexity) else profile(model)
    return BudgetReport(
        params=counted.params,
        param_bytes=counted.param_bytes(bits),
        macs=counted.macs,
        bits=bits,
        max_param_bytes=max_param_bytes,
        max_macs=max_macs,
    )


def assert_within_budget(model, bits=8, max_param_bytes=MAX_PARAM_BYTES, max_macs=MAX_MACS):
    """Raise ``BudgetExceededError`` naming the excess when a model is over a DCASE limit."""
    report = check_budget(model, bits, max_param_bytes, max_macs)
    if not report.ok:
        name = model.name
        raise BudgetExceededError(f"{name} exceeds the DCASE budget:\n{report}")
    return report


def _format_shape(shape):
    if shape and isinstance(shape[0], tuple):
        return ", ".join(_format_shape(s) for s in shape)
    return " x ".join(str(d) for d in shape[1:])


def summary(model, bits=8):
    """A printable per-layer table (output shape F x T x C, params, MACs) with totals and the
    budget check.

    Example:
        >>> print(summary(keras_asc.build("cp_resnet59")))
    """
    counted = model if isinstance(model, ModelComplexity) else profile(model)
    rows = []
    for layer in counted.layers:
        rows.append(
            (
                layer.name,
                layer.type,
                _format_shape(layer.output_shape),
                layer.note or f"{layer.params:,}",
                "" if layer.note else f"{layer.macs:,}",
            )
        )
    table = format_table(("layer", "type", "output", "params", "MACs"), rows, left_columns=3)
    lines = [f"Model: {counted.name}", *table, table[1]]
    lines.append(f"Total parameters: {counted.params:,}")
    lines.append(f"Total MACs: {counted.macs:,}")
    lines.append(str(check_budget(counted, bits)))
    return "\n".join(lines)
