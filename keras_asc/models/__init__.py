"""keras-asc backbones, the classifier, the ensemble and the presets."""

from keras_asc.models.backbone import Backbone
from keras_asc.models.classifier import AudioClassifier
from keras_asc.models.cp_mobile import CPMobileBackbone
from keras_asc.models.cp_resnet import CPResNetBackbone
from keras_asc.models.ensemble import Ensemble, WeightedSum
from keras_asc.models.moflenet import MofleNetBackbone
from keras_asc.models.presets import ENSEMBLE_PRESETS, MODEL_PRESETS
from keras_asc.models.torch_weights import TorchWeightsReport, load_torch_weights
