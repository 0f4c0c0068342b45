"""The plugin model contract end to end through the command line: a third-party model trains,
evaluates, joins an ensemble, quantises and exports like a built-in one, and every model
file the commands write reopens with ``keras_asc.load_model`` in a fresh process."""

import json
import os
import subprocess
import sys

import pytest

from keras_asc.cli import main
from keras_asc.data.synthetic import make_synthetic_tau22


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    return captured.out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_tau22(tmp_path_factory.mktemp("synth") / "tau22", clips_per_class=20, test_clips_per_class=9)


def test_tiny_mobile_trains_evaluates_ensembles_and_exports(tmp_path, data, capsys):
    runs = []
    for seed in (0, 1):
        run = tmp_path / f"tiny{seed}"
        _cli(capsys, "train", "--model", "tiny_mobile", "--data", data, "--split", 100, "--epochs", 1,
             "--steps-per-epoch", 2, "--batch-size", 16, "--seed", seed, "--out", run, "--verbose", 0)  # fmt: skip
        assert (run / "model.keras").is_file() and (run / "checkpoints" / "last.keras").is_file()
        runs.append(run)
    config = json.loads((runs[0] / "run_config.json").read_text())
    # The default recipe's Freq-MixStyle ran during training (the saved model does not hold it).
    assert "freq_mixstyle" in [a["name"] for a in config["augmentations"]]

    _cli(capsys, "evaluate", runs[0], "--data", data, "--out", tmp_path / "eval", "--no-plots")
    accuracy = json.loads((tmp_path / "eval" / "metrics.json").read_text())["accuracy"]
    assert 0.0 <= accuracy <= 1.0

    ensemble = tmp_path / "ensemble"
    _cli(capsys, "ensemble", *runs, "--weights", "0.5,0.5", "--out", ensemble)
    assert (ensemble / "model.keras").is_file()

    int8 = tmp_path / "int8"
    _cli(capsys, "quantize", runs[0], "--data", data, "--split", 100, "--epochs", 1, "--steps-per-epoch", 2,
         "--batch-size", 16, "--out", int8, "--verbose", 0)  # fmt: skip
    tflite = sorted(int8.glob("*.tflite"))
    assert tflite, sorted(os.listdir(int8))
    _cli(capsys, "evaluate", tflite[0], "--data", data, "--out", tmp_path / "eval8", "--no-plots")
    assert 0.0 <= json.loads((tmp_path / "eval8" / "metrics.json").read_text())["accuracy"] <= 1.0

    # Every model file written above opens in a fresh process through the one loader.
    files = [
        runs[0] / "model.keras",
        runs[0] / "checkpoints" / "last.keras",
        runs[0] / "checkpoints" / "best.keras",
        ensemble / "model.keras",
    ]
    code = (
        "import sys, keras_asc\n"
        "from keras_asc.layers import leaf_layers\n"
        "for path in sys.argv[1:]:\n"
        "    model = keras_asc.load_model(path)\n"
        "    kinds = {type(layer).__name__ for layer in leaf_layers(model)}\n"
        "    assert not kinds & {'FreqMixStyle', 'TimeMasking'}, (path, kinds)\n"
        "    print(type(model).__name__, model.output_shape)\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code, *map(str, files)], capture_output=True, text=True, timeout=600
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split("\n")[:4] == [
        "AudioClassifier (None, 10)",
        "AudioClassifier (None, 10)",
        "AudioClassifier (None, 10)",
        "Ensemble (None, 10)",
    ]
