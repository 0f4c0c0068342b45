"""Training recipes as data: optimiser, batch size, epochs, learning-rate schedule,
augmentations and front-end augmentation settings per model preset.

This is the one place that holds the report's training numbers; ``keras_asc.train`` and
``keras-asc train`` read them, and a command-line or API override (epochs, batch size, extra
augmentations, any setting by name with ``Recipe.with_settings`` / ``--set KEY=VALUE``) is
applied on top of a recipe, never instead of it.

Example:
    >>> recipe = get_recipe("cp_resnet59")
    >>> recipe.batch_size, recipe.epochs, recipe.schedule.max_learning_rate
    (256, 150, 0.001)
    >>> recipe.augmentation_config("freq_mixstyle")
    {'alpha': 0.4, 'p': 0.8}

Reference:
    "Low complexity acoustic scene classification with MofleNet", DCASE 2024 Task 1 technical
    report (Section 3 and Table 3); the DCASE 2024 Task 1 baseline (CPJKU/dcase2024_task1_baseline)
    for the ``dcase24_baseline`` recipe.
"""

import copy
import dataclasses
import inspect
import numbers

from keras_asc import registry
from keras_asc.data.resampling import DEFAULT_RESAMPLER
from keras_asc.models.presets import MODEL_PRESETS
from keras_asc.training.optimizers import AdamL2
from keras_asc.training.schedule import (
    SCHEDULE_PRESETS,
    FourPhaseSettings,
    WarmupCosineSettings,
    schedule_from_dict,
)

