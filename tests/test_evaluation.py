"""Evaluation metrics against hand-computed numbers, result files, model loading, inference on
audio files and ensembles of saved runs."""

import json
import math
import os

import numpy as np
import pytest

from keras_asc.training import evaluation, inference, plots
from keras_asc.training.evaluation import EvaluationResult, evaluate_predictions, log_loss

CLASSES = ("x", "y", "z")


def one_hot_logits(predicted, num_classes=3, confidence=2.0):
    logits = np.zeros((len(predicted), num_classes))
    logits[np.arange(len(predicted)), predicted] = confidence
    return logits


@pytest.fixture
def small_result():
    # Class x: 4 clips, all right; y: 1 clip, wrong (predicted x); z: 1 clip, right.
    # Overall 5/6 but class-wise (1 + 0 + 1) / 3 = 2/3: the imbalance is what macro removes.
    labels = [0, 0, 0, 0, 1, 2]
    predicted = [0, 0, 0, 0, 0, 2]
    devices = ["a", "a", "b", "s1", "s4", b"s4"]
    return evaluate_predictions(
        one_hot_logits(predicted), labels, devices, CLASSES, model_name="toy", split="test"
    )


# === Metrics ===


def test_macro_accuracy_differs_from_overall_accuracy(small_result):
    assert small_result.accuracy == pytest.approx(5 / 6)
    assert small_result.macro_accuracy == pytest.approx(2 / 3)
    assert small_result.class_accuracy == {"x": 1.0, "y": 0.0, "z": 1.0}
    assert small_result.class_counts == {"x": 4, "y": 1, "z": 1}
    assert small_result.num_clips == 6


def test_confusion_matrix_rows_are_true_classes(small_result):
    np.testing.assert_array_equal(small_result.confusion_matrix, [[4, 0, 0], [1, 0, 0], [0, 0, 1]])


def test_device_and_group_accuracy(small_result):
    # Devices in canonical order; bytes are decoded like strings from tf.data.
    assert list(small_result.device_accuracy) == ["a", "b", "s1", "s4"]
    assert small_result.device_accuracy == {"a": 1.0, "b": 1.0, "s1": 1.0, "s4": 0.5}
    assert small_result.device_counts == {"a": 2, "b": 1, "s1": 1, "s4": 2}
    assert small_result.group_accuracy == {"real": 1.0, "seen": 1.0, "unseen": 0.5}
    assert small_result.group_counts == {"real": 3, "seen": 1, "unseen": 2}


def test_log_loss_matches_the_cross_entropy_formula():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5], [0.6, 0.3, 0.1]])
    labels = np.array([0, 2, 1])
    # softmax(log p) = p, so the loss is -mean(log p[true]).
    expected = -(math.log(0.7) + math.log(0.5) + math.log(0.3)) / 3
    assert log_loss(np.log(probabilities), labels) == pytest.approx(expected, rel=1e-12)
    # Shifting all logits of a row does not change softmax.
    assert log_loss(np.log(probabilities) + 7.5, labels) == pytest.approx(expected, rel=1e-12)
    # Uniform scores cost log(classes).
    assert log_loss(np.zeros((4, 10)), [0, 3, 5, 9]) == pytest.approx(math.log(10))


def test_log_loss_is_clipped_like_sklearn():
    eps = np.finfo(np.float64).eps
    # p(true) = exp(-1000) underflows to 0 and is clipped to eps; the other row costs
    # -log(1 - eps) because p(true) rounds to 1 and is clipped below it.
    loss = log_loss([[1000.0, 0.0], [1000.0, 0.0]], [1, 0])
    assert loss == pytest.approx((-math.log(eps) - math.log(1 - eps)) / 2, rel=1e-12)
    assert np.isfinite(loss)


def test_evaluate_predictions_log_loss_field(small_result):
    # Rows are [2, 0, 0] or [0, 0, 2]: p(right) = e^2 / (e^2 + 2), p(wrong) = 1 / (e^2 + 2).
    right = math.exp(2) / (math.exp(2) + 2)
    wrong = 1 / (math.exp(2) + 2)
    expected = -(5 * math.log(right) + math.log(wrong)) / 6
    assert small_result.log_loss == pytest.approx(expected, rel=1e-12)


