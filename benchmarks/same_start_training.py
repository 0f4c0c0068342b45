"""Train one preset from the *same* initial weights in two checkouts, to compare their training.

A change that rebuilds models (for example the move from flat graphs to block layers and a
backbone behind a classifier) can change which random initial weights a seed draws, and a
short run's test accuracy then moves by several points for that reason alone. This script
separates the two: run it first against the old checkout with ``--mode dump`` (it stores the
starting weights by layer name, block sub-layers included), then against the new one with
``--mode load`` (it starts from those weights); it prints each epoch's training loss and
accuracy and the final macro test accuracy, so the two trajectories can be compared.

Usage:
    PYTHONPATH=OLD python benchmarks/same_start_training.py --mode dump --data DATA --out OUT_OLD
    PYTHONPATH=NEW python benchmarks/same_start_training.py --mode load --data DATA --out OUT_NEW

DATA is a TAU22-layout folder (``benchmarks/learning_parity.py`` writes one under
``--out/data``); both runs use split 100 and evaluate on the test split.
"""

import argparse
import os
import pickle
import tempfile

import keras

import keras_asc


def _leaves(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaves(layer)
        elif hasattr(layer, "sublayers"):  # a keras_asc block layer
            yield from layer.sublayers
        else:
            yield layer


class _SharedStart(keras.callbacks.Callback):
    def __init__(self, mode, path):
        super().__init__()
        self.mode, self.path = mode, path

    def on_train_begin(self, logs=None):
        layers = {layer.name: layer for layer in _leaves(self.model) if layer.weights}
        if self.mode == "dump":
            with open(self.path, "wb") as handle:
                pickle.dump({name: layer.get_weights() for name, layer in layers.items()}, handle)
            return
        with open(self.path, "rb") as handle:
            saved = pickle.load(handle)
        if sorted(saved) != sorted(layers):
            raise ValueError(f"Layer names differ between the checkouts: {sorted(set(saved) ^ set(layers))}")
        for name, weights in saved.items():
            layers[name].set_weights(weights)

    def on_epoch_end(self, epoch, logs=None):
        print(f"epoch {epoch} loss {logs['loss']:.5f} accuracy {logs['accuracy']:.4f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("dump", "load"), required=True)
    parser.add_argument("--data", required=True, help="TAU22-layout dataset folder")
    parser.add_argument("--out", required=True, help="run folder (must not hold a run)")
    parser.add_argument("--model", default="moflenet57")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dirs", help="impulse-response folder for DIR")
    parser.add_argument("--cache", help="decoded-audio cache folder")
    parser.add_argument(
        "--weights",
        default=os.path.join(tempfile.gettempdir(), "keras_asc_same_start.pkl"),
        help="where the starting weights are stored",
    )
    args = parser.parse_args()
    result = keras_asc.train(
        args.model,
        data_dir=args.data,
        split=100,
        epochs=args.epochs,
        batch_size=args.batch_size,
        out_dir=args.out,
        seed=args.seed,
        dirs_dir=args.dirs,
        cache_dir=args.cache,
        resume=False,
        verbose=0,
        tensorboard=False,
        callbacks=[_SharedStart(args.mode, args.weights)],
        jit_compile=False,
    )
    evaluation = keras_asc.evaluate(result.model, args.data, "test", cache_dir=args.cache, verbose=False)
    print(f"{args.mode}: {args.model} seed {args.seed}: test macro accuracy {100 * float(evaluation.macro_accuracy):.2f} %")


if __name__ == "__main__":
    main()
