"""Model-zoo throughput on CPU: Keras on TensorFlow, JAX and PyTorch vs a plain PyTorch reference.

For each Keras backend (one subprocess each, since the backend is fixed per process), each
preset and batch size, this times

* forward: ``model.predict_on_batch(x)`` (inference-mode BN; the backend's compiled predict
  step: ``tf.function``, ``jax.jit`` or eager torch under ``no_grad``);
* train: ``model.train_on_batch(x, y)``, one Adam step on SparseCategoricalCrossentropy from
  logits (forward, backward and update);

on spectrogram input (the backbone only) and optionally on waveform
input (the ``LogMelSpectrogram`` front-end included), and the same two figures for the plain
PyTorch reference of ``benchmarks/torch_reference.py`` (NCHW ``nn.Module``, Adam,
``CrossEntropyLoss``). Throughput is clips/s from the median of the timed iterations; the first
(compiling) call is reported separately and the warm-up calls are excluded.

The "cheap wins", measured in the same run:

* ``model.compile(jit_compile=True)``: XLA on TensorFlow (off by default on CPU),
  ``torch.compile`` on the torch backend (off by default); JAX jits by default.
* ``+split``: the model with every grouped ``Conv2D`` rewritten as split + one convolution
  per group + concat (same parameters and function; the TensorFlow and JAX CPU kernels for
  grouped convolutions are slow);
* the reference in ``torch.channels_last`` memory format and under ``torch.compile``;
* layer microbenchmarks: ``Conv2D(groups=2)`` against split + two convolutions + concat, and
  channels_last against channels_first for the convolutions of a Mofle block.

Example:
    python benchmarks/models_throughput.py --quick
    python benchmarks/models_throughput.py --presets moflenet57 --batch-sizes 32 --backends jax
"""

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

KERAS_BACKENDS = ("tensorflow", "jax", "torch")
REFERENCE = "reference"
MODES = ("forward", "train")
INPUTS = ("spectrogram", "waveform")
# Kept in step with torch_reference.REFERENCE_PRESETS, which a worker may import only after
# limit_threads (importing torch fixes its thread pools).
REFERENCE_PRESET_NAMES = ("moflenet57", "cp_resnet59", "dcase24_baseline")
NUM_CLASSES = 10
NUM_SAMPLES = 32000
RESULT_PREFIX = "@@RESULT "
PROGRESS_PREFIX = "@@PROGRESS "

# Column order of the tables: (worker, variant label).
MODEL_COLUMNS = (
    ("tensorflow", "tf"),
    ("tensorflow", "tf+xla"),
    ("tensorflow", "tf+split"),
    ("jax", "jax-jit"),
    ("jax", "jax+split"),
    ("torch", "torch"),
    ("torch", "torch+compile"),
    ("torch", "torch+split"),
    (REFERENCE, "ref"),
    (REFERENCE, "ref+cl"),
    (REFERENCE, "ref+compile"),
)

# Layer microbenchmarks: (name, input shape channels-last, filters, kernel size, groups).
# The Mofle expansion of MofleNet57's first block and CP-ResNet59's grouped stage 2 conv.
GROUPED_CASES = (
    ("mofle_expand_1x1_g2", (64, 16, 32), 80, 1, 2),
    ("cpresnet_stage2_3x3_g2", (7, 10, 32), 44, 3, 2),
)
# (name, input shape channels-last, layer): the two convolutions of a Mofle block body.
LAYOUT_CASES = (
    ("pointwise_1x1_80to32", (32, 8, 80), "conv1x1"),
    ("depthwise_3x3_80", (64, 16, 80), "depthwise3x3"),
)


def _emit(kind, payload):
    print(kind + json.dumps(payload), flush=True)


def _progress(message):
    _emit(PROGRESS_PREFIX, {"message": message})


