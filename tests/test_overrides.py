"""Recipe overrides: ``Recipe.with_settings``, ``train(..., overrides=...)`` and
``keras-asc train --set KEY=VALUE``: applied, recorded in run_config.json, applied again when a
run is continued, and refused with a one-line message for an unknown key or a wrong type."""

import json

import keras
import pytest

from keras_asc.augment import FreqMixStyle
from keras_asc.cli import main
from keras_asc.commands.train import parse_overrides
from keras_asc.training import get_recipe, train


def test_with_settings_changes_the_named_settings_only():
    recipe = get_recipe("moflenet57")
    changed = recipe.with_settings(
        {
            "epochs": 10,
            "schedule.max_learning_rate": 0.002,
            "device_impulse_response.p": 0.5,
            "freq_mixstyle.alpha": 1,  # an integer for a real setting is taken as a float
            "frontend.max_frequency_jitter": [15500, 16000],
            "kd_lambda": 0.1,
            "optimizer": "adamw",
        }
    )
    assert changed.epochs == 10 and changed.schedule.warmup_epochs == pytest.approx(14 / 15)
    assert changed.schedule.max_learning_rate == 0.002  # set after the scaling
    assert changed.augmentation_config("device_impulse_response") == {"p": 0.5}
    assert changed.augmentation_config("freq_mixstyle") == {"alpha": 1.0, "p": 0.4}
    assert isinstance(changed.augmentation_config("freq_mixstyle")["alpha"], float)
    assert changed.augmentation_config("time_roll") == recipe.augmentation_config("time_roll")
    assert changed.frontend == {
        "freq_mask_bins": 48,
        "max_frequency_jitter": (15500, 16000),
        "resampler": "soxr_hq",
    }
    # The resampler is a front-end setting like the others: it changes the cache key too.
    polyphase = recipe.with_settings({"frontend.resampler": "polyphase"})
    assert polyphase.resampler == "polyphase" and recipe.resampler == "soxr_hq"
    assert (changed.kd_lambda, changed.kd_temperature, changed.optimizer) == (0.1, 2.0, "adamw")
    assert changed.batch_size == recipe.batch_size and changed.weight_decay == recipe.weight_decay
    # An argument the recipe leaves at its default can be set, and then appears in its config.
    rolled = recipe.with_settings({"time_roll.p": 0.25})
    assert rolled.augmentation_config("time_roll") == {"max_shift_seconds": 0.125, "p": 0.25}
    assert recipe.with_settings({}) == recipe


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"dir_p": 0.5}, r"Unknown recipe setting 'dir_p' for the moflenet57 recipe\. Valid keys: "
                         r"batch_size, device_impulse_response\.devices, device_impulse_response\.p"),
        ({"freq_mixstyle.beta": 0.5}, r"Unknown recipe setting 'freq_mixstyle\.beta'"),
        ({"schedule.seed": 1}, r"Unknown recipe setting 'schedule\.seed'"),
        ({"batch_size": 2.5}, r"'batch_size' takes an integer \(now 256\); received 2\.5 \(float\)"),
        ({"batch_size": True}, r"'batch_size' takes an integer"),
        ({"freq_mixstyle.alpha": "0.4"}, r"'freq_mixstyle\.alpha' takes a number .* \(str\)"),
        ({"optimizer": 1}, r"'optimizer' takes a string"),
        ({"frontend.max_frequency_jitter": 16000.0}, r"'frontend\.max_frequency_jitter' takes a list"),
        ({"kd_temperature": 0.0}, r"kd_temperature must be > 0"),
        ({"optimizer": "sgd"}, r"optimizer must be one of"),
    ],
)  # fmt: skip
def test_wrong_keys_and_types_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        get_recipe("moflenet57").with_settings(overrides)


def test_parse_overrides():
    assert parse_overrides(
        ["freq_mixstyle.alpha=0.4", "optimizer=adamw", "frontend.max_frequency_jitter=null",
         "device_impulse_response.devices=('a', 'b')", "batch_size=32"]
    ) == {
        "freq_mixstyle.alpha": 0.4,
        "optimizer": "adamw",
        "frontend.max_frequency_jitter": None,
        "device_impulse_response.devices": ("a", "b"),
        "batch_size": 32,
    }  # fmt: skip
    with pytest.raises(ValueError, match="--set expects KEY=VALUE"):
        parse_overrides(["alpha"])
    with pytest.raises(ValueError, match="gives 'p' twice"):
        parse_overrides(["p=1", "p=2"])


@pytest.mark.parametrize(
    "argument,message",
    [
        ("nope=1", "Unknown recipe setting 'nope' for the tiny_mofle recipe. Valid keys: "),
        ("batch_size=2.5", "Recipe setting 'batch_size' takes an integer"),
        ("alpha", "--set expects KEY=VALUE"),
    ],
)
def test_cli_refuses_bad_settings_in_one_line(
    tiny_model, synthetic_root, tmp_path, capsys, argument, message
):
    out = tmp_path / "run"
    code = main(["train", "--model", tiny_model, "--data", synthetic_root, "--out", str(out),
                 "--set", argument])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err
    assert not out.exists()  # refused before any work


def _fast_compile():
    return False if keras.backend.backend() == "tensorflow" else "auto"


def test_train_applies_records_and_resumes_with_overrides(tiny_model, synthetic_root, tmp_path):
    out = tmp_path / "run"
    overrides = {
        "freq_mixstyle.alpha": 0.5,
        "freq_mixstyle.p": 1.0,
        "schedule.max_learning_rate": 0.002,
        "schedule.last_factor": 0.5,
    }
    kwargs = dict(
        data_dir=synthetic_root,
        split=100,
        epochs=1,
        batch_size=8,
        steps_per_epoch=2,
        out_dir=str(out),
        verbose=0,
        tensorboard=False,
        jit_compile=_fast_compile(),
    )
    result = train(tiny_model, overrides=overrides, **kwargs)
    mixstyle = [layer for layer in result.training_model.layers if isinstance(layer, FreqMixStyle)]
    assert [(layer.alpha, layer.p) for layer in mixstyle] == [(0.5, 1.0)]
    # Two steps make the whole one-epoch schedule: it ends at the new peak x the new factor.
    assert result.history["learning_rate"][0] == pytest.approx(0.002 * 0.5, rel=1e-5)
    config = json.loads((out / "run_config.json").read_text())
    assert config["overrides"] == overrides
    assert config["recipe"]["schedule"]["max_learning_rate"] == 0.002
    described = {item["name"]: item["config"] for item in config["augmentations"]}
    assert described["freq_mixstyle"]["alpha"] == 0.5 and described["freq_mixstyle"]["p"] == 1.0
    assert "teachers" not in config and "distillation" not in config

    # Continued without overrides, the run applies the ones it recorded.
    again = train(tiny_model, **kwargs)
    assert again.recipe == result.recipe and again.recipe.schedule.max_learning_rate == 0.002
    # Other overrides are another run.
    with pytest.raises(ValueError, match=r"Cannot resume .*overrides: run has"):
        train(tiny_model, overrides={"freq_mixstyle.alpha": 0.1}, **kwargs)
