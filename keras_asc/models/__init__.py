"""keras-asc model families, the ensemble and the presets."""

from keras_asc.models.cp_mobile import CPMobile
from keras_asc.models.cp_resnet import CPResNet
from keras_asc.models.ensemble import Ensemble, WeightedSum
from keras_asc.models.moflenet import MofleNet
from keras_asc.models.presets import ENSEMBLE_PRESETS, MODEL_PRESETS
from keras_asc.models.torch_weights import TorchWeightsReport, load_torch_weights
