"""Mixed-precision training: dtypes of the layers, float32 statistics, finite training."""

import json
import math
import os

import keras
import numpy as np
import pytest

import keras_asc
from keras_asc.augment.mixstyle import mix_frequency_statistics
from keras_asc.layers import GlobalResponseNormalization, LogMelSpectrogram
from keras_asc.training.precision import mixed_policy_name, precision_scope


def test_precision_scope_sets_and_restores_the_policy():
    before = keras.config.dtype_policy().name
    with precision_scope("mixed") as name:
        # No GPU is visible to the CPU test runs: bfloat16, which needs no loss scaling.
        assert name == mixed_policy_name() == "mixed_bfloat16"
        layer = keras.layers.Dense(2)
    assert keras.config.dtype_policy().name == before
    assert layer.compute_dtype == "bfloat16" and layer.variable_dtype == "float32"
    with precision_scope("float32"):
        assert keras.layers.Dense(2).compute_dtype == "float32"
    with pytest.raises(ValueError, match="precision must be one of float32, mixed"):
        with precision_scope("half"):
            pass


def test_frontend_and_statistics_stay_float32_under_bfloat16():
    rng = np.random.default_rng(0)
    waveforms = (0.1 * rng.normal(size=(2, 32000))).astype("float32")
    reference = keras.ops.convert_to_numpy(LogMelSpectrogram()(waveforms))
    with precision_scope("mixed"):
        frontend = LogMelSpectrogram()
        grn = GlobalResponseNormalization()
        mixstyle = keras_asc.augment.FreqMixStyle(p=1.0, seed=0)
    # The front-end and Freq-MixStyle keep float32 under the mixed policy: the waveform is not
    # rounded to bfloat16 (which would move quiet log-mel bins by 1e-2) and the output is the
    # float32 one.
    assert frontend.compute_dtype == mixstyle.compute_dtype == "float32"
    mixed = frontend(waveforms)
    assert keras.backend.standardize_dtype(mixed.dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(mixed), reference, rtol=1e-6, atol=1e-6)
    spectra = mixstyle(mixed, training=True)
    assert keras.backend.standardize_dtype(spectra.dtype) == "float32"

    # GRN over a large feature map: norms summed in float32, the output rounded to bfloat16.
    features = rng.uniform(0.5, 1.5, size=(2, 64, 64, 8)).astype("float32")
    grn.build(features.shape)
    grn.gamma.assign(1.0)
    got = keras.ops.convert_to_numpy(keras.ops.cast(grn(features), "float32"))
    norms = np.sqrt(np.sum(features.astype("float64") ** 2, axis=(1, 2), keepdims=True))
    expected = features * (norms / (norms.mean(axis=-1, keepdims=True) + 1e-6)) + features
    np.testing.assert_allclose(got, expected, rtol=2.0**-6)

    # Freq-MixStyle keeps the input's dtype and mixes float32 statistics.
    spectra = keras.ops.cast(features, "bfloat16")
    out = mix_frequency_statistics(spectra, np.full((2, 1, 1, 1), 0.3, "float32"), np.array([1, 0]))
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))))


@pytest.mark.slow
def test_mixed_precision_training_is_finite_and_recorded(tiny_model, synthetic_root, tmp_path):
    before = keras.config.dtype_policy().name
    result = keras_asc.train(
        tiny_model,
        data_dir=synthetic_root,
        split=100,
        epochs=2,
        batch_size=16,
        steps_per_epoch=3,
        out_dir=str(tmp_path / "run"),
        verbose=0,
        tensorboard=False,
        precision="mixed",
    )
    assert keras.config.dtype_policy().name == before
    assert all(math.isfinite(loss) for loss in result.history["loss"])
    network = result.training_model
    convolutions = [
        layer for layer in keras_asc.layers.leaf_layers(network)
        if isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D)
    ]
    assert convolutions and all(layer.compute_dtype == "bfloat16" for layer in convolutions)
    assert all(weight.dtype == "float32" for weight in network.weights)
    assert all(np.all(np.isfinite(keras.ops.convert_to_numpy(w))) for w in network.weights)
    with open(os.path.join(result.run_dir, "run_config.json"), encoding="utf-8") as handle:
        assert json.load(handle)["precision"] == "mixed"
    # A continued run with another precision is refused, as for any changed setting.
    with pytest.raises(ValueError, match="precision"):
        keras_asc.train(tiny_model, data_dir=synthetic_root, split=100, epochs=2, batch_size=16,
                        steps_per_epoch=3, out_dir=str(tmp_path / "run"), verbose=0,
                        tensorboard=False)


def test_bad_precision_is_refused_before_any_work(synthetic_root, tmp_path):
    with pytest.raises(ValueError, match="precision must be one of"):
        keras_asc.train("moflenet57", data_dir=synthetic_root, split=100,
                        out_dir=str(tmp_path / "run"), precision="float16")
    assert not os.path.exists(tmp_path / "run")
