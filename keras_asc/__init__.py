"""keras-asc: low-complexity acoustic scene classification (DCASE Task 1) in Keras 3.

Example:
    >>> import keras_asc
    >>> model = keras_asc.build("moflenet57")
    >>> print(keras_asc.complexity.summary(model))
"""

import importlib

from keras_asc import logs
from keras_asc.hookspecs import hookimpl
from keras_asc.registry import (
    build,
    list_augmentations,
    list_models,
)
from keras_asc.version import __version__

# Quiet by default: TensorFlow's start-up log filtered when it loads, one-line warnings
# (KERAS_ASC_DEBUG=1 keeps everything; see keras_asc/logs.py).
logs.install()

# The package root is the public facade and sits above the library (see [tool.importlinter] in
# pyproject.toml): no keras_asc module imports it. `import keras_asc` stays light (no Keras, no
# TensorFlow; `keras-asc --help` imports it), so the wrappers below import the training layer
# when called, and `keras_asc.complexity` (which imports Keras) loads on first access.
_LAZY_SUBMODULES = ("complexity",)


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"keras_asc.{name}")
    raise AttributeError(f"module 'keras_asc' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))


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
    from keras_asc.training.saving import load_model as _load_model

    return _load_model(filepath, **kwargs)


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
