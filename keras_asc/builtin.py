"""The built-in plugin: keras-asc registers its own models, ensembles and augmentations
through the same hooks as third-party plugins."""

import functools

from keras_asc.hookspecs import hookimpl


@hookimpl
def register_models(register):
    from keras_asc.models import MODEL_PRESETS, AudioClassifier

    for name, preset in MODEL_PRESETS.items():
        register(name, functools.partial(AudioClassifier.from_preset, name), description=preset["description"])


@hookimpl
def register_ensembles(register):
    from keras_asc.models.presets import ENSEMBLE_PRESETS

    for name, preset in ENSEMBLE_PRESETS.items():
        register(name, preset["members"], description=preset["description"])


@hookimpl
def register_augmentations(register):
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
