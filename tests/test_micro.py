"""TensorFlow Lite for Microcontrollers: the tensor arena in NAME.json, TFLM next to LiteRT,
int8 input/output files, and the one-line error for ops TFLM has no kernel for. TensorFlow only.

The default run exports one tiny MofleNet (every block kind, post-training quantised on noise);
the presets and ensembles are @slow.
"""

import json
import os

import keras
import numpy as np
import pytest
from helpers import TINY_MOFLE_CONFIG, randomize_state

pytestmark = pytest.mark.tensorflow_only

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tflite_micro")


def _tiny(name="tiny_mofle", hop_length=500, seed=0):
    from keras_asc.models import AudioClassifier

    keras.utils.set_random_seed(seed)
    model = AudioClassifier.from_preset(
        "moflenet57",
        **TINY_MOFLE_CONFIG,
        frontend_config={"hop_length": hop_length, "seed": seed},
        name=name,
    )
    randomize_state(model, seed)
    return model


@pytest.fixture(scope="module")
def waveforms():
    rng = np.random.default_rng(0)
    # Noise at a few loudness levels, so the clips do not all look alike to the model.
    return (rng.normal(size=(40, 32000)) * rng.uniform(0.01, 0.5, (40, 1))).astype("float32")


@pytest.fixture(scope="module")
def exports(tmp_path_factory, waveforms):
    """The tiny model exported with float and with int8 input and output (same calibration)."""
    from keras_asc.quantization import export_int8, to_tf_keras

    twin = to_tf_keras(_tiny())
    folder = tmp_path_factory.mktemp("micro")
    calibration = [waveforms[:16]]
    return {
        # low_arena=False: GRN whole and the float pooling (the LiteRT layout), the file
        # test_low_arena_gives_the_same_logits_in_a_smaller_arena compares with.
        int8_io: export_int8(
            twin, calibration, folder / f"tiny_{int8_io}.tflite", int8_io=int8_io, low_arena=False
        )
        for int8_io in (False, True)
    }


def test_export_records_the_arena_tflite_micro_needs(exports):
    from keras_asc.quantization.micro import MicroInterpreter, MicroUnsupportedError, micro_report

    result = exports[False]
    recorded = json.loads(open(result.json_path).read())["tflite_micro"]
    assert recorded == result.tflite_micro
    assert recorded["runs"] is True and recorded["batch"] == 1
    assert recorded["interpreter"].startswith("tflite-micro ")
    report = micro_report(result.path)
    assert recorded["arena_bytes"] == report.arena_bytes == report.head_bytes + report.tail_bytes
    # The tiny model's largest activations: float32 GRN tensors of 32 x 16 x 8 channels.
    assert 20_000 < recorded["arena_bytes"] < 1_000_000
    # The figure is tight: TFLM runs in it (plus alignment) and fails in 64 bytes less.
    MicroInterpreter(result.path, arena_size=report.arena_bytes + 15)
    with pytest.raises(MicroUnsupportedError, match="cannot allocate"):
        MicroInterpreter(result.path, arena_size=report.arena_bytes - 64)


def test_tflite_micro_agrees_with_litert(exports, waveforms):
    from keras_asc.quantization.interpreter import micro_agreement

    # One int8 step of the logits (the int8-output file's scale; both files share calibration).
    step = json.loads(open(exports[True].json_path).read())["output"]["int8_quantization"]["scale"]
    for result in exports.values():
        agreement = micro_agreement(result.path, waveforms)
        assert agreement.clips == len(waveforms)
        assert agreement.same_class >= 0.99, str(agreement)
        # The same int8 tensors; the float GRN and logit pooling round differently.
        assert agreement.max_logit_difference <= 2 * step, str(agreement)


def test_int8_io_file_agrees_with_the_float_io_file(exports, waveforms):
    from keras_asc.quantization import TFLiteClassifier
    from keras_asc.quantization.export import make_interpreter

    float_io, int8_io = exports[False], exports[True]
    interpreter = make_interpreter(model_path=int8_io.path)
    assert [d["dtype"] for d in interpreter.get_input_details()] == [np.int8]
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    description = json.loads(open(int8_io.json_path).read())
    output = description["output"]["int8_quantization"]
    reference = json.loads(open(float_io.json_path).read())
    # The input quantisation is the one the float-input file applies in its first op.
    assert (
        description["inputs"][0]["int8_quantization"] == reference["inputs"][0]["int8_quantization"]
    )
    assert output["scale"] > 0 and -128 <= output["zero_point"] <= 127
    expected = TFLiteClassifier(float_io.path).predict(waveforms)
    logits = TFLiteClassifier(int8_io.path).predict(waveforms)
    assert np.mean(logits.argmax(1) == expected.argmax(1)) >= 0.99
    assert np.max(np.abs(logits - expected)) <= 2 * output["scale"]
    # No QUANTIZE at the start: the file takes what a device's front-end quantises itself.
    assert int8_io.parameters == float_io.parameters


