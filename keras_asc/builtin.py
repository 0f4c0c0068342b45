"""The built-in plugin: keras-asc registers its own models, ensembles and augmentations
through the same hooks as third-party plugins."""

import functools

from keras_asc.hookspecs import hookimpl
from keras_asc.models.classifier import AudioClassifier
from keras_asc.models.presets import ENSEMBLE_PRESETS, MODEL_PRESETS


@hookimpl
def register_models(register):
    for name, preset in MODEL_PRESETS.items():
        register(name, functools.partial(AudioClassifier.from_preset, name), description=preset["description"])


@hookimpl
def register_ensembles(register):
    for name, preset in ENSEMBLE_PRESETS.items():
        register(name, preset["members"], description=preset["description"])


@hookimpl
def register_augmentations(register):
    # keras_asc.augment imports TensorFlow (tf.data waveform ops): looked up when augmentations
    # are, so listing or building models does not load TensorFlow on the JAX/PyTorch backends.
    from keras_asc import augment

    register(
        "device_impulse_response",
        augment.DeviceImpulseResponse,
        stage="waveform",
        description="Convolve device-a clips with a random microphone impulse response (DIR).",
    )
    register(
        "time_roll",
        augment.TimeRoll,
        stage="waveform",
        description="Circular time shift, uniform in +-max_shift_seconds.",
    )
    register(
        "freq_mixstyle",
        augment.FreqMixStyle,
        stage="spectrogram",
        description="Freq-MixStyle: mix per-frequency statistics between examples.",
    )