def test_class_and_device_log_loss_match_a_direct_numpy_computation():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, size=(40, 3))
    labels = rng.integers(0, 3, size=40)
    labels[:3] = [0, 1, 2]  # every class present
    devices = np.array(["a", "b", "s4", "s1"] * 10)
    result = evaluate_predictions(logits, labels, devices, CLASSES)
    # Direct: softmax by hand, clip like sklearn, mean over each group of clips.
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = exp / exp.sum(axis=1, keepdims=True)
    eps = np.finfo(np.float64).eps
    losses = -np.log(np.clip(probabilities[np.arange(40), labels], eps, 1 - eps))
    assert result.log_loss == pytest.approx(losses.mean(), rel=1e-12)
    for index, name in enumerate(CLASSES):
        assert result.class_log_loss[name] == pytest.approx(
            losses[labels == index].mean(), rel=1e-12
        )
    assert list(result.device_log_loss) == ["a", "b", "s1", "s4"]
    for device in ("a", "b", "s1", "s4"):
        mask = devices == device
        assert result.device_log_loss[device] == pytest.approx(losses[mask].mean(), rel=1e-12)
    pairs = 0
    for index, name in enumerate(CLASSES):
        for device in ("a", "b", "s1", "s4"):
            mask = (labels == index) & (devices == device)
            if mask.any():
                pairs += 1
                assert result.class_device_log_loss[name][device] == pytest.approx(
                    losses[mask].mean(), rel=1e-12
                )
            else:
                assert device not in result.class_device_log_loss.get(name, {})
    assert pairs == sum(len(row) for row in result.class_device_log_loss.values())
    # Clip-weighted, the per-class losses average back to the overall loss.
    counts = np.bincount(labels, minlength=3)
    weighted = sum(counts[i] * result.class_log_loss[n] for i, n in enumerate(CLASSES)) / 40
    assert weighted == pytest.approx(result.log_loss, rel=1e-12)


def test_log_loss_tables_survive_json_and_old_files_still_load(small_result, tmp_path):
    small_result.save(tmp_path, plots=False)
    loaded = EvaluationResult.load(tmp_path)
    assert loaded.class_device_log_loss == small_result.class_device_log_loss
    assert loaded.device_log_loss == small_result.device_log_loss
    assert loaded.class_log_loss["y"] == pytest.approx(-math.log(1 / (math.exp(2) + 2)))
    text = str(small_result)
    assert "log loss per class (rows) and device (columns)" in text
    # A metrics.json written before the log-loss tables existed loads with them empty.
    data = small_result.to_dict()
    for key in ("class_log_loss", "device_log_loss", "class_device_log_loss"):
        del data[key]
    old = EvaluationResult.from_dict(data)
    assert old.class_device_log_loss == {} and old.macro_accuracy == small_result.macro_accuracy
    del data["log_loss"]
    with pytest.raises(ValueError, match="log_loss"):
        EvaluationResult.from_dict(data)


def test_class_without_clips_is_left_out_of_the_macro_average():
    result = evaluate_predictions(one_hot_logits([0, 1, 0]), [0, 0, 2], class_names=CLASSES)
    assert result.class_accuracy == {"x": 0.5, "y": None, "z": 0.0}
    assert result.macro_accuracy == pytest.approx(0.25)
    assert result.device_accuracy == {} and result.group_accuracy == {}


def test_unknown_devices_are_listed_after_known_ones_and_in_no_group():
    result = evaluate_predictions(
        one_hot_logits([0, 1, 2]), [0, 1, 0], ["phone", "s6", "a"], class_names=CLASSES
    )
    assert list(result.device_accuracy) == ["a", "s6", "phone"]
    assert result.device_accuracy == {"a": 0.0, "s6": 1.0, "phone": 1.0}
    assert result.group_counts == {"real": 1, "unseen": 1}