def test_an_op_tflite_micro_lacks_is_named_in_one_line(tmp_path):
    from keras_asc.quantization.micro import MicroUnsupportedError, check_micro, unsupported_ops

    @tf.function(input_signature=[tf.TensorSpec((1, 8), tf.float32)])
    def function(x):
        return tf.math.top_k(x, k=2).values + tf.math.atan2(x[:, :2], x[:, 2:4] + 1.0)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], function
    )
    path = tmp_path / "topk.tflite"
    path.write_bytes(converter.convert())
    assert unsupported_ops(path) == ["TOPK_V2", "ATAN2"]
    with pytest.raises(MicroUnsupportedError) as error:
        check_micro(path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: TFLite Micro cannot run op(s) TOPK_V2, ATAN2 (")


def test_low_arena_gives_the_same_logits_in_a_smaller_arena(
    exports, waveforms, tmp_path, monkeypatch
):
    from keras_asc.quantization import TFLiteClassifier, export_int8, micro_agreement, to_tf_keras
    from keras_asc.quantization import low_arena as low_arena_module

    # The tiny model's GRN tensors are under the size at which low_arena splits them.
    monkeypatch.setattr(low_arena_module, "LOW_ARENA_MIN_BYTES", 0)
    default = exports[False]
    low = export_int8(
        to_tf_keras(_tiny()), [waveforms[:16]], tmp_path / "low.tflite", low_arena=True
    )
    assert json.loads(open(low.json_path).read())["low_arena"] is True
    # Activations: 98,304 -> 81,920 bytes (the GRN blocks add persistent node structures).
    assert low.tflite_micro["arena_head_bytes"] < default.tflite_micro["arena_head_bytes"]
    assert low.parameters.total == default.parameters.total
    expected = TFLiteClassifier(default.path).predict(waveforms)
    logits = TFLiteClassifier(low.path).predict(waveforms)
    # The same int8 tensors; the float GRN sums its squares in another order.
    step = json.loads(open(exports[True].json_path).read())["output"]["int8_quantization"]["scale"]
    assert np.max(np.abs(logits - expected)) <= 2 * step
    assert np.mean(logits.argmax(1) == expected.argmax(1)) >= 0.99
    assert micro_agreement(low.path, waveforms).same_class >= 0.99


def test_signature_runner_reads_the_int8_output_of_a_low_arena_file(
    waveforms, tmp_path, monkeypatch
):
    """int8_io adds an output tensor and low_arena renumbers the tensors: the signature that
    ``get_signature_runner`` reads follows both."""
    from ai_edge_litert.interpreter import Interpreter

    from keras_asc.quantization import TFLiteClassifier, export_int8, to_tf_keras
    from keras_asc.quantization import low_arena as low_arena_module

    monkeypatch.setattr(low_arena_module, "LOW_ARENA_MIN_BYTES", 0)  # split the tiny GRN too
    result = export_int8(
        to_tf_keras(_tiny()),
        [waveforms[:8]],
        tmp_path / "low_int8.tflite",
        int8_io=True,
        low_arena=True,
        micro=False,
        max_calibration_samples=8,
    )
    classifier = TFLiteClassifier(result.path)
    (spectrograms,) = classifier.interpreter_inputs(classifier.as_spectrograms(waveforms[:4]))
    assert spectrograms.dtype == np.int8
    interpreter = Interpreter(model_path=result.path)
    (input_detail,) = interpreter.get_input_details()
    (output_detail,) = interpreter.get_output_details()
    runner = interpreter.get_signature_runner()
    (signature_input,) = runner.get_input_details().values()
    (output_name, signature_output), *others = runner.get_output_details().items()
    assert not others
    assert signature_input["index"] == input_detail["index"]
    assert signature_output["index"] == output_detail["index"]
    assert signature_output["dtype"] == np.int8
    signature_logits = runner(**{next(iter(runner.get_input_details())): spectrograms})
    signature_logits = signature_logits[output_name].copy()  # the runner's tensor, copied
    interpreter = Interpreter(model_path=result.path)
    interpreter.resize_tensor_input(input_detail["index"], spectrograms.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_detail["index"], spectrograms)
    interpreter.invoke()
    expected = interpreter.get_tensor(output_detail["index"])
    assert expected.dtype == np.int8 and expected.shape == (4, 10)
    np.testing.assert_array_equal(signature_logits, expected)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["model", "ensemble"])
def test_every_preset_runs_on_tflite_micro(preset, tmp_path):
    """Each preset and ensemble preset (post-training quantised on noise, random batch norm
    statistics) runs on TFLite Micro, its arena is recorded and TFLM gives LiteRT's logits."""
    import keras_asc
    from keras_asc.models.presets import ENSEMBLE_PRESETS, MODEL_PRESETS
    from keras_asc.quantization import MicroInterpreter, TFLiteClassifier, export_int8, to_tf_keras

    names = MODEL_PRESETS if preset == "model" else ENSEMBLE_PRESETS
    rng = np.random.default_rng(0)
    clips = (rng.normal(size=(12, 32000)) * rng.uniform(0.01, 0.5, (12, 1))).astype("float32")
    for name in names:
        model = keras_asc.build(name)
        randomize_state(model)
        result = export_int8(
            to_tf_keras(model),
            [clips[:4]],
            tmp_path / f"{name}.tflite",
            max_param_bytes=None,
            max_calibration_samples=4,
        )
        recorded = json.loads(open(result.json_path).read())["tflite_micro"]
        assert recorded["runs"] is True, name
        # More than the largest int8 activation of the first layers, less than a few MB.
        assert 50_000 < recorded["arena_bytes"] < 4_000_000, (name, recorded)
        classifier = TFLiteClassifier(result.path)
        spectrograms = classifier.as_spectrograms(clips[4:])
        litert = classifier.predict(spectrograms)
        micro = MicroInterpreter(result.path).predict(classifier.interpreter_inputs(spectrograms))
        difference = np.abs(classifier.output_logits(micro) - litert)
        assert difference.max() <= 0.02 * np.abs(litert).max(), name
        # Random weights give near ties; a clip whose top two LiteRT logits are further
        # apart than the two interpreters differ must get the same class.
        top2 = np.sort(litert, axis=1)[:, -2:]
        decided = top2[:, 1] - top2[:, 0] > 2 * difference.max(axis=1)
        assert decided.mean() >= 0.5, name
        assert np.all(micro.argmax(1)[decided] == litert.argmax(1)[decided]), name


@pytest.mark.slow
def test_low_arena_fits_the_v2_ensemble_in_256_kb(tmp_path):
    """The arena depends on the graph: an untrained QAT-structured export, its GRN scalars set
    non-zero as training leaves them (zeros let the converter fold GRN's arithmetic away)."""
    import keras_asc
    from keras_asc.layers import GlobalResponseNormalization, leaf_layers
    from keras_asc.quantization import export_int8, quantize_model

    model = keras_asc.build("moflenet57_cp_resnet59_v2")
    for member in model.members:
        for layer in leaf_layers(member):
            if isinstance(layer, GlobalResponseNormalization):
                layer.gamma.assign(0.3)
                layer.beta.assign(0.05)
    qat = quantize_model(model)
    default = export_int8(qat, None, tmp_path / "default.tflite", qat=True).tflite_micro
    litert = export_int8(qat, None, tmp_path / "litert.tflite", qat=True, low_arena=False)
    low, default = default, litert.tflite_micro
    # MofleNet57's first-stage GRN keeps float32 64 x 16 x 32 tensors alive; with low_arena
    # they are computed in blocks along the mel axis and the largest live set is int8. The
    # default is the low-arena file.
    assert low["arena_bytes"] < default["arena_bytes"]
    assert low["arena_bytes"] <= 262_144 and low["runs"] is True


@pytest.mark.slow
def test_trained_then_quantised_v2_file_needs_at_most_256_kib(synthetic_root, tmp_path):
    """The user's path: both members trained (one short epoch on the synthetic tree), joined
    as the v2 ensemble, quantised as ``keras-asc quantize RUN`` does with its default options:
    the ensemble file fits a 256 KiB arena and takes the decisions of the LiteRT layout
    (``low_arena=False``) file of the same QAT model."""
    from keras_asc.quantization import TFLiteClassifier, export_int8
    from keras_asc.training import quantize_run, train
    from keras_asc.training.ensemble import build_ensemble

    runs = []
    for name in ("moflenet57", "cp_resnet59"):
        run = tmp_path / name
        train(
            name, synthetic_root, split=100, epochs=1, batch_size=20, steps_per_epoch=3,
            out_dir=str(run), verbose=0,
        )
        runs.append(str(run))
    build_ensemble(runs, preset="v2", out_dir=str(tmp_path / "v2"))
    result = quantize_run(
        tmp_path / "v2", synthetic_root, split=100, epochs=1, steps_per_epoch=2, batch_size=20,
        verbose=0,
    )
    (qat_ensemble, ensemble), *members = result.exports
    assert len(members) == 2 and all(os.path.isfile(export.path) for _, export in members)
    recorded = json.loads(open(ensemble.json_path).read())
    assert recorded["low_arena"] is True and recorded["tflite_micro"]["runs"] is True
    # 433,568 bytes before the low-arena layout became the default; 254,432 after.
    assert ensemble.tflite_micro["arena_bytes"] <= 262_144
    litert = export_int8(qat_ensemble, None, tmp_path / "litert.tflite", qat=True, low_arena=False)
    assert litert.tflite_micro["arena_bytes"] > 262_144
    clips = np.random.default_rng(3).normal(0, 0.1, (24, 32000)).astype("float32")
    same = TFLiteClassifier(ensemble.path).predict(clips).argmax(1) == TFLiteClassifier(
        litert.path
    ).predict(clips).argmax(1)
    assert same.mean() >= 0.95
