"""Quantisation-aware training (TF-MOT) of keras-asc models.

The float Keras 3 model becomes its tf_keras twin (``twin.py``), TF-MOT's default 8-bit scheme
wraps it (per-channel symmetric 8-bit weights, per-tensor 8-bit activations; no fake
quantisation between a convolution, its batch normalisation and its ReLU, so the TFLite
converter folds them into one int8 convolution), and the quantised model is fine-tuned with the
report's recipe: 24 epochs, peak learning rate 5e-5 decreasing linearly to 10 % of the peak by
epoch 16, then constant.

The keras-asc layers get their own quantisation configs: GRN stays in floating point (as in the
report), the channel shuffle is a pass-through (a permutation keeps its input's quantisation),
and the pooling that produces the logits runs in float on the dequantised int8 head output
(see ``twin.LogitPooling``). The 3x3 average pooling of a strided shortcut is a pass-through
too: TFLite's int8 AVERAGE_POOL_2D has one scale for input and output, so an output range of
its own would make the converter requantise (and clip) the inputs to the narrower range of
their average before pooling, which the QAT model does not do. Grouped convolutions need nothing special: TF-MOT quantises
``Conv2D(groups=2)`` per output channel and the TFLite
converter emits one grouped CONV_2D.

Training data are waveforms; each member computes its spectrograms with its own Keras 3
front-end in training mode (mel upper-edge jitter and frequency masking are the augmentation)
followed by its spectrogram augmentations, inside the tf.data pipeline. That needs the
TensorFlow backend (``KERAS_BACKEND=tensorflow``); the Keras 3 model itself may have been
trained on any backend and loaded from its ``.keras`` file.

TF-MOT is imported only inside the functions here: importing it sets ``TF_USE_LEGACY_KERAS=1``
for the process, which ``import_tfmot`` undoes after the import.
"""

import functools
import os
import weakref

import keras
import numpy as np
import tensorflow as tf
import tf_keras

from keras_asc.quantization import twin as twin_module
from keras_asc.quantization.twin import attach_spec, is_ensemble, to_tf_keras, twin_spec


def import_tfmot():
    """Import ``tensorflow_model_optimization`` without leaving ``TF_USE_LEGACY_KERAS`` set."""
    previous = os.environ.get("TF_USE_LEGACY_KERAS")
    import tensorflow_model_optimization as tfmot

    if previous is None:
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
    else:
        os.environ["TF_USE_LEGACY_KERAS"] = previous
    return tfmot


class QATLearningRate:
    """The report's QAT learning rate per epoch: linear decay to a floor, then constant.

    ``lr(epoch) = peak * (1 - (1 - final_factor) * min(epoch, decay_epochs) / decay_epochs)``
    with 0-based epochs: the peak at epoch 0, ``final_factor * peak`` from ``decay_epochs`` on.

    Args:
        peak_learning_rate: learning rate of the first epoch.
        decay_epochs: epoch from which the rate stays at its floor.
        final_factor: the floor as a fraction of the peak.

    Example:
        >>> schedule = QATLearningRate(5e-5, decay_epochs=16, final_factor=0.1)
        >>> [round(schedule(e) / 5e-5, 4) for e in (0, 8, 16, 23)]
        [1.0, 0.55, 0.1, 0.1]

    Reference:
        "Low complexity acoustic scene classification with MofleNet", DCASE 2024 Task 1
        report (quantisation-aware fine-tuning).
    """

    def __init__(
        self,
        peak_learning_rate,
        decay_epochs,
        final_factor,
    ):
        if not peak_learning_rate > 0:
            raise ValueError(
                f"peak_learning_rate must be > 0. Received: peak_learning_rate={peak_learning_rate}"
            )
        if int(decay_epochs) != decay_epochs or decay_epochs < 0:
            raise ValueError(
                f"decay_epochs must be an integer >= 0. Received: decay_epochs={decay_epochs}"
            )
        if not 0 <= final_factor <= 1:
            raise ValueError(
                f"final_factor must be in [0, 1]. Received: final_factor={final_factor}"
            )
        self.peak_learning_rate = float(peak_learning_rate)
        self.decay_epochs = int(decay_epochs)
        self.final_factor = float(final_factor)

    def factor(self, epoch):
        if self.decay_epochs == 0:
            return self.final_factor
        progress = min(max(epoch, 0), self.decay_epochs) / self.decay_epochs
        return 1.0 - (1.0 - self.final_factor) * progress

    def __call__(self, epoch, learning_rate=None):
        return self.peak_learning_rate * self.factor(epoch)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "decay_epochs": self.decay_epochs,
            "final_factor": self.final_factor,
        }


