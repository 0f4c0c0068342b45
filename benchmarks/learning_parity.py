"""Learning parity: keras-asc against a plain PyTorch training pipeline with the same recipe.

Both sides train the same architecture with the same recipe on the same clips and are scored
on the same test clips (macro class-wise accuracy, the DCASE metric):

- keras-asc: ``keras_asc.train`` exactly as a user runs it (tf.data pipeline with its decoder,
  resampler and cache, DIR and time roll, the ``LogMelSpectrogram`` layer with fmax jitter
  and masking, Freq-MixStyle, the recipe's per-step schedule, ``AdamL2``), then
  ``keras_asc.evaluate``.
- PyTorch: everything on its own, as the reference code does it: audio resampled as each
  reference resamples, ``librosa.load(path, sr=32000)`` for the CP-JKU models (MofleNet57,
  CP-ResNet59; librosa's default is soxr at high quality, called through ``soxr`` directly
  when librosa is not installed) and torchaudio's ``Resample`` for the DCASE 2024 baseline
  (where torchaudio does not import, keras-asc's ``sinc_hann``, which equals it within
  1.2e-7 on torchaudio's own outputs), DIR by ``fftconvolve`` on device-"a"
  clips, ``np.roll``, the ``torch.stft`` front-ends of ``torch_reference.py``, Freq-MixStyle
  in torch, the networks of ``torch_reference.py`` with the reference initialisation,
  ``torch.optim.Adam(weight_decay)`` (``AdamW`` for the DCASE baseline) and a per-epoch
  ``LambdaLR`` four-phase schedule (per-step warm-up + cosine for the baseline).

``--sides keras_0.1`` trains the keras-asc side as version 0.1.0 did (Keras' fan-out for
depthwise kernels, He fan-out everywhere in CP-ResNet, no weight decay), for the before/after
comparison; ``--sides torch_step_lr`` swaps one stage, the torch side with keras-asc's
per-step schedule instead of the reference's per-epoch one. Each finished run is appended to
``OUT/results.jsonl``, so an interrupted benchmark continues where it stopped. It prints mean
+- std per model and side, the gap with its standard error, and seconds per training step on
both sides (runs alternate between the two).

Example:
    python benchmarks/learning_parity.py --out /tmp/parity --seeds 3 --epochs 12
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_DIRS = os.path.join(os.path.dirname(ROOT), "shared", "data", "micirp_dirs")
SAMPLING_RATE = 32000
MODELS = ("moflenet57", "cp_resnet59", "dcase24_baseline")
SIDES = ("keras", "torch", "keras_0.1", "torch_step_lr")


# === PyTorch side ===


# How each reference loads audio: the CP-JKU code with librosa.load(sr=32000), the DCASE 2024
# baseline with torchaudio's Resample.
REFERENCE_LOADERS = {
    "moflenet57": "librosa",
    "cp_resnet59": "librosa",
    "dcase24_baseline": "torchaudio",
}


def _read_wav(path, loader="librosa"):
    """Mono float32 waveform at 32 kHz, loaded as the reference code of the model does."""
    if loader == "librosa":
        try:
            import librosa
        except ImportError:
            librosa = None
        if librosa is not None:
            return librosa.load(path, sr=SAMPLING_RATE, mono=True)[0]
        import soundfile
        import soxr

        # What librosa.load does: float32 samples, channel mean, soxr HQ, ceil(n * ratio).
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
        data = data.mean(axis=1)
        if rate == SAMPLING_RATE:
            return data
        length = math.ceil(len(data) * SAMPLING_RATE / rate)
        out = soxr.resample(data, rate, SAMPLING_RATE, quality="soxr_hq")[:length]
        return np.pad(out, (0, length - len(out))).astype("float32")
    import scipy.io.wavfile

    rate, data = scipy.io.wavfile.read(path)
    if data.dtype.kind == "i":
        data = data.astype("float64") / float(np.iinfo(data.dtype).max + 1)
    data = np.asarray(data, dtype="float64")
    if data.ndim == 2:
        data = data.mean(axis=1)
    if rate == SAMPLING_RATE:
        return data.astype("float32")
    try:
        import torch
        import torchaudio

        resampler = torchaudio.transforms.Resample(rate, SAMPLING_RATE)
        return resampler(torch.from_numpy(data.astype("float32"))).numpy()
    except (ImportError, OSError):  # torchaudio's wheel does not load on every machine
        from keras_asc.data.resampling import resample

        return resample(data, rate, SAMPLING_RATE, method="sinc_hann")


def _load_split_arrays(data_dir, split, loader="librosa"):
    from keras_asc.data import tau22

    clips = tau22.load_split(data_dir, split)
    waves = np.zeros((len(clips), SAMPLING_RATE), "float32")
    for index, clip in enumerate(clips):
        wave = _read_wav(os.path.join(data_dir, clip.filename), loader)[:SAMPLING_RATE]
        waves[index, : len(wave)] = wave
    labels = np.array([clip.label for clip in clips], "int64")
    devices = np.array([clip.device for clip in clips])
    return waves, labels, devices


def _load_dirs(directory):
    if directory is None:
        return []
    names = sorted(name for name in os.listdir(directory) if name.lower().endswith(".wav"))
    return [_read_wav(os.path.join(directory, name)) for name in names]


def _torch_mixstyle(x, p, alpha, generator, eps=1e-6):
    """Freq-MixStyle on (batch, 1, freq, time): statistics over (channel, time) per frequency."""
    import torch

    if torch.rand((), generator=generator).item() > p:
        return x
    batch = x.shape[0]
    mean = x.mean(dim=(1, 3), keepdim=True)
    std = (x.var(dim=(1, 3), keepdim=True) + eps).sqrt()
    mean, std = mean.detach(), std.detach()
    draws = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (), generator=generator)))
    lam = torch.from_numpy(draws.beta(alpha, alpha, (batch, 1, 1, 1)).astype("float32")).to(x.device)
    perm = torch.randperm(batch, generator=generator).to(x.device)
    mixed_mean = lam * mean + (1 - lam) * mean[perm]
    mixed_std = lam * std + (1 - lam) * std[perm]
    return (x - mean) / std * mixed_std + mixed_mean


def _four_phase(epoch, settings):
    """The reference's per-epoch factor (exp warm-up, constant, linear down, constant)."""
    warmup = settings.warmup_epochs
    start = warmup + settings.constant_epochs
    if epoch < warmup:
        t = min(max(epoch, 0.5), warmup)
        return math.exp(-5.0 * (1.0 - t / warmup) ** 2)
    if settings.decay_epochs > 0:
        progress = min(max((epoch - start) / settings.decay_epochs, 0.0), 1.0)
        return 1.0 - (1.0 - settings.last_factor) * progress
    return 1.0 if epoch < start else settings.last_factor