# "adam": torch.optim.Adam with L2 weight decay coupled into the gradient (the CP-JKU reference
# scripts); "adamw": torch.optim.AdamW, decoupled decay (the DCASE 2024 baseline). Both are
# keras_asc.training.optimizers.AdamL2, which computes Adam as PyTorch does.
OPTIMIZERS = ("adam", "adamw")
# The registry name of the device impulse response augmentation: it needs a directory of
# impulse responses, which only the caller can supply (``dirs_dir``).
DEVICE_IMPULSE_RESPONSE = "device_impulse_response"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How one model is trained.

    Args:
        model: the registered model name the recipe is for.
        schedule: ``FourPhaseSettings`` or ``WarmupCosineSettings``; its length is the number
            of epochs.
        optimizer: ``"adam"`` (``torch.optim.Adam``: ``weight_decay`` is L2 added to the
            gradient) or ``"adamw"`` (``torch.optim.AdamW``: decoupled decay).
        optimizer_config: other keyword arguments of
            :class:`~keras_asc.training.optimizers.AdamL2` (for example ``epsilon``).
        weight_decay: the weight-decay coefficient, applied to every trainable variable as
            the optimiser's kind prescribes; 0 disables it.
        batch_size: clips per optimiser step.
        augmentations: ``(registry name, constructor arguments)`` pairs in the order they are
            applied; waveform ones run in the tf.data pipeline, spectrogram ones are inserted
            into the model between front-end and network.
        frontend: ``LogMelSpectrogram`` arguments for training (frequency masking, fmax
            jitter); they replace the model preset's front-end values of the same name.
        description: where the numbers come from.
        kd_temperature: knowledge-distillation temperature: student and teacher logits are
            divided by it before the softmax (used only when training with teachers).
        kd_lambda: weight of the label loss in knowledge distillation; the distillation term
            gets ``1 - kd_lambda``.

    Example:
        >>> recipe = get_recipe("moflenet57").with_overrides(epochs=10, batch_size=64)
        >>> recipe.schedule.warmup_epochs  # phases are scaled to the new length
        0.9333333333333333
    """

    model: str
    schedule: object
    optimizer: str = "adam"
    optimizer_config: dict = dataclasses.field(default_factory=dict)
    weight_decay: float = 0.0
    batch_size: int = 256
    augmentations: tuple = ()
    frontend: dict = dataclasses.field(default_factory=dict)
    description: str = ""
    # CP-JKU DCASE 2023 (cpjku_dcase23 run_training.py): temperature 2, label-loss weight 0.02.
    kd_temperature: float = 2.0
    kd_lambda: float = 0.02

    def __post_init__(self):
        if not isinstance(self.schedule, (FourPhaseSettings, WarmupCosineSettings)):
            raise TypeError(
                "Recipe.schedule must be FourPhaseSettings or WarmupCosineSettings. "
                f"Received: schedule={self.schedule!r}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"Recipe.optimizer must be one of {OPTIMIZERS}. Received: optimizer={self.optimizer!r}"
            )
        _check_batch_size(self.batch_size)
        _check_weight_decay(self.weight_decay)
        _check_kd(self.kd_temperature, self.kd_lambda)
        reserved = {"learning_rate", "weight_decay", "l2_weight_decay"} & set(self.optimizer_config)
        if reserved:
            raise ValueError(
                f"Recipe.optimizer_config must not set {sorted(reserved)}: the learning rate "
                "comes from the schedule and the decay from Recipe.weight_decay."
            )
        names = []
        for item in self.augmentations:
            if (
                not isinstance(item, tuple)
                or len(item) != 2
                or not isinstance(item[0], str)
                or not isinstance(item[1], dict)
            ):
                raise ValueError(
                    f"Recipe.augmentations must hold (name, config dict) pairs. Received: {item!r}"
                )
            names.append(item[0])
        if len(set(names)) != len(names):
            raise ValueError(f"Recipe.augmentations names an augmentation twice: {names}")

    @property
    def epochs(self):
        """Training length in epochs (the schedule's length)."""
        return self.schedule.epochs

    @property
    def resampler(self):
        """How training audio reaches 32 kHz: ``frontend["resampler"]`` when the recipe sets
        it, else the model preset's front-end's, else ``"soxr_hq"``. The cache is keyed by it
        and the trained model's front-end records it."""
        if self.frontend.get("resampler") is not None:
            return self.frontend["resampler"]
        preset = MODEL_PRESETS.get(self.model, {})
        return preset.get("frontend", {}).get("resampler", DEFAULT_RESAMPLER)

    @property
    def augmentation_names(self):
        return tuple(name for name, _ in self.augmentations)

    def augmentation_config(self, name):
        """The constructor arguments the recipe gives augmentation ``name``."""
        for item_name, config in self.augmentations:
            if item_name == name:
                return dict(config)
        raise KeyError(
            f"Recipe {self.model!r} has no augmentation {name!r}; it has: "
            f"{', '.join(self.augmentation_names) or 'none'}."
        )

    def with_overrides(self, *, epochs=None, batch_size=None, weight_decay=None):
        """A copy with another length (the schedule's phases scaled to it), batch size or
        weight decay.

        The peak learning rate is kept when the batch size changes.
        """
        recipe = self
        if epochs is not None:
            if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
                raise ValueError(f"epochs must be an integer >= 1. Received: epochs={epochs!r}")
            if epochs != recipe.epochs:
                recipe = dataclasses.replace(recipe, schedule=recipe.schedule.scaled(int(epochs)))
        if batch_size is not None:
            recipe = dataclasses.replace(recipe, batch_size=_check_batch_size(batch_size))
        if weight_decay is not None:
            recipe = dataclasses.replace(recipe, weight_decay=_check_weight_decay(weight_decay))
        return recipe

    def settings(self):
        """``{key: current value}`` of every setting :meth:`with_settings` can change.

        Keys are the recipe's own fields (``epochs``, ``batch_size``, ``weight_decay``,
        ``optimizer``, ``kd_temperature``, ``kd_lambda``) and dotted keys into its parts:
        ``schedule.<field>``, ``optimizer_config.<argument>``, ``frontend.<argument>`` and
        ``<augmentation>.<argument>`` for each of the recipe's augmentations (every constructor
        argument but the seed and the impulse-response folder, which ``train`` supplies).
        An argument the recipe leaves at its default shows the constructor's default.

        Example:
            >>> get_recipe("moflenet57").settings()["freq_mixstyle.alpha"]
            0.3
        """
        values = {name: getattr(self, name) for name, _ in _TOP_LEVEL_SETTINGS}
        for field in dataclasses.fields(self.schedule):
            values[f"schedule.{field.name}"] = getattr(self.schedule, field.name)
        for name, default in _constructor_defaults(AdamL2, _OPTIMIZER_RESERVED).items():
            values[f"optimizer_config.{name}"] = self.optimizer_config.get(name, default)
        for name, value in self.frontend.items():
            values[f"frontend.{name}"] = value
        for name, config in self.augmentations:
            augmentation = registry.get_augmentation(name).augmentation
            defaults = _constructor_defaults(augmentation, _AUGMENTATION_RESERVED)
            for argument, default in {**defaults, **config}.items():
                if argument not in _AUGMENTATION_RESERVED:
                    values[f"{name}.{argument}"] = config.get(argument, default)
        return values

    def with_settings(self, overrides):
        """A copy with recipe settings replaced, as ``keras-asc train --set KEY=VALUE`` does.

        ``epochs`` is applied first (it scales the schedule's phases, as
        :meth:`with_overrides` does), then every other key in turn; the new recipe is checked
        as a new one would be.

        Args:
            overrides: ``{key: value}`` with keys from :meth:`settings`. A value must have the
                type of the setting it replaces: an integer for an integer setting, a number
                for a real one, a string, a boolean, a list for a tuple (``None`` only where
                the setting may be ``None``).

        Raises:
            ValueError: an unknown key (the message lists the valid ones) or a value of the
                wrong type (the message names the key and the expected type).

        Example:
            >>> recipe = get_recipe("moflenet57").with_settings(
            ...     {"device_impulse_response.p": 0.5, "schedule.max_learning_rate": 0.002})
            >>> recipe.augmentation_config("device_impulse_response")
            {'p': 0.5}
        """
        if not isinstance(overrides, dict):
            raise TypeError(f"overrides must be a dict of recipe settings. Received: {overrides!r}")
        known = self.settings()
        unknown = [key for key in overrides if key not in known]
        if unknown:
            raise ValueError(
                f"Unknown recipe setting {unknown[0]!r} for the {self.model} recipe. Valid keys: "
                f"{', '.join(sorted(known))}."
            )
        typed = {key: _typed_setting(key, value, known[key]) for key, value in overrides.items()}
        recipe = self
        if "epochs" in typed:
            recipe = recipe.with_overrides(epochs=typed.pop("epochs"))
        changes = {}
        schedule, optimizer_config = {}, dict(recipe.optimizer_config)
        frontend, augmentations = dict(recipe.frontend), dict(recipe.augmentations)
        for key, value in typed.items():
            part, _, name = key.partition(".")
            if not name:
                changes[part] = value
            elif part == "schedule":
                schedule[name] = value
            elif part == "optimizer_config":
                optimizer_config[name] = value
            elif part == "frontend":
                frontend[name] = value
            else:
                augmentations[part] = {**augmentations[part], name: value}
        if schedule:
            changes["schedule"] = dataclasses.replace(recipe.schedule, **schedule)
        return dataclasses.replace(
            recipe,
            optimizer_config=optimizer_config,
            frontend=frontend,
            augmentations=tuple(augmentations.items()),
            **changes,
        )

    def make_optimizer(self, steps_per_epoch):
        """A fresh :class:`~keras_asc.training.optimizers.AdamL2` driven by the recipe's
        per-step schedule, with the recipe's weight decay coupled (``"adam"``) or decoupled
        (``"adamw"``)."""
        decay = {}
        if self.weight_decay:
            key = "l2_weight_decay" if self.optimizer == "adam" else "weight_decay"
            decay[key] = self.weight_decay
        schedule = self.schedule.build(steps_per_epoch)
        return AdamL2(learning_rate=schedule, **self.optimizer_config, **decay)

    def to_dict(self):
        """A JSON-ready description (``Recipe.from_dict`` rebuilds the recipe)."""
        return {
            "model": self.model,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "optimizer_config": copy.deepcopy(self.optimizer_config),
            "weight_decay": self.weight_decay,
            "schedule": self.schedule.to_dict(),
            "augmentations": [
                {"name": name, "config": _jsonable(config)} for name, config in self.augmentations
            ],
            "frontend": _jsonable(self.frontend),
            "description": self.description,
            "kd_temperature": self.kd_temperature,
            "kd_lambda": self.kd_lambda,
        }

    @classmethod
    def from_dict(cls, config):
        config = dict(config)
        config.pop("epochs", None)  # derived from the schedule
        optimizer_config = dict(config.pop("optimizer_config", {}))
        # Run configs written by keras-asc 0.1 kept AdamW's decay in the optimiser arguments.
        if "weight_decay" in optimizer_config:
            config.setdefault("weight_decay", optimizer_config.pop("weight_decay"))
        frontend = dict(config.pop("frontend", {}))
        if isinstance(frontend.get("max_frequency_jitter"), list):
            frontend["max_frequency_jitter"] = tuple(frontend["max_frequency_jitter"])
        return cls(
            schedule=schedule_from_dict(config.pop("schedule")),
            augmentations=tuple(
                (item["name"], dict(item["config"])) for item in config.pop("augmentations", ())
            ),
            frontend=frontend,
            optimizer_config=optimizer_config,
            **config,
        )


# The recipe's own fields that --set may change, with their types.
_TOP_LEVEL_SETTINGS = (
    ("epochs", int),
    ("batch_size", int),
    ("weight_decay", float),
    ("optimizer", str),
    ("kd_temperature", float),
    ("kd_lambda", float),
)
# Arguments that are not recipe settings: the learning rate and decay come from the schedule
# and weight_decay; the seed and the impulse-response folder from train(); the sampling
# rate is the pipeline's.
_OPTIMIZER_RESERVED = ("learning_rate", "weight_decay", "l2_weight_decay", "name")
_AUGMENTATION_RESERVED = ("seed", "directory", "name", "sampling_rate")


def _constructor_defaults(cls, reserved):
    """``{argument: default}`` of ``cls``'s keyword arguments, leaving out ``reserved``."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(cls).parameters.items()
        if name not in reserved
        and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
        and parameter.default is not parameter.empty
    }


def _typed_setting(key, value, current):
    """``value`` as the type of setting ``key`` (whose value is ``current``), or ValueError."""
    kind = dict(_TOP_LEVEL_SETTINGS).get(key)
    if kind is None:
        if isinstance(current, bool):
            kind = bool
        elif isinstance(current, numbers.Integral) and not key.startswith("schedule."):
            kind = int
        elif isinstance(current, numbers.Real):
            kind = float
        elif isinstance(current, (tuple, list)):
            kind = tuple
        elif current is not None:
            kind = type(current)
    if kind is None:  # a setting that defaults to None takes any JSON value
        return value
    if value is None and current is None:
        return None
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names[tuple] = "a list"
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    elif kind is tuple:
        ok = isinstance(value, (tuple, list))
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ValueError(
            f"Recipe setting {key!r} takes {names.get(kind, kind.__name__)} "
            f"(now {current!r}); received {value!r} ({type(value).__name__})."
        )
    if kind is float:
        return float(value)
    if kind is int:
        return int(value)
    if kind is tuple:
        return tuple(value)
    return value


def _check_kd(temperature, kd_lambda):
    for name, value in (("kd_temperature", temperature), ("kd_lambda", kd_lambda)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"Recipe.{name} must be a number. Received: {name}={value!r}")
    if not temperature > 0:
        raise ValueError(
            f"Recipe.kd_temperature must be > 0. Received: kd_temperature={temperature!r}"
        )
    if not 0 <= kd_lambda <= 1:
        raise ValueError(f"Recipe.kd_lambda must be in [0, 1]. Received: kd_lambda={kd_lambda!r}")


def _check_batch_size(batch_size):
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, numbers.Integral)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be an integer >= 1. Received: batch_size={batch_size!r}")
    return int(batch_size)


def _check_weight_decay(weight_decay):
    if (
        isinstance(weight_decay, bool)
        or not isinstance(weight_decay, numbers.Real)
        or not 0 <= weight_decay < 1
    ):
        raise ValueError(
            f"weight_decay must be a number in [0, 1). Received: weight_decay={weight_decay!r}"
        )
    return float(weight_decay)


def _jsonable(value):
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(item) for item in value]
    return value


# PyTorch's Adam epsilon (1e-8), which the reference implementations ran with; Keras defaults
# to 1e-7.
_ADAM = {"epsilon": 1e-8}
# Training-time front-end augmentation of the report: masking up to 48 mel bands and an upper
# mel edge drawn in [15,001, 16,000] Hz per batch.
# The CP-JKU code loads audio with librosa.load(sr=32000): the SoX resampler, high quality.
_REPORT_FRONTEND = {
    "freq_mask_bins": 48,
    "max_frequency_jitter": (15001.0, 16000.0),
    "resampler": "soxr_hq",
}
_TIME_ROLL = ("time_roll", {"max_shift_seconds": 0.125})

# Weight decay as the CP-JKU reference scripts train: torch.optim.Adam(weight_decay=...), L2
# coupled into the gradient, 1e-4 for CP-Mobile (cpjku_dcase23 run_training.py; MofleNet is a
# CP-Mobile variant) and 1e-3 for CP-ResNet (run_cp-resnet_training.py). The report names none.
_CP_MOBILE_WEIGHT_DECAY = 1e-4
_CP_RESNET_WEIGHT_DECAY = 1e-3

_MOFLENET57 = Recipe(
    model="moflenet57",
    schedule=SCHEDULE_PRESETS["moflenet57"],
    optimizer="adam",
    optimizer_config=dict(_ADAM),
    weight_decay=_CP_MOBILE_WEIGHT_DECAY,
    batch_size=256,
    augmentations=(
        (DEVICE_IMPULSE_RESPONSE, {"p": 0.6}),
        _TIME_ROLL,
        ("freq_mixstyle", {"alpha": 0.3, "p": 0.4}),
    ),
    frontend=dict(_REPORT_FRONTEND),
    description="MofleNet57, report Table 3 and Section 3: Adam (L2 weight decay 1e-4 as the "
    "CP-JKU CP-Mobile code), batch 256, 150 epochs "
    "(14/36/84/16, peak 0.0009, final x0.005), DIR p 0.6, time roll +-125 ms, "
    "Freq-MixStyle alpha 0.3 p 0.4, 48-band frequency masking, fmax jitter.",
)

_CP_RESNET59 = Recipe(
    model="cp_resnet59",
    schedule=SCHEDULE_PRESETS["cp_resnet59"],
    optimizer="adam",
    optimizer_config=dict(_ADAM),
    weight_decay=_CP_RESNET_WEIGHT_DECAY,
    batch_size=256,
    augmentations=(
        (DEVICE_IMPULSE_RESPONSE, {"p": 0.4}),
        _TIME_ROLL,
        ("freq_mixstyle", {"alpha": 0.4, "p": 0.8}),
    ),
    frontend=dict(_REPORT_FRONTEND),
    description="CP-ResNet59, report Table 3 and Section 3: Adam (L2 weight decay 1e-3 as the "
    "CP-JKU CP-ResNet code), batch 256, 150 epochs "
    "(15/35/85/15, peak 0.001, final x0.005), DIR p 0.4, time roll +-125 ms, "
    "Freq-MixStyle alpha 0.4 p 0.8, 48-band frequency masking, fmax jitter.",
)

RECIPES = {
    "moflenet57": _MOFLENET57,
    "cp_resnet59": _CP_RESNET59,
    # The report gives no separate recipe for the 128k variants: they use their family's.
    "moflenet_128k": dataclasses.replace(
        _MOFLENET57,
        model="moflenet_128k",
        description="MofleNet-128k: the MofleNet57 recipe (the report gives no separate one).",
    ),
    "cp_resnet_128k": dataclasses.replace(
        _CP_RESNET59,
        model="cp_resnet_128k",
        description="CP-ResNet-128k: the CP-ResNet59 recipe (the report gives no separate one).",
    ),
    # The DCASE 2024 Task 1 baseline's own training set-up: AdamW (weight decay 1e-4), peak
    # 0.005, linear warm-up of 2,000 steps on split100 (547 steps per epoch at batch 256, so
    # 3.66 epochs; the baseline scales the steps with the split) then cosine decay, 150 epochs,
    # time roll +-0.1 s, Freq-MixStyle alpha 0.3 p 0.4, 48-band frequency masking; no DIR and
    # no fmax jitter.
    "dcase24_baseline": Recipe(
        model="dcase24_baseline",
        schedule=WarmupCosineSettings(epochs=150, warmup_epochs=3.66, max_learning_rate=0.005),
        optimizer="adamw",
        optimizer_config=dict(_ADAM),
        weight_decay=1e-4,
        batch_size=256,
        augmentations=(
            ("time_roll", {"max_shift_seconds": 0.1}),
            ("freq_mixstyle", {"alpha": 0.3, "p": 0.4}),
        ),
        # torchaudio's default Resample, as the baseline's dataset code.
        frontend={"freq_mask_bins": 48, "max_frequency_jitter": None, "resampler": "sinc_hann"},
        description="DCASE 2024 Task 1 baseline set-up: AdamW (wd 1e-4), batch 256, 150 epochs, "
        "peak 0.005 with linear warm-up then cosine decay, time roll +-0.1 s, "
        "Freq-MixStyle alpha 0.3 p 0.4, 48-band frequency masking.",
    ),
}

# Models without a recipe of their own (for example from plugins) train with this one.
DEFAULT_RECIPE = _MOFLENET57


@dataclasses.dataclass(frozen=True)
class QATRecipe:
    """Quantisation-aware fine-tuning as the report does it, after float training.

    Attributes:
        epochs: fine-tuning epochs.
        peak_learning_rate: Adam's learning rate in the first epoch.
        decay_epochs: the epoch at which the linear decay reaches ``final_factor``.
        final_factor: the learning-rate floor as a fraction of the peak.
        batch_size: clips per batch.
        provenance: where the numbers come from.
    """

    epochs: int = 24
    peak_learning_rate: float = 5e-5
    decay_epochs: int = 16
    final_factor: float = 0.1
    batch_size: int = 256
    provenance: str = (
        "MofleNet DCASE 2024 report: QAT for 24 epochs, learning rate 5e-5 decreasing linearly "
        "to 10 % of it by epoch 16."
    )

    def schedule_arguments(self):
        """``peak_learning_rate``, ``decay_epochs`` and ``final_factor``, as
        ``keras_asc.quantization.QATLearningRate`` and ``quantize_aware_train`` take them."""
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "decay_epochs": self.decay_epochs,
            "final_factor": self.final_factor,
        }


QAT_RECIPE = QATRecipe()


def register_recipe(recipe, overwrite=False):
    """Make ``recipe`` the recipe of ``recipe.model`` (for plugin models with their own).

    Args:
        recipe: a :class:`Recipe`.
        overwrite: replace an existing recipe of that model instead of raising.
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"register_recipe expects a Recipe. Received: {recipe!r}")
    if recipe.model in RECIPES and not overwrite:
        raise ValueError(
            f"Model {recipe.model!r} already has a recipe; pass overwrite=True to replace it."
        )
    RECIPES[recipe.model] = recipe


def get_recipe(model_name):
    """The training recipe of a registered model.

    Models with no recipe of their own (plugin models, for instance) get the MofleNet57 recipe
    under their own name. Ensembles have none: their members are trained one by one.

    Args:
        model_name: a name from ``keras_asc.list_models()``.

    Raises:
        ValueError: unknown model (the message lists the known ones) or an ensemble.
    """
    if model_name in RECIPES:
        return RECIPES[model_name]
    ensembles = registry.ensembles()
    if model_name in ensembles:
        members = " and ".join(ensembles[model_name].members)
        raise ValueError(
            f"{model_name!r} is an ensemble; train its members ({members}) one by one, then "
            "combine the trained models (keras-asc ensemble)."
        )
    registry.get_model(model_name)  # raises with the list of known models
    return dataclasses.replace(
        DEFAULT_RECIPE,
        model=model_name,
        description=f"Default recipe (the MofleNet57 one) for {model_name!r}, which has none of its own.",
    )


def list_recipes():
    """Names of the models with a recipe of their own, sorted."""
    return sorted(RECIPES)
