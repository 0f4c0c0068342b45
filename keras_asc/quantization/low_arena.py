"""GRN computed block by block: the twin option behind the small TFLite Micro arena.

GRN runs in float32 in the int8 file (see ``policy.QUANTIZATION_POLICY``), between a
DEQUANTIZE and a QUANTIZE, so its float tensors are four times the int8 activations around
it, and in MofleNet's first stages they set the TFLite Micro arena. ``with_blockwise_grn``
rebuilds a twin or a QAT model from its config with every large GRN layer replaced by
``BlockwiseGlobalResponseNormalization`` (the same weights, copied by layer name), the way
``twin.with_native_strides`` replaces the ``Subsample`` layers: nothing is patched on a class,
and the model the caller holds is left as it is. The blocks split axis 1 of the
(batch, mel bins, frames, channels) tensor, the mel axis; the export then quantises each block
before the blocks are joined (``passes.quantize_before_concatenation``), so the largest float
tensor is a quarter of the layer's.

Hand-written: no converter option or TF-MOT transform computes a layer in blocks to bound the
memory of one op.
"""

import numpy as np
import tensorflow as tf
import tf_keras

from keras_asc.quantization import twin as twin_module

# Blocks of a large GRN; each block's float copy is a quarter of the layer's float tensor.
LOW_ARENA_GRN_BLOCKS = 4
# GRN layers whose float tensor is smaller stay whole: each block adds ops, and every op
# costs TFLite Micro persistent arena (node, tensor and quantisation structures).
LOW_ARENA_MIN_BYTES = 65536


@tf_keras.saving.register_keras_serializable(package=twin_module.TWIN_PACKAGE)
class BlockwiseGlobalResponseNormalization(twin_module.GlobalResponseNormalization):
    """The twin's GRN computed in ``blocks`` blocks along axis 1 (the mel axis): same values.

    The statistics pass splits the input (one SPLIT) and sums the squares of each block; the
    per-channel factor comes from those norms as in the twin (``twin.grn_factor``), and the
    output pass computes ``block * factor + beta`` on each block, taken again with its own
    slice so that the converter does not merge the two passes' blocks and keep every float
    block alive between them. A layer whose float input is under ``min_bytes`` computes as
    the plain twin (its blocks would add more persistent arena than they save).

    Args:
        blocks: blocks along axis 1.
        min_bytes: float32 bytes of one example's input below which the layer stays whole.
        epsilon: as for the twin's GRN.

    Example:
        >>> y = BlockwiseGlobalResponseNormalization(blocks=4, min_bytes=0)(tf.ones((1, 8, 8, 16)))
    """

    def __init__(self, blocks=LOW_ARENA_GRN_BLOCKS, min_bytes=LOW_ARENA_MIN_BYTES, **kwargs):
        super().__init__(**kwargs)
        self.blocks = int(blocks)
        self.min_bytes = int(min_bytes)

    def call(self, inputs):
        rows = int(inputs.shape[1])
        if 4 * np.prod(inputs.shape[1:]) < self.min_bytes or self.blocks < 2:
            return super().call(inputs)
        blocks = min(self.blocks, rows)
        sizes = [rows // blocks + (1 if i < rows % blocks else 0) for i in range(blocks)]
        squares = [
            tf.reduce_sum(tf.square(block), axis=(1, 2), keepdims=True)
            for block in tf.split(inputs, sizes, axis=1)
        ]
        factor = twin_module.grn_factor(tf.sqrt(tf.add_n(squares)), self.gamma, self.epsilon)
        starts = np.cumsum([0, *sizes[:-1]])
        # The twin's own formula, x * factor + beta, per block: no new constant (parameter).
        return tf.concat(
            [inputs[:, start : start + size] * factor + self.beta for start, size in zip(starts, sizes, strict=True)],
            axis=1,
        )

    def get_config(self):
        return {**super().get_config(), "blocks": self.blocks, "min_bytes": self.min_bytes}


_GRN = "GlobalResponseNormalization"
_BLOCKWISE = "BlockwiseGlobalResponseNormalization"


def blockwise_grn_config(config, blocks=None, min_bytes=None):
    """The functional tf_keras config with every twin GRN made blockwise (in place, returned).

    ``blocks`` and ``min_bytes`` default to ``LOW_ARENA_GRN_BLOCKS`` and ``LOW_ARENA_MIN_BYTES``
    as they are when called.

    Works on twins and TF-MOT QAT models (the wrapped layer's config) and recurses into
    nested models (ensemble members); returns ``None`` when the config has no GRN layer.
    """
    blocks = LOW_ARENA_GRN_BLOCKS if blocks is None else blocks
    min_bytes = LOW_ARENA_MIN_BYTES if min_bytes is None else min_bytes
    found = False
    for entry in config["layers"]:
        inner = twin_module.inner_layer_config(entry)
        if inner["class_name"] in ("Functional", "Model") and "layers" in inner["config"]:
            found = blockwise_grn_config(inner["config"], blocks, min_bytes) is not None or found
        elif inner["class_name"] == _GRN:
            inner["class_name"] = _BLOCKWISE
            inner["registered_name"] = f"{twin_module.TWIN_PACKAGE}>{_BLOCKWISE}"
            inner["module"] = __name__
            inner["config"].update(blocks=int(blocks), min_bytes=int(min_bytes))
            found = True
    return config if found else None


def with_blockwise_grn(model, extra_objects=None, *, blocks=None, min_bytes=None):
    """The twin (or QAT model) with every GRN computed block by block, same weights.

    Args:
        model: a tf_keras twin or a QAT model built from one (native strides or not).
        extra_objects: extra classes for deserialisation (TF-MOT's quantisation configs).
        blocks: blocks along the mel axis (default ``LOW_ARENA_GRN_BLOCKS``).
        min_bytes: GRN layers with a smaller float input stay whole (default
            ``LOW_ARENA_MIN_BYTES``).

    Returns:
        A new tf_keras model for the converter, or ``model`` itself when it has no GRN.

    Example:
        >>> converter_model = with_blockwise_grn(with_native_strides(to_tf_keras(model)))
    """
    objects = {**(extra_objects or {}), _BLOCKWISE: BlockwiseGlobalResponseNormalization}
    return twin_module.rebuilt(
        model,
        lambda config: blockwise_grn_config(config, blocks, min_bytes),
        objects,
    )
