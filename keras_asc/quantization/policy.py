"""The quantisation policy: one table saying how each kind of layer is quantised and exported.

Both paths to an int8 file read ``QUANTIZATION_POLICY``:

- quantisation-aware training (``qat._custom_layer_config``): a ``"float"`` layer gets a
  quantisation config that quantises nothing, a ``"pass-through"`` layer one that adds no
  range of its own, an ``"int8"`` layer TF-MOT's default 8-bit scheme;
- post-training quantisation (``conversion.convert_int8``): the ops of every ``"float"``
  layer are kept out of int8 (the converter's denylist), the others are calibrated.

Layers the table does not name (convolutions, batch normalisation, ReLU, additions) are int8
with TF-MOT's defaults.

Example:
    >>> from keras_asc.quantization.policy import QUANTIZATION_POLICY
    >>> QUANTIZATION_POLICY["GlobalResponseNormalization"].treatment
    'float'
"""

import dataclasses

import tf_keras

from keras_asc.quantization import twin as twin_module

FLOAT = "float"
PASS_THROUGH = "pass-through"
INT8 = "int8"


@dataclasses.dataclass(frozen=True)
class LayerPolicy:
    """How one kind of layer is quantised (``treatment``) and what the int8 file holds for it."""

    treatment: str  # FLOAT, PASS_THROUGH or INT8
    exported: str


QUANTIZATION_POLICY = {
    "GlobalResponseNormalization": LayerPolicy(
        FLOAT,
        "float32 between a DEQUANTIZE and a QUANTIZE (a mean norm that rounds to zero in int8 "
        "would divide by zero); with low_arena (the default) a large GRN is computed in 4 "
        "blocks along axis 1, the mel axis, each block quantised before the blocks are joined",
    ),
    "LogitPooling": LayerPolicy(
        FLOAT,
        "SUM x 1/N in float32 on the dequantised int8 head output: the logits keep float "
        "resolution (an int8 MEAN would round close classes into ties)",
    ),
    "WeightedSum": LayerPolicy(
        FLOAT,
        "the ensemble's weighted sum of member logits, MUL and ADD in float32",
    ),
    "ChannelShuffle": LayerPolicy(
        PASS_THROUGH,
        "an int8 GATHER keeping its input's scale, then folded into the constants of the "
        "layers after it (fold_shuffle, the default): no op left",
    ),
    "Subsample": LayerPolicy(
        PASS_THROUGH,
        "not converted: the deferred stride goes back into its depthwise convolution",
    ),
    "AveragePooling2D": LayerPolicy(
        PASS_THROUGH,
        "int8 AVERAGE_POOL_2D with its input's scale (TFLite Micro's int8 kernel); with "
        "low_arena=False float32 between a DEQUANTIZE and a QUANTIZE to the same scale "
        "(bit-identical, run by LiteRT's XNNPACK delegate)",
    ),
}


def _kinds():
    # Subclasses first: the blockwise GRN is a GRN.
    return (
        (twin_module.GlobalResponseNormalization, "GlobalResponseNormalization"),
        (twin_module.LogitPooling, "LogitPooling"),
        (twin_module.WeightedSum, "WeightedSum"),
        (twin_module.ChannelShuffle, "ChannelShuffle"),
        (twin_module.Subsample, "Subsample"),
        (tf_keras.layers.AveragePooling2D, "AveragePooling2D"),
    )


def layer_kind(layer):
    """The ``QUANTIZATION_POLICY`` key of a tf_keras layer, or ``None`` (int8 by default)."""
    for cls, kind in _kinds():
        if isinstance(layer, cls):
            return kind
    return None


def treatment(layer):
    """``"float"``, ``"pass-through"`` or ``"int8"`` for a tf_keras (twin) layer."""
    kind = layer_kind(layer)
    return QUANTIZATION_POLICY[kind].treatment if kind is not None else INT8


def float_layers(model):
    """Names of the layers of a twin (nested members included) that stay in float32."""
    return [layer.name for layer in twin_module.layers_deep(model) if treatment(layer) == FLOAT]


def policy_table():
    """The table as Markdown rows (kind, treatment, what the int8 file holds), for documents."""
    rows = ["| layer | quantisation | in the int8 file |", "|---|---|---|"]
    rows += [f"| {kind} | {p.treatment} | {p.exported} |" for kind, p in QUANTIZATION_POLICY.items()]
    return "\n".join(rows)
