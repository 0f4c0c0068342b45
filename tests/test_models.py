"""Model zoo: SPEC feature-map shapes, DCASE complexity, serialisation, training, backends."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import randomize_state, run_model_checks

import keras_asc
from keras_asc import complexity
from keras_asc.models import ENSEMBLE_PRESETS, MODEL_PRESETS

# SPEC §2 Table 2 (F x T x C), by layer name suffix.
MOFLENET57_SHAPES = {
    "stem1_relu": (128, 32, 8),
    "stem2_relu": (64, 16, 32),
    "stage1_block1_out_relu": (64, 16, 32),
    "stage1_block2_out_relu": (32, 8, 32),
    "stage1_block3_out_relu": (16, 8, 32),
    "stage2_block4_out_relu": (8, 8, 56),
    "stage2_block5_out_relu": (8, 8, 56),
    "stage3_block6_out_relu": (8, 8, 104),
    "head_bn": (8, 8, 10),
    "head_pool": (10,),
}
# SPEC §3 Table 1.
CP_RESNET59_SHAPES = {
    "stem_relu": (127, 21, 32),
    "stem_pool": (63, 10, 32),
    "stage1_block1_out_relu": (63, 10, 32),
    "stage1_block1_pool": (31, 10, 32),
    "stage1_block2_out_relu": (31, 10, 32),
    "stage1_block2_pool": (15, 10, 32),
    "stage2_pool": (7, 10, 32),
    "stage2_block1_out_relu": (7, 10, 44),
    "stage3_pool": (7, 5, 44),
    "stage3_block1_out_relu": (7, 5, 26),
    "head_bn": (7, 5, 10),
    "head_pool": (10,),
}
INPUT_SHAPES = {
    "moflenet57": (256, 64, 1),
    "moflenet_128k": (256, 64, 1),
    "cp_resnet59": (256, 43, 1),
    "cp_resnet_128k": (256, 43, 1),
    "dcase24_baseline": (256, 65, 1),
}


def _waveforms(batch=2, seed=0):
    return np.random.default_rng(seed).normal(0, 0.1, (batch, 32000)).astype("float32")


def _layer_shapes(model):
    """Output shape of every layer, block sub-layers included, by layer name."""
    return {row.name.split("/")[-1]: tuple(row.output_shape[1:]) for row in complexity.profile(model).layers}


@pytest.mark.parametrize(
    "preset, expected",
    [("moflenet57", MOFLENET57_SHAPES), ("cp_resnet59", CP_RESNET59_SHAPES)],
)
def test_feature_map_shapes_match_spec_tables(preset, expected):
    model = keras_asc.build(preset).backbone
    assert tuple(model.input_shape[1:]) == INPUT_SHAPES[preset]
    shapes = _layer_shapes(model)
    for suffix, shape in expected.items():
        assert shapes[f"{preset}_{suffix}"] == shape, suffix


@pytest.mark.parametrize("preset", sorted(MODEL_PRESETS))
def test_frontend_gives_the_spectrogram_the_network_expects(preset):
    model = keras_asc.build(preset)
    assert tuple(model.input_shape) == (None, 32000)
    assert tuple(model.frontend.output.shape[1:]) == INPUT_SHAPES[preset]
    assert tuple(model.output_shape) == (None, 10)


@pytest.mark.parametrize("preset", sorted(MODEL_PRESETS))
def test_complexity_matches_preset_table(preset):
    counted = complexity.profile(keras_asc.build(preset))
    assert counted.params == MODEL_PRESETS[preset]["params"]
    assert counted.macs == MODEL_PRESETS[preset]["macs"]
    # The DCASE count equals Keras' trainable parameter count: nothing is missed or invented.
    model = keras_asc.build(preset)
    assert counted.params == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert complexity.check_budget(counted).ok


def test_dcase24_baseline_is_exact():
    counted = complexity.profile(keras_asc.build("dcase24_baseline"))
    assert (counted.params, counted.macs) == (61_148, 29_419_156)


@pytest.mark.parametrize(
    "preset, report_params, report_macs",
    [("moflenet57", 59_000, 13_400_000), ("cp_resnet59", 58_000, 16_000_000)],
)
def test_within_five_percent_of_report(preset, report_params, report_macs):
    counted = complexity.profile(keras_asc.build(preset))
    assert abs(counted.params / report_params - 1) <= 0.05
    assert abs(counted.macs / report_macs - 1) <= 0.05


def test_128k_presets_fit_the_budget():
    for preset in ("moflenet_128k", "cp_resnet_128k"):
        counted = complexity.profile(keras_asc.build(preset))
        assert counted.params <= 128_000
        assert counted.macs <= 30_000_000
        assert counted.params > 100_000  # they are meant to use the budget


@pytest.mark.parametrize("preset", sorted(ENSEMBLE_PRESETS))
def test_ensemble_fits_budget_and_sums_member_logits(preset):
    ensemble = keras_asc.build(preset)
    counted = complexity.profile(ensemble)
    assert counted.params == 60_440 + 58_360
    assert counted.macs <= 30_000_000
    assert complexity.check_budget(ensemble).ok
    x = _waveforms()
    members = {m.name: keras.ops.convert_to_numpy(m(x, training=False)) for m in ensemble.members}
    weights = ENSEMBLE_PRESETS[preset]["members"]
    expected = sum(weights[name] * logits for name, logits in members.items())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ensemble(x, training=False)), expected, rtol=1e-5, atol=1e-5
    )


def test_ensemble_rejects_mismatched_members():
    spectrogram_member = keras_asc.build("moflenet57").backbone
    with pytest.raises(ValueError, match="not a backbone"):
        keras_asc.models.Ensemble([spectrogram_member, keras_asc.build("cp_resnet59")], [0.5, 0.5])
    with pytest.raises(ValueError, match="one weight per member"):
        keras_asc.models.Ensemble([keras_asc.build("moflenet57"), keras_asc.build("cp_resnet59")], [1.0])


def test_budget_check_says_by_how_much():
    big = keras_asc.models.MofleNetBackbone(channels_multiplier=3.0, expansion_rate=4.0, name="big")
    report = complexity.check_budget(big)
    assert not report.ok
    assert report.bytes_over == report.param_bytes - 128_000 > 0
    with pytest.raises(complexity.BudgetExceededError, match=f"OVER by {report.bytes_over:,} bytes"):
        complexity.assert_within_budget(big)
    # At 16 bits the same model needs twice the bytes.
    assert complexity.check_budget(big, bits=16).param_bytes == 2 * report.param_bytes


def test_unsupported_layer_is_an_error_naming_it():
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.LayerNormalization(name="mystery_norm")(inputs)
    with pytest.raises(complexity.UnsupportedLayerError, match="mystery_norm.*LayerNormalization"):
        complexity.profile(keras.Model(inputs, outputs))


def test_summary_prints_per_layer_table():
    text = complexity.summary(keras_asc.build("moflenet57"))
    assert "moflenet57_stage3_block6_project_conv" in text
    assert "8 x 8 x 104" in text
    assert "front-end, excluded" in text
    assert "Total parameters: 60,440" in text
    assert "Total MACs: 12,944,468" in text


def test_overrides_and_unknown_names():
    model = keras_asc.build("moflenet57", num_classes=5)
    assert tuple(model.output_shape) == (None, 5)
    with pytest.raises(ValueError, match="Known models: .*cp_resnet59.*moflenet57"):
        keras_asc.build("mofle57")
    assert {"moflenet57", "cp_resnet59", "dcase24_baseline", "moflenet57_cp_resnet59_v2"} <= set(
        keras_asc.list_models()
    )


def test_grn_and_shuffle_layers():
    from keras_asc.layers import ChannelShuffle, GlobalResponseNormalization

    x = np.random.default_rng(1).normal(size=(2, 4, 3, 6)).astype("float32")
    grn = GlobalResponseNormalization()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(grn(x)), x)  # zero-initialised
    grn.gamma.assign(0.5)
    grn.beta.assign(0.25)
    norms = np.sqrt((x**2).sum(axis=(1, 2), keepdims=True))
    expected = 0.5 * x * norms / (norms.mean(axis=-1, keepdims=True) + 1e-6) + 0.25 + x
    np.testing.assert_allclose(keras.ops.convert_to_numpy(grn(x)), expected, rtol=1e-5)

    shuffled = keras.ops.convert_to_numpy(ChannelShuffle(2)(x))
    # Channels (0 1 2 | 3 4 5) interleave to 0 3 1 4 2 5.
    np.testing.assert_array_equal(shuffled, x[..., [0, 3, 1, 4, 2, 5]])
    with pytest.raises(ValueError, match="divisible by groups=4"):
        ChannelShuffle(4)(x)


@pytest.mark.parametrize("preset", ["moflenet57", "cp_resnet59", "dcase24_baseline"])
def test_serialisation_predict_and_one_training_step(preset, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras_asc.build(preset)
    randomize_state(model)
    run_model_checks(model, _waveforms(), tmp_path)


def test_ensemble_serialisation(tmp_path):
    keras.utils.set_random_seed(0)
    ensemble = keras_asc.build("moflenet57_cp_resnet59_v2")
    randomize_state(ensemble)
    run_model_checks(ensemble, _waveforms(), tmp_path, fit=False)


_PARITY_SCRIPT = """
import sys, json, numpy as np, keras, keras_asc
work = sys.argv[1]
out = {}
for preset in json.loads(sys.argv[2]):
    model = keras_asc.build(preset)
    model.load_weights(f"{work}/{preset}.weights.h5")
    x = np.load(f"{work}/inputs.npy")
    out[preset] = keras.ops.convert_to_numpy(model(x, training=False)).tolist()
