"""The device front-end: the sparse NumPy ``frontend_numpy`` and its ``.frontend.npz`` versions,
the log-mel front-end inside the int8 ``.tflite`` file (``export_int8(frontend_in_file=True)``)
and the ONNX export of the float model.

The NumPy checks run on every backend; the TFLite ones need TensorFlow (as test_quantization).
"""

import importlib.util
import json
import warnings

import keras
import numpy as np
import pytest
from helpers import randomize_state

from keras_asc.layers import LogMelSpectrogram
from keras_asc.models import AudioClassifier
from keras_asc.models.presets import MODEL_PRESETS

PRESETS = ("moflenet57", "cp_resnet59", "dcase24_baseline")


def clips(count=4, seed=5):
    """Noise, a quiet clip (the log offset matters), a 1 kHz tone and noise with a DC step."""
    rng = np.random.default_rng(seed)
    waveforms = rng.normal(0, 0.1, (count, 32000)).astype("float32")
    waveforms[1] *= 1e-3
    waveforms[2] = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(32000) / 32000)
    waveforms[3, 16000:] += 0.3
    return waveforms


def preset_layer(preset):
    return LogMelSpectrogram(**MODEL_PRESETS[preset]["frontend"])


# === Sparse NumPy front-end ===


@pytest.mark.parametrize("preset", PRESETS)
def test_sparse_frontend_matches_the_layer(preset, tmp_path):
    from keras_asc.quantization.frontend import (
        frontend_numpy,
        frontend_params,
        load_frontend_params,
        save_frontend_params,
        sparse_mel_bank,
    )

    layer = preset_layer(preset)
    waveforms = clips()
    expected = keras.ops.convert_to_numpy(layer(waveforms, training=False))
    params = frontend_params(layer)
    # Each band is one run of bins; the runs hold every non-zero weight of the dense bank,
    # about 2 per FFT bin instead of 256.
    start, length, weights = sparse_mel_bank(params["mel_filter_bank"])
    assert length.sum() == weights.size < 2 * params["mel_filter_bank"].shape[0]
    offset = np.concatenate([[0], np.cumsum(length)])
    for band in (0, 100, 255):
        column = params["mel_filter_bank"][:, band]
        run = slice(start[band], start[band] + length[band])
        np.testing.assert_array_equal(column[run], weights[offset[band] : offset[band + 1]])
        assert not np.delete(column, np.r_[run]).any()
    output = frontend_numpy(waveforms, params)
    assert output.shape == expected.shape and output.dtype == np.float32
    error = np.abs(output - expected).max(axis=(1, 2, 3))
    assert error[[0, 1, 3]].max() <= 1e-4, error
    # The loud pure tone leaves far bands at the float32 FFT noise floor, near the 1e-5 log
    # offset; without normalisation (dcase24_baseline) FFT implementations differ there by up
    # to 1.6e-3 (PyTorch's vs SciPy's; the float64 dense front-end is 2.2e-3 from the layer).
    assert error[2] <= 2.5e-3, error
    # 1-D input is one clip.
    np.testing.assert_array_equal(frontend_numpy(waveforms[0], params), output[:1])
    save_frontend_params(str(tmp_path / "f.npz"), [params])
    (loaded,) = load_frontend_params(str(tmp_path / "f.npz"))
    assert loaded["format"] == "keras_asc.logmel/3"
    np.testing.assert_array_equal(loaded["mel_band_weights"], weights)
    np.testing.assert_array_equal(frontend_numpy(waveforms, loaded), output)


def test_version_1_frontend_files_still_load(tmp_path):
    """A file written before the sparse bank (dense bank only, format /1) gives the same output."""
    from keras_asc.quantization.frontend import (
        frontend_numpy,
        frontend_params,
        load_frontend_params,
    )

    params = frontend_params(preset_layer("cp_resnet59"))
    constants = {
        k: v
        for k, v in params.items()
        if k not in ("window", "mel_filter_bank") and not k.startswith("mel_band")
    }
    constants["format"] = "keras_asc.logmel/1"
    np.savez_compressed(
        tmp_path / "old.npz",
        input0_window=params["window"],
        input0_mel_filter_bank=params["mel_filter_bank"],
        constants=np.array(json.dumps([constants])),
    )
    (loaded,) = load_frontend_params(str(tmp_path / "old.npz"))
    waveforms = clips()
    np.testing.assert_array_equal(
        frontend_numpy(waveforms, loaded), frontend_numpy(waveforms, params)
    )
    constants["format"] = "keras_asc.logmel/9"
    np.savez_compressed(
        tmp_path / "future.npz",
        input0_window=params["window"],
        input0_mel_filter_bank=params["mel_filter_bank"],
        constants=np.array(json.dumps([constants])),
    )
    with pytest.raises(ValueError, match=r"future\.npz: front-end format 'keras_asc.logmel/9'"):
        load_frontend_params(str(tmp_path / "future.npz"))


