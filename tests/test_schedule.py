"""The four-phase learning-rate schedule (SPEC section 7, report Table 3) on every backend."""

import json
import math

import keras
import numpy as np
import pytest

from keras_asc.training.schedule import (
    SCHEDULE_PRESETS,
    FourPhaseSchedule,
    FourPhaseScheduler,
    FourPhaseSettings,
    WarmupCosineSettings,
    four_phase_factor,
    get_schedule_preset,
    schedule_from_dict,
)

# MofleNet57 (Table 3): warm-up 14, constant to epoch 50, linear over 84 epochs, final 0.005.
W, S, L, LAST = 14, 50, 84, 0.005


def spec_factor(epoch):
    """SPEC section 7 written out independently of the library, for whole epochs."""
    if epoch < W:
        t = min(max(epoch, 0.5), W)
        return math.exp(-5.0 * (1.0 - t / W) ** 2)
    if epoch <= S:
        return 1.0
    if epoch < S + L:
        return 1.0 - (1.0 - LAST) * (epoch - S) / L
    return LAST


# Phase boundaries and a few points inside each phase.
EPOCHS = [0, 1, 7, 13, 14, 15, 30, 49, 50, 51, 92, 133, 134, 135, 149]


def test_factor_matches_spec_at_phase_boundaries():
    got = four_phase_factor(EPOCHS, 14, 36, 84, 0.005)
    np.testing.assert_allclose(got, [spec_factor(e) for e in EPOCHS], rtol=1e-12)
    # The same numbers written as literals, so the test fails if both copies drift together.
    assert got[0] == pytest.approx(math.exp(-5 * (1 - 0.5 / 14) ** 2))  # 0.0095689
    assert got[0] == pytest.approx(0.00956892, abs=1e-8)
    assert got[2] == pytest.approx(math.exp(-1.25))  # half-way through the warm-up
    assert got[4] == 1.0 and got[8] == 1.0  # epoch 14 (peak) ... epoch 50 (still peak)
    assert got[9] == pytest.approx(1 - 0.995 / 84)
    assert got[10] == pytest.approx(0.5025)  # half-way down
    assert got[12] == pytest.approx(0.005) and got[-1] == pytest.approx(0.005)


def test_factor_is_monotone_within_phases():
    epochs = np.linspace(0, 150, 3001)
    factor = four_phase_factor(epochs, 14, 36, 84)
    rising = factor[epochs < 14]
    falling = factor[epochs >= 14]
    assert np.all(np.diff(rising) >= 0) and np.all(np.diff(falling) <= 1e-15)
    assert factor.max() == 1.0 and rising.min() == pytest.approx(math.exp(-5 * (1 - 0.5 / 14) ** 2))
    assert falling.min() == pytest.approx(0.005)


@pytest.mark.parametrize("steps_per_epoch", [1, 7, 137])
def test_per_step_schedule_equals_factor_at_whole_epochs(steps_per_epoch):
    schedule = FourPhaseSchedule.from_preset("moflenet57", steps_per_epoch=steps_per_epoch)
    steps = np.array(EPOCHS) * steps_per_epoch
    got = [float(keras.ops.convert_to_numpy(schedule(int(s)))) for s in steps]
    expected = [0.0009 * spec_factor(e) for e in EPOCHS]
    np.testing.assert_allclose(got, expected, rtol=2e-6)


def test_per_step_schedule_is_fractional_within_an_epoch():
    schedule = FourPhaseSchedule(
        1.0, steps_per_epoch=4, warmup_epochs=14, constant_epochs=36, decay_epochs=84
    )
    value = lambda step: float(keras.ops.convert_to_numpy(schedule(step)))  # noqa: E731
    assert value(2) == pytest.approx(spec_factor(0.5), rel=1e-6)  # epoch 0.5: warm-up start
    assert value(1) == pytest.approx(value(0), rel=1e-6)  # t clipped to 0.5 below it
    assert value(30) == pytest.approx(math.exp(-5 * (1 - 7.5 / 14) ** 2), rel=1e-6)
    assert value(4 * 92 + 2) == pytest.approx(1 - 0.995 * 42.5 / 84, rel=1e-6)
    # Traced inside a compiled function on the backend (a Keras variable as the step).
    step = keras.Variable(4 * 92 + 2, dtype="int64", trainable=False)
    assert float(keras.ops.convert_to_numpy(schedule(step))) == pytest.approx(
        value(4 * 92 + 2), rel=1e-6
    )


def test_cp_resnet59_preset_boundaries():
    settings = get_schedule_preset("cp_resnet59")
    assert (
        settings.warmup_epochs,
        settings.constant_epochs,
        settings.decay_epochs,
        settings.finetune_epochs,
    ) == (
        15,
        35,
        85,
        15,
    )
    assert (
        settings.max_learning_rate == 0.001
        and settings.last_factor == 0.005
        and settings.epochs == 150
    )
    factor = settings.factor([0, 15, 50, 135, 149])
    np.testing.assert_allclose(
        factor, [math.exp(-5 * (1 - 0.5 / 15) ** 2), 1, 1, 0.005, 0.005], rtol=1e-12
    )
    mofle = SCHEDULE_PRESETS["moflenet57"]
    assert (mofle.max_learning_rate, mofle.epochs) == (0.0009, 150)


