"""Training: the four-phase learning-rate schedule, recipes as data and ``train()``."""

from keras_asc.training.ensemble import build_ensemble
from keras_asc.training.evaluation import (
    EvaluationResult,
    evaluate,
    evaluate_predictions,
    format_comparison,
)
from keras_asc.training.inference import FilePrediction, predict_files
from keras_asc.training.optimizers import AdamL2
from keras_asc.training.recipes import (
    DEFAULT_RECIPE,
    QAT_RECIPE,
    RECIPES,
    QATRecipe,
    Recipe,
    get_recipe,
    list_recipes,
    register_recipe,
)
from keras_asc.training.rundir import RunConfig, RunDir
from keras_asc.training.saving import load_model
from keras_asc.training.schedule import (
    SCHEDULE_PRESETS,
    FourPhaseSchedule,
    FourPhaseScheduler,
    FourPhaseSettings,
    WarmupCosineSettings,
    four_phase_factor,
    get_schedule_preset,
)
from keras_asc.training.train import TrainResult, train

# The quantise-a-run workflow needs TensorFlow, tf_keras and LiteRT; it loads on first use so
# that importing keras_asc.training on the JAX or PyTorch backend does not import them.
_QUANTIZE_EXPORTS = (
    "QuantizeRunResult",
    "evaluate_exports",
    "quantize_run",
    "recipe_spectrogram_augmentations",
)


def __getattr__(name):
    if name in _QUANTIZE_EXPORTS:
        from keras_asc.training import quantize

        return getattr(quantize, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
