"""keras-asc: low-complexity acoustic scene classification (DCASE Task 1) in Keras 3.

Example:
    >>> import keras_asc
    >>> model = keras_asc.build("moflenet57")
    >>> print(keras_asc.complexity.summary(model))
"""

__version__ = "0.1.0"

from keras_asc import complexity  # noqa: E402
from keras_asc.hookspecs import hookimpl  # noqa: E402
from keras_asc.registry import (  # noqa: E402
    build,
    list_augmentations,
    list_models,
)


def train(*args, **kwargs):
    """Train a model with its recipe; see ``keras_asc.training.train`` for the arguments.

    Example:
        >>> result = keras_asc.train("moflenet57", data_dir="TAU22", split=25, epochs=150)
    """
    from keras_asc.training import train as _train

    return _train(*args, **kwargs)


def evaluate(*args, **kwargs):
    """DCASE evaluation of a model, run directory, ``.keras`` or ``.tflite`` file; see
    ``keras_asc.training.evaluate`` for the arguments.

    Example:
        >>> result = keras_asc.evaluate("runs/moflenet57", data_dir="TAU22")
    """
    from keras_asc.training import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


def load_model(filepath, **kwargs):
    """Load a saved ``.keras`` model after loading plugins, so plugin layers deserialise.

    Args:
        filepath: path of a ``.keras`` archive written by ``model.save``.
        **kwargs: passed to ``keras.saving.load_model``.
    """
    import os

    import keras

    from keras_asc import augment, layers, models  # noqa: F401 - registers the built-in Keras classes
    from keras_asc.plugins import load_plugins
    from keras_asc.training import optimizers, schedule  # noqa: F401 - the saved optimiser's classes

    if not os.path.exists(filepath):
        raise FileNotFoundError(f"No saved model at {filepath!r}.")
    load_plugins()
    return keras.saving.load_model(filepath, **kwargs)


__all__ = [
    "__version__",
    "build",
    "complexity",
    "evaluate",
    "hookimpl",
    "list_augmentations",
    "list_models",
    "load_model",
    "train",
]
