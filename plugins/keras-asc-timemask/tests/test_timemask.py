import keras
import numpy as np
from keras_asc_timemask import TimeMasking

import keras_asc


def test_masks_one_contiguous_run_per_example_and_is_identity_at_inference():
    x = np.random.default_rng(0).normal(size=(8, 16, 40, 1)).astype("float32") + 5.0
    layer = TimeMasking(max_mask_frames=10, seed=3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    masked_frames = (y == 0.0).all(axis=(1, 3))  # (batch, time)
    widths = masked_frames.sum(axis=1)
    assert widths.max() < 10 and widths.sum() > 0
    for row in masked_frames:
        idx = np.flatnonzero(row)
        if idx.size:
            assert idx[-1] - idx[0] + 1 == idx.size  # contiguous
    # Unmasked values are untouched.
    np.testing.assert_array_equal(y[~(y == 0.0)], x[~(y == 0.0)])


def test_seeded_and_serialisable():
    x = np.ones((4, 8, 30, 1), "float32")
    a = keras.ops.convert_to_numpy(TimeMasking(seed=7)(x, training=True))
    b = keras.ops.convert_to_numpy(TimeMasking(seed=7)(x, training=True))
    np.testing.assert_array_equal(a, b)
    config = TimeMasking(max_mask_frames=5, p=0.5, seed=1).get_config()
    assert TimeMasking.from_config(config).get_config() == config


def test_registered_through_the_plugin_hook():
    entry = keras_asc.registry.get_augmentation("time_mask")
    assert entry.augmentation is TimeMasking
    assert entry.stage == "spectrogram"
    assert "time_mask" in keras_asc.list_augmentations(stage="spectrogram")
