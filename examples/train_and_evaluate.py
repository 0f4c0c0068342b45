"""Train a preset with its recipe on a TAU22 split, then evaluate it with the DCASE metrics.

Shows ``keras_asc.train`` (the model's recipe: reference initialisation, Adam with L2 weight
decay, the four-phase learning-rate schedule scaled to ``--epochs``, time roll, Freq-MixStyle,
frequency masking; a resumable run folder with ``model.keras``, ``log.csv`` and checkpoints)
and ``keras_asc.evaluate`` (macro class-wise accuracy, accuracy per device and device group,
log loss, confusion matrix), whose result is printed and saved beside the run.

Without ``--data`` it writes a small synthetic dataset in the TAU22 layout under OUT_DIR and
trains on it in a few minutes on a laptop CPU. On the real data, add the device impulse
responses (``keras-asc download tau22 DIR`` fetches them) with ``--dirs``.

Usage:
    python examples/train_and_evaluate.py OUT_DIR [--model moflenet57] [--epochs 6]
    python examples/train_and_evaluate.py OUT_DIR --data ~/data/tau22 --split 25 --epochs 150 \\
        --dirs ~/data/tau22/micirp_dirs
"""

import argparse
import os

import keras_asc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "out_dir", help="output folder (created): the run, its evaluation and a synthetic dataset"
    )
    parser.add_argument("--data", help="TAU22 dataset folder (default: a synthetic one in OUT_DIR)")
    parser.add_argument(
        "--split", default="100", help="training split: 5, 10, 25, 50 or 100 (default 100)"
    )
    parser.add_argument("--model", default="moflenet57", help="registered model (keras-asc list)")
    parser.add_argument(
        "--epochs", type=int, default=6, help="epochs (the recipe's 150 phases are scaled)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, help="clips per batch (the recipe: 256)"
    )
    parser.add_argument("--dirs", help="folder of device impulse responses for DIR augmentation")
    parser.add_argument(
        "--clips-per-class", type=int, default=30, help="synthetic training clips per scene (>= 20)"
    )
    args = parser.parse_args()
    # Imported once the arguments are parsed, so that `--help` answers at once (TensorFlow
    # loads in seconds); `import keras_asc` above is light and keeps TensorFlow's log quiet.
    from keras_asc.data import make_synthetic_tau22

    data_dir = args.data or make_synthetic_tau22(
        os.path.join(args.out_dir, "data"),
        clips_per_class=args.clips_per_class,
        test_clips_per_class=9,
    )
    result = keras_asc.train(
        args.model,
        data_dir=data_dir,
        split=args.split,
        epochs=args.epochs,
        batch_size=args.batch_size,
        dirs_dir=args.dirs,
        out_dir=os.path.join(args.out_dir, f"{args.model}-split{args.split}"),
        verbose=2,
        jit_compile=False,  # XLA compiles for longer than short CPU runs train; drop this on a GPU
    )
    print(
        f"trained {args.model}: final training loss {result.history['loss'][-1]:.4f}; run in {result.run_dir}"
    )

    metrics = keras_asc.evaluate(result.model_path, data_dir, split="test", verbose=False)
    print(metrics)
    metrics.save(os.path.join(result.run_dir, "eval-test"))
    print(f"wrote {os.path.join(result.run_dir, 'eval-test', 'metrics.json')}")


if __name__ == "__main__":
    main()