json.dump(out, open(f"{work}/{keras.backend.backend()}.json", "w"))
"""


@pytest.mark.tensorflow_only
def test_same_weights_same_logits_on_every_backend(tmp_path):
    """Weights saved on TensorFlow give the same logits on JAX and PyTorch (tolerance 1e-4).

    Runs the other backends in subprocesses, since a process has one Keras backend."""
    presets = ["moflenet57", "cp_resnet59", "dcase24_baseline"]
    x = _waveforms(batch=2, seed=3)
    np.save(tmp_path / "inputs.npy", x)
    expected = {}
    for preset in presets:
        keras.utils.set_random_seed(1)
        model = keras_asc.build(preset)
        randomize_state(model, seed=2)
        model.save_weights(str(tmp_path / f"{preset}.weights.h5"))
        expected[preset] = keras.ops.convert_to_numpy(model(x, training=False))
    ran = []
    for other in ("jax", "torch"):
        try:
            __import__(other)
        except ImportError:
            continue
        env = {**os.environ, "KERAS_BACKEND": other}
        subprocess.run(
            [sys.executable, "-c", _PARITY_SCRIPT, str(tmp_path), json.dumps(presets)],
            env=env,
            check=True,
            timeout=600,
        )
        logits = json.loads((tmp_path / f"{other}.json").read_text())
        for preset in presets:
            np.testing.assert_allclose(np.array(logits[preset]), expected[preset], atol=1e-4, err_msg=f"{preset} on {other}")
        ran.append(other)
    if not ran:
        pytest.skip("neither jax nor torch is installed in this environment")


@pytest.mark.parametrize("kernel_size, use_bias", [(1, False), (3, True)])
def test_grouped_conv2d_equals_keras_grouped_convolution(kernel_size, use_bias):
    """keras_asc.layers.Conv2D (per-group ops on TensorFlow) computes Keras' grouped conv."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 7, 8)).astype("float32")
    ours = keras_asc.layers.Conv2D(6, kernel_size, groups=2, use_bias=use_bias, activation="relu")
    reference = keras.layers.Conv2D(6, kernel_size, groups=2, use_bias=use_bias, activation="relu")
    ours.build(x.shape)
    reference.build(x.shape)
    weights = [rng.normal(size=w.shape).astype("float32") for w in reference.weights]
    ours.set_weights(weights)
    reference.set_weights(weights)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours(x)), keras.ops.convert_to_numpy(reference(x)), atol=1e-5
    )
    # Each output group sees only its own input channels.
    x_zero_second_half = x.copy()
    x_zero_second_half[..., 4:] = 0.0
    first = keras.ops.convert_to_numpy(ours(x))[..., :3]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours(x_zero_second_half))[..., :3], first, atol=1e-5)
    clone = keras_asc.layers.Conv2D.from_config(ours.get_config())
    assert clone.get_config() == ours.get_config()


