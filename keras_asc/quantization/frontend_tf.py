"""The log-mel front-end inside an int8 file, as TensorFlow ops the converter makes builtin.

``tf_frontend`` computes a ``LogMelSpectrogram`` layer's inference log-mel with ops that map to
float32 TFLite builtins (MIRROR_PAD, GATHER framing, MUL window, RFFT2D, the non-zero blocks of
the mel bank as FULLY_CONNECTED, LOG); ``export_int8(frontend_in_file=True)`` puts it ahead of
the first QUANTIZE. The other front-ends: the Keras layer (``keras_asc.layers.frontend``), the
NumPy reference a host runs beside the file (``frontend.frontend_numpy``) and the C99 one for
devices (``export_c``). TFLite Micro has no RFFT2D kernel, so a microcontroller uses the C one.
"""

import numpy as np
import tensorflow as tf

from keras_asc.layers.frontend import LogMelSpectrogram
from keras_asc.quantization.frontend import frontend_params

# === The front-end inside the file ===

_FRONTEND_SCOPE = "waveform_frontend"


def tf_frontend(waveform, layer):
    """The inference log-mel of a ``LogMelSpectrogram`` layer, in TensorFlow ops that the
    TFLite converter maps to builtin float32 ops.

    Reflect padding (MIRROR_PAD), framing (``tf.signal.frame``: GATHER), window (MUL),
    ``tf.signal.rfft`` (RFFT2D), power (REAL, IMAG, SQUARE), the layer's mel bank as its
    non-zero blocks (FULLY_CONNECTED per block; about a seventh of the dense bank), log and
    normalisation.

    Args:
        waveform: float32 tensor (batch, num_samples).
        layer: a ``LogMelSpectrogram`` (made outside any ``tf.function``: it owns a seed
            variable).

    Returns:
        float32 tensor (batch, num_mel_bins, frames, 1), as the layer at ``training=False``.
    """
    params = frontend_params(layer)
    fft_length = layer.fft_length
    x = waveform
    if layer.pre_emphasis:
        x = x[:, 1:] - layer.pre_emphasis * x[:, :-1]
    x = tf.pad(x, [[0, 0], [fft_length // 2, fft_length // 2]], mode="REFLECT")
    frames = tf.signal.frame(x, fft_length, layer.hop_length) * params["window"]
    spectrum = tf.signal.rfft(frames, [fft_length])
    power = tf.square(tf.math.real(spectrum)) + tf.square(tf.math.imag(spectrum))
    mel = tf.concat(
        [
            tf.matmul(power[..., first:end], tf.constant(block))
            for ((first, end), _), block in zip(
                layer._bank_blocks, layer._inference_blocks, strict=True
            )
        ],
        axis=-1,
    )
    logmel = tf.math.log(mel + layer.log_offset)
    if layer.normalize_offset != 0.0:
        logmel = logmel + layer.normalize_offset
    if layer.normalize_scale != 1.0:
        logmel = logmel / layer.normalize_scale
    # expand_dims, not [..., None]: the latter is a StridedSlice TFLite has no builtin for.
    return tf.expand_dims(tf.transpose(logmel, (0, 2, 1)), -1)


def _waveform_function(model, spec):
    """``(tf.function, [input spec])``: waveform -> every input's front-end -> ``model``."""
    if spec.num_samples is None:
        raise ValueError(
            f"{spec.name!r} takes spectrograms: the front-end can go into the file only for a "
            f"model that takes waveforms."
        )

    layers = [
        LogMelSpectrogram(**{k: v for k, v in c.items() if k not in ("name", "trainable", "dtype")})
        for c in spec.frontends
    ]

    @tf.function(autograph=False)
    def function(waveform):
        spectrograms = []
        for index, layer in enumerate(layers):
            with tf.name_scope(f"{_FRONTEND_SCOPE}_{index}"):
                spectrograms.append(tf_frontend(waveform, layer))
        return model(spectrograms if len(spectrograms) > 1 else spectrograms[0], training=False)

    return function, [tf.TensorSpec((None, spec.num_samples), tf.float32, name="waveform")]


def _waveform_samples(representative_dataset, max_samples):
    """Calibration samples ``[(1, samples) waveform]`` for a file with its front-end."""

    def generate():
        count = 0
        for element in representative_dataset:
            if isinstance(element, tuple):
                element = element[0]
            waveforms = np.asarray(element, dtype="float32")
            if waveforms.ndim != 2:
                raise ValueError(
                    f"With the front-end in the file the representative dataset must yield "
                    f"waveform batches (B, samples). Received shape {waveforms.shape}"
                )
            for row in waveforms:
                yield [row[None]]  # a list, in input order: see conversion._input_order
                count += 1
                if count >= max_samples:
                    return

    return generate


