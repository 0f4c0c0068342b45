"""The run record: a split resolved once (``tau22.Split``), the run folder (``RunDir``), and the
provenance they carry from ``train`` through ``ensemble`` and ``quantize``, tested through the
command line where a user meets them."""

import dataclasses
import io
import json
import os
import shutil

import keras
import pytest

import keras_asc
from keras_asc.cli import main
from keras_asc.data import tau22
from keras_asc.files import RunDirError
from keras_asc.training.callbacks import progress_verbosity
from keras_asc.training.rundir import RunConfigError, RunDir


def _fast_compile():
    return [] if keras.backend.backend() != "tensorflow" else ["--no-jit"]


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def run10(tiny_model, synthetic_root, tmp_path_factory):
    """A tiny model trained on split 10 through the command line: 20 clips, batch 10, 2 epochs."""
    out = tmp_path_factory.mktemp("runs") / "tiny10"
    code = main(
        ["train", "--model", tiny_model, "--split", "10", "--data", synthetic_root]
        + ["--epochs", "2", "--batch-size", "10", "--out", str(out), "--verbose", "2"]
        + _fast_compile()
    )
    assert code == 0
    return out


# --- Split ---------------------------------------------------------------------------------


def test_a_split_is_resolved_once_with_a_fingerprint_of_its_clips(synthetic_root):
    split = tau22.Split.load(synthetic_root, "split10")
    clips = tau22.load_split(synthetic_root, 10)
    assert (split.name, split.title, split.root) == (10, "split10", os.path.abspath(synthetic_root))
    assert list(split.clips) == clips and len(clips) == 20
    assert split.labels == tuple(clip.label for clip in clips)
    assert split.devices == tuple(clip.device for clip in clips)
    assert split.source.endswith("split10.csv")
    # The fingerprint is the clip list with its labels, whatever the order.
    reordered = dataclasses.replace(split, clips=tuple(reversed(split.clips)))
    assert reordered.fingerprint == split.fingerprint and len(split.fingerprint) == 64
    assert split.without([clips[0].filename]).fingerprint != split.fingerprint
    relabelled = dataclasses.replace(clips[0], scene_label="tram")
    changed = dataclasses.replace(split, clips=(relabelled, *split.clips[1:]))
    assert changed.fingerprint != split.fingerprint
    assert tau22.Split.load(synthetic_root, 25).fingerprint != split.fingerprint


