"""Quickstart: build MofleNet57, check its complexity, and fit it with plain Keras.

Shows the three things most users need first:

1. ``keras_asc.build("moflenet57")``: a Keras model from (batch, 32000) waveforms at 32 kHz
   to 10 scene logits, its log-mel front-end inside;
2. ``keras_asc.complexity.summary(model)``: per-layer parameters and MACs, counted by the
   DCASE rules, and the check against the 128 kB / 30 M MAC budget;
3. a TAU22 ``tf.data`` pipeline (``keras_asc.data.make_dataset``) fed to ``model.compile``,
   ``model.fit`` and ``model.evaluate``, as for any Keras model, with the MofleNet57 recipe's
   optimiser (Adam with L2 weight decay and the four-phase learning-rate schedule).

Without ``--data`` it writes a small synthetic dataset in the TAU22 layout under OUT_DIR.
For the full recipe (augmentations, checkpoints, resuming) see ``train_and_evaluate.py``.

Usage:
    python examples/quickstart.py OUT_DIR [--epochs 3] [--data TAU22_DIR --split 25]
"""

import argparse
import os

import keras

import keras_asc
from keras_asc.data import make_dataset, make_synthetic_tau22
from keras_asc.training import get_recipe


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="output folder (created): the synthetic dataset goes here")
    parser.add_argument("--data", help="TAU22 dataset folder (default: a synthetic one in OUT_DIR)")
    parser.add_argument(
        "--split", default="100", help="training split: 5, 10, 25, 50 or 100 (default 100)"
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--clips-per-class", type=int, default=30, help="synthetic training clips per scene (>= 20)"
    )
    args = parser.parse_args()

    model = keras_asc.build("moflenet57")
    print(keras_asc.complexity.summary(model))

    data_dir = args.data or make_synthetic_tau22(
        os.path.join(args.out_dir, "data"),
        clips_per_class=args.clips_per_class,
        test_clips_per_class=9,
    )
    train_data = make_dataset(data_dir, args.split, batch_size=args.batch_size)  # seeded shuffle
    train_dataset = train_data.dataset
    test_dataset = make_dataset(data_dir, "test", batch_size=64, training=False).dataset

    recipe = get_recipe("moflenet57").with_overrides(
        epochs=args.epochs
    )  # the schedule scaled to --epochs
    steps_per_epoch = len(train_data.clips) // args.batch_size
    model.compile(
        optimizer=recipe.make_optimizer(steps_per_epoch=steps_per_epoch),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,  # XLA compiles for longer than these short CPU runs train
    )
    model.fit(train_dataset, epochs=args.epochs, verbose=2)
    loss, accuracy = model.evaluate(test_dataset, verbose=0)
    print(f"test loss {loss:.4f}, test accuracy {100 * accuracy:.2f} % (chance 10 %)")


if __name__ == "__main__":
    main()
