"""``keras-asc submit``: the DCASE 2024 Task 1 system output files and meta information, checked
against the published format on a synthetic evaluation folder and a tiny untrained model."""

import csv
import json
import math
import os
import shutil

import numpy as np
import pytest
import yaml
from helpers import TINY_MOFLE_CONFIG

from keras_asc.cli import main
from keras_asc.training import submission
from keras_asc.training.evaluation import EvaluationResult, default_out_dir, evaluate

# The format as the DCASE 2024 Task 1 submission validator checks it (written out here, not
# imported from keras_asc, so that the test cannot agree with a wrong constant).
CLASSES = [
    "airport",
    "bus",
    "metro",
    "metro_station",
    "park",
    "public_square",
    "shopping_mall",
    "street_pedestrian",
    "street_traffic",
    "tram",
]
SPLITS = (5, 10, 25, 50, 100)
DEVICES = ["a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"]
DESCRIPTION_FIELDS = [
    "input_sampling_rate",
    "acoustic_features",
    "embeddings",
    "data_augmentation",
    "machine_learning_method",
    "ensemble_method_subsystem_count",
    "decision_making",
    "external_data_usage",
    "complexity_management",
    "pipeline",
    "framework",
]
COMPLEXITY_FIELDS = [
    "total_model_size",
    "total_parameters",
    "total_parameters_non_zero",
    "memory_use",
    "macs",
]
LABEL = "Doe_ACME_task1_1"
INFO = {
    "submission": {
        "label": LABEL,
        "name": "Tiny MofleNet",
        "abbreviation": "TinyMofle",
        "authors": [
            {
                "lastname": "Doe",
                "firstname": "Jane",
                "email": "jane.doe@example.org",
                "affiliation": {"abbreviation": "ACME", "institute": "ACME Labs"},
                "corresponding": True,
            }
        ],
    },
    "system": {"description": {"data_augmentation": "mixstyle, device impulse responses"}},
}
NUM_EVAL_FILES = 13


@pytest.fixture(scope="module")
def dev_root(tmp_path_factory):
    from keras_asc.data.synthetic import make_synthetic_tau22

    return make_synthetic_tau22(
        tmp_path_factory.mktemp("dev") / "tau22", clips_per_class=20, test_clips_per_class=9
    )


