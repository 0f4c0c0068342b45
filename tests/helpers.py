"""One shared helper for model tests (in the spirit of keras-hub's TestCase): JSON config
round-trip, save/load, predict on tf.data and one training step."""

import functools
import json
import os

import keras
import numpy as np

import keras_asc


def randomize_state(model, seed=0):
    """Give BN moving statistics, GRN scalars and zero-initialised kernels (CP-ResNet's Fixup
    second convolutions and classifier) non-trivial values, so that tests comparing outputs
    can fail on a wrong weight mapping."""
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.Conv2D) and not np.any(keras.ops.convert_to_numpy(layer.kernel)):
            fan_in = int(np.prod(layer.kernel.shape[:-1]))
            layer.kernel.assign(rng.normal(0, np.sqrt(2.0 / fan_in), layer.kernel.shape).astype("float32"))
        elif isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, channels).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, channels).astype("float32"))
            layer.gamma.assign(rng.uniform(0.8, 1.2, channels).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.1, channels).astype("float32"))
        elif type(layer).__name__ == "GlobalResponseNormalization":
            layer.gamma.assign(np.float32(rng.uniform(0.2, 0.5)))
            layer.beta.assign(np.float32(rng.uniform(-0.1, 0.1)))


def _all_layers(model):
    from keras_asc.layers import leaf_layers

    return leaf_layers(model)


def _json(config):
    return json.loads(json.dumps(config))


def run_model_checks(model, inputs, tmp_path, fit=True):
    """Config JSON round-trip, save/load equality, tf.data predict, one fit step."""
    import tensorflow as tf

    config = _json(model.get_config())
    clone = type(model).from_config(config)
    assert _json(clone.get_config()) == config
    assert clone.count_params() == model.count_params()

    expected = keras.ops.convert_to_numpy(model(inputs, training=False))
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras_asc.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(inputs, training=False)), expected, atol=1e-5
    )

    dataset = tf.data.Dataset.from_tensor_slices(inputs).batch(len(inputs))
    np.testing.assert_allclose(model.predict(dataset, verbose=0), expected, atol=1e-4)

    if fit:
        labels = np.arange(len(inputs)) % model.output_shape[-1]
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        history = model.fit(inputs, labels, batch_size=len(inputs), epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
    return expected


def run_layer_test(layer_class, init_kwargs, input_shape, expected_output_shape, tmp_path, *,
                   expected_num_trainable_weights=None, trains=True, seed=0):
    """keras-hub-style check of one public layer on the current backend (the suite runs once
    per backend): ``get_config`` is exactly the constructor arguments (JSON round trip),
    ``compute_output_shape`` agrees with a real call, the layer works inside a user's
    ``keras.Sequential`` model, saves and loads to the same outputs, predicts on tf.data, and
    one training step gives a finite loss and (``trains``) changes the layer's weights.

    Returns the Sequential model.
    """
    import tensorflow as tf

    layer = layer_class(**init_kwargs)
    config = _json(layer.get_config())
    clone = layer_class.from_config(config)
    assert _json(clone.get_config()) == config
    for key, value in init_kwargs.items():
        assert config[key] == _json(value), f"get_config()[{key!r}] = {config[key]!r}, constructed with {value!r}"

    model = keras.Sequential([keras.Input(input_shape[1:]), layer])
    assert tuple(model.output_shape) == tuple(expected_output_shape)
    assert tuple(layer.compute_output_shape(tuple(input_shape))) == tuple(expected_output_shape)
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights
    randomize_state(model, seed)
    x = np.random.default_rng(seed).normal(size=(2, *input_shape[1:])).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    assert expected.shape == (2, *expected_output_shape[1:])

    path = str(tmp_path / f"{layer.name}.keras")
    model.save(path)
    restored = keras_asc.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(x, training=False)), expected, atol=1e-5)
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(2)
    np.testing.assert_allclose(model.predict(dataset, verbose=0), expected, atol=1e-4)

    before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    if not trains:  # a layer without weights: train a scalar after it, to run a real step
        model.add(keras.layers.Rescaling(1.0))
        model.add(keras.layers.Dense(1))
        expected = keras.ops.convert_to_numpy(model(x, training=False))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    history = model.fit(x, np.ones_like(expected), batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights[: len(before)]]
    changed = any(not np.allclose(b, a) for b, a in zip(before, after, strict=True))
    assert changed == trains, "a training step changed no weight" if trains else "weights changed"
    return model


# Every MofleNet block kind at a fraction of MofleNet57's cost, for tests that train.
TINY_MOFLE_CONFIG = {
    "base_channels": 8,
    "channels_multiplier": 1.0,
    "expansion_rate": 1.0,
    "blocks_per_stage": (1, 1, 1),
    "block_strides": {"2": (2, 2), "3": (2, 2)},
}
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


class TinyMofle:
    """A runtime plugin that registers the tiny MofleNet as ``model_name`` (a MofleNet57 preset
    with ``TINY_MOFLE_CONFIG``), so ``keras_asc.train`` and the CLI can train it by name."""

    def __init__(self, model_name="tiny_mofle"):
        self.model_name = model_name

    @keras_asc.hookimpl
    def register_models(self, register):
        from keras_asc.models import AudioClassifier

        builder = functools.partial(AudioClassifier.from_preset, "moflenet57")
        config = {**TINY_MOFLE_CONFIG, "name": self.model_name}
        register(self.model_name, builder, config=config, description="test model")


def tiny_mofle_source(plugin_name):
    """Python source that registers ``TinyMofle()`` in a subprocess (for kill/resume tests)."""
    return (
        f"import sys\nsys.path.insert(0, {TESTS_DIR!r})\n"
        "from helpers import TinyMofle\nfrom keras_asc import plugins\n"
        f"plugins.register_plugin(TinyMofle(), name={plugin_name!r})\n"
    )