@pytest.mark.parametrize(
    "logits, labels, devices, match",
    [
        (np.zeros((2, 4)), [0, 1], None, "4 columns but 3 class names"),
        (np.zeros((2, 3)), [0, 3], None, r"labels must lie in \[0, 3\)"),
        (np.zeros((2, 3)), [0], None, r"labels must have shape \(2,\)"),
        (np.zeros((0, 3)), [], None, "0 clips"),
        (np.array([[0.0, np.nan, 0.0]]), [0], None, "NaN"),
        (np.zeros((2, 3)), [0.0, 1.0], None, "integer class indices"),
        (np.zeros((2, 3)), [0, 1], ["a"], r"devices must have shape \(2,\)"),
        (np.zeros(3), [0], None, r"shape \(clips, classes\)"),
    ],
)
def test_bad_inputs_are_refused(logits, labels, devices, match):
    with pytest.raises(ValueError, match=match):
        evaluate_predictions(logits, np.asarray(labels), devices, CLASSES)


# === Text, JSON and plots ===


def test_text_table(small_result):
    text = str(small_result)
    assert "Model: toy   split: test   clips: 6" in text
    assert "macro class-wise accuracy:  66.67 %" in text
    assert "overall accuracy:           83.33 %" in text
    assert "unseen (s4, s5, s6)" in text
    lines = text.splitlines()
    assert lines[-3].split()[-3:] == ["4", "0", "0"]  # confusion row of class x
    assert lines[-2].split()[-3:] == ["1", "0", "0"]


def test_comparison_table(small_result):
    other = evaluate_predictions(one_hot_logits([0, 1, 2]), [0, 1, 2], ["a", "s1", "s5"], CLASSES)
    lines = evaluation.format_comparison({"toy": small_result, "perfect": other}).splitlines()
    assert lines[0].split() == [
        "model",
        "macro",
        "acc",
        "%",
        "accuracy",
        "%",
        "log",
        "loss",
        "real",
        "%",
        "seen",
        "%",
        "unseen",
        "%",
    ]
    assert lines[2].split()[:3] == ["toy", "66.67", "83.33"]
    assert lines[3].split()[:3] == ["perfect", "100.00", "100.00"]


def test_save_writes_json_text_and_plots(small_result, tmp_path):
    written = small_result.save(tmp_path / "eval")
    names = sorted(os.path.basename(p) for p in written)
    expected = ["metrics.json", "metrics.txt"]
    if plots.matplotlib_available():
        expected += ["confusion_matrix.png", "device_accuracy.png"]
    assert names == sorted(expected)
    data = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert data["macro_accuracy"] == pytest.approx(2 / 3)
    assert data["confusion_matrix"] == [[4, 0, 0], [1, 0, 0], [0, 0, 1]]
    assert data["class_accuracy"]["y"] == 0.0
    assert (tmp_path / "eval" / "metrics.txt").read_text().strip() == str(small_result)
    # No temporary files are left behind.
    assert sorted(os.listdir(tmp_path / "eval")) == sorted(expected)
    reloaded = EvaluationResult.load(tmp_path / "eval")
    assert reloaded.to_dict() == small_result.to_dict()


