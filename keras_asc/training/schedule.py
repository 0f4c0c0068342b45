"""The four-phase learning-rate schedule of the MofleNet report (warm-up, constant, linear
decrease, fine-tune), per optimiser step or per epoch, and the cosine schedule of the DCASE 2024
baseline.

The factor that multiplies the peak learning rate at (0-based, possibly fractional) epoch ``e``:

* warm-up, ``e < W``: ``exp(-5 (1 - t / W)^2)`` with ``t = clip(e, 0.5, W)``;
* constant, ``W <= e <= S``: 1;
* linear decrease, ``S < e < S + L``: from 1 down to ``last_factor``;
* fine-tune, ``e >= S + L``: ``last_factor``;

with ``W = warmup_epochs``, ``S = warmup_epochs + constant_epochs`` and ``L = decay_epochs``.

Example:
    >>> schedule = FourPhaseSchedule.from_preset("moflenet57", steps_per_epoch=137)
    >>> optimizer = keras.optimizers.Adam(learning_rate=schedule)
    >>> float(four_phase_factor(50, 14, 36, 84))
    1.0

Reference:
    "Low complexity acoustic scene classification with MofleNet", DCASE 2024 Task 1 technical
    report, Table 3; the exponential warm-up follows the CP-JKU DCASE systems.
"""

import dataclasses
import math
import numbers

import keras
import numpy as np
from keras import ops

# The exponent of the warm-up curve and its earliest point (half an epoch) are part of the
# recipe, not tunables: at e = 0 the factor is exp(-5 (1 - 0.5 / W)^2), not exp(-5).
_WARMUP_SHARPNESS = 5.0
_WARMUP_START = 0.5


