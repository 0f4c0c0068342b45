"""The keras-asc version, in a module of its own so that any layer can read it without
importing the package root (``keras_asc.__version__`` re-exports it)."""

__version__ = "0.1.0"
