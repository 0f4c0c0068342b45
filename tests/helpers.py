"""One shared helper for model tests (in the spirit of keras-hub's TestCase): JSON config
round-trip, save/load, predict on tf.data and one training step."""

import json

import keras
import numpy as np


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
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


def run_model_checks(model, inputs, tmp_path, fit=True):
    """Config JSON round-trip, save/load equality, tf.data predict, one fit step."""
    import tensorflow as tf

    config = json.loads(json.dumps(model.get_config()))
    clone = type(model).from_config(config)
    assert clone.get_config() == model.get_config()
    assert clone.count_params() == model.count_params()

    expected = keras.ops.convert_to_numpy(model(inputs, training=False))
    path = str(tmp_path / "model.keras")
    model.save(path)
    import keras_asc

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