@pytest.mark.parametrize(
    "strides, dilation, multiplier, use_bias",
    [((1, 1), 1, 1, False), ((2, 1), 1, 1, False), ((2, 2), 1, 2, True), ((1, 1), 2, 1, True)],
)
def test_depthwise_conv2d_equals_keras_depthwise_convolution(strides, dilation, multiplier, use_bias):
    """keras_asc.layers.DepthwiseConv2D (strided slices on TensorFlow, a sum of shifted slices
    on JAX) computes Keras' depthwise convolution, unequal strides included."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 11, 8, 5)).astype("float32")
    kwargs = dict(strides=strides, dilation_rate=dilation, depth_multiplier=multiplier,
                  use_bias=use_bias, padding="valid")
    ours = keras_asc.layers.DepthwiseConv2D(3, **kwargs)
    ours.build(x.shape)
    weights = [rng.normal(size=w.shape).astype("float32") for w in ours.weights]
    ours.set_weights(weights)
    # Reference: the definition, out[n, i, j, c * M + m] = sum_{a, b} x[n, s_i * i + d * a,
    # s_j * j + d * b, c] * k[a, b, c, m] (+ bias).
    kernel = weights[0]
    out_h = (x.shape[1] - dilation * 2 - 1) // strides[0] + 1
    out_w = (x.shape[2] - dilation * 2 - 1) // strides[1] + 1
    expected = np.zeros((2, out_h, out_w, 5 * multiplier), "float64")
    for a in range(3):
        for b in range(3):
            window = x[:, dilation * a :: strides[0], dilation * b :: strides[1], :][:, :out_h, :out_w]
            expected += np.repeat(window, multiplier, axis=-1) * kernel[a, b].reshape(-1)
    if use_bias:
        expected += weights[1]
    got = keras.ops.convert_to_numpy(ours(x))
    assert got.shape == expected.shape == tuple(ours.compute_output_shape(x.shape))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_batch_normalization_training_step_equals_keras():
    """keras_asc.layers.BatchNormalization (a fused kernel on PyTorch) gives Keras' outputs,
    moving statistics and, on PyTorch, gradients, in training and in inference."""
    rng = np.random.default_rng(2)
    x = (3.0 + 2.0 * rng.normal(size=(4, 5, 6, 3))).astype("float32")
    ours = keras_asc.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    reference = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    for layer in (ours, reference):
        layer.build(x.shape)
        layer.set_weights([np.array([0.5, 2.0, -1.0], "float32"), np.array([0.1, 0.0, 0.3], "float32"),
                           np.array([1.0, -1.0, 0.0], "float32"), np.array([2.0, 0.5, 1.0], "float32")])
    for _ in range(2):
        got = keras.ops.convert_to_numpy(ours(x, training=True))
        expected = keras.ops.convert_to_numpy(reference(x, training=True))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    for mine, theirs in zip(ours.weights, reference.weights, strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(theirs),
                                   rtol=1e-5, atol=1e-6, err_msg=mine.path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours(x)), keras.ops.convert_to_numpy(reference(x)),
                               rtol=1e-5, atol=1e-5)
    if keras.backend.backend() == "torch":
        import torch

        grads = []
        weight = torch.from_numpy(rng.normal(size=x.shape).astype("float32"))
        for layer in (ours, reference):
            inputs = torch.tensor(x, requires_grad=True)
            (layer(inputs, training=True) * weight).sum().backward()
            grads.append([inputs.grad.numpy(), layer.gamma.value.grad.numpy(), layer.beta.value.grad.numpy()])
        for mine, theirs in zip(*grads, strict=True):
            np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)