def test_damaged_sparse_bank_is_an_error():
    from keras_asc.quantization.frontend import frontend_numpy, frontend_params

    params = frontend_params(preset_layer("moflenet57"))
    damaged = {**params, "mel_band_weights": params["mel_band_weights"][:-1]}
    with pytest.raises(ValueError, match=r"must lie in 2049 FFT bins and hold 3940 weights"):
        frontend_numpy(clips()[:1], damaged)
    beyond = {**params, "mel_band_start": params["mel_band_start"] + 100}
    with pytest.raises(ValueError, match="must lie in 2049 FFT bins"):
        frontend_numpy(clips()[:1], beyond)


# === Front-end inside the .tflite file ===


def _tflite_needed():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TFLite export runs on the TensorFlow backend")
    return pytest.importorskip("tensorflow")


def _run(content, inputs):
    from keras_asc.quantization.export import make_interpreter

    interpreter = make_interpreter(model_content=content)
    details = interpreter.get_input_details()
    for detail, array in zip(details, inputs, strict=True):
        interpreter.resize_tensor_input(detail["index"], array.shape)
    interpreter.allocate_tensors()
    for detail, array in zip(details, inputs, strict=True):
        interpreter.set_tensor(detail["index"], array)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("preset", PRESETS)
def test_tflite_frontend_matches_the_layer(preset):
    tf = _tflite_needed()
    from keras_asc.quantization.export import read_graph, tf_frontend

    layer = preset_layer(preset)

    @tf.function(input_signature=[tf.TensorSpec([None, 32000], tf.float32)])
    def function(waveform):
        return tf_frontend(waveform, layer)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], function
    )
    content = converter.convert()  # builtin ops only: the converter fails on anything else
    assert {"RFFT2D", "MIRROR_PAD", "FULLY_CONNECTED", "LOG"} <= set(read_graph(content).op_names)
    # Broadband and quiet clips: a loud pure tone leaves bands at the float32 FFT noise floor,
    # where the layer itself is only 2e-3 from a float64 reference without normalisation.
    waveforms = clips()[[0, 1, 3]]
    expected = keras.ops.convert_to_numpy(layer(waveforms, training=False))
    assert np.abs(_run(content, [waveforms]) - expected).max() <= 1e-3


def tiny_member(name, hop_length, seed):
    keras.utils.set_random_seed(seed)
    model = AudioClassifier.from_preset(
        "moflenet57",
        base_channels=8,
        channels_multiplier=1.0,
        expansion_rate=1.0,
        blocks_per_stage=(1, 1, 1),
        block_strides={"2": (2, 2), "3": (2, 2)},
        frontend_config={"hop_length": hop_length, "seed": seed},
        name=name,
    )
    randomize_state(model, seed=seed)
    return model


