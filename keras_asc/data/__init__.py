import importlib

from keras_asc.data.download import download_tau22
from keras_asc.data.synthetic import make_synthetic_tau22, write_wav
from keras_asc.data.tau22 import (
    DEVICE_GROUPS,
    DEVICES,
    SCENE_LABELS,
    Clip,
    MissingFilesError,
    load_split,
    parse_filename,
    read_meta,
    split_summary,
)

# The tf.data pipelines (TensorFlow) and audio decoding load on first use: `import keras_asc.data`
# does not import TensorFlow.
_TENSORFLOW_EXPORTS = {
    "AudioDecodeError": "keras_asc.data.audio",
    "load_audio": "keras_asc.data.audio",
    "read_audio": "keras_asc.data.audio",
    "resample": "keras_asc.data.audio",
    "RESAMPLERS": "keras_asc.data.resampling",
    "SkippedClips": "keras_asc.data.pipeline",
    "make_dataset": "keras_asc.data.pipeline",
    "prepare_cache": "keras_asc.data.pipeline",
}


def __getattr__(name):
    if name in _TENSORFLOW_EXPORTS:
        return getattr(importlib.import_module(_TENSORFLOW_EXPORTS[name]), name)
    raise AttributeError(f"module 'keras_asc.data' has no attribute {name!r}")
