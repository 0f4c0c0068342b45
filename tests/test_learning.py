"""End to end: ``keras-asc demo`` with its default settings trains MofleNet57 and CP-ResNet59
on synthetic TAU22-layout data, ensembles them and evaluates: both models learn well above
chance (10 %), MofleNet57 ends within a few points of CP-ResNet59, and the v2 ensemble beats
both, as the method does on real recordings."""

import json

import pytest

from keras_asc.cli import main
from keras_asc.commands import demo as demo_command
from keras_asc.training import demo

# The demo's own defaults: the order of the three models is the claim under test.
TEST_CLIPS_PER_CLASS = demo.DEFAULT_TEST_CLIPS_PER_CLASS
# "A few points": the largest gap in macro accuracy between the two members.
MEMBER_GAP = 0.06


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    code = main(
        [
            "demo",
            "--out", str(out),
            "--verbose", "0",
        ]
    )  # fmt: skip
    assert code == 0
    return out


def metrics(demo_dir, run):
    return json.loads((demo_dir / "runs" / run / "eval-test" / "metrics.json").read_text())


def test_the_command_shows_the_demo_defaults():
    # commands/demo.py repeats them so that --help imports no Keras.
    for name in (
        "DEFAULT_EPOCHS",
        "DEFAULT_CLIPS_PER_CLASS",
        "DEFAULT_TEST_CLIPS_PER_CLASS",
        "DEFAULT_BATCH_SIZE",
        "MOFLENET_EPOCH_FACTOR",
        "MOFLENET_LEARNING_RATE_FACTOR",
    ):
        assert getattr(demo_command, name) == getattr(demo, name), name
    assert demo.model_epochs_for(3) == {
        "moflenet57": 3 * demo.MOFLENET_EPOCH_FACTOR,
        "cp_resnet59": 3,
    }
    # MofleNet57's recipe peaks at 9e-4; CP-ResNet59 keeps its recipe.
    peak = demo.model_overrides()["moflenet57"]["schedule.max_learning_rate"]
    assert peak == pytest.approx(9e-4 * demo.MOFLENET_LEARNING_RATE_FACTOR)
    assert demo.model_overrides()["cp_resnet59"] == {}


@pytest.mark.slow
def test_models_learn_well_above_chance(demo_dir):
    results = {run: metrics(demo_dir, run) for run in ("moflenet57", "cp_resnet59", "ensemble_v2")}
    for run, result in results.items():
        assert result["num_clips"] == 10 * TEST_CLIPS_PER_CLASS
        # Chance is 0.1 for ten balanced classes.
        assert result["macro_accuracy"] > 0.5, (run, result["macro_accuracy"])
        # Uniform guessing has log loss ln(10) = 2.303.
        assert result["log_loss"] < 1.5, (run, result["log_loss"])


@pytest.mark.slow
def test_moflenet_ends_within_a_few_points_of_cp_resnet(demo_dir):
    mofle = metrics(demo_dir, "moflenet57")["macro_accuracy"]
    cp_resnet = metrics(demo_dir, "cp_resnet59")["macro_accuracy"]
    assert abs(mofle - cp_resnet) < MEMBER_GAP, (mofle, cp_resnet)


@pytest.mark.slow
def test_the_ensemble_beats_both_members(demo_dir):
    members = {
        run: metrics(demo_dir, run)["macro_accuracy"] for run in ("moflenet57", "cp_resnet59")
    }
    ensemble = metrics(demo_dir, "ensemble_v2")["macro_accuracy"]
    assert ensemble > max(members.values()), (ensemble, members)


@pytest.mark.slow
def test_demo_leaves_a_complete_workspace(demo_dir):
    config = json.loads((demo_dir / "runs" / "ensemble_v2" / "run_config.json").read_text())
    assert {m["model"]: m["weight"] for m in config["members"]} == {
        "cp_resnet59": 0.6,
        "moflenet57": 0.4,
    }
    for run in ("moflenet57", "cp_resnet59", "ensemble_v2"):
        assert (demo_dir / "runs" / run / "model.keras").is_file()
        assert (demo_dir / "runs" / run / "eval-test" / "metrics.txt").is_file()
    from keras_asc.training import plots

    if plots.matplotlib_available():
        assert (demo_dir / "model_comparison.png").is_file()
        assert (demo_dir / "runs" / "ensemble_v2" / "eval-test" / "device_accuracy.png").is_file()
