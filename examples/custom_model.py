"""A custom network from keras-asc's block layers, in your own Keras functional model.

Shows how to:

1. assemble a backbone (log-mel spectrograms (mel bins, frames, 1) -> logits) from the block
   layers ``keras_asc.layers.MofleBlock``, ``CPMobileBlock`` and ``CPResNetBasicBlock``
   between ordinary Keras layers;
2. put it behind a log-mel front-end with ``keras_asc.models.AudioClassifier``, which makes a
   waveform -> logits model like the presets;
3. check it against the DCASE budget (128,000 int8 parameter bytes, 30 M MACs) with
   ``keras_asc.complexity.check_budget``;
4. fit it briefly with plain Keras, save it and reload it with ``keras_asc.load_model``.

Without ``--data`` it writes a small synthetic dataset in the TAU22 layout under OUT_DIR; the
model is saved as OUT_DIR/custom_model.keras.

Usage:
    python examples/custom_model.py OUT_DIR [--width 32] [--epochs 2] [--data TAU22_DIR]
"""

import argparse
import os

import keras
import numpy as np

import keras_asc
from keras_asc.data import make_dataset, make_synthetic_tau22
from keras_asc.layers import CPMobileBlock, CPResNetBasicBlock, LogMelSpectrogram, MofleBlock
from keras_asc.models import AudioClassifier


def build_backbone(spectrogram_shape, num_classes=10, width=32, name="custom"):
    """Spectrograms to logits: a strided stem, MofleNet and CP-Mobile blocks, a CP-ResNet
    block, then the usual 1x1-convolution head with global average pooling.

    Every layer gets a name under ``name``: the blocks name their sub-layers after themselves,
    so weights and complexity rows are easy to find.
    """
    inputs = keras.Input(spectrogram_shape, name="spectrogram")
    x = keras.layers.Conv2D(
        width // 2, 3, strides=2, padding="same", use_bias=False, name=f"{name}_stem_conv"
    )(inputs)
    x = keras.layers.BatchNormalization(name=f"{name}_stem_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_stem_relu")(x)
    x = MofleBlock(width, 2 * width, strides=2, name=f"{name}_mofle1")(x)  # widens: no residual
    x = MofleBlock(width, 2 * width, name=f"{name}_mofle2")(x)  # identity residual + GRN
    x = CPMobileBlock(width, 2 * width, strides=(2, 1), name=f"{name}_mobile")(
        x
    )  # strided residual
    x = CPResNetBasicBlock(width, kernel_sizes=(3, 1), name=f"{name}_resnet")(x)
    x = keras.layers.Conv2D(num_classes, 1, use_bias=False, name=f"{name}_head_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_head_bn")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name=f"{name}_head_pool")(x)
    return keras.Model(inputs, outputs, name=name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="output folder (created): dataset and saved model")
    parser.add_argument("--data", help="TAU22 dataset folder (default: a synthetic one in OUT_DIR)")
    parser.add_argument("--split", default="100", help="training split (default 100)")
    parser.add_argument("--width", type=int, default=32, help="channels of the blocks")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--clips-per-class", type=int, default=30, help="synthetic training clips per scene (>= 20)"
    )
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    # 128 mel bands, one frame per 1000 samples (31.25 ms): 128 x 32 log-mels per 1-s clip.
    frontend = LogMelSpectrogram(
        num_mel_bins=128, hop_length=1000, freq_mask_bins=24, name="custom_frontend"
    )
    spectrogram_shape = frontend.compute_output_shape((None, 32000))[1:]
    backbone = build_backbone(spectrogram_shape, width=args.width)
    model = AudioClassifier(backbone, frontend)

    report = keras_asc.complexity.check_budget(model)
    print(f"spectrogram {spectrogram_shape}; {report.params:,} parameters, {report.macs:,} MACs")
    print(report)
    if not report.ok:
        raise SystemExit("the model is over the DCASE budget: make --width smaller")

    data_dir = args.data or make_synthetic_tau22(
        os.path.join(args.out_dir, "data"),
        clips_per_class=args.clips_per_class,
        test_clips_per_class=9,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,  # XLA compiles for longer than these short CPU runs train
    )
    model.fit(
        make_dataset(data_dir, args.split, batch_size=args.batch_size).dataset,
        epochs=args.epochs,
        verbose=2,
    )

    path = os.path.join(args.out_dir, "custom_model.keras")
    model.save(path)
    reloaded = keras_asc.load_model(path)
    waveforms = next(iter(make_dataset(data_dir, "test", batch_size=8, training=False).dataset))[0]
    difference = np.max(
        np.abs(model.predict(waveforms, verbose=0) - reloaded.predict(waveforms, verbose=0))
    )
    print(
        f"saved {path}; reloaded as {type(reloaded).__name__}, max logit difference {difference:.2e}"
    )


if __name__ == "__main__":
    main()
