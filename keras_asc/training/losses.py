"""The loss and metric of knowledge distillation (see :mod:`keras_asc.training.distill`).

They live in their own module, which imports only Keras, so that the model loader
(:mod:`keras_asc.training.saving`) can register them before it reads a checkpoint compiled with
them, without importing the distillation code (which itself loads models).
"""

import keras

__all__ = ["DistillationLoss", "LabelAccuracy"]


def _labels(y_true):
    """Column 0 of distillation targets as int32, or plain labels as they are."""
    if len(y_true.shape) == 2 and y_true.shape[-1] != 1:
        return keras.ops.cast(y_true[:, 0], "int32")
    return keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")


@keras.saving.register_keras_serializable(package="keras_asc")
class DistillationLoss(keras.losses.Loss):
    """Label loss plus temperature-softened KL divergence to the teachers (CP-JKU form).

    ``y_true`` holds the label in column 0 and the teachers' logits in the other columns
    (:func:`join_targets`); the per-clip loss is
    ``kd_lambda * CE + (1 - kd_lambda) * T**2 * KL(p_teacher || p_student) / num_classes``.
    Plain integer labels (a validation split) give the cross-entropy alone.

    Args:
        temperature: ``T``; both logit vectors are divided by it before the softmax.
        kd_lambda: weight of the label loss; the distillation term gets ``1 - kd_lambda``.

    Example:
        >>> loss = DistillationLoss(temperature=2.0, kd_lambda=0.02)
        >>> loss(np.array([[3.0, 0.5, 1.0, -1.0]]), np.array([[0.2, 1.0, 0.0]]))
    """

    def __init__(self, temperature=2.0, kd_lambda=0.02, name="distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = float(temperature)
        self.kd_lambda = float(kd_lambda)

    def call(self, y_true, y_pred):
        labels = _labels(y_true)
        label_loss = keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)
        if not (len(y_true.shape) == 2 and y_true.shape[-1] != 1):
            return label_loss
        temperature = self.temperature
        teacher = keras.ops.log_softmax(y_true[:, 1:] / temperature, axis=-1)
        student = keras.ops.log_softmax(y_pred / temperature, axis=-1)
        divergence = keras.ops.mean(keras.ops.exp(teacher) * (teacher - student), axis=-1)
        return self.kd_lambda * label_loss + (1.0 - self.kd_lambda) * temperature**2 * divergence

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "kd_lambda": self.kd_lambda,
        }


@keras.saving.register_keras_serializable(package="keras_asc")
class LabelAccuracy(keras.metrics.SparseCategoricalAccuracy):
    """Sparse categorical accuracy on the label column of distillation targets (and on plain
    labels, for a validation split)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = keras.ops.convert_to_tensor(y_true)
        return super().update_state(_labels(y_true), y_pred, sample_weight)