def time_call(function, warmup, iterations):
    """Time ``function``; return seconds of the first call and medians of the timed calls.

    The first call (tracing / compiling) and ``warmup - 1`` further calls are excluded from the
    medians. Both wall-clock and process CPU time (all threads) are measured: on a shared
    machine the CPU time of a one-thread run is the figure that other processes disturb least.
    ``function`` must block until its result is ready.

    Returns:
        dict with ``first_s``, ``wall_s`` (median) and ``cpu_s`` (median).
    """
    start = time.perf_counter()
    function()
    first = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        function()
    wall, cpu = [], []
    for _ in range(iterations):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    return {"first_s": first, "wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu)}


def _record(base, batch_size, timing):
    return {
        **base,
        **timing,
        "batch": batch_size,
        "clips_per_s": batch_size / timing["wall_s"],
        "clips_per_cpu_s": batch_size / max(timing["cpu_s"], 1e-9),
    }


def limit_threads(threads):
    """Size the TensorFlow, XLA (JAX), torch and OpenMP thread pools to ``threads``.

    Must run before TensorFlow, JAX or torch is imported (they read these at start-up). The
    process is not pinned to cores: on a shared machine the scheduler may then move it to
    whichever core is free, and ``process_time`` counts every thread wherever it runs.
    """
    for variable in (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "TF_NUM_INTRAOP_THREADS",
    ):
        os.environ[variable] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)
    if threads == 1:
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()


def _random_batch(shape, batch_size, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (batch_size, *shape)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, batch_size).astype("int32")
    return x, y


# ----------------------------------------------------------------------------- Keras worker


# label -> (jit_compile, grouped convolutions lowered to split + convs + concat) per Keras
# backend; label -> (channels_last memory format, torch.compile) for the reference.
KERAS_VARIANTS = {
    "tensorflow": {"tf": (False, False), "tf+xla": (True, False), "tf+split": (False, True)},
    "jax": {"jax-jit": (True, False), "jax+split": (True, True)},
    "torch": {
        "torch": (False, False),
        "torch+compile": (True, False),
        "torch+split": (False, True),
    },
}
REFERENCE_VARIANTS = {"ref": (False, False), "ref+cl": (True, False), "ref+compile": (False, True)}


def _keras_variants(backend, selected, layers=False):
    """(label, jit_compile, split) of ``backend`` selected by --variants.

    The layer microbenchmarks use neither torch.compile nor the split rewrite (they compare
    the two lowerings themselves).
    """
    return [
        (label, jit, split)
        for label, (jit, split) in KERAS_VARIANTS[backend].items()
        if label in selected and not (layers and label.endswith(("+compile", "+split")))
    ]