@functools.cache
def quantize_configs():
    """TF-MOT ``QuantizeConfig`` classes for the keras-asc layers, by name.

    ``FloatQuantizeConfig`` (GRN; the pooling that produces the float logits) quantises
    nothing, so the layer runs in floating point between the int8 tensors before and after
    it. ``PassThroughQuantizeConfig`` (channel shuffle, shortcut average pooling, the twin's
    ``Subsample``) quantises nothing either; the TFLite converter keeps a permutation and an
    average pooling in int8 with their input's scale, and a ``Subsample`` is not converted
    at all (the export folds it back into its depthwise layer's stride).
    """
    tfmot = import_tfmot()
    base = tfmot.quantization.keras.QuantizeConfig

    # Autograph must not convert these: TF-MOT calls them inside the traced QuantizeWrapper,
    # and a converted method of this locally defined class was once called with ``self``
    # twice ("takes 2 positional arguments but 3 were given") in a long QAT run.
    plain = tf.autograph.experimental.do_not_convert

    class _NothingQuantized(base):
        @plain
        def get_weights_and_quantizers(self, layer):
            return []

        @plain
        def get_activations_and_quantizers(self, layer):
            return []

        @plain
        def set_quantize_weights(self, layer, quantize_weights):
            if quantize_weights:
                raise ValueError(f"{type(self).__name__} quantises no weights of {layer.name!r}.")

        @plain
        def set_quantize_activations(self, layer, quantize_activations):
            if quantize_activations:
                raise ValueError(
                    f"{type(self).__name__} quantises no activations of {layer.name!r}."
                )

        @plain
        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {}

    class FloatQuantizeConfig(_NothingQuantized):
        """Keep a layer in floating point (GRN, the logit pooling)."""

    class PassThroughQuantizeConfig(_NothingQuantized):
        """A layer that keeps its input's scale (channel shuffle, average pooling, subsample)."""

    return {
        "FloatQuantizeConfig": FloatQuantizeConfig,
        "PassThroughQuantizeConfig": PassThroughQuantizeConfig,
    }


def quantize_scope_objects():
    """The classes a QAT model of a twin needs to be rebuilt from its config (with TF-MOT's)."""
    return {**twin_module.custom_objects(), **quantize_configs()}


def _custom_layer_config(layer):
    configs = quantize_configs()
    if isinstance(layer, twin_module.GlobalResponseNormalization):
        return configs["FloatQuantizeConfig"]()
    if isinstance(layer, (twin_module.ChannelShuffle, twin_module.Subsample)):
        return configs["PassThroughQuantizeConfig"]()
    if isinstance(layer, tf_keras.layers.AveragePooling2D):
        return configs["PassThroughQuantizeConfig"]()
    if isinstance(layer, twin_module.LogitPooling):
        return configs["FloatQuantizeConfig"]()
    return None


def _quantize_single(twin):
    tfmot = import_tfmot()
    qk = tfmot.quantization.keras

    def annotate(layer):
        config = _custom_layer_config(layer)
        return qk.quantize_annotate_layer(layer, config) if config is not None else layer

    # clone_model with a clone_function that returns the original layer objects keeps the
    # weights; quantize_annotate_model then annotates every layer not annotated yet.
    annotated = tf_keras.models.clone_model(twin, clone_function=annotate)
    annotated = qk.quantize_annotate_model(annotated)
    with qk.quantize_scope(quantize_scope_objects()):
        return qk.quantize_apply(annotated)


def member_models(model):
    """The member twins (or QAT members) of an ensemble twin, in input order; ``[model]`` else."""
    spec = twin_spec(model)
    if not spec.member_names:
        return [model]
    members = {layer.name: layer for layer in model.layers if isinstance(layer, tf_keras.Model)}
    return [members[name] for name in spec.member_names]


