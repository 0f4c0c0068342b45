"""Write a keras-asc plugin: a model and an augmentation, registered through the plugin hooks.

Shows the whole plugin contract (``keras_asc/hookspecs.py``) in one file:

- a model: ``SmallConvBackbone``, a ``keras_asc.models.Backbone`` subclass (log-mel
  spectrograms -> logits) registered with ``keras.saving.register_keras_serializable``, and
  a builder that puts it behind a ``LogMelSpectrogram`` front-end in an
  ``keras_asc.models.AudioClassifier``, registered as ``small_conv`` by a
  ``register_models`` hook;
- an augmentation: ``AddWhiteNoise``, a ``keras_asc.augment.WaveformAugmentation`` run in the
  tf.data training pipeline, registered as ``white_noise`` by a ``register_augmentations``
  hook;
- ``keras_asc.plugins.register_plugin(...)`` registers the plugin at runtime (as in a
  notebook or a test); then ``keras_asc.list_models()`` lists ``small_conv``,
  ``keras_asc.build("small_conv")`` builds it, ``keras_asc.train(..., augment=["white_noise"])``
  trains it with the augmentation, and ``keras_asc.load_model`` reloads the saved run.

Packaging: to make this an installable plugin, move ``SmallConvBackbone``, ``small_conv``,
``AddWhiteNoise`` and the two hook functions (as module-level functions decorated with
``@keras_asc.hookimpl``) into a package, say ``keras_asc_smallconv/__init__.py``, and declare
it under the ``keras_asc`` entry-point group in its ``pyproject.toml``::

    [project.entry-points.keras_asc]
    smallconv = "keras_asc_smallconv"

After ``pip install ./keras-asc-smallconv`` keras-asc finds it on its own (no
``register_plugin`` call): ``keras-asc list`` shows the model and the augmentation, and
``keras-asc train --model small_conv --augment white_noise ...`` uses them. Register the Keras
classes under your package's name (``package="keras_asc_smallconv"``) so saved models reload
in a fresh process. A complete example package with its tests is
``plugins/keras-asc-tinymobile`` in the keras-asc repository.

Usage:
    python examples/write_a_plugin.py OUT_DIR [--epochs 2] [--data TAU22_DIR]
"""

import argparse
import os

import keras_asc


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="output folder (created): the run and a synthetic dataset")
    parser.add_argument("--data", help="TAU22 dataset folder (default: a synthetic one in OUT_DIR)")
    parser.add_argument("--split", default="100", help="training split (default 100)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--clips-per-class", type=int, default=30, help="synthetic training clips per scene (>= 20)"
    )
    return parser.parse_args()


if __name__ == "__main__":
    # Parsed before the imports below, which load TensorFlow (seconds): `--help` and argument
    # errors answer at once. `import keras_asc` above is light and keeps TensorFlow's log quiet.
    ARGS = parse_args()

# A plugin package would import these at its top.
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_asc.augment import WaveformAugmentation  # noqa: E402
from keras_asc.data import make_synthetic_tau22  # noqa: E402
from keras_asc.layers import LogMelSpectrogram  # noqa: E402
from keras_asc.models import AudioClassifier, Backbone  # noqa: E402
from keras_asc.plugins import register_plugin  # noqa: E402

PACKAGE = "keras_asc_smallconv"


@keras.saving.register_keras_serializable(package=PACKAGE)
class SmallConvBackbone(Backbone):
    """Three strided 3x3 convolutions with BN and ReLU, then a 1x1 head and global pooling.

    Args:
        num_classes: number of scenes.
        spectrogram_shape: (mel bins, frames, 1) of its input.
        width: channels of the first convolution (doubled by each of the next two).
        name: model name, the prefix of every layer name.

    Example:
        >>> backbone = SmallConvBackbone(spectrogram_shape=(128, 32, 1))
    """

    def __init__(
        self, num_classes=10, spectrogram_shape=(128, 32, 1), width=8, name="small_conv", **kwargs
    ):
        # === Layers ===
        inputs = keras.Input(tuple(spectrogram_shape), name="spectrogram")
        x = inputs
        for index, filters in enumerate((width, 2 * width, 4 * width)):
            x = keras.layers.Conv2D(
                filters, 3, strides=2, padding="same", use_bias=False, name=f"{name}_conv{index}"
            )(x)
            x = keras.layers.BatchNormalization(name=f"{name}_bn{index}")(x)
            x = keras.layers.ReLU(name=f"{name}_relu{index}")(x)
        x = keras.layers.Conv2D(num_classes, 1, use_bias=False, name=f"{name}_head_conv")(x)
        x = keras.layers.BatchNormalization(name=f"{name}_head_bn")(x)
        outputs = keras.layers.GlobalAveragePooling2D(name=f"{name}_head_pool")(x)
        super().__init__(
            inputs=inputs,
            outputs=outputs,
            num_classes=num_classes,
            spectrogram_shape=spectrogram_shape,
            name=name,
            **kwargs,
        )

        # === Config ===
        self.width = width

    def get_config(self):
        return {**super().get_config(), "width": self.width}


