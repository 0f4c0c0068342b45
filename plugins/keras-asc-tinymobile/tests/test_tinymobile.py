import keras
import numpy as np
from keras_asc_tinymobile import TinyMobileBackbone

import keras_asc
from keras_asc import complexity


def test_tiny_mobile_counts_and_shapes():
    model = keras_asc.build("tiny_mobile")
    assert isinstance(model.backbone, TinyMobileBackbone)
    assert type(model).__name__ == "AudioClassifier"
    assert tuple(model.input_shape) == (None, 32000)
    assert tuple(model.output_shape) == (None, 10)
    counted = complexity.profile(model)
    assert counted.params == 2_364
    assert counted.macs < 400_000


def test_three_member_ensemble_fits_the_budget_and_weights_logits():
    ensemble = keras_asc.build("moflenet57_cp_resnet59_tiny")
    report = complexity.check_budget(ensemble)
    assert report.ok, str(report)
    assert report.params == 60_440 + 58_360 + 2_364
    x = np.random.default_rng(0).normal(0, 0.1, (2, 32000)).astype("float32")
    members = {m.name: keras.ops.convert_to_numpy(m(x)) for m in ensemble.members}
    expected = 0.5 * members["cp_resnet59"] + 0.35 * members["moflenet57"] + 0.15 * members["tiny_mobile"]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ensemble(x)), expected, rtol=1e-5, atol=1e-5)


def test_saved_model_reloads(tmp_path):
    model = keras_asc.build("tiny_mobile")
    x = np.random.default_rng(1).normal(0, 0.1, (2, 32000)).astype("float32")
    path = tmp_path / "tiny.keras"
    model.save(path)
    restored = keras_asc.load_model(str(path))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6)