def _split_grouped_convolutions(keras, model):
    """A copy of ``model`` whose grouped Conv2D layers are split + one Conv2D per group + concat.

    Same parameters and the same function (group g of the output sees only input group g);
    only the lowering differs. Returns a plain functional model.
    """
    from keras import ops

    class SplitGroupedConv2D(keras.layers.Layer):
        def __init__(self, groups, conv_config, **kwargs):
            super().__init__(**kwargs)
            self.groups = groups
            config = {**conv_config, "filters": conv_config["filters"] // groups, "groups": 1}
            config.pop("name")
            self.convs = [keras.layers.Conv2D(**config, name=f"group{g}") for g in range(groups)]

        def call(self, inputs):
            parts = ops.split(inputs, self.groups, axis=-1)
            return ops.concatenate(
                [conv(part) for conv, part in zip(self.convs, parts, strict=True)], axis=-1
            )

    def clone(layer):
        if isinstance(layer, keras.layers.Conv2D) and layer.groups > 1:
            config = layer.get_config()
            return SplitGroupedConv2D(layer.groups, config, name=config["name"])
        return layer.__class__.from_config(layer.get_config())

    rewritten = keras.models.clone_model(model, clone_function=clone)
    if rewritten.count_params() != model.count_params():
        raise RuntimeError(
            f"Splitting grouped convolutions changed the parameter count of {model.name}: "
            f"{model.count_params()} -> {rewritten.count_params()}"
        )
    return rewritten


def keras_worker(args):
    import keras

    import keras_asc

    backend = keras.backend.backend()
    for preset in args.presets:
        for input_kind in args.inputs:
            for label, jit_compile, split in _keras_variants(backend, args.variants):
                keras.utils.set_random_seed(0)
                model = keras_asc.build(preset)
                if input_kind != "waveform":
                    model = model.backbone
                if split:
                    model = _split_grouped_convolutions(keras, model)
                model.compile(
                    optimizer=keras.optimizers.Adam(1e-3),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    jit_compile=jit_compile,
                )
                shape = tuple(model.input_shape[1:])
                for batch_size in args.batch_sizes:
                    x, y = _random_batch(shape, batch_size, seed=batch_size)
                    x, y = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
                    calls = {
                        "forward": functools.partial(model.predict_on_batch, x),
                        "train": functools.partial(model.train_on_batch, x, y),
                    }
                    for mode in MODES:
                        _progress(f"{label} {preset} {input_kind} batch {batch_size} {mode}")
                        base = {
                            "table": "model",
                            "worker": backend,
                            "variant": label,
                            "preset": preset,
                            "input": input_kind,
                            "mode": mode,
                        }
                        timing = time_call(calls[mode], args.warmup, args.iterations)
                        _emit(RESULT_PREFIX, _record(base, batch_size, timing))
                if backend == "torch" and jit_compile:
                    import torch

                    torch._dynamo.reset()
    if args.layers:
        _keras_layer_benchmarks(args, backend)


def _layer_model(keras, shape, build_outputs):
    inputs = keras.Input(shape=shape)
    model = keras.Model(inputs, build_outputs(inputs))
    return model


def _time_layer_model(keras, model, shape, batch_size, args, base, jit_compile):
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse", jit_compile=jit_compile)
    x, _ = _random_batch(shape, batch_size, seed=batch_size)
    x = keras.ops.convert_to_tensor(x)
    y = keras.ops.zeros((batch_size, *model.output_shape[1:]))
    calls = {
        "forward": lambda: model.predict_on_batch(x),
        "train": lambda: model.train_on_batch(x, y),
    }
    for mode in MODES:
        try:
            timing = time_call(calls[mode], args.warmup, args.iterations)
        except Exception as error:  # noqa: BLE001 - an unsupported layout is a result, reported as such
            _emit(
                RESULT_PREFIX,
                {
                    **base,
                    "mode": mode,
                    "batch": batch_size,
                    "error": _error_summary(error),
                },
            )
            continue
        _emit(RESULT_PREFIX, _record({**base, "mode": mode}, batch_size, timing))


def _error_summary(error):
    """The informative line of an exception (TensorFlow puts a graph traceback first)."""
    lines = [line for line in str(error).splitlines() if line.strip() and not line[0].isspace()]
    lines = [line for line in lines if not line.startswith(("File ", "Detected at", "[["))]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"[:240]


def _keras_layer_benchmarks(args, backend):
    import keras

    batch_size = max(args.batch_sizes)
    for label, jit_compile, _ in _keras_variants(backend, args.variants, layers=True):
        for name, shape, filters, kernel_size, groups in GROUPED_CASES:
            conv_args = {"kernel_size": kernel_size, "padding": "same", "use_bias": False}

            def grouped(inputs, filters=filters, groups=groups, conv_args=conv_args):
                return keras.layers.Conv2D(filters, groups=groups, **conv_args)(inputs)

            def split(inputs, filters=filters, groups=groups, conv_args=conv_args):
                parts = keras.ops.split(inputs, groups, axis=-1)
                outputs = [
                    keras.layers.Conv2D(filters // groups, **conv_args)(part) for part in parts
                ]
                return keras.layers.Concatenate(axis=-1)(outputs)

            for lowering, build_outputs in (("groups", grouped), ("split", split)):
                _progress(f"{label} layer {name} {lowering} batch {batch_size}")
                keras.utils.set_random_seed(0)
                model = _layer_model(keras, shape, build_outputs)
                base = {
                    "table": "grouped",
                    "worker": backend,
                    "variant": label,
                    "case": name,
                    "lowering": lowering,
                }
                _time_layer_model(keras, model, shape, batch_size, args, base, jit_compile)
        for name, shape_last, kind in LAYOUT_CASES:
            for data_format in ("channels_last", "channels_first"):
                shape = (
                    shape_last
                    if data_format == "channels_last"
                    else (shape_last[-1], *shape_last[:-1])
                )

                def build_outputs(inputs, kind=kind, data_format=data_format):
                    if kind == "conv1x1":
                        layer = keras.layers.Conv2D(32, 1, use_bias=False, data_format=data_format)
                    else:
                        layer = keras.layers.DepthwiseConv2D(
                            3, padding="same", use_bias=False, data_format=data_format
                        )
                    return layer(inputs)

                _progress(f"{label} layer {name} {data_format} batch {batch_size}")
                keras.utils.set_random_seed(0)
                model = _layer_model(keras, shape, build_outputs)
                base = {
                    "table": "layout",
                    "worker": backend,
                    "variant": label,
                    "case": name,
                    "layout": data_format,
                }
                _time_layer_model(keras, model, shape, batch_size, args, base, jit_compile)


# ------------------------------------------------------------------------- reference worker


def reference_worker(args):
    variants = [
        (label, *REFERENCE_VARIANTS[label])
        for label in REFERENCE_VARIANTS
        if label in args.variants
    ]
    for preset in args.presets:
        for input_kind in args.inputs:
            for label, channels_last, compiled in variants:
                _time_reference(args, preset, input_kind, label, channels_last, compiled)
    if args.layers and "ref" in args.variants:
        _reference_layer_benchmarks(args)


def _time_reference(args, preset, input_kind, label, channels_last, compiled):
    import torch
    from torch_reference import build_reference

    torch.manual_seed(0)
    module, shape = build_reference(preset, waveform=input_kind == "waveform")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    module = module.to(memory_format=memory_format)
    runner = torch.compile(module) if compiled else module
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    for batch_size in args.batch_sizes:
        x, y = _random_batch(shape, batch_size, seed=batch_size)
        x = torch.from_numpy(x)
        if x.ndim == 4:
            x = x.contiguous(memory_format=memory_format)
        y = torch.from_numpy(y).long()
        calls = _reference_calls(module, runner, optimizer, loss_fn, x, y)
        for mode, call in calls.items():
            _progress(f"{label} {preset} {input_kind} batch {batch_size} {mode}")
            base = {
                "table": "model",
                "worker": REFERENCE,
                "variant": label,
                "preset": preset,
                "input": input_kind,
                "mode": mode,
            }
            timing = time_call(call, args.warmup, args.iterations)
            _emit(RESULT_PREFIX, _record(base, batch_size, timing))
    if compiled:
        torch._dynamo.reset()


def _reference_calls(module, runner, optimizer, loss_fn, x, y):
    """The plain PyTorch inference call and training step a DCASE user would write."""
    import torch

    def forward():
        module.eval()
        with torch.no_grad():
            return runner(x)

    def train():
        module.train()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(runner(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return {"forward": forward, "train": train}


def _reference_layer_benchmarks(args):
    """Plain nn.Conv2d grouped vs split, for comparison with the Keras backends."""
    import torch

    batch_size = max(args.batch_sizes)
    for name, (height, width, channels), filters, kernel_size, groups in GROUPED_CASES:
        padding = kernel_size // 2
        grouped = torch.nn.Conv2d(
            channels, filters, kernel_size, padding=padding, groups=groups, bias=False
        )
        convs = torch.nn.ModuleList(
            torch.nn.Conv2d(
                channels // groups, filters // groups, kernel_size, padding=padding, bias=False
            )
            for _ in range(groups)
        )

        def split(x, convs=convs, groups=groups):
            return torch.cat(
                [
                    conv(part)
                    for conv, part in zip(convs, torch.chunk(x, groups, dim=1), strict=True)
                ],
                dim=1,
            )

        x, _ = _random_batch((channels, height, width), batch_size, seed=batch_size)
        x = torch.from_numpy(x)
        for lowering, layer, params in (
            ("groups", grouped, list(grouped.parameters())),
            ("split", split, list(convs.parameters())),
        ):
            optimizer = torch.optim.SGD(params, lr=1e-3)

            def forward(layer=layer, x=x):
                with torch.no_grad():
                    return layer(x)

            def train(layer=layer, x=x, optimizer=optimizer):
                optimizer.zero_grad(set_to_none=True)
                loss = layer(x).square().mean()
                loss.backward()
                optimizer.step()
                return loss.item()

            base = {
                "table": "grouped",
                "worker": REFERENCE,
                "variant": "ref",
                "case": name,
                "lowering": lowering,
            }
            for mode, call in (("forward", forward), ("train", train)):
                _progress(f"ref layer {name} {lowering} batch {batch_size} {mode}")
                timing = time_call(call, args.warmup, args.iterations)
                _emit(RESULT_PREFIX, _record({**base, "mode": mode}, batch_size, timing))


# --------------------------------------------------------------------------------- parent


def run_worker(worker, args):
    """Run one worker subprocess; return its result records (raises if it fails)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["KERAS_BACKEND"] = "torch" if worker == REFERENCE else worker
    command = [sys.executable, os.path.abspath(__file__), "--worker", worker, *args.worker_argv]
    results = []
    started = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
        )
        for line in process.stdout:
            if line.startswith(RESULT_PREFIX):
                results.append(json.loads(line[len(RESULT_PREFIX) :]))
            elif line.startswith(PROGRESS_PREFIX):
                message = json.loads(line[len(PROGRESS_PREFIX) :])["message"]
                print(
                    f"  [{worker} {time.perf_counter() - started:6.0f}s] {message}",
                    file=sys.stderr,
                    flush=True,
                )
        process.wait()
        if process.returncode:
            stderr.seek(0)
            tail = stderr.read()[-4000:]
            raise RuntimeError(
                f"Worker {worker!r} exited with status {process.returncode}:\n{tail}"
            )
    return results


def _write_json(path, results):
    directory = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp", delete=False) as handle:
        json.dump(results, handle, indent=1)
    os.replace(handle.name, path)


def _rate_key(args):
    return "clips_per_cpu_s" if args.metric == "cpu" else "clips_per_s"


def _format_rate(record, key):
    if record is None:
        return "-"
    if "error" in record:
        return "err"
    return f"{record[key]:.0f}"


def _ratio(numerator, denominator, key):
    if not numerator or not denominator or "error" in numerator or "error" in denominator:
        return "-"
    return f"{numerator[key] / denominator[key]:.2f}"


def _table(header, rows):
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).rjust(width) for cell, width in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    lines += [
        "  ".join(str(cell).rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    return "\n".join(lines)


def format_report(results, args):
    key = _rate_key(args)
    unit = "clips per CPU-second" if args.metric == "cpu" else "clips/s (wall clock)"
    by_key = {}
    for record in results:
        if record["table"] == "model":
            fields = ("variant", "preset", "input", "batch", "mode")
            by_key[tuple(record[field] for field in fields)] = record
    columns = [label for worker, label in MODEL_COLUMNS if any(k[0] == label for k in by_key)]
    out = []
    for input_kind in args.inputs:
        rows, ratio_rows, first_rows = [], [], []
        for preset in args.presets:
            for batch_size in args.batch_sizes:
                for mode in MODES:
                    cells = [
                        by_key.get((label, preset, input_kind, batch_size, mode))
                        for label in columns
                    ]
                    if not any(cells):
                        continue
                    rows.append([preset, batch_size, mode, *(_format_rate(c, key) for c in cells)])
                    reference = by_key.get(("ref", preset, input_kind, batch_size, mode))
                    ratio_rows.append(
                        [preset, batch_size, mode, *(_ratio(c, reference, key) for c in cells)]
                    )
                    first_rows.append(
                        [
                            preset,
                            batch_size,
                            mode,
                            *(
                                f"{c['first_s']:.1f}" if c and "first_s" in c else "-"
                                for c in cells
                            ),
                        ]
                    )
        if not rows:
            continue
        header = ["preset", "batch", "mode", *columns]
        title = (
            "network only, log-mel input"
            if input_kind == "spectrogram"
            else "front-end included, waveform input"
        )
        out.append(
            f"\n== {unit}, {title} (median of {args.iterations}, {args.warmup} warm-up calls excluded) =="
        )
        out.append(_table(header, rows))
        out.append(
            "\n== ratio to the plain PyTorch reference (ref, eager, NCHW, same batch; >1 = faster) =="
        )
        out.append(_table(header, ratio_rows))
        out.append("\n== first call in seconds (tracing / compiling; not in the figures above) ==")
        out.append(_table(header, first_rows))

    grouped = [r for r in results if r["table"] == "grouped"]
    if grouped:
        rows = []
        keys = sorted(
            {(r["case"], r["mode"], r["worker"], r["variant"]) for r in grouped},
            key=_layer_sort_key,
        )
        for case, mode, worker, variant in keys:
            found = {
                r["lowering"]: r
                for r in grouped
                if (r["case"], r["mode"], r["worker"], r["variant"])
                == (case, mode, worker, variant)
            }
            g, s = found.get("groups"), found.get("split")
            rows.append(
                [case, mode, variant, _format_rate(g, key), _format_rate(s, key), _ratio(s, g, key)]
            )
        out.append(
            f"\n== grouped convolution lowering, layer alone, batch {max(args.batch_sizes)}, {unit} =="
        )
        out.append(
            _table(["case", "mode", "backend", "groups=2", "split+concat", "split/groups"], rows)
        )

    layout = [r for r in results if r["table"] == "layout"]
    if layout:
        rows, errors = [], []
        keys = sorted(
            {(r["case"], r["mode"], r["worker"], r["variant"]) for r in layout}, key=_layer_sort_key
        )
        for case, mode, worker, variant in keys:
            found = {
                r["layout"]: r
                for r in layout
                if (r["case"], r["mode"], r["worker"], r["variant"])
                == (case, mode, worker, variant)
            }
            last, first = found.get("channels_last"), found.get("channels_first")
            for record in (last, first):
                if record and "error" in record:
                    errors.append(
                        f"  {variant} {case} {record['layout']} {mode}: {record['error']}"
                    )
            rows.append(
                [
                    case,
                    mode,
                    variant,
                    _format_rate(last, key),
                    _format_rate(first, key),
                    _ratio(first, last, key),
                ]
            )
        out.append(f"\n== channels layout, layer alone, batch {max(args.batch_sizes)}, {unit} ==")
        out.append(
            _table(
                ["case", "mode", "backend", "channels_last", "channels_first", "first/last"], rows
            )
        )
        if errors:
            out.append("errors:\n" + "\n".join(errors))
    return "\n".join(out)


def _layer_sort_key(key):
    case, mode, worker, variant = key
    order = [label for _, label in MODEL_COLUMNS]
    return (case, MODES.index(mode), order.index(variant) if variant in order else len(order))


def _csv(kind):
    def parse(text):
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list. Received: {text!r}")
        return [kind(v) for v in values]

    return parse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="CPU throughput of the keras-asc model zoo on each Keras backend vs plain PyTorch."
    )
    parser.add_argument("--presets", type=_csv(str), default=["moflenet57", "cp_resnet59"])
    parser.add_argument("--batch-sizes", type=_csv(int), default=[32, 256])
    parser.add_argument(
        "--backends",
        type=_csv(str),
        default=[*KERAS_BACKENDS, REFERENCE],
        help=f"any of {', '.join(KERAS_BACKENDS)}, {REFERENCE} (the plain PyTorch models)",
    )
    parser.add_argument(
        "--inputs", type=_csv(str), default=["spectrogram"], help="spectrogram and/or waveform"
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="timed calls per figure (default 10, --quick 3)",
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed calls first, the compiling one included"
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 timed iterations, no +compile variants"
    )
    parser.add_argument(
        "--variants",
        type=_csv(str),
        default=None,
        help="columns to time, any of " + ", ".join(label for _, label in MODEL_COLUMNS) + " "
        "(default all; --quick leaves out the slow-to-compile +compile ones)",
    )
    parser.add_argument(
        "--layers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="layer microbenchmarks",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="size each worker's TF / XLA / torch / OpenMP thread pools to this "
        "(default: the libraries' own defaults, all cores)",
    )
    parser.add_argument(
        "--metric",
        choices=("wall", "cpu"),
        default="wall",
        help="tables in clips/s of wall-clock time, or clips per CPU-second of the worker process "
        "(steadier on a loaded machine; meaningful with --threads 1)",
    )
    parser.add_argument("--json", default=None, help="also write every record to this JSON file")
    parser.add_argument(
        "--from-json",
        default=None,
        help="print the tables of earlier --json files (comma-separated) instead of running",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    for preset in args.presets:
        if preset not in REFERENCE_PRESET_NAMES:
            parser.error(
                f"--presets: {preset!r} has no PyTorch reference. Accepted: {', '.join(REFERENCE_PRESET_NAMES)}"
            )
    if args.threads is not None and not 1 <= args.threads <= len(os.sched_getaffinity(0)):
        parser.error(
            f"--threads must be in 1..{len(os.sched_getaffinity(0))}. Received: {args.threads}"
        )
    for backend in args.backends:
        if backend not in (*KERAS_BACKENDS, REFERENCE):
            parser.error(
                f"--backends: {backend!r} is not one of {', '.join((*KERAS_BACKENDS, REFERENCE))}"
            )
    for input_kind in args.inputs:
        if input_kind not in INPUTS:
            parser.error(f"--inputs: {input_kind!r} is not one of {', '.join(INPUTS)}")
    if any(b < 1 for b in args.batch_sizes):
        parser.error(f"--batch-sizes must be positive. Received: {args.batch_sizes}")
    if args.iterations is None:
        args.iterations = 3 if args.quick else 10
    if args.iterations < 1 or args.warmup < 1:
        parser.error(
            f"--iterations and --warmup must be >= 1. Received: {args.iterations}, {args.warmup}"
        )
    all_variants = [label for _, label in MODEL_COLUMNS]
    if args.variants is None:
        args.variants = [v for v in all_variants if not (args.quick and v.endswith("+compile"))]
    for variant in args.variants:
        if variant not in all_variants:
            parser.error(f"--variants: {variant!r} is not one of {', '.join(all_variants)}")
    args.worker_argv = [
        "--presets", ",".join(args.presets),
        "--batch-sizes", ",".join(map(str, args.batch_sizes)),
        "--inputs", ",".join(args.inputs),
        "--iterations", str(args.iterations),
        "--warmup", str(args.warmup),
        "--variants", ",".join(args.variants),
        "--layers" if args.layers else "--no-layers",
    ] + (["--threads", str(args.threads)] if args.threads else [])  # fmt: skip
    return args


def main(argv=None):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    args = parse_args(argv)
    if args.worker is not None and args.threads:
        limit_threads(args.threads)
    if args.worker == REFERENCE:
        reference_worker(args)
        return 0
    if args.worker is not None:
        if os.environ.get("KERAS_BACKEND") != args.worker:
            raise RuntimeError(
                f"worker {args.worker!r} started with KERAS_BACKEND={os.environ.get('KERAS_BACKEND')!r}"
            )
        keras_worker(args)
        return 0

    if args.from_json:
        results = []
        for path in args.from_json.split(","):
            with open(path) as handle:
                results += json.load(handle)
        print(format_report(results, args))
        return 0

    import platform

    print(
        f"keras-asc model throughput, CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()}), "
        f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f}, "
        f"threads per worker: {args.threads or 'library default'}\ncommand: {' '.join(['python', *sys.argv])}",
        flush=True,
    )
    results = []
    for worker in args.backends:
        started = time.perf_counter()
        results += run_worker(worker, args)
        print(
            f"{worker}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True
        )
        if args.json:
            # After every worker, so a long run interrupted later keeps what it measured.
            _write_json(args.json, results)
    print(format_report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
