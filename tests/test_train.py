"""Recipes and ``keras_asc.train``: one-epoch runs, resume after a kill, repeatability and
multi-device training, on the synthetic TAU22 dataset.

Training tests use ``tiny_mofle``, a small MofleNet registered by a runtime plugin (so they
also check that plugin models train with the default recipe) and compile in a fraction of
MofleNet57's time.
"""

import csv
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from helpers import tiny_mofle_source

import keras_asc
from keras_asc.layers import leaf_layers
from keras_asc.training import (
    DEFAULT_RECIPE,
    RECIPES,
    Recipe,
    four_phase_factor,
    get_recipe,
    train,
)
from keras_asc.training.rundir import read_history

# The same plugin, as source for the subprocess tests.
PLUGIN_SOURCE = tiny_mofle_source("tiny-mofle-plugin")


@pytest.fixture(scope="module")
def impulse_dir(tmp_path_factory):
    """Two short decaying-noise impulse responses (24-bit, 44.1 and 48 kHz)."""
    from keras_asc.data.synthetic import write_wav

    folder = tmp_path_factory.mktemp("dirs")
    rng = np.random.default_rng(0)
    for index, rate in enumerate((44100, 48000)):
        t = np.arange(int(0.05 * rate)) / rate
        response = rng.normal(size=t.size) * np.exp(-t / 0.01)
        response[0] = 1.0
        write_wav(str(folder / f"ir{index}.wav"), 0.5 * response / np.abs(response).max(), rate)
    return str(folder)


def _fast_compile():
    # XLA compilation of the training step costs a minute on a 2-core CPU; jax.jit is needed
    # on JAX (eager JAX is slower still).
    return False if keras.backend.backend() == "tensorflow" else "auto"


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# --- recipes -------------------------------------------------------------------------------


def test_recipes_hold_the_report_numbers():
    mofle, resnet = get_recipe("moflenet57"), get_recipe("cp_resnet59")
    for recipe in (mofle, resnet):
        assert (recipe.optimizer, recipe.batch_size, recipe.epochs) == ("adam", 256, 150)
        assert recipe.augmentation_names == (
            "device_impulse_response",
            "time_roll",
            "freq_mixstyle",
        )
        assert recipe.augmentation_config("time_roll") == {"max_shift_seconds": 0.125}
        assert recipe.frontend == {
            "freq_mask_bins": 48,
            "max_frequency_jitter": (15001.0, 16000.0),
            "resampler": "soxr_hq",  # as librosa.load(sr=32000), the CP-JKU code's loader
        }
        assert recipe.schedule.last_factor == 0.005
    assert mofle.augmentation_config("device_impulse_response") == {"p": 0.6}
    assert mofle.augmentation_config("freq_mixstyle") == {"alpha": 0.3, "p": 0.4}
    assert resnet.augmentation_config("device_impulse_response") == {"p": 0.4}
    assert resnet.augmentation_config("freq_mixstyle") == {"alpha": 0.4, "p": 0.8}
    m, r = mofle.schedule, resnet.schedule
    assert (
        m.warmup_epochs,
        m.constant_epochs,
        m.decay_epochs,
        m.finetune_epochs,
        m.max_learning_rate,
    ) == (
        14,
        36,
        84,
        16,
        0.0009,
    )
    assert (
        r.warmup_epochs,
        r.constant_epochs,
        r.decay_epochs,
        r.finetune_epochs,
        r.max_learning_rate,
    ) == (
        15,
        35,
        85,
        15,
        0.001,
    )
    assert get_recipe("moflenet_128k").schedule == m and get_recipe("cp_resnet_128k").schedule == r
    baseline = get_recipe("dcase24_baseline")
    assert baseline.optimizer == "adamw" and baseline.weight_decay == 1e-4
    assert "device_impulse_response" not in baseline.augmentation_names
    # Every built-in model preset has a recipe of its own.
    assert set(RECIPES) >= {
        "moflenet57",
        "cp_resnet59",
        "moflenet_128k",
        "cp_resnet_128k",
        "dcase24_baseline",
    }


def test_recipe_overrides_scale_the_schedule_and_round_trip():
    recipe = get_recipe("moflenet57").with_overrides(epochs=30, batch_size=64)
    assert (recipe.epochs, recipe.batch_size) == (30, 64)
    assert recipe.schedule.warmup_epochs == pytest.approx(2.8)
    assert recipe.schedule.max_learning_rate == 0.0009
    np.testing.assert_allclose(recipe.schedule.factor([2.8, 10.0, 26.8]), [1.0, 1.0, 0.005])
    restored = Recipe.from_dict(json.loads(json.dumps(recipe.to_dict())))
    assert restored == recipe
    optimizer = restored.make_optimizer(steps_per_epoch=10)
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert optimizer.get_config()["epsilon"] == 1e-8
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        recipe.with_overrides(epochs=0)