def _check_epochs(name, value, positive=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of epochs. Received: {name}={value!r}")
    if value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be {bound}. Received: {name}={value!r}")
    return float(value)


def _check_last_factor(last_factor):
    if (
        isinstance(last_factor, bool)
        or not isinstance(last_factor, numbers.Real)
        or not 0.0 <= last_factor <= 1.0
    ):
        raise ValueError(
            f"last_factor must be a number in [0, 1] (a fraction of the peak learning rate). "
            f"Received: last_factor={last_factor!r}"
        )
    return float(last_factor)


def _check_learning_rate(max_learning_rate):
    if (
        isinstance(max_learning_rate, bool)
        or not isinstance(max_learning_rate, numbers.Real)
        or not 0.0 < max_learning_rate < math.inf
    ):
        raise ValueError(
            f"max_learning_rate must be a number > 0. Received: max_learning_rate={max_learning_rate!r}"
        )
    return float(max_learning_rate)


def four_phase_factor(epoch, warmup_epochs, constant_epochs, decay_epochs, last_factor=0.005):
    """The four-phase learning-rate factor at ``epoch``, in NumPy (for tests and plots).

    Args:
        epoch: 0-based epoch, a number or an array; fractional epochs are allowed.
        warmup_epochs: length ``W`` of the exponential warm-up (0: no warm-up).
        constant_epochs: epochs at the peak after the warm-up; the decrease starts at
            ``S = warmup_epochs + constant_epochs``.
        decay_epochs: length ``L`` of the linear decrease from 1 to ``last_factor``
            (0: a step down to ``last_factor`` at ``S``).
        last_factor: the factor after the decrease (fine-tune phase).

    Returns:
        A float64 array of the same shape as ``epoch`` (0-d for a number).

    Example:
        >>> four_phase_factor([0, 14, 50, 92, 134, 149], 14, 36, 84)
        array([0.00956892, 1.        , 1.        , 0.5025    , 0.005     , 0.005     ])
    """
    warmup = _check_epochs("warmup_epochs", warmup_epochs)
    start = warmup + _check_epochs("constant_epochs", constant_epochs)
    decay = _check_epochs("decay_epochs", decay_epochs)
    last = _check_last_factor(last_factor)
    epoch = np.asarray(epoch, dtype="float64")
    if warmup > 0:
        t = np.clip(epoch, _WARMUP_START, warmup)
        warm = np.exp(-_WARMUP_SHARPNESS * (1.0 - t / warmup) ** 2)
    else:
        warm = np.ones_like(epoch)
    if decay > 0:
        progress = np.clip((epoch - start) / decay, 0.0, 1.0)
        ramp = 1.0 - (1.0 - last) * progress
    else:
        ramp = np.where(epoch < start, 1.0, last)
    return np.where(epoch < warmup, warm, ramp)


@keras.saving.register_keras_serializable(package="keras_asc")
class FourPhaseSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Four-phase learning rate, evaluated at every optimiser step.

    The epoch is ``step / steps_per_epoch`` (fractional), so the warm-up and the decrease are
    smooth within an epoch; at whole epochs the value equals the per-epoch form
    (:class:`FourPhaseScheduler`, :func:`four_phase_factor`). Uses ``keras.ops`` only, so it
    runs on every backend.

    Args:
        max_learning_rate: the peak learning rate (report Table 3: 0.0009 MofleNet57,
            0.001 CP-ResNet59).
        steps_per_epoch: optimiser steps in one epoch (batches per epoch).
        warmup_epochs: length of the exponential warm-up (14 / 15).
        constant_epochs: epochs at the peak after the warm-up (36 / 35).
        decay_epochs: length of the linear decrease (84 / 85).
        last_factor: the final factor, a fraction of the peak (0.005).
        name: name of the schedule.

    Example:
        >>> schedule = FourPhaseSchedule(0.0009, steps_per_epoch=100, warmup_epochs=14,
        ...                              constant_epochs=36, decay_epochs=84)
        >>> round(float(schedule(5000)), 7)  # epoch 50: still the peak
        0.0009

    Reference:
        "Low complexity acoustic scene classification with MofleNet", DCASE 2024 Task 1
        technical report, Table 3.
    """

    def __init__(
        self,
        max_learning_rate,
        steps_per_epoch,
        warmup_epochs,
        constant_epochs,
        decay_epochs,
        last_factor=0.005,
        name="four_phase",
    ):
        super().__init__()
        self.max_learning_rate = _check_learning_rate(max_learning_rate)
        if (
            isinstance(steps_per_epoch, bool)
            or not isinstance(steps_per_epoch, numbers.Integral)
            or steps_per_epoch < 1
        ):
            raise ValueError(
                f"steps_per_epoch must be an integer >= 1. Received: steps_per_epoch={steps_per_epoch!r}"
            )
        self.steps_per_epoch = int(steps_per_epoch)
        self.warmup_epochs = _check_epochs("warmup_epochs", warmup_epochs)
        self.constant_epochs = _check_epochs("constant_epochs", constant_epochs)
        self.decay_epochs = _check_epochs("decay_epochs", decay_epochs)
        self.last_factor = _check_last_factor(last_factor)
        self.name = name

    @classmethod
    def from_preset(cls, name, steps_per_epoch):
        """The schedule of a ``SCHEDULE_PRESETS`` entry (report Table 3)."""
        return get_schedule_preset(name).build(steps_per_epoch)

    def factor(self, epoch):
        """The factor at a (fractional) epoch tensor, in ``keras.ops``."""
        epoch = ops.cast(epoch, "float32")
        warmup = self.warmup_epochs
        start = warmup + self.constant_epochs
        last = self.last_factor
        if warmup > 0:
            t = ops.clip(epoch, _WARMUP_START, warmup)
            warm = ops.exp(-_WARMUP_SHARPNESS * ops.square(1.0 - t / warmup))
        else:
            warm = ops.ones_like(epoch)
        if self.decay_epochs > 0:
            progress = ops.clip((epoch - start) / self.decay_epochs, 0.0, 1.0)
            ramp = 1.0 - (1.0 - last) * progress
        else:
            ramp = ops.where(epoch < start, 1.0, last)
        return ops.where(epoch < warmup, warm, ramp)

    def __call__(self, step):
        epoch = ops.cast(step, "float32") / float(self.steps_per_epoch)
        return self.max_learning_rate * self.factor(epoch)

    def get_config(self):
        return {
            "max_learning_rate": self.max_learning_rate,
            "steps_per_epoch": self.steps_per_epoch,
            "warmup_epochs": self.warmup_epochs,
            "constant_epochs": self.constant_epochs,
            "decay_epochs": self.decay_epochs,
            "last_factor": self.last_factor,
            "name": self.name,
        }


@keras.saving.register_keras_serializable(package="keras_asc")
class FourPhaseScheduler(keras.callbacks.LearningRateScheduler):
    """The four-phase schedule as a per-epoch callback (the learning rate changes only at
    epoch starts). Use it with an optimiser whose ``learning_rate`` is a number.

    Args:
        max_learning_rate: the peak learning rate.
        warmup_epochs: length of the exponential warm-up.
        constant_epochs: epochs at the peak after the warm-up.
        decay_epochs: length of the linear decrease.
        last_factor: the final factor, a fraction of the peak.
        verbose: 1 prints the learning rate at each epoch start.

    Example:
        >>> model.compile(keras.optimizers.Adam(0.0009), ...)
        >>> model.fit(data, epochs=150, callbacks=[FourPhaseScheduler(0.0009, 14, 36, 84)])

    Reference:
        "Low complexity acoustic scene classification with MofleNet", DCASE 2024 Task 1
        technical report, Table 3.
    """

    def __init__(
        self,
        max_learning_rate,
        warmup_epochs,
        constant_epochs,
        decay_epochs,
        last_factor=0.005,
        verbose=0,
    ):
        self.max_learning_rate = _check_learning_rate(max_learning_rate)
        self.warmup_epochs = _check_epochs("warmup_epochs", warmup_epochs)
        self.constant_epochs = _check_epochs("constant_epochs", constant_epochs)
        self.decay_epochs = _check_epochs("decay_epochs", decay_epochs)
        self.last_factor = _check_last_factor(last_factor)
        super().__init__(schedule=self.learning_rate_at, verbose=verbose)

    def learning_rate_at(self, epoch, learning_rate=None):
        """The learning rate for 0-based ``epoch`` (``learning_rate``, the current one, is
        ignored: the schedule depends on the epoch only)."""
        factor = four_phase_factor(
            epoch, self.warmup_epochs, self.constant_epochs, self.decay_epochs, self.last_factor
        )
        return self.max_learning_rate * float(factor)

    def get_config(self):
        return {
            "max_learning_rate": self.max_learning_rate,
            "warmup_epochs": self.warmup_epochs,
            "constant_epochs": self.constant_epochs,
            "decay_epochs": self.decay_epochs,
            "last_factor": self.last_factor,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@dataclasses.dataclass(frozen=True)
class FourPhaseSettings:
    """One four-phase schedule as plain data: a column of the report's Table 3.

    Args:
        warmup_epochs: phase 1, exponential warm-up.
        constant_epochs: phase 2, constant at the peak.
        decay_epochs: phase 3, linear decrease to ``last_factor``.
        finetune_epochs: phase 4, constant at ``last_factor``.
        max_learning_rate: the peak learning rate.
        last_factor: the final factor, a fraction of the peak.

    Example:
        >>> settings = SCHEDULE_PRESETS["moflenet57"]
        >>> settings.epochs, settings.build(steps_per_epoch=137)
        (150, <FourPhaseSchedule ...>)
    """

    warmup_epochs: float
    constant_epochs: float
    decay_epochs: float
    finetune_epochs: float
    max_learning_rate: float
    last_factor: float = 0.005

    kind = "four_phase"

    def __post_init__(self):
        for name in ("warmup_epochs", "constant_epochs", "decay_epochs", "finetune_epochs"):
            _check_epochs(name, getattr(self, name))
        _check_learning_rate(self.max_learning_rate)
        _check_last_factor(self.last_factor)
        if self.epochs <= 0:
            raise ValueError(f"The four phases must last at least one epoch. Received: {self}")

    @property
    def epochs(self):
        """Length of the whole schedule (the sum of the four phases)."""
        total = self.warmup_epochs + self.constant_epochs + self.decay_epochs + self.finetune_epochs
        # Scaled phases add up to a whole number only up to rounding.
        return round(total) if abs(total - round(total)) < 1e-9 else total

    def factor(self, epoch):
        """NumPy factor at ``epoch``; see :func:`four_phase_factor`."""
        return four_phase_factor(
            epoch, self.warmup_epochs, self.constant_epochs, self.decay_epochs, self.last_factor
        )

    def scaled(self, epochs):
        """The same schedule stretched or squeezed to ``epochs`` (every phase scaled alike)."""
        _check_epochs("epochs", epochs, positive=True)
        ratio = epochs / self.epochs
        return dataclasses.replace(
            self,
            warmup_epochs=self.warmup_epochs * ratio,
            constant_epochs=self.constant_epochs * ratio,
            decay_epochs=self.decay_epochs * ratio,
            finetune_epochs=self.finetune_epochs * ratio,
        )

    def build(self, steps_per_epoch):
        """A per-step :class:`FourPhaseSchedule`."""
        return FourPhaseSchedule(
            self.max_learning_rate,
            steps_per_epoch=steps_per_epoch,
            warmup_epochs=self.warmup_epochs,
            constant_epochs=self.constant_epochs,
            decay_epochs=self.decay_epochs,
            last_factor=self.last_factor,
        )

    def callback(self, verbose=0):
        """A per-epoch :class:`FourPhaseScheduler`."""
        return FourPhaseScheduler(
            self.max_learning_rate,
            self.warmup_epochs,
            self.constant_epochs,
            self.decay_epochs,
            self.last_factor,
            verbose=verbose,
        )

    def to_dict(self):
        return {"kind": self.kind, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class WarmupCosineSettings:
    """Linear warm-up to the peak, then cosine decay to 0 at the last epoch (the DCASE 2024
    Task 1 baseline's schedule), built on ``keras.optimizers.schedules.CosineDecay``.

    Args:
        epochs: length of the whole schedule.
        warmup_epochs: length of the linear warm-up from 0.
        max_learning_rate: the peak learning rate.

    Example:
        >>> WarmupCosineSettings(150, 3.66, 0.005).build(steps_per_epoch=547)
    """

    epochs: float
    warmup_epochs: float
    max_learning_rate: float

    kind = "warmup_cosine"

    def __post_init__(self):
        _check_epochs("epochs", self.epochs, positive=True)
        _check_epochs("warmup_epochs", self.warmup_epochs)
        _check_learning_rate(self.max_learning_rate)
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs must be shorter than epochs. Received: warmup_epochs="
                f"{self.warmup_epochs}, epochs={self.epochs}"
            )

    def scaled(self, epochs):
        """The same schedule over ``epochs``; the warm-up keeps its share of the run."""
        _check_epochs("epochs", epochs, positive=True)
        return dataclasses.replace(
            self, epochs=epochs, warmup_epochs=self.warmup_epochs * epochs / self.epochs
        )

    def build(self, steps_per_epoch):
        warmup_steps = round(self.warmup_epochs * steps_per_epoch)
        total_steps = max(round(self.epochs * steps_per_epoch), warmup_steps + 1)
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0,
            decay_steps=total_steps - warmup_steps,
            alpha=0.0,
            warmup_target=self.max_learning_rate,
            warmup_steps=warmup_steps,
        )

    def to_dict(self):
        return {"kind": self.kind, **dataclasses.asdict(self)}


# Report Table 3: phases 1-4 in epochs, peak learning rate, final factor.
SCHEDULE_PRESETS = {
    "moflenet57": FourPhaseSettings(
        warmup_epochs=14,
        constant_epochs=36,
        decay_epochs=84,
        finetune_epochs=16,
        max_learning_rate=0.0009,
        last_factor=0.005,
    ),
    "cp_resnet59": FourPhaseSettings(
        warmup_epochs=15,
        constant_epochs=35,
        decay_epochs=85,
        finetune_epochs=15,
        max_learning_rate=0.001,
        last_factor=0.005,
    ),
}


def get_schedule_preset(name):
    """The ``FourPhaseSettings`` of a Table 3 column by model name."""
    if name not in SCHEDULE_PRESETS:
        raise ValueError(
            f"Unknown schedule preset {name!r}. Known presets: {', '.join(sorted(SCHEDULE_PRESETS))}."
        )
    return SCHEDULE_PRESETS[name]


def schedule_from_dict(config):
    """Rebuild ``FourPhaseSettings`` or ``WarmupCosineSettings`` from ``to_dict()`` output."""
    config = dict(config)
    kind = config.pop("kind", None)
    kinds = {
        FourPhaseSettings.kind: FourPhaseSettings,
        WarmupCosineSettings.kind: WarmupCosineSettings,
    }
    if kind not in kinds:
        raise ValueError(f"Unknown schedule kind {kind!r}. Known kinds: {', '.join(kinds)}.")
    return kinds[kind](**config)