@pytest.fixture(scope="module")
def eval_dir(dev_root, tmp_path_factory):
    """An evaluation folder like the DCASE one: audio/0.wav ... audio/12.wav (synthetic test
    clips renamed; 10.wav comes before 2.wav alphabetically but not numerically)."""
    root = tmp_path_factory.mktemp("eval")
    (root / "audio").mkdir()
    clips = sorted(os.listdir(os.path.join(dev_root, "audio")))[:NUM_EVAL_FILES]
    for index, name in enumerate(clips):
        shutil.copy(os.path.join(dev_root, "audio", name), root / "audio" / f"{index}.wav")
    return root


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny untrained MofleNet saved as a .keras file outside any run directory."""
    import keras

    from keras_asc.models import AudioClassifier

    keras.utils.set_random_seed(0)
    model = AudioClassifier.from_preset("moflenet57", **{**TINY_MOFLE_CONFIG, "name": "tiny"})
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return str(path)


@pytest.fixture(scope="module")
def submitted(model_path, eval_dir, dev_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("submission") / "task1" / LABEL
    systems = {split: model_path for split in SPLITS}
    result = submission.write_submission(
        systems, eval_dir, out, info=INFO, data_dir=dev_root, batch_size=5, verbose=False
    )
    return out, result


def read_output(path):
    with open(path, encoding="utf-8", newline="") as handle:
        text = handle.read()
    assert "\r" not in text and text.endswith("\n")
    return list(csv.reader(text.splitlines(), delimiter="\t"))


# === The output files ===


def test_files_are_named_and_only_those_are_written(submitted):
    out, result = submitted
    expected = [f"{LABEL}.output.split_{s}.csv" for s in SPLITS] + [f"{LABEL}.meta.yaml"]
    assert sorted(os.listdir(out)) == sorted(expected)  # no temporaries left behind
    assert [os.path.basename(p) for p in result.paths] == expected


@pytest.mark.parametrize("split", SPLITS)
def test_output_file_format(submitted, eval_dir, split):
    out, _ = submitted
    rows = read_output(out / f"{LABEL}.output.split_{split}.csv")
    assert rows[0] == ["filename", "scene_label", *CLASSES]
    body = rows[1:]
    assert len(body) == NUM_EVAL_FILES == len(os.listdir(eval_dir / "audio"))
    # One row per WAV, in numeric order of the file index.
    assert [row[0] for row in body] == [f"audio/{i}.wav" for i in range(NUM_EVAL_FILES)]
    for row in body:
        assert len(row) == 2 + len(CLASSES)
        probabilities = np.array([float(value) for value in row[2:]])
        assert np.all(probabilities >= 0)
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-6)
        assert row[1] == CLASSES[int(np.argmax(probabilities))]


def test_probabilities_are_the_models_on_each_file(submitted, eval_dir, model_path):
    from keras_asc.training.inference import predict_files

    out, _ = submitted
    rows = read_output(out / f"{LABEL}.output.split_25.csv")[1:]
    expected = predict_files(model_path, [eval_dir / row[0] for row in rows])
    for row, prediction in zip(rows, expected, strict=True):
        assert prediction.ok
        np.testing.assert_allclose(
            [float(v) for v in row[2:]], prediction.probabilities, rtol=1e-5, atol=1e-7
        )
        assert row[1] == prediction.scene


# === The meta information ===


def test_meta_has_every_required_field_with_the_right_type(submitted):
    out, _ = submitted
    with open(out / f"{LABEL}.meta.yaml", encoding="utf-8") as handle:
        meta = yaml.safe_load(handle)
    assert list(meta) == ["submission", "system", "results"]
    sub = meta["submission"]
    assert sub["label"] == LABEL and sub["name"] == "Tiny MofleNet"
    assert len(sub["abbreviation"]) <= 10
    assert [a["corresponding"] for a in sub["authors"]] == [True]
    for field in ("lastname", "firstname", "email", "affiliation"):
        assert sub["authors"][0][field]
    system = meta["system"]
    for field in ("description", "complexity", "external_datasets", "source_code"):
        assert field in system
    assert set(DESCRIPTION_FIELDS) <= set(system["description"])
    assert system["description"]["data_augmentation"] == "mixstyle, device impulse responses"
    assert system["description"]["input_sampling_rate"] == "32kHz"
    assert system["description"]["ensemble_method_subsystem_count"] == 1
    assert set(COMPLEXITY_FIELDS) <= set(system["complexity"])
    for field in ("total_model_size", "total_parameters", "total_parameters_non_zero", "macs"):
        assert isinstance(system["complexity"][field], int) and system["complexity"][field] > 0
    assert system["complexity"]["memory_use"] is None  # a float model: no arena measured
    development = meta["results"]["development_dataset"]
    assert list(development) == [f"split_{s}" for s in SPLITS]
    for block in development.values():
        assert set(block) == {"overall", "class_wise", "device_wise"}
        assert list(block["class_wise"]) == CLASSES
        assert list(block["device_wise"]) == DEVICES
        entries = [block["overall"], *block["class_wise"].values(), *block["device_wise"].values()]
        for entry in entries:
            assert set(entry) == {"accuracy", "logloss"}
            assert isinstance(entry["accuracy"], float) and 0.0 <= entry["accuracy"] <= 100.0
            assert isinstance(entry["logloss"], float) and entry["logloss"] > 0


def test_meta_figures_are_the_projects_own(submitted, model_path, dev_root):
    from keras_asc import complexity
    from keras_asc.training.saving import load_model

    out, _ = submitted
    with open(out / f"{LABEL}.meta.yaml", encoding="utf-8") as handle:
        meta = yaml.safe_load(handle)
    counted = complexity.profile(load_model(model_path))
    figures = meta["system"]["complexity"]
    assert figures["total_parameters"] == counted.params
    assert figures["macs"] == counted.macs
    assert figures["total_model_size"] == 4 * counted.params  # float32 as deployed
    assert figures["total_parameters_non_zero"] <= counted.params
    assert figures["precision"] == "float32"
    # The development-test block is an independent evaluation of the same model.
    reference = evaluate(model_path, dev_root, "test", verbose=False)
    block = meta["results"]["development_dataset"]["split_50"]
    assert block["overall"]["accuracy"] == round(100 * reference.macro_accuracy, 2)
    assert block["overall"]["logloss"] == pytest.approx(reference.log_loss, abs=1e-4)
    for name in CLASSES:
        assert block["class_wise"][name]["logloss"] == pytest.approx(
            reference.class_log_loss[name], abs=1e-4
        )
    for device in DEVICES:
        assert block["device_wise"][device]["accuracy"] == round(
            100 * reference.device_accuracy[device], 2
        )


def test_saved_evaluation_is_used_without_the_dataset(submitted, model_path, eval_dir, tmp_path):
    _, first = submitted
    # Without data_dir, the eval-test/metrics.json beside the model is the source.
    with pytest.raises(FileNotFoundError, match="keras-asc evaluate"):
        submission.write_submission(
            dict.fromkeys(SPLITS, model_path), eval_dir, tmp_path / "a", info=INFO, verbose=False
        )
    first.results[5].save(default_out_dir(model_path, "test"), plots=False)
    try:
        again = submission.write_submission(
            dict.fromkeys(SPLITS, model_path), eval_dir, tmp_path / "b", info=INFO, verbose=False
        )
        assert again.meta["results"] == first.meta["results"]
        # Metrics of another model in that folder are refused, not reported as this one's.
        other = EvaluationResult.from_dict({**first.results[5].to_dict(), "model_name": "x"})
        other.save(default_out_dir(model_path, "test"), plots=False)
        with pytest.raises(ValueError, match="evaluation of 'x'"):
            submission.write_submission(
                dict.fromkeys(SPLITS, model_path),
                eval_dir,
                tmp_path / "c",
                info=INFO,
                verbose=False,
            )
    finally:
        shutil.rmtree(default_out_dir(model_path, "test"))


def test_int8_export_complexity_reads_parameter_bytes_and_the_arena(model_path, tmp_path):
    from keras_asc import complexity
    from keras_asc.training.saving import load_model

    run = tmp_path / "run"
    (run / "int8").mkdir(parents=True)
    shutil.copy(model_path, run / "model.keras")

    class Export:  # what TFLiteClassifier exposes: the parsed NAME.json
        name = "tiny_int8"
        description = {
            "model": "tiny",
            "members": [],
            "parameter_bytes": {
                "total": 9000,
                "int8_weights": 8000,
                "int32_biases": 600,
                "float_parameters": 100,
            },
            "tflite_micro": {"arena_bytes": 51234, "runs": True},
        }

    figures = submission.system_complexity(Export(), str(run / "int8" / "tiny.tflite"))
    assert figures.precision == "int8"
    assert (figures.total_parameters, figures.total_model_size) == (8700, 9000)
    assert figures.memory_use == 51234
    assert figures.macs == complexity.profile(load_model(model_path)).macs
    # An export made before the arena was measured, far from its run: both figures unknown.
    del Export.description["tflite_micro"]
    figures = submission.system_complexity(Export(), str(tmp_path / "elsewhere.tflite"))
    assert figures.memory_use is None and figures.macs is None

    # RUN/int8/MEMBER.tflite of an ensemble run: the member's MACs, not the whole ensemble's.
    from keras_asc.training import build_ensemble

    ensemble_run = tmp_path / "ensemble"
    ensemble = build_ensemble([model_path, model_path], weights=[0.5, 0.5], out_dir=ensemble_run)
    member = ensemble.members[1]
    Export.description["model"] = member.name
    figures = submission.system_complexity(Export(), str(ensemble_run / "int8" / "m.tflite"))
    assert figures.macs == complexity.profile(member).macs < complexity.profile(ensemble).macs

    # `keras-asc reproduce` leaves CELL/int8/NAME.tflite beside the run in CELL/run/.
    cell = tmp_path / "cell"
    (cell / "run").mkdir(parents=True)
    shutil.copy(model_path, cell / "run" / "model.keras")
    (cell / "run" / "run_config.json").write_text(json.dumps({"model": "tiny", "split": 25}))
    Export.description["model"] = "tiny"  # not a registered model: only the run knows its MACs
    figures = submission.system_complexity(Export(), str(cell / "int8" / "tiny.tflite"))
    assert figures.macs == complexity.profile(load_model(model_path)).macs
    with pytest.raises(ValueError, match="trained on split 25"):
        submission._check_trained_on(5, str(cell / "int8" / "tiny.tflite"))


# === Bad input ===


def test_bad_inputs_are_refused_before_anything_is_written(model_path, eval_dir, tmp_path):
    four = {split: model_path for split in SPLITS[:-1]}
    with pytest.raises(ValueError, match=r"missing: \[100\]"):
        submission.write_submission(four, eval_dir, tmp_path / "o", info=INFO)
    systems = dict.fromkeys(SPLITS, model_path)
    bad_label = {"submission": {**INFO["submission"], "label": "Doe_task1_1"}}
    with pytest.raises(ValueError, match="must read"):
        submission.write_submission(systems, eval_dir, tmp_path / "o", info=bad_label)
    with pytest.raises(ValueError, match="No .wav files"):
        submission.write_submission(systems, tmp_path, tmp_path / "o", info=INFO)
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(model_path, run / "model.keras")
    (run / "run_config.json").write_text(json.dumps({"model": "tiny", "split": 100}))
    with pytest.raises(ValueError, match="trained on split 100 .* system of split 5"):
        submission.write_submission({**systems, 5: str(run)}, eval_dir, tmp_path / "o", info=INFO)
    with pytest.raises(ValueError, match="must not hold 'results'"):
        submission.build_meta({**INFO, "results": {}}, {}, {})
    assert not (tmp_path / "o").exists()


def test_cli_unreadable_wav_raise_and_skip(submitted, model_path, eval_dir, tmp_path, capsys):
    broken = tmp_path / "eval"
    shutil.copytree(eval_dir, broken)
    (broken / "audio" / "7.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    info = tmp_path / "info.yaml"
    info.write_text(yaml.safe_dump(INFO))
    # The model with its saved development-test evaluation beside it (no --data needed).
    model = tmp_path / "model" / "tiny.keras"
    model.parent.mkdir()
    shutil.copy(model_path, model)
    submitted[1].results[5].save(default_out_dir(str(model), "test"), plots=False)
    args = ["submit", str(broken), "--out", str(tmp_path / "out"), "--info", str(info)]
    args += ["--batch-size", "4"]
    for split in SPLITS:
        args += ["--system", f"{split}={model}"]

    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("keras-asc submit: error:") and "7.wav" in err[0]
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")

    assert main([*args, "--on-error", "skip", "--label", "Roe_XYZ_task1_2"]) == 1
    captured = capsys.readouterr().out
    assert "1 unreadable files left out" in captured and "audio/7.wav" in captured
    assert "fill in before submitting: " in captured and "system.source_code" in captured
    rows = read_output(tmp_path / "out" / "Roe_XYZ_task1_2.output.split_10.csv")
    assert len(rows) == NUM_EVAL_FILES  # header + 12 rows: 7.wav left out
    assert "audio/7.wav" not in [row[0] for row in rows]
    meta = yaml.safe_load((tmp_path / "out" / "Roe_XYZ_task1_2.meta.yaml").read_text())
    assert meta["submission"]["label"] == "Roe_XYZ_task1_2"
    assert math.isfinite(meta["results"]["development_dataset"]["split_5"]["overall"]["logloss"])


def test_cli_refuses_a_malformed_system_argument(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["submit", str(tmp_path), "--out", str(tmp_path / "o"), "--system", "runs/x"])
    assert exit_info.value.code == 2
    assert "expected SPLIT=PATH" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_int8_export_in_a_submission(model_path, eval_dir, dev_root, tmp_path):
    """A real int8 export as the split-100 system: its rows are the TFLite classifier's, and
    the complexity block gives the largest figure of the five systems and each split's."""
    from keras_asc.data.audio import load_audio
    from keras_asc.quantization import TFLiteClassifier, export_int8
    from keras_asc.training.saving import load_model

    run = tmp_path / "run"
    (run / "int8").mkdir(parents=True)
    shutil.copy(model_path, run / "model.keras")
    calibration = [
        np.stack([load_audio(eval_dir / "audio" / f"{i}.wav", num_samples=32000) for i in range(8)])
    ]
    export = export_int8(load_model(model_path), calibration, run / "int8" / "tiny.tflite")
    systems = {**dict.fromkeys(SPLITS[:-1], model_path), 100: export.path}
    result = submission.write_submission(
        systems, eval_dir, tmp_path / "out", info=INFO, data_dir=dev_root, verbose=False
    )
    figures = result.meta["system"]["complexity"]
    int8_figures = figures["split_wise"]["split_100"]
    assert int8_figures["total_model_size"] == export.parameters.total
    # The TFLite Micro arena the export measured; the float systems have none, so the
    # combined figure stays unknown.
    assert int8_figures["memory_use"] == export.tflite_micro["arena_bytes"] > 0
    parameters = export.parameters
    assert int8_figures["total_parameters"] == (
        parameters.int8_weights + parameters.int32_biases + parameters.float_parameters
    )
    # Read from the file's constant tensors: some quantised weights round to zero.
    assert 0 < int8_figures["total_parameters_non_zero"] <= int8_figures["total_parameters"]
    float_figures = figures["split_wise"]["split_5"]
    assert int8_figures["macs"] == float_figures["macs"]
    assert figures["total_model_size"] == float_figures["total_model_size"]  # 4 B > 1 B each
    assert figures["memory_use"] is None and figures["precision"] == "float32/int8"
    rows = read_output(tmp_path / "out" / f"{LABEL}.output.split_100.csv")[1:]
    classifier = TFLiteClassifier(export.path)
    waveforms = np.stack([load_audio(eval_dir / row[0], num_samples=32000) for row in rows])
    expected = softmax_rows(classifier.predict(waveforms))
    np.testing.assert_allclose([[float(v) for v in row[2:]] for row in rows], expected, atol=1e-6)


def softmax_rows(logits):
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)