def test_recipe_lookup_errors_and_plugin_default(tiny_model):
    with pytest.raises(ValueError, match="Unknown model 'resnet50'.*cp_resnet59.*moflenet57"):
        get_recipe("resnet50")
    with pytest.raises(
        ValueError, match="ensemble; train its members \\(cp_resnet59 and moflenet57\\)"
    ):
        get_recipe("moflenet57_cp_resnet59_v2")
    default = get_recipe(tiny_model)
    assert default.model == "tiny_mofle" and default.schedule == DEFAULT_RECIPE.schedule
    assert default.augmentations == DEFAULT_RECIPE.augmentations


# --- training ------------------------------------------------------------------------------


def test_train_one_epoch(synthetic_root, impulse_dir, tiny_model, tmp_path, capsys):
    out = tmp_path / "run"
    result = train(
        tiny_model,
        data_dir=synthetic_root,
        split=100,
        epochs=1,
        batch_size=8,
        steps_per_epoch=2,
        out_dir=str(out),
        seed=3,
        dirs_dir=impulse_dir,
        verbose=0,
        jit_compile=_fast_compile(),
    )
    assert result.run_dir == str(out)
    history = result.history
    assert history["epoch"] == [0] and np.isfinite(history["loss"][0])
    assert 0.0 <= history["accuracy"][0] <= 1.0
    assert "val_loss" not in history  # no validation: the CSV's NA columns are dropped
    # Two steps make the whole (scaled) 1-epoch schedule: the end is the final factor.
    assert int(keras.ops.convert_to_numpy(result.training_model.optimizer.iterations)) == 2
    assert history["learning_rate"][0] == pytest.approx(0.0009 * 0.005, rel=1e-5)
    assert float(four_phase_factor(1.0, *(x / 150 for x in (14, 36, 84)))) == pytest.approx(0.005)

    names = set(os.listdir(out))
    assert {"run_config.json", "log.csv", "model.keras", "checkpoints"} <= names
    assert "backup" not in names  # removed once model.keras is written
    assert {"last.keras", "best.keras", "best.json"} <= set(os.listdir(out / "checkpoints"))
    config = json.loads((out / "run_config.json").read_text())
    assert (config["model"], config["split"], config["seed"], config["epochs"]) == (
        "tiny_mofle",
        100,
        3,
        1,
    )
    assert config["data_dir"] == os.path.abspath(synthetic_root) and config["steps_per_epoch"] == 2
    assert [a["name"] for a in config["augmentations"]] == [
        "device_impulse_response",
        "time_roll",
        "freq_mixstyle",
    ]
    assert config["recipe"]["schedule"]["max_learning_rate"] == 0.0009
    assert len(_read_csv(out / "log.csv")) == 1

    # The model carries the recipe's training front-end, not Freq-MixStyle (applied by the
    # training code only), and reloads.
    frontend = result.model.frontend.get_config()
    assert frontend["freq_mask_bins"] == 48 and tuple(frontend["max_frequency_jitter"]) == (
        15001.0,
        16000.0,
    )
    assert frontend["hop_length"] == 500  # the family's own front-end setting is kept
    assert type(result.model).__name__ == "AudioClassifier"
    saved_layers = [type(layer).__name__ for layer in leaf_layers(result.model)]
    assert "FreqMixStyle" not in saved_layers and "LogMelSpectrogram" in saved_layers
    waveforms = np.random.default_rng(0).normal(scale=0.1, size=(2, 32000)).astype("float32")
    expected = keras.ops.convert_to_numpy(result.model(waveforms, training=False))
    restored = keras_asc.load_model(str(out / "model.keras"))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(waveforms, training=False)), expected, atol=1e-5
    )
    # The final model and both checkpoints open in a fresh process (which knows neither the
    # test plugin nor the optimiser and schedule classes until keras_asc.load_model loads them),
    # and none holds a training-only layer.
    files = [out / "model.keras", out / "checkpoints" / "last.keras", out / "checkpoints" / "best.keras"]
    code = (
        "import sys, keras_asc\n"
        "from keras_asc.layers import leaf_layers\n"
        "for path in sys.argv[1:]:\n"
        "    model = keras_asc.load_model(path)\n"
        "    print(type(model).__name__, sorted({type(l).__name__ for l in leaf_layers(model)}))\n"
    )
    fresh = subprocess.run([sys.executable, "-c", code, *map(str, files)], capture_output=True, text=True, timeout=600)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    lines = fresh.stdout.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("AudioClassifier [") for line in lines), lines
    assert not any("FreqMixStyle" in line for line in lines) and "LogMelSpectrogram" in lines[0]

    # Same settings again: the run is complete, nothing is retrained.
    capsys.readouterr()
    again = train(
        tiny_model,
        data_dir=synthetic_root,
        split=100,
        epochs=1,
        batch_size=8,
        steps_per_epoch=2,
        out_dir=str(out),
        seed=3,
        dirs_dir=impulse_dir,
        verbose=0,
    )
    assert "already complete" in capsys.readouterr().err
    assert again.history == history
    # The command line reads the same run (and the same recipe).
    from keras_asc.cli import main

    code = main(
        [
            "train",
            "--model",
            tiny_model,
            "--split",
            "100",
            "--data",
            synthetic_root,
            "--epochs",
            "1",
        ]
        + ["--batch-size", "8", "--steps-per-epoch", "2", "--out", str(out), "--seed", "3"]
        + ["--dirs", impulse_dir, "--verbose", "0"]
    )
    assert code == 0
    assert f"model saved to {out / 'model.keras'}" in capsys.readouterr().out
    # Other settings in the same run directory are refused, naming the difference.
    with pytest.raises(ValueError, match="seed: run has 3, now 4"):
        train(tiny_model, data_dir=synthetic_root, split=100, epochs=1, batch_size=8, steps_per_epoch=2,
              out_dir=str(out), seed=4, dirs_dir=impulse_dir, verbose=0)  # fmt: skip
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(tiny_model, data_dir=synthetic_root, split=100, epochs=1, batch_size=8, steps_per_epoch=2,
              out_dir=str(out), seed=3, dirs_dir=impulse_dir, verbose=0, resume=False)  # fmt: skip


