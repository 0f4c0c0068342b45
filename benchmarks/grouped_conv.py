"""Network training step with keras_asc's per-group convolutions against Keras' own path.

On the TensorFlow backend Keras runs every grouped convolution inside a nested XLA function;
``keras_asc.layers.Conv2D`` convolves each group with ordinary ops instead (same outputs).
This script times ``train_on_batch`` of the MofleNet57 and CP-ResNet59 networks (spectrogram
input, batch 32) both ways in one process, alternating, and prints the medians and the ratio.

Run with ``KERAS_BACKEND=tensorflow python benchmarks/grouped_conv.py [--repeats 10]``.
"""

import argparse
import time

import keras
import numpy as np

import keras_asc
from keras_asc.layers import convolution

INPUTS = {"moflenet57": (256, 64, 1), "cp_resnet59": (256, 43, 1)}


def _compiled(name, x, y):
    model = keras_asc.build(name).backbone
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    for _ in range(2):  # trace and warm up
        model.train_on_batch(x, y)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    if keras.backend.backend() != "tensorflow":
        parser.error("the comparison concerns the TensorFlow backend: set KERAS_BACKEND=tensorflow")
    rng = np.random.default_rng(0)
    for name, shape in INPUTS.items():
        x = rng.normal(size=(args.batch_size, *shape)).astype("float32")
        y = rng.integers(0, 10, args.batch_size)
        ours = _compiled(name, x, y)
        # The same model built while the layer falls back to Keras' call (traced that way).
        own_call = convolution.Conv2D.call
        convolution.Conv2D.call = keras.layers.Conv2D.call
        try:
            keras_path = _compiled(name, x, y)
        finally:
            convolution.Conv2D.call = own_call
        times = {"per-group": [], "keras": []}
        for _ in range(args.repeats):
            for key, model in (("per-group", ours), ("keras", keras_path)):
                start = time.perf_counter()
                model.train_on_batch(x, y)
                times[key].append(time.perf_counter() - start)
        ours_ms, keras_ms = (1000 * np.median(times[key]) for key in ("per-group", "keras"))
        print(
            f"{name:12s} train step, batch {args.batch_size}: per-group {ours_ms:6.0f} ms, "
            f"Keras grouped-conv path {keras_ms:6.0f} ms, speed-up {keras_ms / ours_ms:.2f}x"
        )


if __name__ == "__main__":
    main()