def test_paths_expand_home_and_variables(synthetic_root, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    os.symlink(synthetic_root, home / "tau22")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KERAS_ASC_TEST_DATA", str(home / "tau22"))
    by_home = tau22.Split.load("~/tau22", 10)
    by_variable = tau22.Split.load("$KERAS_ASC_TEST_DATA", 10)
    assert by_home.root == by_variable.root == str(home / "tau22")
    assert by_home.fingerprint == by_variable.fingerprint
    assert RunDir("~/runs/x").path == str(home / "runs" / "x")


@pytest.mark.slow
def test_the_api_trains_from_a_home_relative_data_dir(tiny_model, synthetic_root, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    os.symlink(synthetic_root, home / "tau22")
    monkeypatch.setenv("HOME", str(home))
    result = keras_asc.train(
        tiny_model,
        data_dir="~/tau22",
        split=10,
        epochs=1,
        batch_size=10,
        out_dir="~/runs/tiny",
        verbose=0,
        jit_compile=False if keras.backend.backend() == "tensorflow" else "auto",
    )
    run = RunDir(result.run_dir)
    assert run.path == str(home / "runs" / "tiny")
    assert run.config.data_dir == str(home / "tau22") and run.config.split == 10
    assert result.steps_trained == run.steps_trained == 2  # 20 clips / batch 10, one epoch


# --- the run record ------------------------------------------------------------------------


def test_a_run_records_its_split_steps_and_model_digest(run10, synthetic_root):
    run = RunDir(run10)
    split = tau22.Split.load(synthetic_root, 10)
    assert run.config.split == 10 and run.config.split_fingerprint == split.fingerprint
    assert run.config.steps_per_epoch == 2 and run.config.model == "tiny_mofle"
    record = run.completion()
    assert record["steps_trained"] == run.steps_trained == 4  # 2 epochs x 2 steps
    assert record["split"] == 10 and record["split_fingerprint"] == split.fingerprint
    assert record["sha256"] == run.model_digest() and record["run_id"] == run.config.run_id
    assert run.is_complete() and run.stale_model_reason() is None
    assert len(run.history()["loss"]) == 2


def test_run_dir_errors_name_the_file(run10, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run10, copy)
    run = RunDir(copy)
    (copy / "complete.json").write_text("{not json")
    assert not run.is_complete() and run.steps_trained is None
    with pytest.raises(RunDirError, match=r"complete\.json: unreadable completion record"):
        run.completion()
    (copy / "run_config.json").write_text("[1, 2]")
    with pytest.raises(RunConfigError, match=r"run_config\.json: expected a JSON object"):
        run.read_config()
    (copy / "run_config.json").write_text('{"split": 7}')
    with pytest.raises(ValueError, match=r"run_config\.json: 'split' is 7, not a DCASE split"):
        _ = run.config.split
    os.remove(copy / "run_config.json")
    with pytest.raises(RunConfigError, match="has no run_config.json"):
        _ = run.config
    # A model replaced after the run finished is not its result.
    shutil.copy(run10 / "complete.json", copy / "complete.json")
    (copy / "run_config.json").write_text((run10 / "run_config.json").read_text())
    assert run.is_complete()
    with open(copy / "model.keras", "ab") as handle:
        handle.write(b"\0")
    assert run.stale_model_reason() == "it is not the file complete.json recorded (it was replaced)"


def test_zero_step_runs_are_refused_before_they_start(tiny_model, synthetic_root, tmp_path, capsys):
    out = tmp_path / "empty"
    base = ["train", "--model", tiny_model, "--split", "10", "--data", synthetic_root]
    base += ["--epochs", "1", "--out", str(out)]
    assert main(base + ["--batch-size", "32"]) == 2
    err = _one_error_line(capsys)
    assert "0 optimiser steps: 20 clip(s), batch size 32, 0 step(s) per epoch" in err
    # --steps-per-epoch does not make a batch out of too few clips.
    assert main(base + ["--batch-size", "32", "--steps-per-epoch", "5"]) == 2
    assert "20 clip(s), batch size 32" in _one_error_line(capsys)
    assert not out.exists()  # refused before the run folder is claimed


# --- provenance: quantize ------------------------------------------------------------------


@pytest.mark.tensorflow_only
def test_quantize_uses_the_runs_split_and_records_it(run10, synthetic_root, capsys):
    capsys.readouterr()
    ptq = ["--ptq", "--batch-size", "10", "--calibration-clips", "20", "--no-micro"]
    assert main(["quantize", str(run10), "--data", synthetic_root, *ptq]) == 0
    out = capsys.readouterr().out
    assert "keras-asc quantize: calibration on split10" in out
    assert "keras-asc quantize: converting tiny_mofle to int8 TFLite" in out
    description = json.loads((run10 / "int8" / "tiny_mofle.json").read_text())
    split = tau22.Split.load(synthetic_root, 10)
    assert description["split"] == 10
    assert description["split_fingerprint"] == split.fingerprint
    assert description["split_use"] == "post-training calibration"

    # Another split is refused in one line that names both; so is a flag PTQ ignores.
    assert main(["quantize", str(run10), "--data", synthetic_root, "--split", "25", *ptq]) == 2
    err = _one_error_line(capsys)
    assert "was trained on split10, but --split asks for split25" in err
    assert main(["quantize", str(run10), "--data", synthetic_root, "--epochs", "3", *ptq]) == 2
    assert "--ptq calibrates the float model without fine-tuning, so --epochs" in (
        _one_error_line(capsys)
    )


def test_quantize_refuses_a_split_whose_clips_changed(run10, synthetic_root, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synthetic_root, data, symlinks=True)
    split_file = data / "split10.csv"
    lines = split_file.read_text().splitlines()
    split_file.write_text("\n".join(lines[:-1]) + "\n")  # one clip fewer
    assert main(["quantize", str(run10), "--data", str(data), "--ptq"]) == 2
    err = _one_error_line(capsys)
    assert "was trained on split10 with clip fingerprint" in err and "the split file changed" in err


# --- provenance: ensemble ------------------------------------------------------------------


def test_ensemble_records_its_split_and_refuses_mixed_splits(run10, synthetic_root, tmp_path, capsys):
    twin = tmp_path / "tiny10b"
    shutil.copytree(run10, twin, ignore=shutil.ignore_patterns("int8"))
    weights = ["--weights", "0.5,0.5"]
    assert main(["ensemble", str(run10), str(twin), *weights, "--out", str(tmp_path / "e")]) == 0
    config = RunDir(tmp_path / "e").config
    assert config.kind == "ensemble" and config.split == 10
    assert config.split_fingerprint == tau22.Split.load(synthetic_root, 10).fingerprint

    # The same model recorded as trained on split 25: the pair is refused, naming both.
    other = tmp_path / "tiny25"
    shutil.copytree(run10, other, ignore=shutil.ignore_patterns("int8"))
    recorded = json.loads((other / "run_config.json").read_text())
    recorded.update(split=25, split_fingerprint=tau22.Split.load(synthetic_root, 25).fingerprint)
    (other / "run_config.json").write_text(json.dumps(recorded))
    capsys.readouterr()
    assert main(["ensemble", str(run10), str(other), *weights, "--out", str(tmp_path / "f")]) == 2
    err = _one_error_line(capsys)
    assert "Ensemble members were trained on different splits" in err
    assert f"{run10} (split10" in err and f"{other} (split25" in err
    assert not (tmp_path / "f").exists()


# --- progress ------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_only_on_a_terminal(run10):
    assert progress_verbosity(None, _Terminal()) == 1
    assert progress_verbosity(None, io.StringIO()) == 2
    assert progress_verbosity(0, _Terminal()) == 0
    # The fixture's run wrote its epochs into log.csv; its command printed no bars: the
    # default verbosity into a pipe (pytest's capture) is one line per epoch.
    assert progress_verbosity(None) == 2
