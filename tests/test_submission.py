"""``keras-asc submit``: the DCASE 2024 Task 1 output files and meta information, the check of a
package against the challenge's rules (one negative test per rule, and the 135,730-row rule at
the real size), the required information and the split provenance of every system."""

import csv
import json
import os
import shutil
import zipfile

import numpy as np
import pytest
import yaml
from helpers import TINY_MOFLE_CONFIG

from keras_asc.cli import main
from keras_asc.training import submission
from keras_asc.training.evaluation import EvaluationResult, default_out_dir, evaluate
from keras_asc.training.submission_check import check_package, meta_problems, output_problems
from keras_asc.training.submission_provenance import ProvenanceError, check_system_split

# The format as the DCASE 2024 Task 1 rules state it (written out here, not imported from
# keras_asc, so that the tests cannot agree with a wrong constant).
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
    "data_augmentation",
    "machine_learning_method",
    "external_data_usage",
    "complexity_management",
    "pipeline",
    "framework",
    "split_adaptations",
    "system_adaptations",
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
            }
        ],
    },
    "system": {
        "description": {
            "data_augmentation": "mixstyle, device impulse responses",
            "external_data_usage": "none",
            "pipeline": "log-mel, CNN, int8 QAT",
            "split_adaptations": "none: one recipe for every split",
            "system_adaptations": "none",
        },
        "source_code": "https://example.org/doe/asc",
    },
}
NUM_EVAL_FILES = 13


@pytest.fixture(scope="module")
def dev_root(synthetic_root):
    return synthetic_root


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


def make_run(folder, model_path, split, **config):
    """A run folder as `keras-asc train` leaves it: model.keras and run_config.json."""
    os.makedirs(folder, exist_ok=True)
    shutil.copy(model_path, os.path.join(folder, "model.keras"))
    with open(os.path.join(folder, "run_config.json"), "w", encoding="utf-8") as handle:
        json.dump({"model": "tiny", "split": split, **config}, handle)
    return str(folder)