def _warmup_cosine(step, warmup_steps, total_steps):
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def train_torch(model_name, recipe, train_data, test_data, dirs, seed, timings, step_lr=False,
                device="cpu"):
    import scipy.signal
    import torch

    sys.path.insert(0, HERE)
    import torch_reference

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    model, _ = torch_reference.build_reference(model_name, waveform=True)
    model.to(device)
    frontend, network = model.frontend, model.network
    waves, labels, devices = train_data
    batch_size = recipe.batch_size
    steps = len(waves) // batch_size  # as keras-asc: the last partial batch is dropped
    settings = recipe.schedule
    peak = settings.max_learning_rate
    if recipe.optimizer == "adamw":
        optimizer = torch.optim.AdamW(
            network.parameters(), lr=peak, weight_decay=recipe.weight_decay, eps=1e-8
        )
        warmup_steps = round(settings.warmup_epochs * steps)
        total = max(round(settings.epochs * steps), warmup_steps + 1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: _warmup_cosine(step, warmup_steps, total)
        )
        per_step = True
    else:
        optimizer = torch.optim.Adam(
            network.parameters(), lr=peak, weight_decay=recipe.weight_decay, eps=1e-8
        )
        if step_lr:  # swap: keras-asc's schedule, evaluated at every step (fractional epoch)
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: _four_phase(step / steps, settings)
            )
        else:  # the reference: LambdaLR stepped once per epoch
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda epoch: _four_phase(epoch, settings)
            )
        per_step = step_lr
    augment = dict(recipe.augmentations)
    dir_p = augment.get("device_impulse_response", {}).get("p", 0.0) if dirs else 0.0
    roll = int(augment.get("time_roll", {}).get("max_shift_seconds", 0.0) * SAMPLING_RATE)
    mixstyle = augment.get("freq_mixstyle")
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(int(round(settings.epochs))):
        model.train()
        order = rng.permutation(len(waves))
        started = time.perf_counter()
        for step in range(steps):
            index = order[step * batch_size : (step + 1) * batch_size]
            batch = waves[index].copy()
            for row, clip in enumerate(index):
                if dir_p and devices[clip] == "a" and rng.random() < dir_p:
                    response = dirs[rng.integers(len(dirs))]
                    batch[row] = scipy.signal.fftconvolve(batch[row], response)[:SAMPLING_RATE]
                if roll:
                    batch[row] = np.roll(batch[row], int(rng.integers(-roll, roll + 1)))
            with torch.no_grad():
                x = frontend(torch.from_numpy(batch).to(device))
            if mixstyle:
                x = _torch_mixstyle(x, mixstyle["p"], mixstyle["alpha"], generator)
            loss = loss_fn(network(x), torch.from_numpy(labels[index]).to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if per_step:
                scheduler.step()
        if not per_step:
            scheduler.step()
        if device != "cpu":
            torch.cuda.synchronize()
        if epoch > 0:  # the first epoch carries one-off start-up costs
            timings.append((time.perf_counter() - started) / steps)
    return _torch_macro_accuracy(model, test_data, device)


def _torch_macro_accuracy(model, test_data, device="cpu"):
    import torch

    waves, labels, _ = test_data
    model.eval()
    with torch.no_grad():
        logits = torch.cat(
            [model(torch.from_numpy(waves[i : i + 64]).to(device)) for i in range(0, len(waves), 64)]
        )
    predictions = logits.argmax(dim=1).cpu().numpy()
    return float(np.mean([np.mean(predictions[labels == c] == c) for c in np.unique(labels)]))


# === keras-asc side ===


def _keras_0_1_initialisation():
    """A callback that redraws every kernel as keras-asc 0.1.0 initialised it."""
    import keras

    class Reinitialise(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            initializer = keras.initializers.VarianceScaling(
                2.0, mode="fan_out", distribution="untruncated_normal", seed=0
            )
            from keras_asc.layers import leaf_layers

            for layer in leaf_layers(self.model):
                if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
                    kernel = layer.weights[0]
                    kernel.assign(initializer(kernel.shape))

    return Reinitialise()


def train_keras(model_name, recipe, data_dir, cache_dir, dirs_dir, seed, out_dir, variant, timings):
    import keras

    import keras_asc

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if epoch > 0:
                timings.append((time.perf_counter() - self.started) / self.params["steps"])

    callbacks = [EpochTimer()]
    weight_decay = None
    if variant == "keras_0.1":
        callbacks.append(_keras_0_1_initialisation())
        weight_decay = 0.0
    result = keras_asc.train(
        model_name,
        data_dir=data_dir,
        split=100,
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        weight_decay=weight_decay,
        out_dir=out_dir,
        seed=seed,
        dirs_dir=dirs_dir,
        cache_dir=cache_dir,
        resume=False,
        verbose=0,
        tensorboard=False,
        callbacks=callbacks,
        jit_compile=False,
    )
    evaluation = keras_asc.evaluate(result.model, data_dir, "test", cache_dir=cache_dir, verbose=False)
    return float(evaluation.macro_accuracy)


# === the benchmark ===


def _summary(values):
    values = np.asarray(values, "float64")
    std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    return float(values.mean()), std


def report(results, models):
    lines = ["", "macro accuracy on the test clips, mean +- std over seeds (n)"]
    lines.append(f"{'model':18s} {'side':16s} {'accuracy %':>16s} {'n':>3s}")
    for model in models:
        per_side = {}
        for row in results:
            if row["model"] == model:
                per_side.setdefault(row["side"], []).append(100 * row["accuracy"])
        for side in sorted(per_side):
            mean, std = _summary(per_side[side])
            lines.append(f"{model:18s} {side:16s} {mean:8.2f} +- {std:5.2f} {len(per_side[side]):3d}")
        if "keras" in per_side and "torch" in per_side:
            (km, ks), (tm, ts) = _summary(per_side["keras"]), _summary(per_side["torch"])
            se = math.sqrt(ks**2 / len(per_side["keras"]) + ts**2 / len(per_side["torch"]))
            lines.append(
                f"{model:18s} {'gap keras-torch':16s} {km - tm:+8.2f} pp (standard error {se:.2f}; "
                f"{'within' if abs(km - tm) <= se else 'outside'} one standard error)"
            )
    lines.append("")
    lines.append("seconds per full training step (after the first epoch), mean over runs")
    for model in models:
        for side in ("keras", "torch"):
            steps = [t for row in results if row["model"] == model and row["side"] == side for t in row["step_seconds"]]
            if steps:
                lines.append(f"{model:18s} {side:16s} {np.mean(steps):.3f} s  (median {np.median(steps):.3f})")
        keras_steps = [t for row in results if row["model"] == model and row["side"] == "keras" for t in row["step_seconds"]]
        torch_steps = [t for row in results if row["model"] == model and row["side"] == "torch" for t in row["step_seconds"]]
        if keras_steps and torch_steps:
            lines.append(f"{model:18s} {'keras / torch':16s} {np.median(keras_steps) / np.median(torch_steps):.2f}x (medians)")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the dataset, runs and results.jsonl")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--clips-per-class", type=int, default=40)
    parser.add_argument("--test-clips-per-class", type=int, default=27)
    parser.add_argument("--dirs", default=DEFAULT_DIRS if os.path.isdir(DEFAULT_DIRS) else None,
                        help="impulse responses for DIR (default ../shared/data/micirp_dirs when present)")
    parser.add_argument("--sides", default="keras,torch",
                        help="keras, torch, keras_0.1 (keras-asc 0.1.0's initialisation, no weight "
                        "decay) and/or torch_step_lr (the torch side with keras-asc's per-step "
                        "schedule)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    models = args.models.split(",")
    for model in models:
        if model not in MODELS:
            parser.error(f"--models: {model!r} is not one of {', '.join(MODELS)}")
    sides = args.sides.split(",")
    for side in sides:
        if side not in SIDES:
            parser.error(f"--sides: {side!r} is not one of {', '.join(SIDES)}")
    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, "results.jsonl")
    results = []
    if os.path.exists(results_path):
        with open(results_path, encoding="utf-8") as handle:
            results = [json.loads(line) for line in handle if line.strip()]
    if args.report_only:
        print(report(results, models))
        return 0

    from keras_asc.data.synthetic import make_synthetic_tau22
    from keras_asc.training import get_recipe

    data_dir = os.path.join(args.out, "data")
    if not os.path.exists(os.path.join(data_dir, "keras_asc_synthetic.json")):
        make_synthetic_tau22(data_dir, clips_per_class=args.clips_per_class,
                             test_clips_per_class=args.test_clips_per_class, seed=0)
    cache_dir = os.path.join(args.out, "cache")
    # The torch side's clips, loaded once per reference loader (see REFERENCE_LOADERS).
    torch_data = {}
    if any(side.startswith("torch") for side in sides):
        for loader in sorted({REFERENCE_LOADERS[model] for model in models}):
            torch_data[loader] = (
                _load_split_arrays(data_dir, 100, loader),
                _load_split_arrays(data_dir, "test", loader),
            )
    dirs = _load_dirs(args.dirs) if any(side.startswith("torch") for side in sides) else []
    from keras_asc.data import tau22

    num_train, num_test = (len(tau22.load_split(data_dir, s)) for s in (100, "test"))
    print(f"learning parity: {num_train} training / {num_test} test clips, "
          f"{args.epochs} epochs, batch {args.batch_size}, DIR from {args.dirs}", flush=True)
    done = {(row["model"], row["side"], row["seed"]) for row in results}
    for seed in range(args.seeds):
        for model in models:
            recipe = get_recipe(model).with_overrides(epochs=args.epochs, batch_size=args.batch_size)
            for side in sides:  # alternate sides, so both meet the same machine load
                if (model, side, seed) in done:
                    continue
                timings = []
                started = time.perf_counter()
                if side.startswith("torch"):
                    train_data, test_data = torch_data[REFERENCE_LOADERS[model]]
                    accuracy = train_torch(model, recipe, train_data, test_data, dirs, seed, timings,
                                           step_lr=side == "torch_step_lr")
                else:
                    run_dir = os.path.join(args.out, "runs", f"{model}-{side}-seed{seed}")
                    if os.path.exists(run_dir):
                        import shutil

                        shutil.rmtree(run_dir)
                    accuracy = train_keras(model, recipe, data_dir, cache_dir, args.dirs, seed,
                                           run_dir, side, timings)
                row = {"model": model, "side": side, "seed": seed, "accuracy": accuracy,
                       "step_seconds": timings, "wall_seconds": time.perf_counter() - started,
                       "epochs": args.epochs, "batch_size": args.batch_size}
                results.append(row)
                with open(results_path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(f"{model:18s} {side:10s} seed {seed}: {100 * accuracy:6.2f} %  "
                      f"({row['wall_seconds']:.0f} s)", flush=True)
    print(report(results, models))
    return 0


if __name__ == "__main__":
    sys.exit(main())
