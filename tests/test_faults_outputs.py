"""No silent numbers: a model whose weights or outputs are NaN or infinite is refused, with one
line naming the model and the clip, by every path that prints, writes or returns
probabilities (``predict`` as text and JSON, ``evaluate``, the Python ``TFLiteClassifier``),
never turned into ``nan %`` or ``null``."""

import json

import numpy as np
import pytest

from keras_asc.cli import main
from keras_asc.finite import NonFiniteError, check_finite

pytestmark = pytest.mark.tensorflow_only  # the .tflite half needs TensorFlow; models are cheap


def _noise_wav(folder, seconds=1.5, name="noise.wav"):
    from keras_asc.data.synthetic import write_wav

    path = folder / name
    samples = 0.1 * np.random.default_rng(0).standard_normal(int(32000 * seconds))
    write_wav(str(path), samples.astype("float32"), 32000)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """moflenet57 saved three ways: as built, with every weight NaN, and with finite weights
    (every kernel 1e30) whose logits overflow to NaN."""
    import keras_asc

    folder = tmp_path_factory.mktemp("models")
    model = keras_asc.build("moflenet57")
    for weight in model.weights:
        if weight.path.endswith("kernel"):
            weight.assign(np.full(weight.shape, 1e30, "float32"))
    model.save(folder / "overflow.keras")
    for weight in model.weights:
        weight.assign(np.full(weight.shape, np.nan, "float32"))
    model.save(folder / "nan.keras")
    return folder


NAN_WEIGHTS = (
    "model 'moflenet57' ({path}) has NaN or infinite values in 117 of its 117 weights (first: "
    "moflenet57_stem1_conv/kernel); expected a trained model with finite weights, so nothing "
    "was classified."
)
NAN_SCORES = (
    "model 'moflenet57' gave NaN or infinite scores for {clip}; expected finite numbers: the "
    "model's weights or this input are broken, so no probabilities are reported."
)


