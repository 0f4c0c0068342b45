"""Every keras-asc plugin hook, in one place.

A plugin is a module or package exposing functions marked with ``keras_asc.hookimpl``, declared
under the ``keras_asc`` entry-point group of its distribution. Each hook receives a ``register``
callback; calling it with keyword arguments lets the callback grow new optional arguments later
without breaking plugins written against this version.
"""

import pluggy

hookspec = pluggy.HookspecMarker("keras_asc")
hookimpl = pluggy.HookimplMarker("keras_asc")


@hookspec
def register_models(register):
    """Register model presets.

    Call ``register(name, builder, config=None, description="")`` once per preset: ``builder`` is
    a callable (usually a ``keras.Model`` subclass) called as ``builder(**config, **overrides)``.
    A model that takes the 1-s waveform and has its own front-end can be an ensemble member.
    """


@hookspec
def register_ensembles(register):
    """Register named ensembles of registered models.

    Call ``register(name, members, description="")`` where ``members`` maps registered model
    names to logit weights, for example ``{"cp_resnet59": 0.6, "moflenet57": 0.4}``.
    """


@hookspec
def register_augmentations(register):
    """Register augmentations.

    Call ``register(name, augmentation, stage, description="")``: ``augmentation`` is a class
    built with keyword arguments; ``stage`` is ``"waveform"`` (a
    ``keras_asc.augment.WaveformAugmentation`` applied to batches in the tf.data pipeline) or
    ``"spectrogram"`` (a Keras layer placed between the front-end and the model, identity at
    inference).
    """
