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