def small_conv(
    num_classes=10, width=8, num_mel_bins=128, hop_length=1000, num_samples=32000, name="small_conv"
):
    """The registered builder: ``SmallConvBackbone`` behind its own log-mel front-end.

    ``keras_asc.build("small_conv", **overrides)`` calls it; it must accept ``num_classes``.
    """
    frontend = LogMelSpectrogram(
        num_mel_bins=num_mel_bins, hop_length=hop_length, name=f"{name}_frontend"
    )
    spectrogram_shape = frontend.compute_output_shape((None, num_samples))[1:]
    backbone = SmallConvBackbone(num_classes, spectrogram_shape, width, name=name)
    return AudioClassifier(backbone, frontend, num_samples=num_samples, name=name)


class AddWhiteNoise(WaveformAugmentation):
    """Add white noise at a signal-to-noise ratio drawn uniformly in [min_snr_db, max_snr_db].

    Args:
        min_snr_db: lowest signal-to-noise ratio in dB.
        max_snr_db: highest signal-to-noise ratio in dB.
        p: probability of adding noise to each clip.
    """

    def __init__(self, min_snr_db=10.0, max_snr_db=40.0, p=0.5):
        if not min_snr_db <= max_snr_db:
            raise ValueError(
                f"min_snr_db must not exceed max_snr_db. Received: min_snr_db={min_snr_db}, max_snr_db={max_snr_db}"
            )
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1]. Received: p={p}")
        self.min_snr_db, self.max_snr_db, self.p = float(min_snr_db), float(max_snr_db), float(p)

    def __call__(self, waveforms, devices, seed):
        # Three independent draws from one seed: SNR, whether to apply, the noise itself.
        seeds = tf.random.experimental.stateless_split(seed, 3)
        batch = tf.shape(waveforms)[0]
        snr_db = tf.random.stateless_uniform([batch, 1], seeds[0], self.min_snr_db, self.max_snr_db)
        apply = tf.cast(tf.random.stateless_uniform([batch, 1], seeds[1]) < self.p, waveforms.dtype)
        signal_rms = tf.sqrt(tf.reduce_mean(tf.square(waveforms), axis=1, keepdims=True) + 1e-12)
        noise = (
            tf.random.stateless_normal(tf.shape(waveforms), seeds[2])
            * signal_rms
            * 10.0 ** (-snr_db / 20.0)
        )
        return waveforms + apply * noise

    def get_config(self):
        return {"min_snr_db": self.min_snr_db, "max_snr_db": self.max_snr_db, "p": self.p}


class SmallConvPlugin:
    """The plugin object: one method per hook, named exactly as in ``keras_asc/hookspecs.py``
    (a misspelt hook name is an error when the plugin is registered)."""

    @keras_asc.hookimpl
    def register_models(self, register):
        register(
            "small_conv", small_conv, description="Three strided convolutions on 128 x 32 log-mels."
        )

    @keras_asc.hookimpl
    def register_augmentations(self, register):
        register(
            "white_noise",
            AddWhiteNoise,
            stage="waveform",
            description="White noise at 10-40 dB SNR.",
        )


def main(args):
    register_plugin(SmallConvPlugin(), name="keras-asc-smallconv")
    print(f"models: {', '.join(keras_asc.list_models())}")
    print(f"augmentations: {', '.join(keras_asc.list_augmentations())}")

    model = keras_asc.build("small_conv")
    print(keras_asc.complexity.check_budget(model))

    data_dir = args.data or make_synthetic_tau22(
        os.path.join(args.out_dir, "data"),
        clips_per_class=args.clips_per_class,
        test_clips_per_class=9,
    )
    # A plugin model without a recipe of its own trains with the MofleNet57 recipe.
    result = keras_asc.train(
        "small_conv",
        data_dir=data_dir,
        split=args.split,
        epochs=args.epochs,
        batch_size=args.batch_size,
        augment=["white_noise"],
        out_dir=os.path.join(args.out_dir, "small_conv"),
        verbose=2,
        jit_compile=False,  # XLA compiles for longer than short CPU runs train
    )
    reloaded = keras_asc.load_model(result.model_path)
    print(
        f"reloaded {result.model_path}: {type(reloaded).__name__} with a {type(reloaded.backbone).__name__}"
    )
    metrics = keras_asc.evaluate(reloaded, data_dir, split="test", verbose=False)
    print(f"small_conv macro class-wise accuracy: {100 * metrics.macro_accuracy:.2f} %")


if __name__ == "__main__":
    main(ARGS)