def _ensemble_from_members(members, spec):
    inputs, outputs = [], []
    for member in members:
        member_spec = twin_spec(member)
        member_input = tf_keras.Input(member.input_shape[1:], name=f"{member.name}_spectrogram")
        inputs.append(member_input)
        outputs.append(member(member_input))
        if len(member_spec.frontends) != 1:
            raise ValueError(
                f"Ensemble member {member.name!r} must take exactly one spectrogram input."
            )
    summed = twin_module.WeightedSum(spec.member_weights, name=f"{spec.name}_weighted_sum")(outputs)
    return attach_spec(tf_keras.Model(inputs, summed, name=spec.name), spec)


def quantize_model(model):
    """Wrap a twin (or a Keras 3 keras-asc model) for quantisation-aware training.

    Args:
        model: a Keras 3 keras-asc model or ensemble, or its tf_keras twin.

    Returns:
        The TF-MOT quantised tf_keras model (not yet fine-tuned), carrying the twin's
        ``twin_spec``. An ensemble is quantised member by member and recombined.

    Example:
        >>> qat_model = quantize_model(keras_asc.build("cp_resnet59"))
    """
    twin = model if isinstance(model, tf_keras.Model) else to_tf_keras(model)
    spec = twin_spec(twin)
    if spec.member_names:
        members = [quantize_model(member) for member in member_models(twin)]
        return _ensemble_from_members(members, spec)
    return attach_spec(_quantize_single(twin), spec)


def _check_tensorflow_backend():
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "Quantisation-aware training computes spectrograms with the model's Keras 3 front-end "
            "inside tf.data, which needs the TensorFlow backend. Set KERAS_BACKEND=tensorflow "
            f"(received backend {keras.backend.backend()!r}); a model trained on another backend "
            "loads from its .keras file."
        )


def _keras_members(model):
    return list(model.members) if is_ensemble(model) else [model]


def spectrogram_dataset(model, dataset, *, training=True, augmentations=None):
    """Map a (waveforms, labels[, devices]) dataset to (spectrograms, labels) for one model.

    The spectrograms come from the model's own Keras 3 front-end and, in training, its
    spectrogram augmentations, all in training mode (mel upper-edge jitter, frequency masking,
    Freq-MixStyle): the fine-tuning data are augmented as in float training. TensorFlow
    backend only.

    Args:
        model: a Keras 3 keras-asc model with a ``frontend`` attribute (not an ensemble).
        dataset: batched ``tf.data.Dataset`` of (waveforms (B, samples), labels[, devices]).
        training: apply the training-mode front-end and augmentations.
        augmentations: spectrogram-stage Keras layers applied after the front-end in training
            (for example the recipe's ``FreqMixStyle``; saved models do not hold them). Default:
            the model's own ``augmentation_layers`` if it has any (models saved by keras-asc
            0.1), else none.

    Example:
        >>> spectrograms = spectrogram_dataset(model, make_dataset(data_dir, 25, batch_size=32))
    """
    _check_tensorflow_backend()
    frontend = getattr(model, "frontend", None)
    if frontend is None:
        raise ValueError(
            f"Model {model.name!r} has no `frontend` attribute (its LogMelSpectrogram)."
        )
    if augmentations is None:
        augmentations = getattr(model, "augmentation_layers", ())
    augmentations = list(augmentations) if training else []

    def to_spectrograms(waveforms, labels, *unused):
        x = frontend(waveforms, training=training)
        for layer in augmentations:
            x = layer(x, training=True)
        return x, labels

    return dataset.map(to_spectrograms, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE
    )


def _loss_and_metric(dataset):
    label_spec = dataset.element_spec[1]
    if label_spec.shape.rank == 2:
        return (
            tf_keras.losses.CategoricalCrossentropy(from_logits=True),
            tf_keras.metrics.CategoricalAccuracy(name="accuracy"),
        )
    return (
        tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
    )


_RANGE_NAMES = ("output", "post_activation", "quantize_layer")