def test_plots_are_png_files(small_result, tmp_path):
    pytest.importorskip("matplotlib")
    for path in plots.save_evaluation_plots(small_result, tmp_path):
        with open(path, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    path = plots.plot_model_comparison({"toy": small_result}, tmp_path / "cmp.png")
    assert os.path.getsize(path) > 1000


def test_device_plot_needs_devices(tmp_path):
    pytest.importorskip("matplotlib")
    result = evaluate_predictions(one_hot_logits([0, 1]), [0, 1], class_names=CLASSES)
    with pytest.raises(ValueError, match="no per-device accuracy"):
        plots.plot_device_accuracy(result, tmp_path / "d.png")
    # Without devices only the confusion matrix is drawn.
    assert [os.path.basename(p) for p in plots.save_evaluation_plots(result, tmp_path)] == [
        "confusion_matrix.png"
    ]


# === Models: loading and prediction ===


class ConstantPredictor:
    """Any object with predict(waveforms) -> logits can be evaluated (e.g. a TFLite model)."""

    name = "constant"
    num_samples = 32000

    def __init__(self, favourite=0, num_classes=10):
        self.logits = np.zeros(num_classes, dtype=np.float32)
        self.logits[favourite] = 3.0
        self.calls = []

    def predict(self, waveforms):
        self.calls.append(np.asarray(waveforms).shape)
        return np.tile(self.logits, (len(waveforms), 1))


class LoudnessPredictor:
    """Scores class 0 by the window's mean square, the others 0: window-dependent output."""

    name = "loudness"
    num_samples = 32000

    def predict(self, waveforms):
        waveforms = np.asarray(waveforms, dtype=np.float64)
        logits = np.zeros((len(waveforms), 10))
        logits[:, 0] = 1e4 * np.mean(waveforms**2, axis=1)
        return logits


def test_load_predictor_accepts_predict_objects_and_refuses_the_rest(tmp_path):
    predictor = ConstantPredictor()
    assert evaluation.load_predictor(predictor) is predictor
    with pytest.raises(TypeError, match="predict"):
        evaluation.load_predictor(42)
    with pytest.raises(FileNotFoundError, match="No model at"):
        evaluation.load_predictor(str(tmp_path / "nothing.keras"))
    with pytest.raises(FileNotFoundError, match="without model.keras"):
        evaluation.load_predictor(tmp_path)
    (tmp_path / "weights.h5").write_bytes(b"")
    with pytest.raises(ValueError, match=r"a \.keras file or a \.tflite file"):
        evaluation.load_predictor(tmp_path / "weights.h5")


def test_split_windows_drops_the_tail_and_wraps_short_recordings():
    windows = inference.split_windows(np.arange(10.0), 4)
    np.testing.assert_array_equal(windows, [[0, 1, 2, 3], [4, 5, 6, 7]])
    np.testing.assert_array_equal(
        inference.split_windows(np.arange(3.0), 7), [[0, 1, 2, 0, 1, 2, 0]]
    )
    assert inference.split_windows(np.ones(8), 4).shape == (2, 4)
    with pytest.raises(ValueError, match="no samples"):
        inference.split_windows(np.zeros(0), 4)


def test_predict_waveform_averages_window_probabilities():
    # Two windows: silent (uniform probabilities) and loud (class 0 near certain).
    waveform = np.concatenate([np.zeros(32000), np.full(32000, 0.1), np.ones(100)])
    probabilities, num_windows = inference.predict_waveform(LoudnessPredictor(), waveform)
    assert num_windows == 2  # the 100-sample tail is dropped
    loud = evaluation.softmax(np.array([1e4 * 0.01] + [0.0] * 9))
    expected = (np.full(10, 0.1) + loud) / 2
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6)
    assert probabilities.sum() == pytest.approx(1.0)


