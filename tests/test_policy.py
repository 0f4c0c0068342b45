"""The quantisation policy table: QAT and PTQ read the same one, and the low-arena GRN is a
graph rewrite of a copy, not a change to a class. TensorFlow only."""

import json

import keras
import numpy as np
import pytest
from helpers import TINY_MOFLE_CONFIG, randomize_state

pytestmark = pytest.mark.tensorflow_only

tf = pytest.importorskip("tensorflow")


def _tiny(seed=0):
    from keras_asc.layers import GlobalResponseNormalization, leaf_layers
    from keras_asc.models import AudioClassifier

    keras.utils.set_random_seed(seed)
    model = AudioClassifier.from_preset(
        "moflenet57",
        **TINY_MOFLE_CONFIG,
        frontend_config={"hop_length": 500, "seed": seed},
        name="tiny_policy",
    )
    randomize_state(model, seed)
    for layer in leaf_layers(model):
        if isinstance(layer, GlobalResponseNormalization):  # as after training
            layer.gamma.assign(0.4)
            layer.beta.assign(-0.05)
    return model


def _float_ops(path):
    """Names of the ops whose output is float32, DEQUANTIZE excluded (the float layers' ops)."""
    from keras_asc.quantization import read_graph

    graph = read_graph(path)
    return sorted(
        op.name
        for op in graph.ops
        if op.name != "DEQUANTIZE" and graph.tensors[op.outputs[0]].dtype == "float32"
    )


def test_every_twin_layer_kind_has_one_entry_in_the_policy_table():
    import keras_asc
    from keras_asc.quantization import policy, to_tf_keras
    from keras_asc.quantization.twin import layers_deep

    twin = to_tf_keras(keras_asc.build("moflenet57"))  # its (2, 1) strides give Subsample layers
    kinds = {policy.layer_kind(layer) for layer in layers_deep(twin)} - {None}
    assert kinds == {
        "GlobalResponseNormalization",
        "LogitPooling",
        "ChannelShuffle",
        "Subsample",
        "AveragePooling2D",
    }
    assert set(policy.QUANTIZATION_POLICY) == kinds | {"WeightedSum"}
    assert "| GlobalResponseNormalization | float |" in policy.policy_table()


def test_qat_and_ptq_keep_the_same_layers_in_float(tmp_path):
    """The QAT file and the PTQ file of one model have the same float ops: both paths read the
    policy table (QAT's quantisation configs, PTQ's converter denylist)."""
    from keras_asc.quantization import export_int8, policy, quantize_model, to_tf_keras
    from keras_asc.quantization import qat as qat_module

    model = _tiny()
    twin = to_tf_keras(model)
    qat_model = quantize_model(twin)
    wrapped = {
        layer.layer.name: type(layer.quantize_config).__name__
        for layer in qat_model.layers
        if hasattr(layer, "quantize_config") and hasattr(layer, "layer")
    }
    assert {name for name, config in wrapped.items() if config == "FloatQuantizeConfig"} == set(
        policy.float_layers(twin)
    )
    assert qat_module._custom_layer_config(twin.get_layer(policy.float_layers(twin)[0]))
    waveforms = np.random.default_rng(0).normal(0, 0.1, (16, 32000)).astype("float32")
    for low_arena in (False, True):
        files = {
            name: export_int8(
                source,
                calibration,
                tmp_path / f"{name}_{low_arena}.tflite",
                qat=name == "qat",
                micro=False,
                low_arena=low_arena,
                max_calibration_samples=16,
            ).path
            for name, source, calibration in (
                ("qat", qat_model, None),
                ("ptq", twin, [waveforms]),
            )
        }
        qat_ops, ptq_ops = _float_ops(files["qat"]), _float_ops(files["ptq"])
        assert qat_ops == ptq_ops
        # GRN (MUL, ADD, SUM, SQRT, ...) and the logit pooling are float in both.
        assert {"SQRT", "SUM", "MUL"} <= set(qat_ops)


def test_low_arena_rewrites_a_copy_and_patches_no_class(tmp_path):
    from keras_asc.quantization import export_int8, to_tf_keras, twin
    from keras_asc.quantization.low_arena import (
        BlockwiseGlobalResponseNormalization,
        with_blockwise_grn,
    )
    from keras_asc.quantization.twin import layers_deep

    call = twin.GlobalResponseNormalization.call
    model = to_tf_keras(_tiny())
    spectrograms = np.random.default_rng(1).normal(size=(2, *model.input_shape[1:]))
    spectrograms = spectrograms.astype("float32")
    blockwise = with_blockwise_grn(model, min_bytes=0)
    assert any(isinstance(layer, BlockwiseGlobalResponseNormalization) for layer in layers_deep(blockwise))
    assert not any(
        isinstance(layer, BlockwiseGlobalResponseNormalization) for layer in layers_deep(model)
    )
    # The same values, computed in blocks along axis 1 (the mel axis).
    np.testing.assert_allclose(
        blockwise(spectrograms).numpy(), model(spectrograms).numpy(), rtol=1e-5, atol=1e-5
    )
    waveforms = np.random.default_rng(0).normal(0, 0.1, (8, 32000)).astype("float32")
    result = export_int8(model, [waveforms], tmp_path / "tiny.tflite", micro=False)
    assert twin.GlobalResponseNormalization.call is call
    assert json.loads(open(result.json_path).read())["low_arena"] is True