def _range_variables(layer):
    """``(min variable, max variable)`` of the activation quantiser of a TF-MOT layer, or None.

    TF-MOT names them ``output_min``/``output_max`` (output quantisers),
    ``post_activation_min``/``..._max`` (activation quantisers) and
    ``LAYER_min``/``LAYER_max`` after the input QuantizeLayer's own name (``quantize_layer``,
    ``quantize_layer_1`` for the second one in a process or an ensemble's second input);
    weight ranges (``kernel_min``, ...) are recomputed from the weights at every step and are
    left alone.
    """
    found = {}
    for variable in layer.non_trainable_weights:
        short = variable.name.split("/")[-1].split(":")[0]
        for prefix in (*_RANGE_NAMES, layer.name):
            for end in ("min", "max"):
                if short == f"{prefix}_{end}":
                    found[end] = variable
    return (found["min"], found["max"]) if len(found) == 2 else None


def calibrate_activation_ranges(qat_model, twin, batches):
    """Start every activation range of a fresh QAT model at the float model's statistics.

    TF-MOT starts activation ranges at [-6, 6] and moves them by an exponential moving average
    with decay 0.999, so short fine-tuning ends with ranges that still reflect that guess. This
    sets each range to the mean over ``batches`` of the per-batch minimum and maximum (0
    included) of the tensor it quantises, read from the float twin, like the observers of
    PyTorch's QAT; fine-tuning then moves them on from there.

    Args:
        qat_model: the model from ``quantize_model`` (one member, not an ensemble).
        twin: the float twin it was built from (same layer names).
        batches: spectrogram batches (for example a few training batches).

    Returns:
        The number of ranges set.
    """
    # A ReLU followed by a Subsample (a deferred depthwise stride) is quantised at the strided
    # positions in the int8 model: its range comes from the subsampled tensor.
    subsampled = {
        id(layer.input): layer.output
        for layer in twin.layers
        if isinstance(layer, twin_module.Subsample)
    }
    targets = []
    for layer in qat_model.layers:
        variables = _range_variables(layer)
        if variables is None:
            continue
        if type(layer).__name__ == "QuantizeLayer":
            targets.append((None, variables))
        else:
            output = twin.get_layer(layer.layer.name).output
            targets.append((subsampled.get(id(output), output), variables))
    probe = tf_keras.Model(twin.inputs, [t for t, _ in targets if t is not None])
    lows, highs = [], []
    for batch in batches:
        outputs = probe(batch, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        values = iter(outputs)
        tensors = [batch if t is None else next(values) for t, _ in targets]
        lows.append([min(float(tf.reduce_min(x)), 0.0) for x in tensors])
        highs.append([max(float(tf.reduce_max(x)), 0.0) for x in tensors])
    if not lows:
        raise ValueError("calibrate_activation_ranges: no calibration batches.")
    for (_, (low_var, high_var)), low, high in zip(
        targets, np.mean(lows, axis=0), np.mean(highs, axis=0), strict=True
    ):
        low_var.assign(tf.fill(low_var.shape, float(low)))
        high_var.assign(tf.fill(high_var.shape, float(high)))
    return len(targets)


def _fine_tune(qat_model, data, *, epochs, schedule, validation_data, steps_per_epoch, verbose):
    loss, metric = _loss_and_metric(data)
    qat_model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate=schedule(0)),
        loss=loss,
        metrics=[metric],
    )
    return qat_model.fit(
        data,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=validation_data,
        callbacks=[tf_keras.callbacks.LearningRateScheduler(schedule)],
        verbose=verbose,
    )