def test_schedule_serialises_and_drives_an_optimizer():
    schedule = FourPhaseSchedule.from_preset("moflenet57", steps_per_epoch=3)
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(schedule)))
    restored = keras.saving.deserialize_keras_object(config)
    assert isinstance(restored, FourPhaseSchedule)
    assert restored.get_config() == schedule.get_config()
    assert (
        FourPhaseSchedule.from_config(schedule.get_config()).get_config() == schedule.get_config()
    )

    optimizer = keras.optimizers.Adam(learning_rate=schedule)
    clone = keras.optimizers.Adam.from_config(
        json.loads(json.dumps(keras.saving.serialize_keras_object(optimizer)))["config"]
    )
    assert clone.get_config()["learning_rate"]["config"] == schedule.get_config()

    # Three optimiser steps (one epoch at 3 steps/epoch) move the learning rate to epoch 1.
    variable = keras.Variable(np.ones(4, dtype="float32"))
    optimizer.build([variable])
    for _ in range(3):
        optimizer.apply_gradients([(keras.ops.ones((4,)), variable)])
    lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    assert lr == pytest.approx(0.0009 * spec_factor(1), rel=1e-5)


def test_per_epoch_callback_sets_the_epoch_learning_rate():
    callback = FourPhaseScheduler(
        0.01, warmup_epochs=2, constant_epochs=1, decay_epochs=2, last_factor=0.1
    )
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.5), loss="mse")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 1), "float32")
    history = model.fit(x, y, epochs=6, batch_size=4, verbose=0, callbacks=[callback])
    expected = [0.01 * float(four_phase_factor(e, 2, 1, 2, 0.1)) for e in range(6)]
    np.testing.assert_allclose(history.history["learning_rate"], expected, rtol=1e-6)
    # Epoch 0: exp(-5 (1 - 0.5 / 2)^2); epochs 2-3 at the peak; epoch 4: half-way down.
    np.testing.assert_allclose(
        expected,
        [0.01 * math.exp(-2.8125), 0.01 * math.exp(-1.25), 0.01, 0.01, 0.0055, 0.001],
        rtol=1e-9,
    )
    restored = FourPhaseScheduler.from_config(json.loads(json.dumps(callback.get_config())))
    assert restored.learning_rate_at(4) == pytest.approx(0.0055)


def test_settings_scale_to_other_lengths_and_round_trip():
    settings = SCHEDULE_PRESETS["moflenet57"].scaled(15)
    assert settings.epochs == pytest.approx(15)
    assert settings.warmup_epochs == pytest.approx(1.4) and settings.decay_epochs == pytest.approx(
        8.4
    )
    np.testing.assert_allclose(
        settings.factor([1.4, 5.0, 9.2, 13.4]), [1, 1, 0.5025, 0.005], rtol=1e-9
    )
    assert schedule_from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    # Scaled phases still add up to a whole number of epochs (an int, as model.fit needs).
    for epochs in (1, 3, 7, 149):
        length = SCHEDULE_PRESETS["cp_resnet59"].scaled(epochs).epochs
        assert length == epochs and isinstance(length, int)
    cosine = WarmupCosineSettings(epochs=10, warmup_epochs=2, max_learning_rate=0.005)
    assert schedule_from_dict(cosine.to_dict()) == cosine
    lr = cosine.build(steps_per_epoch=10)
    value = lambda step: float(keras.ops.convert_to_numpy(lr(step)))  # noqa: E731
    assert value(0) == pytest.approx(0.0) and value(10) == pytest.approx(0.0025)
    assert value(20) == pytest.approx(0.005) and value(60) == pytest.approx(0.0025, rel=1e-5)
    assert value(100) == pytest.approx(0.0, abs=1e-9)


def test_zero_length_phases():
    # No warm-up starts at the peak; no decay steps straight to the final factor.
    np.testing.assert_allclose(four_phase_factor([0, 2, 3, 9], 0, 3, 0, 0.1), [1, 1, 0.1, 0.1])
    schedule = FourPhaseSchedule(
        1.0, 1, warmup_epochs=0, constant_epochs=3, decay_epochs=0, last_factor=0.1
    )
    got = [float(keras.ops.convert_to_numpy(schedule(s))) for s in (0, 2, 3, 9)]
    np.testing.assert_allclose(got, [1, 1, 0.1, 0.1], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"warmup_epochs": -1}, "warmup_epochs must be >= 0"),
        ({"decay_epochs": float("nan")}, "decay_epochs must be a finite number"),
        ({"last_factor": 1.5}, "last_factor must be a number in \\[0, 1\\]"),
        ({"steps_per_epoch": 0}, "steps_per_epoch must be an integer >= 1"),
        ({"max_learning_rate": 0}, "max_learning_rate must be a number > 0"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    arguments = dict(
        max_learning_rate=0.001,
        steps_per_epoch=10,
        warmup_epochs=1,
        constant_epochs=1,
        decay_epochs=1,
    )
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        FourPhaseSchedule(**arguments)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ValueError, match="cp_resnet59, moflenet57"):
        FourPhaseSchedule.from_preset("resnet", steps_per_epoch=1)
    with pytest.raises(ValueError, match="at least one epoch"):
        FourPhaseSettings(0, 0, 0, 0, 0.001)
