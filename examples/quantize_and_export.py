"""Quantisation-aware training, int8 TFLite export and LiteRT inference of a trained model.

Shows the deployment path, step by step, with the public functions of
``keras_asc.quantization`` (TensorFlow backend):

1. a trained float model: ``--run RUN_DIR`` (a ``keras-asc train`` run folder or a ``.keras``
   file), or else a tiny ``keras_asc.train`` run made here;
2. ``quantize_aware_train``: TF-MOT quantisation-aware fine-tuning of the model's tf_keras
   twin (int8 per-channel weights, int8 activations), on the same training pipeline;
3. ``export_int8``: an int8 ``.tflite`` file (float32 spectrogram in, float32 logits out),
   its JSON description and the front-end constants; the export refuses a model over the
   DCASE 128,000-byte parameter budget;
4. ``TFLiteClassifier``: the ``.tflite`` file in the LiteRT interpreter with waveforms in
   (the log-mel front-end runs in NumPy beside it), compared with the QAT model
   (``prediction_agreement``) and with the float Keras model on the test split, and both
   evaluated with ``keras_asc.evaluate``.

``keras-asc quantize RUN_DIR --data DIR``, or ``keras_asc.training.quantize_run(run_dir,
data_dir)`` in one call, does the same with the report's whole QAT recipe (and exports
ensembles member by member).

Usage:
    python examples/quantize_and_export.py OUT_DIR [--qat-epochs 2] [--run RUN_DIR --data DIR]
"""

import argparse
import os

import keras
import numpy as np

import keras_asc
from keras_asc.data import make_dataset, make_synthetic_tau22
from keras_asc.quantization import (
    TFLiteClassifier,
    export_int8,
    prediction_agreement,
    quantize_aware_train,
)
from keras_asc.training import QAT_RECIPE


def float_model(args, data_dir):
    """The trained float model: loaded from ``--run``, or trained briefly into OUT_DIR/run."""
    if args.run:
        path = os.path.join(args.run, "model.keras") if os.path.isdir(args.run) else args.run
        return keras_asc.load_model(path, compile=False)  # QAT compiles its own optimiser
    result = keras_asc.train(
        args.model,
        data_dir=data_dir,
        split=args.split,
        epochs=args.epochs,
        batch_size=args.batch_size,
        out_dir=os.path.join(args.out_dir, "run"),
        verbose=2,
        jit_compile=False,  # XLA compiles for longer than short CPU runs train
    )
    return result.model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "out_dir", help="output folder (created): int8/ files, and the run and data made here"
    )
    parser.add_argument(
        "--run", help="trained run folder or .keras file (default: train --model briefly)"
    )
    parser.add_argument("--data", help="TAU22 dataset folder (default: a synthetic one in OUT_DIR)")
    parser.add_argument(
        "--split", default="100", help="training split for training and QAT (default 100)"
    )
    parser.add_argument(
        "--model", default="moflenet57", help="model to train when there is no --run"
    )
    parser.add_argument(
        "--epochs", type=int, default=4, help="float training epochs when there is no --run"
    )
    parser.add_argument("--qat-epochs", type=int, default=2, help="QAT epochs (the report: 24)")
    parser.add_argument(
        "--steps-per-epoch", type=int, help="QAT batches per epoch (default: the whole split)"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--clips-per-class", type=int, default=30, help="synthetic training clips per scene (>= 20)"
    )
    args = parser.parse_args()
    if keras.backend.backend() != "tensorflow":
        raise SystemExit(
            f"QAT needs KERAS_BACKEND=tensorflow (running on {keras.backend.backend()})."
        )

    data_dir = args.data or make_synthetic_tau22(
        os.path.join(args.out_dir, "data"),
        clips_per_class=args.clips_per_class,
        test_clips_per_class=9,
    )
    model = float_model(args, data_dir)

    # QAT fine-tunes on the training pipeline (with the model's training front-end and
    # spectrogram augmentations) and returns a tf_keras model with spectrogram input.
    train_dataset = make_dataset(
        data_dir, args.split, batch_size=args.batch_size, training=True
    ).dataset
    qat_model = quantize_aware_train(
        model,
        train_dataset,
        epochs=args.qat_epochs,
        # The report's learning-rate schedule (peak 5e-5, linear decay to 10 %).
        **QAT_RECIPE.schedule_arguments(),
        steps_per_epoch=args.steps_per_epoch,
        verbose=2,
    )

    export = export_int8(
        qat_model, None, os.path.join(args.out_dir, "int8", f"{model.name}.tflite"), qat=True
    )
    print(export)

    int8_model = TFLiteClassifier(export.path)
    test_dataset = make_dataset(data_dir, "test", batch_size=64, training=False).dataset
    agreement, clips = prediction_agreement(int8_model, qat_model, test_dataset.as_numpy_iterator())
    print(f"int8 vs QAT model: same scene on {100 * agreement:.2f} % of {clips} test clips")
    same = total = 0
    for waveforms, _ in test_dataset.as_numpy_iterator():
        float_classes = model.predict(waveforms, verbose=0).argmax(axis=1)
        same += int(np.sum(int8_model.predict(waveforms).argmax(axis=1) == float_classes))
        total += len(waveforms)
    print(f"int8 vs float model: same scene on {100 * same / total:.2f} % of {total} test clips")

    for name, predictor in (("float", model), ("int8", int8_model)):
        result = keras_asc.evaluate(predictor, data_dir, split="test", verbose=False)
        print(f"{name:>5} macro class-wise accuracy: {100 * result.macro_accuracy:.2f} %")


if __name__ == "__main__":
    main()