def test_predict_refuses_a_model_with_nan_weights_in_one_line(models, tmp_path, capsys):
    path = str(models / "nan.keras")
    message = NAN_WEIGHTS.format(path=path)
    assert main(["predict", path, _noise_wav(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"keras-asc predict: error: {message}\n"
    assert main(["predict", "--json", path, _noise_wav(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out) == {"error": message}
    assert err == f"keras-asc predict: error: {message}\n"


def test_evaluate_refuses_the_same_model_with_the_same_line(models, tmp_path, capsys):
    path = str(models / "nan.keras")
    assert main(["evaluate", path, "--data", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert err == f"keras-asc evaluate: error: {NAN_WEIGHTS.format(path=path)}\n"
    assert not (models / "eval-test").exists()


def test_predict_refuses_nan_scores_naming_the_model_and_the_file(models, tmp_path, capsys):
    path = str(models / "overflow.keras")
    short, long = _noise_wav(tmp_path), _noise_wav(tmp_path, seconds=2.5, name="long.wav")
    assert main(["predict", path, short, long]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "nan" not in out.lower()
    assert err.splitlines() == [
        f"keras-asc predict: error: {NAN_SCORES.format(clip=short)}",
        f"keras-asc predict: error: model 'moflenet57' gave NaN or infinite scores for "
        f"{long} (window 1 of 2) (and 1 more of the 2 clips); expected finite numbers: the "
        "model's weights or this input are broken, so no probabilities are reported.",
        "keras-asc predict: 2 of 2 files failed",
    ]


def test_predict_json_gives_the_error_not_null_probabilities(models, tmp_path, capsys):
    path, wav = str(models / "overflow.keras"), _noise_wav(tmp_path)
    assert main(["predict", "--json", path, wav]) == 1
    out, err = capsys.readouterr()
    (entry,) = json.loads(out)
    assert entry["error"] == NAN_SCORES.format(clip=wav)
    assert entry["probabilities"] is None and entry["top"] == [] and entry["num_windows"] == 0
    assert err.splitlines()[0] == f"keras-asc predict: error: {NAN_SCORES.format(clip=wav)}"


def test_the_shared_check_names_the_clip_by_index_without_names():
    check_finite(np.zeros((3, 10)), "m")  # finite: returned as it is
    logits = np.zeros((3, 10))
    logits[1, 4] = np.inf
    with pytest.raises(NonFiniteError, match=r"^model 'm' gave NaN or infinite scores for clip 2 of 3;"):
        check_finite(logits, "m")


# === the Python TFLiteClassifier ===


@pytest.fixture(scope="module")
def tflite_models(tmp_path_factory):
    """Two float .tflite files taking the default log-mel front-end's spectrograms: ``plain``
    (10 mean logits) and ``overflow`` (the same times 1e38 twice: infinite logits)."""
    import tensorflow as tf

    from keras_asc.layers import LogMelSpectrogram
    from keras_asc.quantization.export import EXPORT_FORMAT
    from keras_asc.quantization.frontend import (
        frontend_numpy,
        frontend_params,
        save_frontend_params,
    )

    folder = tmp_path_factory.mktemp("tflite")
    params = frontend_params(LogMelSpectrogram())
    shape = frontend_numpy(np.zeros((1, 32000), "float32"), params).shape[1:]
    for name, scale in (("plain", 1.0), ("overflow", 1e38)):

        @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.float32)])
        def model(x, scale=scale):
            mean = tf.reduce_mean(x, axis=[1, 2]) * tf.ones([1, 10])
            return mean * scale * scale

        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [model.get_concrete_function()], model
        )
        (folder / f"{name}.tflite").write_bytes(converter.convert())
        save_frontend_params(str(folder / f"{name}.frontend.npz"), [params])
        (folder / f"{name}.json").write_text(
            json.dumps(
                {"format": EXPORT_FORMAT, "model": name, "num_samples": 32000,
                 "inputs": [{"name": "x", "model_input": 0}]}
            )
        )
    return folder


def test_tflite_classifier_refuses_infinite_logits(tflite_models):
    from keras_asc.quantization import TFLiteClassifier

    waveforms = 0.1 * np.random.default_rng(0).standard_normal((2, 32000)).astype("float32")
    assert np.isfinite(TFLiteClassifier(str(tflite_models / "plain.tflite")).predict(waveforms)).all()
    classifier = TFLiteClassifier(str(tflite_models / "overflow.tflite"))
    with pytest.raises(NonFiniteError) as info:
        classifier.predict(waveforms)
    assert str(info.value) == (
        "model 'overflow_int8' gave NaN or infinite scores for clip 1 of 2 (and 1 more of the 2 "
        "clips); expected finite numbers: the model's weights or this input are broken, so no "
        "probabilities are reported."
    )


def test_tflite_classifier_refuses_non_finite_spectrograms(tflite_models):
    from keras_asc.quantization import TFLiteClassifier

    classifier = TFLiteClassifier(str(tflite_models / "plain.tflite"))
    spectrograms = classifier.as_spectrograms(np.zeros((3, 32000), "float32"))[0]
    spectrograms[2, 5, 7, 0] = np.nan
    with pytest.raises(NonFiniteError) as info:
        classifier.predict(spectrograms)
    assert str(info.value) == (
        "the log-mel inputs of model 'plain_int8' are NaN or infinite for clip 3 of 3; expected "
        "finite numbers: the audio or the front-end constants are broken, so no probabilities "
        "are reported."
    )


def test_predict_on_a_tflite_file_with_infinite_logits_names_it(tflite_models, tmp_path, capsys):
    wav = _noise_wav(tmp_path)
    assert main(["predict", str(tflite_models / "overflow.tflite"), wav]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[0] == (
        f"keras-asc predict: error: model 'overflow_int8' gave NaN or infinite scores for {wav}; "
        "expected finite numbers: the model's weights or this input are broken, so no "
        "probabilities are reported."
    )