def test_augmentation_choices(synthetic_root, capsys):
    from keras_asc.training.train import _resolve_augmentations

    recipe = get_recipe("cp_resnet59")
    waveform, spectrogram, described = _resolve_augmentations(recipe, [], None, seed=0)
    assert "device impulse response (DIR) augmentation skipped" in capsys.readouterr().err
    assert [type(a).__name__ for a in waveform] == ["TimeRoll"]
    assert [(layer.alpha, layer.p) for layer in (make() for make in spectrogram)] == [(0.4, 0.8)]
    assert [d["name"] for d in described] == ["time_roll", "freq_mixstyle"]
    with pytest.raises(ValueError, match="Unknown augmentation 'mixup'. Known augmentations: "):
        _resolve_augmentations(recipe, ["mixup"], None, seed=0)
    with pytest.raises(ValueError, match="needs a folder of impulse-response WAV files"):
        _resolve_augmentations(
            get_recipe("dcase24_baseline"), ["device_impulse_response"], None, seed=0
        )
    with pytest.raises(ValueError, match="Unknown model 'nope'"):
        train("nope", data_dir=synthetic_root)
    with pytest.raises(ValueError, match="split='test' is the evaluation split"):
        train("moflenet57", data_dir=synthetic_root, split="test")


def test_cli_names_known_models(synthetic_root, capsys):
    from keras_asc.cli import main

    assert main(["train", "--model", "nope", "--data", synthetic_root]) == 2
    assert "Known models: " in capsys.readouterr().err
    assert main(["train", "--data", synthetic_root, "--augment", "mixup"]) == 2
    error = capsys.readouterr().err
    assert (
        "Unknown augmentation 'mixup'. Known augmentations: device_impulse_response, freq_mixstyle"
        in error
    )
    assert "time_roll" in error


def test_distribution_needs_the_right_backend(synthetic_root):
    backend = keras.backend.backend()
    wrong = "data_parallel" if backend == "tensorflow" else "mirrored"
    with pytest.raises(ValueError, match="needs the (JAX|TensorFlow) backend"):
        train("moflenet57", data_dir=synthetic_root, distribution=wrong)
    with pytest.raises(ValueError, match="distribution must be None or one of"):
        train("moflenet57", data_dir=synthetic_root, distribution="horovod")


# --- subprocess runs: kill and resume, several devices ---------------------------------------

RUN_SOURCE = PLUGIN_SOURCE + textwrap.dedent(
    """
    import json, os, signal, sys
    import keras
    from keras_asc.training import train

    options = json.loads(sys.argv[1])
    kill_at = options.pop("kill_at", None)

    class Kill(keras.callbacks.Callback):
        # A hard kill (no cleanup) at the end of batch `kill_at[1]` of epoch `kill_at[0]`.
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if [self.epoch, batch] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    result = train(callbacks=[Kill()] if kill_at else None, **options)
    print("RESULT", json.dumps({
        "epochs": result.history["epoch"],
        "iterations": int(keras.ops.convert_to_numpy(result.training_model.optimizer.iterations)),
    }))
    """
)


