"""Weighted-logit ensembles of waveform-input members."""

import keras


@keras.saving.register_keras_serializable(package="keras_asc")
class WeightedSum(keras.layers.Layer):
    """Weighted sum of member logits with fixed (non-trainable) weights.

    Args:
        member_weights: one float per input tensor.

    Example:
        >>> WeightedSum([0.6, 0.4])([keras.ops.ones((1, 10)), keras.ops.zeros((1, 10))])
    """

    def __init__(self, member_weights, **kwargs):
        super().__init__(**kwargs)
        self.member_weights = [float(w) for w in member_weights]
        if len(self.member_weights) < 2:
            raise ValueError(f"WeightedSum needs at least two weights. Received: {member_weights}")

    def call(self, inputs):
        if len(inputs) != len(self.member_weights):
            raise ValueError(
                f"WeightedSum has {len(self.member_weights)} weights but received {len(inputs)} inputs."
            )
        total = inputs[0] * self.member_weights[0]
        for weight, logits in zip(self.member_weights[1:], inputs[1:], strict=True):
            total = total + logits * weight
        return total

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def dcase_complexity(self, input_shape, output_shape):
        # One multiply-accumulate per member and class; no parameters (weights are constants).
        return 0, len(self.member_weights) * output_shape[-1]

    def get_config(self):
        return {**super().get_config(), "member_weights": self.member_weights}


@keras.saving.register_keras_serializable(package="keras_asc")
class Ensemble(keras.Model):
    """Weighted sum of the logits of members that share one waveform input.

    Each member keeps its own front-end (for example hop 500 for MofleNet57 and hop 750 for
    CP-ResNet59), so every member must be a waveform-input classifier (``AudioClassifier``, or a
    plugin model with its own front-end), all with the same ``num_samples`` and ``num_classes``.

    Args:
        members: Keras models (trained or fresh) or their serialised configs.
        weights: one logit weight per member (v2: 0.6 CP-ResNet59, 0.4 MofleNet57).

    Example:
        >>> ensemble = Ensemble([keras_asc.build("cp_resnet59"), keras_asc.build("moflenet57")],
        ...                     weights=[0.6, 0.4])

    Reference:
        "Low complexity acoustic scene classification with MofleNet", DCASE 2024 Task 1 report.
    """

    def __init__(self, members, weights, name="ensemble", **kwargs):
        members = [
            keras.saving.deserialize_keras_object(m) if isinstance(m, dict) else m for m in members
        ]
        weights = [float(w) for w in weights]
        if len(members) != len(weights) or len(members) < 2:
            raise ValueError(
                f"An ensemble needs two or more members and one weight per member. "
                f"Received: {len(members)} members, weights={weights}"
            )
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ValueError(f"Ensemble members need distinct names. Received: {names}")
        for member in members:
            shape = tuple(member.input_shape) if hasattr(member, "input_shape") else None
            if shape is None or len(shape) != 2:
                raise ValueError(
                    f"Ensemble member {member.name!r} must take (batch, num_samples) waveforms "
                    f"(a classifier with its own front-end, not a backbone). Received input shape: {shape}"
                )
        num_samples = {tuple(m.input_shape)[1] for m in members}
        num_classes = {m.output_shape[-1] for m in members}
        if len(num_samples) != 1 or len(num_classes) != 1:
            raise ValueError(
                f"Ensemble members must share num_samples and num_classes. Received: "
                f"num_samples={sorted(num_samples)}, num_classes={sorted(num_classes)}"
            )

        # === Functional model ===
        inputs = keras.Input(shape=(num_samples.pop(),), name="waveform")
        outputs = WeightedSum(weights, name=f"{name}_weighted_sum")([m(inputs) for m in members])
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

        # === Config ===
        self.members = members
        self.member_weights = weights

    def get_config(self):
        return {
            "members": [keras.saving.serialize_keras_object(m) for m in self.members],
            "weights": self.member_weights,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
