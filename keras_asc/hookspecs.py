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
    a callable called as ``builder(**config, **overrides)`` that returns a fresh model.

    What a registered model must provide:

    - it is a built ``keras.Model`` from (batch, num_samples) waveforms at 32 kHz to
      (batch, num_classes) logits, with its own front-end; ``builder`` accepts ``num_classes``
      as an override;
    - every layer class it uses is registered with
      ``keras.saving.register_keras_serializable`` and the model's ``get_config`` /
      ``from_config`` round-trip, so ``keras_asc.load_model`` reopens it in a fresh process;
    - its layers have DCASE counting rules (Keras convolutions, BN, pooling, ... or a
      ``dcase_complexity`` method) and, for int8 export, tf_keras twins
      (``keras_asc.quantization.register_twin`` for custom ones).

    Build it as a ``keras_asc.models.AudioClassifier`` (a ``LogMelSpectrogram`` front-end and a
    ``keras_asc.models.Backbone`` from spectrograms to logits), as the built-in presets and the
    example plugin ``keras-asc-tinymobile`` do, and it gets everything the built-in models get:
    the recipe's training front-end settings and spectrogram augmentations in
    ``keras_asc.train`` (applied by the training code, never saved in the model), ensembles,
    QAT and int8 export. Another waveform model trains without spectrogram augmentations (a
    note says so) and must hold one ``LogMelSpectrogram`` layer for int8 export.
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