def test_predict_files_on_real_recordings_and_a_corrupt_file(shared_data, tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00")  # truncated
    paths = [
        shared_data / "audio" / "metro_station-paris.wav",  # 24-bit mono 44.1 kHz, 10 s
        corrupt,
        shared_data / "audio" / "acoustic_scene.wav",  # 16-bit stereo 44.1 kHz, 10 s
        tmp_path / "missing.wav",
    ]
    predictor = ConstantPredictor(favourite=3)
    predictions = inference.predict_files(predictor, paths, top=2)
    assert [p.ok for p in predictions] == [True, False, True, False]
    for prediction in predictions[0::2]:
        assert prediction.num_windows == 10
        assert prediction.duration_seconds == pytest.approx(10.0, abs=1e-3)
        assert prediction.scene == "metro_station"
        assert [name for name, _ in prediction.top_scenes] == ["metro_station", "airport"]
        # softmax of one logit 3 against nine zeros
        assert prediction.top_scenes[0][1] == pytest.approx(math.exp(3) / (math.exp(3) + 9))
    # Windows are batched: 10 windows of 32,000 samples per file.
    assert predictor.calls == [(10, 32000), (10, 32000)]
    assert "corrupt.wav" in predictions[1].error and "truncated" in predictions[1].error
    assert "not found" in predictions[3].error
    text = inference.format_predictions(predictions)
    assert "metro_station-paris.wav (10.00 s, 10 windows of 1 s)" in text
    assert "1. metro_station" in text and f"{corrupt}: ERROR:" in text


def test_predict_files_with_a_keras_model(tmp_path, shared_data):
    import keras

    import keras_asc

    # A short-input model keeps the test fast: windows follow the model's input length.
    model = keras_asc.build("moflenet57", num_samples=8000)
    path = tmp_path / "model.keras"
    model.save(path)
    predictions = inference.predict_files(
        path, [shared_data / "audio" / "metro_station-paris.wav"], top=3
    )
    (prediction,) = predictions
    assert prediction.num_windows == 40 and prediction.window_seconds == 0.25
    assert prediction.probabilities.sum() == pytest.approx(1.0, abs=1e-6)
    from keras_asc.data.audio import load_audio

    waveform = load_audio(shared_data / "audio" / "metro_station-paris.wav")
    windows = waveform[: 40 * 8000].reshape(40, 8000)
    logits = keras.ops.convert_to_numpy(model(windows, training=False))
    np.testing.assert_allclose(
        prediction.probabilities, evaluation.softmax(logits).mean(axis=0), atol=1e-5
    )


# === evaluate() over a TAU22-layout folder ===


def write_mini_tau22(root, clips_per_class=2):
    """A tiny TAU22 tree whose clip ``i`` is the constant ``(i + 1) / 64`` (1 s, 44.1 kHz,
    24-bit), so a predictor can tell which clip it sees, whatever the batching and order.

    Returns:
        ``(filenames, labels, devices)`` in clip-id order.
    """
    from keras_asc.data.synthetic import write_wav
    from keras_asc.data.tau22 import DEVICES, SCENE_LABELS

    os.makedirs(root / "audio", exist_ok=True)
    filenames, labels, devices = [], [], []
    for label, scene in enumerate(SCENE_LABELS):
        for copy in range(clips_per_class):
            index = len(filenames)
            device = DEVICES[(label + 4 * copy) % len(DEVICES)]
            name = f"audio/{scene}-lisbon-{1000 + label}-{40000 + index}-{copy}-{device}.wav"
            write_wav(root / name, np.full(44100, (index + 1) / 64), 44100, bits=24)
            filenames.append(name)
            labels.append(label)
            devices.append(device)
    table = "filename\tscene_label\n" + "".join(
        f"{name}\t{SCENE_LABELS[label]}\n" for name, label in zip(filenames, labels, strict=True)
    )
    (root / "test.csv").write_text(table)
    return filenames, np.array(labels), np.array(devices)


class ClipIdPredictor:
    """Predicts ``predictions[clip id]``, reading the id from the clip's constant level."""

    name = "clip-id"
    num_samples = 32000

    def __init__(self, predictions):
        self.predictions = np.asarray(predictions)
        self.seen = []

    def predict(self, waveforms):
        ids = np.rint(np.median(np.asarray(waveforms), axis=1) * 64).astype(int) - 1
        self.seen.extend(ids.tolist())
        return one_hot_logits(self.predictions[ids], num_classes=10)


@pytest.mark.tensorflow_only
def test_evaluate_runs_the_split_and_keeps_labels_and_devices_aligned(tmp_path):
    _, labels, devices = write_mini_tau22(tmp_path)
    # Right everywhere except: every clip of class 1 (bus) is called airport, and every
    # clip heard through device s5 is called tram.
    predictions = labels.copy()
    predictions[labels == 1] = 0
    predictions[devices == "s5"] = 9
    predictor = ClipIdPredictor(predictions)
    result = evaluation.evaluate(predictor, tmp_path, split="test", batch_size=7, verbose=False)
    assert sorted(predictor.seen) == list(range(20))  # every clip exactly once
    expected = evaluate_predictions(
        one_hot_logits(predictions, num_classes=10),
        labels,
        devices,
        model_name="clip-id",
        split="test",
    )
    assert result.to_dict() == expected.to_dict()
    # Wrong: both bus clips (devices b, s3) and the two s5 clips (metro_station copy 1,
    # street_pedestrian copy 0): 16 / 20 right.
    assert result.accuracy == pytest.approx(16 / 20)
    assert result.class_accuracy["bus"] == 0.0
    assert result.class_accuracy["metro_station"] == 0.5
    assert result.class_accuracy["street_pedestrian"] == 0.5
    assert result.macro_accuracy == pytest.approx((7 * 1.0 + 0.0 + 0.5 + 0.5) / 10)
    assert result.device_accuracy["s5"] == 0.0 and result.device_counts["s5"] == 2
    assert result.device_accuracy["b"] == 0.5  # bus on b is wrong, shopping_mall on b right
    assert result.num_clips == 20 and result.split == "test"
