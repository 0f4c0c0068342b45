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


def load_model(filepath, **kwargs):
    """Load a saved ``.keras`` model after loading plugins, so plugin layers deserialise.

    Args:
        filepath: path of a ``.keras`` archive written by ``model.save``.
        **kwargs: passed to ``keras.saving.load_model``.
    """
    import os

    import keras

    from keras_asc import layers, models  # noqa: F401 - registers the built-in Keras classes
    from keras_asc.plugins import load_plugins

    if not os.path.exists(filepath):
        raise FileNotFoundError(f"No saved model at {filepath!r}.")
    load_plugins()
    return keras.saving.load_model(filepath, **kwargs)


__all__ = [
    "__version__",
    "build",
    "complexity",
    "hookimpl",
    "list_augmentations",
    "list_models",
    "load_model",
]
