"""The list, summary, evaluate, predict, ensemble and demo subcommands, run in-process."""

import json
import os

import numpy as np
import pytest

import keras_asc
from keras_asc.cli import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


WAVEFORM = np.random.default_rng(0).normal(0, 0.1, (2, 32000)).astype("float32")
LOGITS = {}  # model name -> logits of WAVEFORM, filled by the run_dirs fixture


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    """Run directories of untrained MofleNet57 and CP-ResNet59 (as ``keras-asc train`` leaves
    them: model.keras and run_config.json)."""
    root = tmp_path_factory.mktemp("runs")
    dirs = {}
    for name in ("moflenet57", "cp_resnet59"):
        run_dir = root / name
        run_dir.mkdir()
        model = keras_asc.build(name)
        model.save(run_dir / "model.keras")
        (run_dir / "run_config.json").write_text(json.dumps({"model": name}))
        dirs[name] = run_dir
        # Reference logits of the saved weights, to check members survive ensembling.
        LOGITS[name] = model.predict_on_batch(WAVEFORM)
    return dirs


def write_corrupt_wav(path):
    path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00")  # truncated


# === list and summary ===


def test_list_shows_models_ensembles_and_augmentations_with_their_plugin(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    lines = out.splitlines()
    assert any(line.split()[:2] == ["moflenet57", "built-in"] for line in lines)
    assert any(
        line.startswith("moflenet57_cp_resnet59_v2") and "cp_resnet59 0.6, moflenet57 0.4" in line
        for line in lines
    )
    assert any(line.split()[:3] == ["freq_mixstyle", "spectrogram", "built-in"] for line in lines)


def test_list_names_the_distribution_of_a_plugin(capsys):
    from keras_asc import plugins

    class TinyPlugin:
        @keras_asc.hookimpl
        def register_models(self, register):
            register(
                "cli_test_mofle",
                keras_asc.models.MofleNetBackbone,
                config={"channels_multiplier": 1.0, "name": "cli_test_mofle"},
                description="test model",
            )

    plugins.register_plugin(TinyPlugin(), name="cli_test_plugin", source="keras-asc-clitest")
    try:
        code, out, _ = run_cli(capsys, "list", "--json")
    finally:
        plugins.unregister_plugin("cli_test_plugin")
    assert code == 0
    models = {entry["name"]: entry for entry in json.loads(out)["models"]}
    assert models["cli_test_mofle"]["plugin"] == "cli_test_plugin (keras-asc-clitest)"
    assert models["moflenet57"]["plugin"] == "built-in"


def test_summary_prints_the_complexity_table(capsys):
    from keras_asc.models.presets import MODEL_PRESETS

    code, out, _ = run_cli(capsys, "summary", "cp_resnet59")
    assert code == 0
    assert out.startswith("Model: cp_resnet59")
    assert f"Total parameters: {MODEL_PRESETS['cp_resnet59']['params']:,}" in out
    assert f"Total MACs: {MODEL_PRESETS['cp_resnet59']['macs']:,}" in out
    assert "58,360 bytes at 8 bit (limit 128,000): ok" in out


def test_summary_of_an_unknown_model_is_an_error(capsys):
    code, _, err = run_cli(capsys, "summary", "no_such_model")
    assert code == 2
    assert "Unknown model 'no_such_model'" in err and "moflenet57" in err


def test_summary_of_a_run_directory(capsys, run_dirs):
    code, out, _ = run_cli(capsys, "summary", run_dirs["moflenet57"], "--bits", "32")
    assert code == 0
    assert "60,440 = 241,760 bytes at 32 bit" in out and "OVER by 113,760 bytes" in out


# === predict ===


def test_predict_reports_bad_files_and_classifies_the_rest(capsys, run_dirs, shared_data, tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    write_corrupt_wav(corrupt)
    good = shared_data / "audio" / "metro_station-paris.wav"
    code, out, err = run_cli(capsys, "predict", run_dirs["moflenet57"], good, corrupt, "--top", "2")
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"{good} (10.00 s, 10 windows of 1 s)"
    assert [line.split(".")[0].strip() for line in lines[1:3]] == ["1", "2"]
    assert len(lines) == 3
    assert "Cannot decode audio file" in err and str(corrupt) in err and "truncated" in err
    assert "1 of 2 files failed" in err


def test_predict_json(capsys, run_dirs, shared_data):
    stereo = shared_data / "audio" / "acoustic_scene.wav"  # 16-bit stereo
    code, out, _ = run_cli(capsys, "predict", run_dirs["cp_resnet59"], stereo, "--json")
    assert code == 0
    (entry,) = json.loads(out)
    assert entry["num_windows"] == 10 and entry["error"] is None
    assert len(entry["top"]) == 3
    assert sum(entry["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    ranked = sorted(entry["probabilities"].values(), reverse=True)
    assert [t["probability"] for t in entry["top"]] == pytest.approx(ranked[:3])


def test_predict_with_a_missing_model(capsys, tmp_path):
    code, _, err = run_cli(capsys, "predict", tmp_path / "nothing", tmp_path / "a.wav")
    assert code == 2 and "No model at" in err


# === evaluate ===


@pytest.mark.tensorflow_only
def test_evaluate_writes_metrics_and_plots(capsys, run_dirs, tmp_path):
    from test_evaluation import write_mini_tau22

    write_mini_tau22(tmp_path / "data", clips_per_class=1)
    out_dir = tmp_path / "eval"
    code, out, _ = run_cli(
        capsys, "evaluate", run_dirs["moflenet57"], "--data", tmp_path / "data", "--out", out_dir
    )
    assert code == 0
    assert "Model: moflenet57   split: test   clips: 10" in out
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["num_clips"] == 10
    assert sum(metrics["class_counts"].values()) == 10
    assert np.sum(metrics["confusion_matrix"]) == 10
    assert sum(metrics["device_counts"].values()) == 10
    assert (out_dir / "metrics.txt").read_text().startswith("Model: moflenet57")
    from keras_asc.training import plots

    if plots.matplotlib_available():
        assert (out_dir / "confusion_matrix.png").is_file()
        assert (out_dir / "device_accuracy.png").is_file()


def test_evaluate_without_a_model_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "evaluate", tmp_path, "--data", tmp_path)
    assert code == 2 and "without model.keras" in err


# === ensemble ===


def test_ensemble_preset_assigns_weights_by_member_model(capsys, run_dirs, tmp_path):
    out_dir = tmp_path / "ens"
    # MofleNet first: the preset still gives CP-ResNet59 0.6 and MofleNet57 0.4.
    code, out, _ = run_cli(
        capsys,
        "ensemble",
        run_dirs["moflenet57"],
        run_dirs["cp_resnet59"],
        "--preset",
        "v2",
        "--out",
        out_dir,
    )
    assert code == 0
    assert "Ensemble moflenet57_cp_resnet59_v2: moflenet57 0.4, cp_resnet59 0.6" in out
    assert "parameters: 118,800 = 118,800 bytes at 8 bit (limit 128,000): ok" in out
    config = json.loads((out_dir / "run_config.json").read_text())
    assert [(m["model"], m["weight"]) for m in config["members"]] == [
        ("moflenet57", 0.4),
        ("cp_resnet59", 0.6),
    ]
    assert config["complexity"]["params"] == 118_800
    ensemble = keras_asc.load_model(out_dir / "model.keras")
    assert ensemble.member_weights == [0.4, 0.6]
    # The members keep their trained weights through save and load.
    waveform = np.random.default_rng(0).normal(0, 0.1, (2, 32000)).astype("float32")
    members = [
        keras_asc.load_model(run_dirs[n] / "model.keras") for n in ("moflenet57", "cp_resnet59")
    ]
    expected = 0.4 * members[0].predict_on_batch(waveform) + 0.6 * members[1].predict_on_batch(
        waveform
    )
    np.testing.assert_allclose(ensemble.predict_on_batch(waveform), expected, atol=1e-4)


def test_ensemble_explicit_weights_follow_the_member_order(capsys, run_dirs, tmp_path):
    code, out, _ = run_cli(
        capsys,
        "ensemble",
        run_dirs["cp_resnet59"],
        run_dirs["moflenet57"],
        "--weights",
        "0.7,0.3",
        "--out",
        tmp_path / "ens",
        "--name",
        "mine",
    )
    assert code == 0 and "Ensemble mine: cp_resnet59 0.7, moflenet57 0.3" in out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--weights", "0.5"], "Got 1 weights for 2 members"),
        (["--weights", "0.5,x"], "comma-separated numbers"),
        (["--preset", "v9"], "Unknown ensemble preset 'v9'"),
    ],
)
def test_ensemble_argument_errors(capsys, run_dirs, tmp_path, extra, message):
    code, _, err = run_cli(
        capsys,
        "ensemble",
        run_dirs["cp_resnet59"],
        run_dirs["moflenet57"],
        *extra,
        "--out",
        tmp_path / "ens",
    )
    assert code == 2 and message in err
    assert not (tmp_path / "ens" / "model.keras").exists()


def test_ensemble_preset_needs_matching_members(capsys, run_dirs, tmp_path):
    code, _, err = run_cli(
        capsys,
        "ensemble",
        run_dirs["moflenet57"],
        run_dirs["moflenet57"],
        "--preset",
        "v1",
        "--out",
        tmp_path / "ens",
    )
    assert code == 2 and "Preset 'v1' combines" in err


def test_ensemble_over_budget_says_by_how_much(capsys, run_dirs, tmp_path):
    big = tmp_path / "big"
    big.mkdir()
    keras_asc.build("cp_resnet_128k").save(big / "model.keras")
    code, _, err = run_cli(
        capsys,
        "ensemble",
        big,
        run_dirs["moflenet57"],
        "--weights",
        "0.5,0.5",
        "--out",
        tmp_path / "ens",
    )
    # 127,684 + 60,440 parameters = 188,124 bytes at int8: 60,124 over the 128,000 limit.
    assert code == 2 and "OVER by 60,124 bytes" in err
    assert not (tmp_path / "ens" / "model.keras").exists()


def test_build_ensemble_renames_members_with_the_same_name(run_dirs):
    from keras_asc.training.ensemble import build_ensemble

    model = keras_asc.load_model(run_dirs["moflenet57"] / "model.keras")
    ensemble = build_ensemble([model, model], weights=[0.25, 0.75])
    assert [m.name for m in ensemble.members] == ["moflenet57", "moflenet57_1"]
    # The renamed copy has the same weights: the weighted sum is that model's logits.
    np.testing.assert_allclose(
        ensemble.predict_on_batch(WAVEFORM), LOGITS["moflenet57"], rtol=1e-4, atol=1e-4
    )


@pytest.mark.tensorflow_only
def test_ensemble_with_data_evaluates(capsys, run_dirs, tmp_path):
    from test_evaluation import write_mini_tau22

    write_mini_tau22(tmp_path / "data", clips_per_class=1)
    code, out, _ = run_cli(
        capsys,
        "ensemble",
        run_dirs["cp_resnet59"],
        run_dirs["moflenet57"],
        "--preset",
        "v1",
        "--out",
        tmp_path / "ens",
        "--data",
        tmp_path / "data",
        "--compare",
    )
    assert code == 0
    metrics = json.loads((tmp_path / "ens" / "eval-test" / "metrics.json").read_text())
    assert metrics["num_clips"] == 10 and metrics["model_name"] == "moflenet57_cp_resnet59_v1"
    assert "Model: moflenet57_cp_resnet59_v1   split: test   clips: 10" in out
    comparison = out.split("\n\n")[-1].splitlines()
    assert comparison[0].startswith("model") and len(comparison) == 2 + 3


# === demo (the full run is in tests/test_learning.py) ===


def test_demo_refuses_a_folder_it_did_not_write(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "demo", "--out", tmp_path, "--epochs", "1")
    assert code == 2 and "is not empty and holds no earlier demo" in err
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_demo_refuses_other_settings_without_overwrite(capsys, tmp_path):
    (tmp_path / "demo.json").write_text(json.dumps({"epochs": 99}))
    code, _, err = run_cli(capsys, "demo", "--out", tmp_path, "--epochs", "1")
    assert code == 2 and "--overwrite" in err


def test_demo_checks_its_arguments(capsys, tmp_path):
    code, _, err = run_cli(capsys, "demo", "--out", tmp_path / "d", "--epochs", "0")
    assert code == 2 and "--epochs must be >= 1" in err
    assert not (tmp_path / "d").exists()


def test_demo_reuses_a_folder_with_the_same_settings(tmp_path):
    from keras_asc.training.demo import DEMO_MARKER, prepare_demo_dir

    settings = {"epochs": 2, "seed": 0}
    assert prepare_demo_dir(str(tmp_path / "d"), settings, overwrite=False) == "new"
    (tmp_path / "d" / "runs").mkdir()
    assert prepare_demo_dir(str(tmp_path / "d"), settings, overwrite=False) == "reuse"
    assert (tmp_path / "d" / "runs").is_dir()
    # Other settings with --overwrite: only what the demo wrote is removed.
    (tmp_path / "d" / "mine.txt").write_text("kept")
    assert prepare_demo_dir(str(tmp_path / "d"), {"epochs": 3}, overwrite=True) == "new"
    assert sorted(os.listdir(tmp_path / "d")) == [DEMO_MARKER, "mine.txt"]
    assert json.loads((tmp_path / "d" / DEMO_MARKER).read_text()) == {"epochs": 3}


def test_a_fresh_process_predicts_with_a_saved_classifier(tmp_path, shared_data):
    """A new process finds every class of a saved classifier (backbone, blocks, front-end)."""
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model = keras_asc.build("cp_resnet59")
    model.save(run_dir / "model.keras")
    completed = subprocess.run(
        [sys.executable, "-m", "keras_asc", "predict", str(run_dir),
         str(shared_data / "audio" / "metro_station-paris.wav"), "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    (entry,) = json.loads(completed.stdout)
    assert entry["num_windows"] == 10
    from keras_asc.data.audio import load_audio
    from keras_asc.training.evaluation import softmax

    waveform = load_audio(shared_data / "audio" / "metro_station-paris.wav")
    probabilities = softmax(model.predict_on_batch(waveform.reshape(10, 32000))).mean(axis=0)
    assert list(entry["probabilities"].values()) == pytest.approx(probabilities.tolist(), abs=1e-5)
