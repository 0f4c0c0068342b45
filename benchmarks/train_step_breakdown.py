"""Where keras-asc's full training step spends its time, per model (TensorFlow or any backend).

Times, at one batch size and in one process, medians of ``--repeats`` calls after warm-up:
the network's training step on ready log-mels; the same with the model's training front-end
(STFT, mel, fmax jitter, masking) in front; and the full training model of ``keras_asc.train``
(front-end, Freq-MixStyle, network, ``AdamL2`` with the recipe's schedule). The full step is
the baseline; each part, and the differences that give the front-end's and Freq-MixStyle's
cost inside the step (noisy: a few ms either way), is printed with its share of it. The tf.data side (decoding, DIR, roll) runs in
parallel with the step and is measured by ``pipeline_throughput.py``.

Run: ``KERAS_BACKEND=tensorflow python benchmarks/train_step_breakdown.py [--batch-size 32]``.
"""

import argparse
import functools
import time

import keras
import numpy as np

import keras_asc
from keras_asc.training import get_recipe
from keras_asc.training.train import _build_model, _resolve_augmentations


def _median_ms(function, repeats):
    function()
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="moflenet57,cp_resnet59,dcase24_baseline")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    waveforms = (0.1 * rng.normal(size=(args.batch_size, 32000))).astype("float32")
    labels = rng.integers(0, 10, args.batch_size)
    print(f"backend {keras.backend.backend()}, batch {args.batch_size}, ms per call (median)")
    for name in args.models.split(","):
        recipe = get_recipe(name).with_overrides(batch_size=args.batch_size, epochs=10)

        def compiled(model, recipe=recipe):
            model.compile(
                optimizer=recipe.make_optimizer(steps_per_epoch=10),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                # TensorFlow as before (no XLA); on JAX jit, without which it runs op by op.
                jit_compile=keras.backend.backend() == "jax",
            )
            return model

        _, spectrogram_layers, _ = _resolve_augmentations(recipe, [], None, seed=0)
        classifier, full = _build_model(name, recipe, spectrogram_layers, seed=0)
        full = compiled(full)
        no_augmentation = compiled(_build_model(name, recipe, [], seed=0)[1])
        network = compiled(keras_asc.build(name).backbone)
        spectrograms = keras.ops.convert_to_numpy(classifier.frontend(waveforms, training=False))
        parts = {
            "network training step": (network, spectrograms),
            "front-end + network step": (no_augmentation, waveforms),
            "full step": (full, waveforms),
        }
        measured = {
            part: _median_ms(functools.partial(model.train_on_batch, inputs, labels), args.repeats)
            for part, (model, inputs) in parts.items()
        }
        net, with_frontend, total = measured.values()
        measured["front-end (difference)"] = with_frontend - net
        measured["Freq-MixStyle (difference)"] = total - with_frontend
        for part, value in measured.items():
            print(f"{name:18s} {part:28s} {value:7.1f} ms  {100 * value / total:6.1f} % of the full step")

if __name__ == "__main__":
    main()