def quantize_aware_train(
    model,
    train_dataset,
    epochs,
    peak_learning_rate,
    *,
    decay_epochs,
    final_factor,
    validation_dataset=None,
    steps_per_epoch=None,
    calibration_batches=8,
    spectrogram_augmentations=None,
    verbose="auto",
):
    """Fine-tune a trained Keras 3 keras-asc model with quantisation-aware training.

    The model's tf_keras twin is wrapped by TF-MOT (8-bit per-channel weights, 8-bit
    per-tensor activations, Conv + BN (+ ReLU) left unquantised in between so TFLite folds
    them, GRN in float) and trained with Adam and ``QATLearningRate``. An ensemble is
    fine-tuned member by member, each on spectrograms from its own front-end, and returned as
    one model with one spectrogram input per member and the weighted sum of their logits.
    The Keras 3 model is not modified.

    Args:
        model: trained Keras 3 keras-asc model or ``Ensemble`` (waveform input; any backend
            trained it, but this function needs ``KERAS_BACKEND=tensorflow``).
        train_dataset: batched ``tf.data.Dataset`` of (waveforms (B, samples) float32, labels
            int (B,) or one-hot (B, classes)[, devices]), e.g. from
            ``keras_asc.data.pipeline.make_dataset(..., training=True)``.
        epochs: fine-tuning epochs (the report's: ``keras_asc.training.QAT_RECIPE.epochs``).
        peak_learning_rate: learning rate of the first epoch.
        decay_epochs: epoch at which the linear decay reaches ``final_factor``.
        final_factor: floor of the learning rate as a fraction of the peak.
        validation_dataset: optional dataset like ``train_dataset``, evaluated each epoch
            without augmentation.
        steps_per_epoch: batches per epoch (``None``: one pass over ``train_dataset``).
        calibration_batches: training batches that set the initial activation ranges
            (``calibrate_activation_ranges``); 0 keeps TF-MOT's [-6, 6] start.
        spectrogram_augmentations: Keras layers applied to the training spectrograms after
            the front-end, as in float training (``keras_asc.training.quantize_run`` passes the
            run's recipe's, for example ``FreqMixStyle``), or for an ensemble a dict of such
            lists by member name; see ``spectrogram_dataset``.
        verbose: passed to ``fit``.

    Returns:
        The QAT tf_keras model (spectrogram input(s), float logits), ready for
        ``export_int8(..., qat=True)``; ``qat_histories(qat_model)`` gives each member's
        ``fit`` history.

    Example:
        >>> from keras_asc.training import QAT_RECIPE
        >>> qat_model = quantize_aware_train(keras_asc.load_model("runs/moflenet57/model.keras"),
        ...                                  make_dataset("/data/tau22", 25, batch_size=256),
        ...                                  QAT_RECIPE.epochs, **QAT_RECIPE.schedule_arguments())
    """
    _check_tensorflow_backend()
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive integer. Received: epochs={epochs}")
    if not isinstance(train_dataset, tf.data.Dataset):
        raise TypeError(
            f"train_dataset must be a batched tf.data.Dataset of (waveforms, labels). "
            f"Received: {type(train_dataset).__name__}"
        )
    schedule = QATLearningRate(peak_learning_rate, decay_epochs, final_factor)
    twin = to_tf_keras(model)
    spec = twin_spec(twin)
    qat_members, histories = [], []
    pairs = list(zip(_keras_members(model), member_models(twin), strict=True))
    for index, (keras_member, member_twin) in enumerate(pairs):
        if verbose and len(pairs) > 1:  # whose epoch lines follow
            print(f"QAT: member {index + 1}/{len(pairs)}: {keras_member.name}", flush=True)
        qat_member = attach_spec(_quantize_single(member_twin), twin_spec(member_twin))
        augmentations = spectrogram_augmentations
        if isinstance(augmentations, dict):  # an ensemble's, by member name
            augmentations = augmentations.get(keras_member.name, [])
        data = spectrogram_dataset(keras_member, train_dataset, training=True, augmentations=augmentations)
        if calibration_batches:
            calibration = (x for x, _ in data.take(int(calibration_batches)))
            calibrate_activation_ranges(qat_member, member_twin, calibration)
        validation = None
        if validation_dataset is not None:
            validation = spectrogram_dataset(keras_member, validation_dataset, training=False)
        history = _fine_tune(
            qat_member,
            data,
            epochs=int(epochs),
            schedule=schedule,
            validation_data=validation,
            steps_per_epoch=steps_per_epoch,
            verbose=verbose,
        )
        qat_members.append(qat_member)
        histories.append(history.history)
    result = _ensemble_from_members(qat_members, spec) if spec.member_names else qat_members[0]
    _HISTORIES[result] = histories
    return result


# Kept beside the QAT models rather than set on them (tf_keras would track the attribute).
_HISTORIES = weakref.WeakKeyDictionary()


def qat_histories(qat_model):
    """The per-member ``fit`` histories recorded by ``quantize_aware_train``."""
    return list(_HISTORIES.get(qat_model, []))