def test_waveform_in_file_equals_spectrogram_in_file(tmp_path):
    """QAT export with and without the front-end: same parameters, same int8 network, logits
    within one output step on every clip; the file runs in TFLiteClassifier."""
    _tflite_needed()
    from keras_asc.quantization import (
        TFLiteClassifier,
        calibrate_activation_ranges,
        export_int8,
        frontend_numpy,
        quantize_model,
        read_graph,
        to_tf_keras,
    )
    from keras_asc.quantization.export import MICRO_SKIPPED_IN_FILE_FRONTEND, frontend_ops

    model = tiny_member("tiny_frontend", 500, seed=0)
    twin = to_tf_keras(model)
    qat_model = quantize_model(twin)
    waveforms = np.concatenate([clips(8, seed) for seed in range(3)])
    calibrate_activation_ranges(
        qat_model, twin, iter([frontend_numpy(waveforms[:8], (params := _params(model)))])
    )
    plain = export_int8(qat_model, None, tmp_path / "plain.tflite", qat=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inside = export_int8(
            qat_model, None, tmp_path / "inside.tflite", qat=True, frontend_in_file=True
        )
    # TFLite Micro has no RFFT2D kernel: by default it is not run, and says so without a warning.
    assert not [w for w in caught if "TFLite Micro" in str(w.message)]
    assert inside.tflite_micro == {"runs": False, "reason": MICRO_SKIPPED_IN_FILE_FRONTEND}
    # The front-end's window and mel bank are not parameters of the model.
    assert _counts(inside.parameters) == _counts(plain.parameters)
    graph = read_graph(inside.path)
    first_quantize = graph.op_names.index("QUANTIZE")
    assert frontend_ops(graph) == set(range(first_quantize))
    assert {"RFFT2D", "MIRROR_PAD", "GATHER"} <= set(graph.op_names[:first_quantize])
    for op in graph.ops[:first_quantize]:
        dtypes = {graph.tensors[i].dtype for i in (*op.inputs, *op.outputs) if i >= 0}
        assert not dtypes & {"int8", "uint8"}, f"{op.name} of the front-end is not float"
    assert frontend_ops(read_graph(plain.path)) == set()
    description = json.loads(open(inside.json_path).read())
    assert description["frontend_in_file"] is True
    assert description["inputs"][0]["shape"] == [-1, 32000]
    assert description["inputs"][0]["frontends"][0]["hop_length"] == 500
    assert json.loads(open(plain.json_path).read())["frontend_in_file"] is False

    classifier = TFLiteClassifier(inside.path)
    reference = TFLiteClassifier(plain.path)
    logits = classifier.predict(waveforms)
    expected = reference.predict(frontend_numpy(waveforms, params))
    assert np.array_equal(logits.argmax(1), expected.argmax(1))
    # The logits are a float mean over an int8 map: one step of that map apart at most.
    step = _output_step(plain.path)
    assert np.abs(logits - expected).max() <= step
    np.testing.assert_allclose(
        classifier.model_inputs(waveforms)[0], frontend_numpy(waveforms, params)
    )
    with pytest.raises(ValueError, match=r"takes waveforms \(batch, 32000\)"):
        classifier.predict(frontend_numpy(waveforms, params))


def _counts(counted):
    """Parameter figures and the (dtype, shape, role) of every constant; names differ."""
    tensors = sorted((t.dtype, t.shape, t.role) for t in counted.tensors if t.role != "structure")
    return counted.total, counted.int8_weights, counted.int32_biases, tensors


def _params(model):
    from keras_asc.quantization import frontend_params

    return frontend_params(model.frontend)


def _output_step(path):
    """Scale of the last int8 tensor before the float logit pooling."""
    from keras_asc.quantization import read_graph
    from keras_asc.quantization.export import make_interpreter

    graph = read_graph(path)
    details = {d["index"]: d for d in make_interpreter(model_path=path).get_tensor_details()}
    dequantize = [op for op in graph.ops if op.name == "DEQUANTIZE"][-1]
    return float(details[dequantize.inputs[0]]["quantization"][0])


@pytest.mark.slow
def test_ensemble_shares_one_waveform_input(tmp_path):
    """Members with different hops: one waveform input, one front-end per member (PTQ); the
    calibration data must then be waveforms."""
    _tflite_needed()
    from keras_asc.models import Ensemble
    from keras_asc.quantization import TFLiteClassifier, export_int8, read_graph

    members = [tiny_member("tiny_a", 500, 0), tiny_member("tiny_b", 750, 1)]
    ensemble = Ensemble(members, [0.6, 0.4], name="tiny_ensemble")
    calibration = [clips(8, seed) for seed in range(2)]
    inside = export_int8(ensemble, calibration, tmp_path / "e.tflite", frontend_in_file=True)
    plain = export_int8(ensemble, calibration, tmp_path / "p.tflite")
    assert _counts(inside.parameters) == _counts(plain.parameters)
    graph = read_graph(inside.path)
    assert len(graph.inputs) == 1 and graph.op_names.count("RFFT2D") == 2
    classifier = TFLiteClassifier(inside.path)
    assert [f["hop_length"] for f in classifier.description["inputs"][0]["frontends"]] == [500, 750]
    waveforms = np.concatenate([clips(8, seed) for seed in range(2, 5)])
    logits = classifier.predict(waveforms)
    expected = TFLiteClassifier(plain.path).predict(waveforms)
    float_logits = keras.ops.convert_to_numpy(ensemble.predict(waveforms, verbose=0))
    # Calibrated on the in-file front-end's output instead of frontend_numpy's: ranges may
    # differ in the last bit, so the two int8 files agree closely, not exactly.
    assert np.mean(logits.argmax(1) == expected.argmax(1)) >= 0.95
    assert np.abs(logits - expected).max() <= 0.1 * np.abs(expected).max()
    assert np.mean(logits.argmax(1) == float_logits.argmax(1)) >= 0.9
    spectrograms = [np.zeros((2, 256, 64, 1), "float32")]
    with pytest.raises(ValueError, match=r"must yield waveform batches \(B, samples\)"):
        export_int8(members[0], spectrograms, tmp_path / "m.tflite", frontend_in_file=True)


# === ONNX ===


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None,
    reason="onnxruntime is not installed (pip install 'keras-asc[onnx]')",
)
def test_onnx_export_matches_keras(tmp_path):
    """TensorFlow: the network (spectrogram in); PyTorch: the whole model (waveform in)."""
    if keras.backend.backend() == "jax":
        pytest.skip("ONNX export is checked on the TensorFlow and PyTorch backends")
    from keras_asc.quantization.frontend import frontend_numpy, load_frontend_params
    from keras_asc.quantization.onnx import export_onnx

    model = tiny_member("tiny_onnx", 750, 2)
    waveforms = clips(6)
    result = export_onnx(model, tmp_path / "tiny.onnx", waveforms, batch_size=4)
    assert result.max_abs_diff <= 1e-4 and result.clips == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.frontend.npz", "tiny.onnx"]
    # The file on its own: Keras' logits out.
    import onnxruntime

    expected = keras.ops.convert_to_numpy(model(waveforms, training=False))
    session = onnxruntime.InferenceSession(result.path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    if keras.backend.backend() == "torch":
        assert result.input == "waveform"
        inputs = waveforms[:4]
    else:
        assert result.input == "spectrogram"
        (params,) = load_frontend_params(result.frontend_path)
        inputs = frontend_numpy(waveforms[:4], params)
    assert np.abs(session.run(None, {name: inputs})[0] - expected[:4]).max() <= 1e-4
    with pytest.raises(ValueError, match=r"waveforms must be \(batch, 32000\)"):
        export_onnx(model, tmp_path / "bad.onnx", waveforms[:, :16000])
    assert not (tmp_path / "bad.onnx").exists()


# === CLI ===


def test_quantize_command_passes_frontend_in_file(monkeypatch, capsys):
    from keras_asc import cli
    from keras_asc.training import quantize

    received = {}

    class Result:
        def summary(self):
            return "summary"

    def fake_quantize_run(run, data_dir, **kwargs):
        received.update(kwargs)
        return Result()

    monkeypatch.setattr(quantize, "quantize_run", fake_quantize_run)
    for argv, expected in ((["--frontend-in-file"], True), ([], False)):
        assert cli.main(["quantize", "run", "--data", "d", "--ptq", *argv]) == 0
        assert received["frontend_in_file"] is expected
    assert "summary" in capsys.readouterr().out


def test_quantize_refuses_bad_flag_combinations_before_training(capsys, tmp_path):
    """One-line errors (exit 2) before any data is read or QAT runs: ``--data`` does not
    exist, so getting further would fail differently."""
    from keras_asc import cli

    spectrogram_model = keras.Sequential(
        [keras.Input((16, 20, 1)), keras.layers.Flatten(), keras.layers.Dense(3)],
        name="spectrogram_model",
    )
    spectrogram_model.save(tmp_path / "spectrogram.keras")
    # QAT needs TensorFlow; elsewhere --ptq reaches the same checks.
    ptq = [] if keras.backend.backend() == "tensorflow" else ["--ptq"]
    for run, flags, message in (
        ("run", ["--int8-io"], "--int8-io and --frontend-in-file cannot be combined"),
        (tmp_path / "spectrogram.keras", [], "'spectrogram_model' takes spectrograms"),
    ):
        data = tmp_path / "no_data"
        argv = ["quantize", str(run), "--data", str(data), "--frontend-in-file", *flags, *ptq]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
