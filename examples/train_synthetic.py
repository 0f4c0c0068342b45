"""Train MofleNet57 on a small synthetic TAU22-layout dataset and evaluate it.

Runs on a laptop CPU in a few minutes: it writes the dataset, trains with the MofleNet57
recipe scaled to a few epochs (reference initialisation, Adam with L2 weight decay 1e-4,
four-phase schedule, time roll, Freq-MixStyle, frequency masking), then prints the DCASE
metrics on the test split.

Usage:
    python examples/train_synthetic.py OUT_DIR [--epochs 6] [--model moflenet57]
"""

import argparse
import os

import keras_asc
from keras_asc.data.synthetic import make_synthetic_tau22


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder for the dataset and the run (created)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--model", default="moflenet57")
    parser.add_argument("--clips-per-class", type=int, default=30)
    args = parser.parse_args()

    data_dir = make_synthetic_tau22(
        os.path.join(args.out_dir, "data"), clips_per_class=args.clips_per_class, test_clips_per_class=9
    )
    result = keras_asc.train(
        args.model,
        data_dir=data_dir,
        split=100,
        epochs=args.epochs,
        batch_size=16,
        out_dir=os.path.join(args.out_dir, "run"),
        verbose=2,
        jit_compile=False,
    )
    metrics = keras_asc.evaluate(result.model, data_dir, verbose=False)
    print(metrics)


if __name__ == "__main__":
    main()
