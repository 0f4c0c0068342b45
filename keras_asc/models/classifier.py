"""The classifier: a log-mel front-end before a backbone, from 1-s waveforms to logits."""

import inspect

import keras

from keras_asc.layers.frontend import LogMelSpectrogram
from keras_asc.models.backbone import Backbone
from keras_asc.models.presets import MODEL_PRESETS


def _deserialize(value, what):
    if isinstance(value, dict):
        value = keras.saving.deserialize_keras_object(value)
    if not isinstance(value, keras.layers.Layer):
        raise TypeError(f"AudioClassifier: {what} must be a Keras layer or model. Received: {value!r}")
    return value


@keras.saving.register_keras_serializable(package="keras_asc")
class AudioClassifier(keras.Model):
    """Waveform in, logits out: ``frontend`` (log-mel spectrogram) then ``backbone``.

    The saved model holds only inference: the front-end's masking and mel jitter are the
    identity at inference, and training-only augmentations (Freq-MixStyle, plugin spectrogram
    augmentations) are applied by ``keras_asc.train`` between ``frontend`` and ``backbone``,
    never stored in the model.

    Args:
        backbone: a ``keras_asc.models.Backbone`` (or any Keras model from (mel bins, frames, 1)
            spectrograms to logits), or its serialised config.
        frontend: a ``LogMelSpectrogram`` (or its serialised config); its output shape for
            ``num_samples`` must be the backbone's input shape.
        num_samples: waveform length (32,000 for a 1-s clip at 32 kHz).
        name: model name; default the backbone's.

    Example:
        >>> model = AudioClassifier.from_preset("moflenet57")
        >>> logits = model(keras.ops.zeros((1, 32000)))
        >>> custom = AudioClassifier(MofleNetBackbone(num_classes=5), LogMelSpectrogram(hop_length=500))
    """

    def __init__(self, backbone, frontend=None, num_samples=32000, name=None, **kwargs):
        backbone = _deserialize(backbone, "backbone")
        frontend = LogMelSpectrogram() if frontend is None else _deserialize(frontend, "frontend")
        if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 4096:
            raise ValueError(
                f"num_samples must be an integer >= 4096 (one FFT frame). Received: num_samples={num_samples!r}"
            )
        num_samples = int(num_samples)
        spectrogram_shape = tuple(frontend.compute_output_shape((None, num_samples))[1:])
        expected = tuple(backbone.input_shape[1:])
        if len(expected) != len(spectrogram_shape) or any(
            e is not None and e != s for e, s in zip(expected, spectrogram_shape, strict=False)
        ):
            raise ValueError(
                f"AudioClassifier: the front-end gives {spectrogram_shape} spectrograms for "
                f"num_samples={num_samples}, but backbone {backbone.name!r} takes {expected}."
            )

        # === Functional model ===
        inputs = keras.Input(shape=(num_samples,), name="waveform")
        outputs = backbone(frontend(inputs))
        super().__init__(inputs=inputs, outputs=outputs, name=name or backbone.name, **kwargs)

        # === Config ===
        self.backbone = backbone
        self.frontend = frontend
        self.num_samples = num_samples

    @property
    def num_classes(self):
        return int(self.backbone.output_shape[-1])

    def with_frontend(self, **overrides):
        """A classifier sharing this backbone (and its weights) with front-end arguments replaced.

        Example:
            >>> training_model = model.with_frontend(seed=7, freq_mask_bins=48)
        """
        config = {**self.frontend.get_config(), **overrides}
        return AudioClassifier(
            self.backbone, LogMelSpectrogram.from_config(config), num_samples=self.num_samples, name=self.name
        )

    def get_config(self):
        return {
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "frontend": keras.saving.serialize_keras_object(self.frontend),
            "num_samples": self.num_samples,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def from_preset(cls, preset, **overrides):
        """Build a fresh classifier from a preset of ``keras_asc.models.MODEL_PRESETS``.

        Args:
            preset: preset name (``"moflenet57"``, ``"cp_resnet59"``, ...).
            **overrides: backbone arguments (``num_classes``, ``channels_multiplier``, ...),
                ``frontend_config`` (merged into the preset's front-end arguments),
                ``num_samples`` and ``name``.

        Example:
            >>> model = AudioClassifier.from_preset("cp_resnet59", num_classes=5)
        """
        if preset not in MODEL_PRESETS:
            raise ValueError(f"Unknown preset {preset!r}. Known presets: {', '.join(sorted(MODEL_PRESETS))}.")
        data = MODEL_PRESETS[preset]
        name = overrides.pop("name", preset)
        num_samples = overrides.pop("num_samples", data["num_samples"])
        frontend_config = {**data["frontend"], **(overrides.pop("frontend_config", None) or {})}
        backbone_class = keras.saving.get_registered_object(data["backbone"]["class_name"])
        if not (isinstance(backbone_class, type) and issubclass(backbone_class, Backbone)):
            raise ValueError(f"Preset {preset!r}: {data['backbone']['class_name']!r} is not a registered backbone.")
        accepted = set(inspect.signature(backbone_class).parameters) - {"kwargs", "spectrogram_shape", "name"}
        unknown = sorted(set(overrides) - accepted)
        if unknown:
            raise TypeError(
                f"Preset {preset!r}: unknown argument(s) {unknown}. Accepted: {sorted(accepted)}, "
                f"frontend_config, num_samples, name."
            )
        frontend = LogMelSpectrogram(**frontend_config, name=f"{name}_frontend")
        backbone = backbone_class(
            **{**data["backbone"]["config"], **overrides},
            spectrogram_shape=tuple(frontend.compute_output_shape((None, num_samples))[1:]),
            name=name,
        )
        return cls(backbone, frontend, num_samples=num_samples, name=name)
