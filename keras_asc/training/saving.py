"""Load saved keras-asc models: ``keras_asc.load_model``, the one loader of every model file
the project writes (runs, checkpoints, ensembles, imported PyTorch weights, plugin models).

Loading lives here, in the training layer, because deserialising a saved run needs the classes
of every layer below it (layers, models, augmentations, plugins) and of the saved optimiser and
schedule (``keras_asc.training.optimizers``, ``keras_asc.training.schedule``). The package root
re-exports :func:`load_model`; nothing in the library imports the root.
"""

import json
import os
import zipfile

import keras

from keras_asc import layers, models, registry  # noqa: F401 - layers, models: their Keras classes
from keras_asc.plugins import load_plugins
from keras_asc.training import optimizers, schedule  # noqa: F401 - the saved optimiser's classes


def load_model(filepath, **kwargs):
    """Load a saved ``.keras`` model after loading plugins, so plugin layers deserialise.

    Args:
        filepath: path of a ``.keras`` archive written by ``model.save``.
        **kwargs: passed to ``keras.saving.load_model``.
    """
    # The augmentation layers' classes. keras_asc.augment imports TensorFlow (its waveform
    # augmentations are tf ops), so it loads here rather than with keras_asc.training, which
    # stays free of TensorFlow on the JAX and PyTorch backends until a tf.data pipeline is built.
    from keras_asc import augment  # noqa: F401

    # The loss and metric of a distilled run, saved with its compiled checkpoints.
    from keras_asc.training import losses  # noqa: F401

    if not os.path.exists(filepath):
        raise FileNotFoundError(f"No saved model at {filepath!r}.")
    # Plugins register their Keras classes when their modules are imported, which loading the
    # plugins and filling the registries (calling their hooks) does.
    load_plugins()
    registry.models()
    registry.augmentations()
    if os.path.isdir(filepath) or not zipfile.is_zipfile(filepath):
        raise ValueError(
            f"{filepath}: not a Keras model file (a .keras file is a zip archive); the file is "
            "damaged or of another kind."
        )
    try:
        return keras.saving.load_model(filepath, **kwargs)
    except (
        zipfile.BadZipFile,
        json.JSONDecodeError,
        UnicodeDecodeError,
        EOFError,
        KeyError,
        OSError,
        ValueError,
        TypeError,
    ) as error:
        if isinstance(error, FileNotFoundError) and not os.path.exists(filepath):
            raise
        reason = " ".join(str(error).split()) or type(error).__name__
        if len(reason) > 300:
            reason = reason[:300] + "..."
        raise ValueError(f"{filepath}: cannot load this Keras model ({reason})") from error