@pytest.fixture(scope="module")
def runs(model_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {split: make_run(root / f"s{split}", model_path, split) for split in SPLITS}


@pytest.fixture(scope="module")
def evaluated_runs(model_path, dev_root, tmp_path_factory):
    """Runs with the development-test evaluation that `keras-asc evaluate` saves beside them
    (one evaluation: the five runs hold the same model)."""
    root = tmp_path_factory.mktemp("evaluated")
    runs = {split: make_run(root / f"s{split}", model_path, split) for split in SPLITS}
    saved = evaluate(runs[5], dev_root, "test", verbose=False)
    for run in runs.values():
        saved.save(default_out_dir(run, "test"), plots=False)
    return runs, saved


@pytest.fixture(scope="module")
def info_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("info") / "info.yaml"
    path.write_text(yaml.safe_dump(INFO))
    return str(path)


def submit_args(eval_dir, out, info_path, runs):
    args = ["submit", str(eval_dir), "--out", str(out), "--info", info_path]
    for split in SPLITS:
        args += ["--system", f"{split}={runs[split]}"]
    return args


@pytest.fixture(scope="module")
def package(runs, eval_dir, dev_root, info_path, tmp_path_factory):
    """A package written through the CLI from the synthetic development set."""
    out = tmp_path_factory.mktemp("package")
    args = submit_args(eval_dir, out, info_path, runs) + ["--data", str(dev_root)]
    assert main([*args, "--batch-size", "5"]) == 0
    return out, out / "task1" / LABEL


def read_output(path):
    with open(path, encoding="utf-8", newline="") as handle:
        text = handle.read()
    assert "\r" not in text and text.endswith("\n")
    return list(csv.reader(text.splitlines(), delimiter="\t"))


def read_meta(folder):
    with open(folder / f"{LABEL}.meta.yaml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)


# === A package built through the CLI ===


def test_cli_package_passes_the_check(package, eval_dir, capsys):
    out, folder = package
    expected = [f"{LABEL}.output.split_{s}.csv" for s in SPLITS] + [f"{LABEL}.meta.yaml"]
    assert sorted(os.listdir(folder)) == sorted(expected)  # no temporaries left behind
    assert main(["submit", "--check", str(out), str(eval_dir)]) == 0
    assert "follows the DCASE 2024 Task 1 submission rules" in capsys.readouterr().out
    # The zip the challenge receives, with the technical report beside the files.
    archive = out.parent / "package.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for name in expected:
            handle.write(folder / name, f"task1/{LABEL}/{name}")
        handle.writestr(f"task1/{LABEL}.technical_report.pdf", b"%PDF-1.4")
    assert main(["submit", "--check", str(archive), str(eval_dir)]) == 0
    # Against the real evaluation set, 13 rows are not the 135,730 files it has.
    assert main(["submit", "--check", str(archive)]) == 1
    lines = capsys.readouterr().out.splitlines()
    counts = [
        line for line in lines if "13 unique files listed; the evaluation set has 135,730" in line
    ]
    assert len(counts) == 5 and lines[-1].startswith("keras-asc submit --check: 5 problem(s)")


@pytest.mark.parametrize("split", SPLITS)
def test_output_file_format(package, eval_dir, split):
    _, folder = package
    rows = read_output(folder / f"{LABEL}.output.split_{split}.csv")
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


def test_probabilities_are_the_models_on_each_file(package, eval_dir, model_path):
    from keras_asc.training.inference import predict_files

    _, folder = package
    rows = read_output(folder / f"{LABEL}.output.split_25.csv")[1:]
    expected = predict_files(model_path, [eval_dir / row[0] for row in rows])
    for row, prediction in zip(rows, expected, strict=True):
        assert prediction.ok
        np.testing.assert_allclose(
            [float(v) for v in row[2:]], prediction.probabilities, rtol=1e-5, atol=1e-7
        )
        assert row[1] == prediction.scene


def test_meta_has_every_required_field(package):
    _, folder = package
    meta = read_meta(folder)
    assert list(meta) == ["submission", "system", "results"]
    sub = meta["submission"]
    assert (sub["label"], sub["name"], sub["abbreviation"]) == (LABEL, "Tiny MofleNet", "TinyMofle")
    assert [a["corresponding"] for a in sub["authors"]] == [True]  # a sole author is marked
    for field in ("lastname", "firstname", "email", "affiliation"):
        assert sub["authors"][0][field]
    system = meta["system"]
    assert system["source_code"] == "https://example.org/doe/asc"
    assert system["external_datasets"] == []
    description = system["description"]
    assert all(description[field] for field in DESCRIPTION_FIELDS)
    assert description["split_adaptations"] == "none: one recipe for every split"
    assert description["input_sampling_rate"] == "32kHz"
    assert description["complexity_management"] == "float32 parameters"
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


def test_parameters_follow_the_dcase_rule_and_agree_with_summary(package, runs, capsys):
    from keras_asc import complexity
    from keras_asc.training.saving import load_model

    _, folder = package
    figures = read_meta(folder)["system"]["complexity"]
    model = load_model(os.path.join(runs[5], "model.keras"))
    # BN as 2 per channel and GRN scalars counted by hand, moving statistics left out.
    by_hand = 0
    for weight in model.trainable_weights:
        by_hand += int(np.prod(weight.shape))
    assert figures["total_parameters"] == by_hand == complexity.profile(model).params
    assert main(["summary", runs[5]]) == 0
    assert f"{by_hand:,}" in capsys.readouterr().out
    assert figures["total_model_size"] == 4 * by_hand  # float32 as deployed
    assert figures["macs"] == complexity.profile(model).macs
    assert figures["precision"] == "float32"
    assert "split_wise" not in figures  # one architecture: one figure for every split


def test_results_are_the_development_test_evaluation(package, runs, dev_root):
    _, folder = package
    reference = evaluate(runs[50], dev_root, "test", verbose=False)
    block = read_meta(folder)["results"]["development_dataset"]["split_50"]
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


def test_saved_evaluation_is_used_without_the_dataset(
    evaluated_runs, model_path, eval_dir, tmp_path
):
    unevaluated = {split: make_run(tmp_path / f"r{split}", model_path, split) for split in SPLITS}
    with pytest.raises(FileNotFoundError, match="keras-asc evaluate"):
        submission.write_submission(unevaluated, eval_dir, tmp_path / "a", info=INFO, verbose=False)
    runs, saved = evaluated_runs
    again = submission.write_submission(runs, eval_dir, tmp_path / "b", info=INFO, verbose=False)
    assert again.problems == ()
    assert again.meta["results"]["development_dataset"]["split_10"]["overall"]["accuracy"] == round(
        100 * saved.macro_accuracy, 2
    )
    # Metrics of another model in that folder are refused, not reported as this one's.
    other = EvaluationResult.from_dict({**saved.to_dict(), "model_name": "x"})
    other.save(default_out_dir(unevaluated[25], "test"), plots=False)
    for split in (5, 10, 50, 100):
        saved.save(default_out_dir(unevaluated[split], "test"), plots=False)
    with pytest.raises(ValueError, match="evaluation of 'x'"):
        submission.write_submission(unevaluated, eval_dir, tmp_path / "c", info=INFO, verbose=False)


# === The information only the user can know ===


def test_missing_information_is_named_in_one_line(runs, eval_dir, tmp_path, capsys):
    info = json.loads(json.dumps(INFO))
    del info["submission"]["abbreviation"]
    del info["submission"]["authors"][0]["email"]
    del info["system"]["description"]["split_adaptations"]
    del info["system"]["description"]["system_adaptations"]
    info["system"]["source_code"] = ""
    info["system"]["external_datasets"] = [{"name": "AudioSet", "url": "https://x.org"}]
    path = tmp_path / "info.yaml"
    path.write_text(yaml.safe_dump(info))
    assert main(submit_args(eval_dir, tmp_path / "out", str(path), runs)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    for field in (
        "submission.abbreviation",
        "submission.authors[0].email",
        "system.description.split_adaptations",
        "system.description.system_adaptations",
        "system.source_code",
        "system.external_datasets[0].total_audio_length",
    ):
        assert field in err[0]
    assert "6 required field(s)" in err[0]
    assert not (tmp_path / "out").exists()


def test_several_authors_need_one_corresponding():
    info = json.loads(json.dumps(INFO))
    author = info["submission"]["authors"][0]
    info["submission"]["authors"] = [author, {**author, "firstname": "John"}]
    assert submission.missing_information(info) == [
        "submission.authors: exactly one with corresponding: true"
    ]
    info["submission"]["authors"][1]["corresponding"] = True
    assert submission.missing_information(info) == []


# === Provenance: every part of a split's system used that split ===


def test_a_run_of_another_split_is_refused(runs, eval_dir, tmp_path, info_path, capsys):
    args = submit_args(eval_dir, tmp_path / "out", info_path, {**runs, 5: runs[100]})
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"{runs[100]} is the system of split 5, but run {runs[100]} used split 100" in err[0]
    assert not (tmp_path / "out").exists()


def test_teachers_and_ensemble_members_must_share_the_split(model_path, tmp_path):
    teacher = make_run(tmp_path / "teacher", model_path, 25)
    student = make_run(
        tmp_path / "student", model_path, 10, teachers=[{"path": teacher, "model": "t"}]
    )
    with pytest.raises(ProvenanceError, match=f"teacher run {teacher} of {student} used split 25"):
        check_system_split(10, student)
    check_system_split(
        10,
        make_run(
            tmp_path / "ok",
            model_path,
            10,
            teachers=[{"path": make_run(tmp_path / "t10", model_path, 10)}],
        ),
    )
    gone = make_run(tmp_path / "gone", model_path, 10, teachers=[{"path": str(tmp_path / "x")}])
    with pytest.raises(ProvenanceError, match="it is gone and its split is not recorded"):
        check_system_split(10, gone)
    ensemble = tmp_path / "ensemble"
    ensemble.mkdir()
    members = [{"source": make_run(tmp_path / "m1", model_path, 50)}, {"source": teacher}]
    (ensemble / "run_config.json").write_text(json.dumps({"kind": "ensemble", "members": members}))
    with pytest.raises(
        ProvenanceError, match=f"member run {teacher} of ensemble {ensemble} used split 25"
    ):
        check_system_split(50, str(ensemble))
    # A member whose run is gone: the split the ensemble recorded for it, else refused.
    members[1] = {"source": str(tmp_path / "deleted"), "split": 50}
    (ensemble / "run_config.json").write_text(json.dumps({"kind": "ensemble", "members": members}))
    check_system_split(50, str(ensemble))
    del members[1]["split"]
    (ensemble / "run_config.json").write_text(json.dumps({"kind": "ensemble", "members": members}))
    with pytest.raises(ProvenanceError, match="the ensemble records no split for it"):
        check_system_split(50, str(ensemble))


def test_int8_exports_need_their_quantisation_split(model_path, tmp_path):
    run = make_run(tmp_path / "run", model_path, 10)
    (tmp_path / "run" / "int8").mkdir()
    export = str(tmp_path / "run" / "int8" / "tiny.tflite")
    sidecar = tmp_path / "run" / "int8" / "tiny.json"
    sidecar.write_text(json.dumps({"model": "tiny"}))  # as keras-asc quantize wrote it before
    with pytest.raises(ProvenanceError, match="tiny.json records no split"):
        check_system_split(10, export)
    sidecar.write_text(json.dumps({"model": "tiny", "split": {"name": 25, "fingerprint": "ab"}}))
    with pytest.raises(ProvenanceError, match="the quantisation data of .* used split 25"):
        check_system_split(10, export)
    sidecar.write_text(json.dumps({"model": "tiny", "split": 10}))
    check_system_split(10, export)
    # Split 10 both, but other clips: the run and the file record different fingerprints.
    make_run(tmp_path / "run", model_path, 10, split_fingerprint="a" * 64)
    sidecar.write_text(json.dumps({"split": 10, "split_fingerprint": "b" * 64}))
    with pytest.raises(ProvenanceError, match=f"float run {run} used other clips than"):
        check_system_split(10, export)
    sidecar.write_text(json.dumps({"split": 10, "split_fingerprint": "a" * 64}))
    check_system_split(10, export)
    # Fine-tuned on split 5, but the float run it came from trained on split 10.
    sidecar.write_text(json.dumps({"model": "tiny", "split": 5}))
    with pytest.raises(ProvenanceError, match=f"float run {run} used split 10"):
        check_system_split(5, export)
    # `keras-asc reproduce` cells: the cell's record holds the split it quantised on.
    cell = tmp_path / "cell"
    make_run(cell / "run", model_path, 25)
    (cell / "int8").mkdir()
    (cell / "int8" / "tiny.json").write_text(json.dumps({"model": "tiny"}))
    (cell / "evaluation.json").write_text(
        json.dumps({"split": 25, "int8_file": "int8/tiny.tflite"})
    )
    check_system_split(25, str(cell / "int8" / "tiny.tflite"))
    # Nothing records the split of a bare model file or a model object.
    with pytest.raises(ProvenanceError, match="outside a run folder records no training split"):
        check_system_split(5, model_path)
    with pytest.raises(ProvenanceError, match="a model object records no training split"):
        check_system_split(5, object())


def test_int8_export_complexity_is_counted_on_the_float_model(model_path, tmp_path):
    from keras_asc import complexity
    from keras_asc.training.saving import load_model

    run = tmp_path / "run"
    make_run(run, model_path, 25)
    (run / "int8").mkdir()

    class Export:  # what TFLiteClassifier exposes: the parsed NAME.json
        name = "tiny_int8"
        description = {
            "model": "tiny",
            "members": [],
            "quantization": "qat",
            "parameter_bytes": {"total": 9000, "int8_weights": 8000, "int32_biases": 600},
            "tflite_micro": {"arena_bytes": 51234, "runs": True},
        }

    counted = complexity.profile(load_model(model_path))
    figures = submission.system_complexity(Export(), str(run / "int8" / "tiny.tflite"))
    assert figures.precision == "int8" and figures.quantization == "qat"
    # The DCASE rule on the float architecture, not the file's folded constants.
    assert (figures.total_parameters, figures.total_model_size) == (counted.params, counted.params)
    assert figures.macs == counted.macs and figures.memory_use == 51234
    with pytest.raises(ValueError, match="float model of this int8 file is not found"):
        submission.system_complexity(Export(), str(tmp_path / "elsewhere.tflite"))


# === Bad input ===


def test_bad_inputs_are_refused_before_anything_is_written(runs, eval_dir, tmp_path):
    four = {split: runs[split] for split in SPLITS[:-1]}
    with pytest.raises(ValueError, match=r"missing: \[100\]"):
        submission.write_submission(four, eval_dir, tmp_path / "o", info=INFO)
    bad_label = {**INFO, "submission": {**INFO["submission"], "label": "Doe_task1_1"}}
    with pytest.raises(ValueError, match="must read"):
        submission.write_submission(runs, eval_dir, tmp_path / "o", info=bad_label)
    with pytest.raises(ValueError, match="No .wav files"):
        submission.write_submission(runs, tmp_path, tmp_path / "o", info=INFO)
    with pytest.raises(ValueError, match="must not hold 'results'"):
        submission.write_submission(runs, eval_dir, tmp_path / "o", info={**INFO, "results": {}})
    assert not (tmp_path / "o").exists()


def test_cli_unreadable_wav_raise_and_skip(evaluated_runs, eval_dir, info_path, tmp_path, capsys):
    broken = tmp_path / "eval"
    shutil.copytree(eval_dir, broken)
    (broken / "audio" / "7.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    args = submit_args(broken, tmp_path / "out", info_path, evaluated_runs[0])
    args += ["--batch-size", "4"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("keras-asc submit: error:") and "7.wav" in err[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.csv"))

    assert main([*args, "--on-error", "skip", "--label", "Roe_XYZ_task1_2"]) == 1
    captured = capsys.readouterr().out
    assert "1 unreadable files left out" in captured and "audio/7.wav" in captured
    # The check of the written folder finds the row missing in every output file.
    assert captured.count("12 unique files listed; the evaluation folder has 13") == 5
    rows = read_output(
        tmp_path / "out" / "task1" / "Roe_XYZ_task1_2" / "Roe_XYZ_task1_2.output.split_10.csv"
    )
    assert len(rows) == NUM_EVAL_FILES and "audio/7.wav" not in [row[0] for row in rows]


def test_cli_refuses_malformed_arguments(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["submit", str(tmp_path), "--out", str(tmp_path / "o"), "--system", "runs/x"])
    assert exit_info.value.code == 2
    assert "expected SPLIT=PATH" in capsys.readouterr().err
    assert main(["submit", str(tmp_path)]) == 2
    assert "missing --out, --system" in capsys.readouterr().err
    assert main(["submit", "--check", str(tmp_path), "--out", "x"]) == 2
    assert "drop --out" in capsys.readouterr().err
    assert main(["submit", "--check", str(tmp_path / "nothing.zip")]) == 2
    assert "not found" in capsys.readouterr().err


# === The rules, one negative test each ===


def valid_meta():
    result = {"accuracy": 50.0, "logloss": 1.2}
    block = {
        "overall": dict(result),
        "class_wise": {name: dict(result) for name in CLASSES},
        "device_wise": {name: dict(result) for name in DEVICES},
    }
    meta = json.loads(json.dumps(INFO))
    meta["submission"]["authors"][0]["corresponding"] = True
    meta["system"]["description"].update(
        input_sampling_rate="32kHz",
        acoustic_features="log-mel energies",
        machine_learning_method="CNN",
        complexity_management="int8",
        framework="keras-asc",
    )
    meta["system"]["complexity"] = {"total_model_size": 60440, "total_parameters": 60440, "macs": 1}
    meta["system"]["external_datasets"] = []
    meta["results"] = {
        "development_dataset": {f"split_{s}": json.loads(json.dumps(block)) for s in SPLITS}
    }
    return meta


def output_text(names, rows=None):
    lines = ["\t".join(["filename", "scene_label", *CLASSES])]
    for name in names:
        lines.append("\t".join([name, "park", *["0.1"] * 10]))
    return "\n".join(lines + (rows or [])) + "\n"


EXPECTED = {"0.wav", "1.wav", "2.wav"}


def valid_files():
    files = {
        f"task1/{LABEL}/{LABEL}.output.split_{s}.csv": output_text(sorted(EXPECTED)) for s in SPLITS
    }
    files[f"task1/{LABEL}/{LABEL}.meta.yaml"] = yaml.safe_dump(valid_meta())
    return files


def write_zip(path, files):
    with zipfile.ZipFile(path, "w") as handle:
        for name, text in files.items():
            handle.writestr(name, text)
    return path


def test_a_valid_small_package_passes(tmp_path):
    assert check_package(write_zip(tmp_path / "p.zip", valid_files()), EXPECTED) == []


def _meta_edit(edit):
    def apply(files):
        meta = valid_meta()
        edit(meta)
        files[f"task1/{LABEL}/{LABEL}.meta.yaml"] = yaml.safe_dump(meta)

    return apply


def _output_edit(text):
    def apply(files):
        files[f"task1/{LABEL}/{LABEL}.output.split_25.csv"] = text

    return apply


def _rename(old, new):
    def apply(files):
        files[new] = files.pop(old)

    return apply


OUT25 = f"task1/{LABEL}/{LABEL}.output.split_25.csv"
RULES = {
    # Layout and labels.
    "other file": (
        lambda f: f.update({"task1/notes.txt": "x"}),
        "task1/notes.txt: not a submission file",
    ),
    "outside task1": (
        lambda f: f.update({f"task2/{LABEL}/{LABEL}.meta.yaml": "x"}),
        "expected task1/<label>/<file>",
    ),
    "split name": (
        _rename(OUT25, OUT25.replace("split_25", "split_20")),
        "output.split_N.csv with N in 5, 10, 25, 50, 100",
    ),
    "missing split": (lambda f: f.pop(OUT25), "output files missing for splits 25"),
    "missing meta": (lambda f: f.pop(f"task1/{LABEL}/{LABEL}.meta.yaml"), f"no {LABEL}.meta.yaml"),
    "file label": (
        _rename(OUT25, f"task1/{LABEL}/Roe_ACME_task1_1.output.split_25.csv"),
        "the file's label 'Roe_ACME_task1_1' differs from its folder",
    ),
    "meta label": (
        _meta_edit(lambda m: m["submission"].update(label="Doe_ACME_task1_2")),
        "submission.label 'Doe_ACME_task1_2' differs from the folder and file label",
    ),
    "label form": (
        lambda f: f.update({k.replace(LABEL, "DoeACME_task1_1"): f.pop(k) for k in list(f)}),
        "task1/DoeACME_task1_1: submission label 'DoeACME_task1_1' must read [last name]_",
    ),
    # Output files.
    "header": (
        _output_edit(
            output_text([]).replace("tram", "trams") + "0.wav\tpark" + "\t0.1" * 10 + "\n"
        ),
        "the header must be filename scene_label airport",
    ),
    "field count": (
        _output_edit(output_text(["0.wav", "1.wav"], ["2.wav\tpark\t0.1"])),
        "rows must have 12 tab-separated fields (row 4: 3)",
    ),
    "extension": (
        _output_edit(output_text(["0.wav", "1.wav", "2.mp3"])),
        "file names must end in .wav (row 4: 2.mp3)",
    ),
    "duplicate": (
        _output_edit(output_text(["0.wav", "1.wav", "2.wav", "audio/1.wav"])),
        "a file is listed twice (row 5: 1.wav)",
    ),
    "unknown file": (
        _output_edit(output_text(["0.wav", "1.wav", "2.wav", "3.wav"])),
        "a file that is not in the evaluation folder (row 5: 3.wav)",
    ),
    "count": (
        _output_edit(output_text(["0.wav", "1.wav"])),
        "2 unique files listed; the evaluation folder has 3",
    ),
    "scene label": (
        _output_edit(output_text(["0.wav", "1.wav"], ["2.wav\tforest" + "\t0.1" * 10])),
        "scene labels must be one of the 10 classes (row 4: forest)",
    ),
    "float": (
        _output_edit(output_text(["0.wav", "1.wav"], ["2.wav\tpark\tx" + "\t0.1" * 9])),
        "class columns must hold numbers (row 4: airport='x')",
    ),
    # Meta information.
    "yaml": (lambda f: f.update({f"task1/{LABEL}/{LABEL}.meta.yaml": "a: [b"}), "not valid YAML"),
    "block": (_meta_edit(lambda m: m.pop("results")), "the 'results' block is missing"),
    "submission field": (
        _meta_edit(lambda m: m["submission"].pop("name")),
        "submission: missing required fields name",
    ),
    "author field": (
        _meta_edit(lambda m: m["submission"]["authors"][0].pop("affiliation")),
        "submission.authors[0]: missing required fields affiliation",
    ),
    "corresponding": (
        _meta_edit(lambda m: m["submission"]["authors"][0].pop("corresponding")),
        "exactly one author must be marked corresponding: true, found 0",
    ),
    "abbreviation": (
        _meta_edit(lambda m: m["submission"].update(abbreviation="ElevenChars")),
        "'ElevenChars' is longer than 10 characters",
    ),
    "system field": (
        _meta_edit(lambda m: m["system"].pop("source_code")),
        "system: missing required fields source_code",
    ),
    "description field": (
        _meta_edit(lambda m: m["system"]["description"].pop("split_adaptations")),
        "system.description: missing required fields split_adaptations",
    ),
    "empty field": (
        _meta_edit(lambda m: m["system"]["description"].update(system_adaptations=None)),
        "system.description: required fields left empty: system_adaptations",
    ),
    "complexity field": (
        _meta_edit(lambda m: m["system"]["complexity"].pop("macs")),
        "system.complexity: missing required fields macs",
    ),
    "parameters integer": (
        _meta_edit(lambda m: m["system"]["complexity"].update(total_parameters="60k")),
        "total_parameters: expected an integer, found '60k'",
    ),
    "external dataset": (
        _meta_edit(
            lambda m: m["system"].update(external_datasets=[{"name": "AudioSet", "url": "u"}])
        ),
        "system.external_datasets[0]: missing required fields total_audio_length",
    ),
    "result split": (
        _meta_edit(lambda m: m["results"]["development_dataset"].pop("split_10")),
        "results.development_dataset: missing required fields split_10",
    ),
    "class": (
        _meta_edit(
            lambda m: m["results"]["development_dataset"]["split_5"]["class_wise"].pop("tram")
        ),
        "results.development_dataset.split_5.class_wise: missing required fields tram",
    ),
    "device": (
        _meta_edit(
            lambda m: m["results"]["development_dataset"]["split_50"]["device_wise"].pop("s6")
        ),
        "results.development_dataset.split_50.device_wise: missing required fields s6",
    ),
    "result entry": (
        _meta_edit(
            lambda m: m["results"]["development_dataset"]["split_100"]["overall"].pop("logloss")
        ),
        "results.development_dataset.split_100.overall: missing required fields logloss",
    ),
    "numeric": (
        _meta_edit(
            lambda m: m["results"]["development_dataset"]["split_25"]["device_wise"]["a"].update(
                accuracy="high"
            )
        ),
        "results.development_dataset.split_25.device_wise.a: not a number: accuracy",
    ),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_each_rule_reports_its_problem(rule, tmp_path):
    files = valid_files()
    edit, expected = RULES[rule]
    edit(files)
    problems = check_package(write_zip(tmp_path / "p.zip", files), EXPECTED)
    assert any(expected in line for line in problems), problems
    assert len(problems) <= 2, problems  # the problem itself (and a count it causes)


def test_a_damaged_zip_member_is_reported(tmp_path):
    path = write_zip(tmp_path / "p.zip", valid_files())
    data = bytearray(path.read_bytes())
    start = data.index(b"park")  # inside the first output file's stored bytes
    data[start : start + 4] = b"PARK"
    path.write_bytes(bytes(data))
    problems = check_package(path, EXPECTED)
    assert problems == [
        f"task1/{LABEL}/{LABEL}.output.split_5.csv: damaged, cannot be read (Bad CRC-32 for file "
        f"'task1/{LABEL}/{LABEL}.output.split_5.csv')"
    ]


def test_a_folder_package_and_the_cli_print_one_line_per_problem(tmp_path, capsys):
    files = valid_files()
    RULES["scene label"][0](files)
    RULES["description field"][0](files)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    for name in EXPECTED:
        (eval_dir / name).write_bytes(b"")
    assert main(["submit", "--check", str(tmp_path / "task1" / LABEL), str(eval_dir)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[-1].startswith("keras-asc submit --check: 2 problem(s)")
    assert lines[0].startswith(f"task1/{LABEL}/{LABEL}.meta.yaml: system.description")
    assert lines[1].startswith(f"{OUT25}: scene labels must be one of the 10 classes")


# === The 135,730-row rule at the real size ===


def test_the_evaluation_set_size_is_checked_at_the_real_size(tmp_path):
    probabilities = "\t".join(["0.1"] * 10)
    rows = [f"{index}.wav\tpark\t{probabilities}" for index in range(135_730)]
    header = "\t".join(["filename", "scene_label", *CLASSES])
    full = "\n".join([header, *rows]) + "\n"
    files = {f"task1/{LABEL}/{LABEL}.output.split_{s}.csv": full for s in SPLITS}
    files[f"task1/{LABEL}/{LABEL}.meta.yaml"] = yaml.safe_dump(valid_meta())
    assert check_package(write_zip(tmp_path / "full.zip", files)) == []
    # One file listed twice, one index past the end, one name that is no index (in place of
    # the last three files): each is its own line, and 135,729 files are listed.
    wrong = [rows[0], f"135730.wav\tpark\t{probabilities}", f"last.wav\tpark\t{probabilities}"]
    assert output_problems("\n".join([header, *rows[:-3], *wrong]) + "\n") == [
        "a file is listed twice (row 135729: 0.wav)",
        "file index outside 0-135729 (row 135730: 135730.wav)",
        "file names must be <index>.wav (row 135731: last.wav)",
        "135,729 unique files listed; the evaluation set has 135,730",
    ]


def test_meta_problems_of_a_non_mapping():
    assert meta_problems(["a"]) == ["expected a YAML mapping, found list"]


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_int8_export_in_a_submission(runs, model_path, eval_dir, dev_root, tmp_path):
    """A real int8 export as the split-100 system: its rows are the TFLite classifier's, and
    its parameters are those of the float architecture."""
    from keras_asc.data.audio import load_audio
    from keras_asc.quantization import TFLiteClassifier, export_int8
    from keras_asc.training.saving import load_model

    run = make_run(tmp_path / "run", model_path, 100)
    (tmp_path / "run" / "int8").mkdir()
    calibration = [
        np.stack([load_audio(eval_dir / "audio" / f"{i}.wav", num_samples=32000) for i in range(8)])
    ]
    export = export_int8(
        load_model(model_path), calibration, tmp_path / "run" / "int8" / "tiny.tflite"
    )
    with open(export.json_path, encoding="utf-8") as handle:
        description = json.load(handle)
    if "split" not in description:  # an export made before quantize recorded its split
        description["split"] = 100
        with open(export.json_path, "w", encoding="utf-8") as handle:
            json.dump(description, handle)
    systems = {**runs, 100: export.path}
    result = submission.write_submission(
        systems, eval_dir, tmp_path / "out", info=INFO, data_dir=dev_root, verbose=False
    )
    assert result.problems == ()
    figures = result.meta["system"]["complexity"]
    int8_figures = figures["split_wise"]["split_100"]
    float_figures = figures["split_wise"]["split_5"]
    assert int8_figures["total_parameters"] == float_figures["total_parameters"]
    assert int8_figures["total_model_size"] * 4 == float_figures["total_model_size"]
    assert int8_figures["memory_use"] == export.tflite_micro["arena_bytes"] > 0
    assert figures["memory_use"] is None and figures["precision"] == "float32/int8"
    rows = read_output(tmp_path / "out" / "task1" / LABEL / f"{LABEL}.output.split_100.csv")[1:]
    classifier = TFLiteClassifier(export.path)
    waveforms = np.stack([load_audio(eval_dir / row[0], num_samples=32000) for row in rows])
    logits = classifier.predict(waveforms)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected = exp / exp.sum(axis=1, keepdims=True)
    np.testing.assert_allclose([[float(v) for v in row[2:]] for row in rows], expected, atol=1e-6)
    assert run