def _run(options, env=None, timeout=600):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    completed = subprocess.run(
        [sys.executable, "-c", RUN_SOURCE, json.dumps(options)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
    )
    results = [line[7:] for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    return completed, (json.loads(results[0]) if results else None)


@pytest.mark.slow
def test_resume_after_a_kill_mid_epoch(synthetic_root, tmp_path):
    out = tmp_path / "run"
    options = {
        "model": "tiny_mofle",
        "data_dir": synthetic_root,
        "split": 100,
        "epochs": 3,
        "batch_size": 8,
        "steps_per_epoch": 4,
        "backup_every_steps": 2,
        "out_dir": str(out),
        "verbose": 0,
        "jit_compile": _fast_compile(),
    }
    # Backups: after batch 1 of epoch 0, at the end of epoch 0, after batch 1 of epoch 1.
    killed, _ = _run({**options, "kill_at": [1, 2]})
    assert killed.returncode == -9, killed.stderr[-3000:]
    # The last backup (after batch 1 of epoch 1) says to redo epoch 1; its weights file is the only one.
    state = json.loads((out / "backup" / "backup.json").read_text())
    assert state["epoch"] == 1 and state["backup"] == 4
    assert sorted(os.listdir(out / "backup")) == sorted(["backup.json", state["weights"]])
    assert [row["epoch"] for row in _read_csv(out / "log.csv")] == ["0"]
    assert not (out / "model.keras").exists()

    resumed, result = _run(options)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert result["epochs"] == [0, 1, 2]
    # The optimiser step is realigned with the restored epoch: 3 epochs x 4 steps.
    assert result["iterations"] == 12
    assert [row["epoch"] for row in _read_csv(out / "log.csv")] == ["0", "1", "2"]
    assert len(read_history(str(out / "log.csv"))["loss"]) == 3
    assert (out / "model.keras").exists() and not (out / "backup").exists()


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_same_seed_gives_identical_weights(synthetic_root, impulse_dir, tiny_model, tmp_path):
    def run(seed, name, **kwargs):
        return train(
            tiny_model,
            data_dir=synthetic_root,
            split=100,
            epochs=1,
            batch_size=8,
            steps_per_epoch=3,
            out_dir=str(tmp_path / name),
            seed=seed,
            dirs_dir=impulse_dir,
            verbose=0,
            jit_compile=False,
            **kwargs,
        )

    def weights(result):
        return [np.array(w) for w in result.model.get_weights()]

    first, second = weights(run(7, "a")), weights(run(7, "b"))
    assert len(first) == len(second) > 10
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    # Another seed (and, on the way, validation on the test split after each epoch).
    other = run(8, "c", validation_split="test")
    assert any(not np.array_equal(a, c) for a, c in zip(first, weights(other), strict=True))
    assert 0.0 <= other.history["val_accuracy"][0] <= 1.0 and np.isfinite(
        other.history["val_loss"][0]
    )
    best = json.loads((tmp_path / "c" / "checkpoints" / "best.json").read_text())
    assert best["monitor"] == "val_accuracy" and best["value"] == other.history["val_accuracy"][0]


MIRRORED_PRELUDE = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_mirrored_strategy_on_two_logical_cpus(synthetic_root, tmp_path):
    global RUN_SOURCE
    source = MIRRORED_PRELUDE + RUN_SOURCE
    options = {
        "model": "tiny_mofle",
        "data_dir": synthetic_root,
        "split": 100,
        "epochs": 1,
        "batch_size": 8,
        "steps_per_epoch": 2,
        "out_dir": str(tmp_path / "run"),
        "verbose": 0,
        "jit_compile": False,
        "distribution": "mirrored",
    }
    completed = subprocess.run(
        [sys.executable, "-c", source, json.dumps(options)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"},
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    config = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert (config["distribution"], config["replicas"]) == ("mirrored", 2)
    assert '"iterations": 2' in completed.stdout


@pytest.mark.slow
def test_jax_data_parallel_on_two_host_devices(synthetic_root, tmp_path):
    pytest.importorskip("jax")
    options = {
        "model": "tiny_mofle",
        "data_dir": synthetic_root,
        "split": 100,
        "epochs": 1,
        "batch_size": 8,
        "steps_per_epoch": 2,
        "out_dir": str(tmp_path / "run"),
        "verbose": 0,
        "distribution": "data_parallel",
    }
    completed, result = _run(
        options,
        env={"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    config = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert (config["backend"], config["distribution"], config["replicas"]) == (
        "jax",
        "data_parallel",
        2,
    )
    assert result["iterations"] == 2
