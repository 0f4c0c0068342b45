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
from keras_asc.training.quantize import QuantizeRunResult, evaluate_exports, quantize_run
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
