"""What every keras-asc model family shares: waveform or spectrogram input, and the head."""

import keras

from keras_asc.layers.blocks import batch_norm, conv_kernel_initializer

SAMPLING_RATE = 32000


def _deserialize_layers(layers):
    result = []
    for layer in layers or ():
        if isinstance(layer, dict):
            layer = keras.saving.deserialize_keras_object(layer)
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                f"spectrogram_augmentations must hold Keras layers or their serialised configs. "
                f"Received: {layer!r}"
            )
        result.append(layer)
    return result


def spectrogram_input(*, include_frontend, num_samples, frontend_config, spectrogram_augmentations, name):
    """Create the model input and return ``(inputs, spectrogram, frontend, augmentation_layers)``.

    With ``include_frontend`` the model takes (batch, num_samples) waveforms at 32 kHz and
    computes its own log-mel spectrogram, so ensemble members with different hops share one
    input; otherwise it takes (batch, num_mel_bins, frames, 1) spectrograms. Spectrogram-stage
    augmentations (for example ``FreqMixStyle``) sit between the front-end and the network and
    are the identity at inference.
    """
    from keras_asc.layers.frontend import LogMelSpectrogram

    frontend = LogMelSpectrogram(**frontend_config, name=f"{name}_frontend")
    if include_frontend:
        inputs = keras.Input(shape=(num_samples,), name="waveform")
        x = frontend(inputs)
    else:
        shape = frontend.compute_output_shape((None, num_samples))[1:]
        inputs = keras.Input(shape=shape, name="spectrogram")
        x = inputs
    augmentation_layers = _deserialize_layers(spectrogram_augmentations)
    for layer in augmentation_layers:
        x = layer(x)
    return inputs, x, frontend, augmentation_layers


def classifier_head(x, num_classes, name, kernel_initializer=None):
    """1x1 convolution to the classes (no bias), BN, global average pooling: logits.

    ``kernel_initializer`` defaults to He-normal with fan-out (CP-Mobile, MofleNet); CP-ResNet
    starts its classifier at zero.
    """
    x = keras.layers.Conv2D(
        num_classes,
        1,
        use_bias=False,
        kernel_initializer=kernel_initializer or conv_kernel_initializer(),
        name=f"{name}_head_conv",
    )(x)
    x = batch_norm(x, f"{name}_head_bn")
    return keras.layers.GlobalAveragePooling2D(name=f"{name}_head_pool")(x)


def input_config(model):
    """The constructor arguments every family shares, for ``get_config``."""
    return {
        "num_classes": model.num_classes,
        "include_frontend": model.include_frontend,
        "num_samples": model.num_samples,
        "frontend_config": dict(model.frontend_config),
        "spectrogram_augmentations": [
            keras.saving.serialize_keras_object(layer) for layer in model.augmentation_layers
        ],
        "name": model.name,
        "trainable": model.trainable,
    }


def validate_common(num_classes, num_samples):
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2. Received: num_classes={num_classes}")
    if int(num_samples) != num_samples or num_samples < 4096:
        raise ValueError(
            f"num_samples must be an integer >= 4096 (one FFT frame). Received: num_samples={num_samples}"
        )
