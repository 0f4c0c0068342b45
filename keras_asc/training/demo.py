"""The whole keras-asc workflow on built-in synthetic data, in a few minutes on a CPU
(``keras-asc demo``).

Generates a small synthetic dataset in the TAU22 layout, trains MofleNet57 and CP-ResNet59
briefly with their recipes, combines them into the v2 ensemble (CP-ResNet59 0.6, MofleNet57
0.4), evaluates all three on the test split (every device, including the unseen s4-s6) and
prints the tables; metrics and PNG plots are written beside each run.

Example:
    >>> from keras_asc.training.demo import run_demo
    >>> run_demo("keras-asc-demo", epochs=2)
"""

import json
import os
import shutil
import time

from keras_asc import complexity
from keras_asc.data.synthetic import make_synthetic_tau22
from keras_asc.files import write_text_atomic
from keras_asc.training import plots
from keras_asc.training.ensemble import build_ensemble
from keras_asc.training.evaluation import (
    evaluate,
    format_comparison,
    report_result,
)
from keras_asc.training.train import train

DEMO_MARKER = "demo.json"
MODELS = ("moflenet57", "cp_resnet59")
ENSEMBLE_PRESET = "v2"
# Small enough for a few minutes on 2 CPU cores, large enough to learn well above chance
# (measured: see the project README). `keras-asc demo` has the same defaults.
DEFAULT_EPOCHS = 6
DEFAULT_CLIPS_PER_CLASS = 60
DEFAULT_TEST_CLIPS_PER_CLASS = 27
DEFAULT_BATCH_SIZE = 16


def prepare_demo_dir(out, settings, overwrite):
    """Make ``out`` ready for a demo run with ``settings``.

    Reuses ``out`` when it holds a demo with the same settings; refuses to touch anything the
    demo did not write.

    Args:
        out: the demo's output folder.
        settings: the demo's settings (a JSON-ready dict), recorded in ``demo.json``.
        overwrite: replace an earlier demo in ``out`` that used other settings (only the
            folders the demo writes are removed).

    Returns:
        ``"reuse"`` (same settings: finished steps are kept) or ``"new"``.

    Raises:
        ValueError: ``out`` holds a demo with other settings and ``overwrite`` is false, or
            ``out`` is a non-empty folder without ``demo.json``.
    """
    marker = os.path.join(out, DEMO_MARKER)
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as handle:
            previous = json.load(handle)
        if previous == settings:
            return "reuse"
        if not overwrite:
            raise ValueError(
                f"{out!r} holds a demo run with other settings ({previous}); pass --overwrite to "
                "replace it or choose another --out."
            )
        for name in ("data", "runs", "cache"):
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)
        os.remove(marker)
    elif os.path.isdir(out) and os.listdir(out):
        raise ValueError(
            f"{out!r} is not empty and holds no earlier demo ({DEMO_MARKER}); choose an empty or "
            "new --out."
        )
    os.makedirs(out, exist_ok=True)
    write_text_atomic(marker, json.dumps(settings, indent=2) + "\n")
    return "new"


def _stage(message, start):
    print(f"\n=== [{time.perf_counter() - start:6.1f} s] {message}", flush=True)


def run_demo(
    out,
    *,
    epochs=DEFAULT_EPOCHS,
    clips_per_class=DEFAULT_CLIPS_PER_CLASS,
    test_clips_per_class=DEFAULT_TEST_CLIPS_PER_CLASS,
    batch_size=DEFAULT_BATCH_SIZE,
    seed=0,
    overwrite=False,
    verbose=2,
):
    """Generate synthetic data, train both models, build the v2 ensemble, evaluate all three.

    Running it again with the same settings reuses the finished steps.

    Args:
        out: output folder (data, runs, cache and the comparison plot).
        epochs: epochs per model.
        clips_per_class: synthetic training clips per scene (>= 20).
        test_clips_per_class: synthetic test clips per scene, a multiple of 9.
        batch_size: training batch size.
        seed: seed of the data and of training.
        overwrite: replace an earlier demo in ``out`` that used other settings.
        verbose: Keras training output (0 silent, 1 progress bars, 2 one line per epoch).

    Returns:
        A dict name -> :class:`~keras_asc.training.evaluation.EvaluationResult` on the test
        split, for both models and the ensemble.
    """
    start = time.perf_counter()
    out = os.path.abspath(out)
    settings = {
        "epochs": epochs,
        "clips_per_class": clips_per_class,
        "test_clips_per_class": test_clips_per_class,
        "batch_size": batch_size,
        "seed": seed,
    }
    state = prepare_demo_dir(out, settings, overwrite)
    data_dir = os.path.join(out, "data")
    cache_dir = os.path.join(out, "cache")
    runs_dir = os.path.join(out, "runs")

    if state == "reuse" and os.path.isdir(os.path.join(data_dir, "audio")):
        _stage(f"Reusing the synthetic dataset in {data_dir}", start)
    else:
        _stage(
            f"Generating a synthetic TAU22-layout dataset ({clips_per_class} training and "
            f"{test_clips_per_class} test clips per scene) in {data_dir}",
            start,
        )
        make_synthetic_tau22(
            data_dir,
            clips_per_class=clips_per_class,
            test_clips_per_class=test_clips_per_class,
            seed=seed,
        )

    run_dirs = {}
    for model in MODELS:
        _stage(f"Training {model} for {epochs} epochs (batch {batch_size})", start)
        result = train(
            model,
            data_dir=data_dir,
            split=100,
            epochs=epochs,
            batch_size=batch_size,
            out_dir=os.path.join(runs_dir, model),
            seed=seed,
            cache_dir=cache_dir,
            verbose=verbose,
        )
        run_dirs[model] = result.run_dir

    ensemble_dir = os.path.join(runs_dir, f"ensemble_{ENSEMBLE_PRESET}")
    _stage(f"Building the {ENSEMBLE_PRESET} ensemble (CP-ResNet59 0.6 + MofleNet57 0.4)", start)
    ensemble = build_ensemble(
        [run_dirs["cp_resnet59"], run_dirs["moflenet57"]],
        preset=ENSEMBLE_PRESET,
        out_dir=ensemble_dir,
    )
    print(complexity.check_budget(ensemble))

    results = {}
    for name, target in (
        ("moflenet57", run_dirs["moflenet57"]),
        ("cp_resnet59", run_dirs["cp_resnet59"]),
        (f"ensemble {ENSEMBLE_PRESET}", ensemble_dir),
    ):
        _stage(f"Evaluating {name} on the test split", start)
        result = evaluate(target, data_dir, split="test", cache_dir=cache_dir, verbose=False)
        report_result(result, os.path.join(target, "eval-test"), command="demo")
        results[name] = result

    _stage("Summary (test split; chance is 10 %)", start)
    print(format_comparison(results))
    if plots.matplotlib_available():
        path = plots.plot_model_comparison(results, os.path.join(out, plots.COMPARISON_PNG))
        print(f"wrote {path}")
    print(
        "\nThese models trained for minutes on synthetic clips; the report's accuracies "
        "need the real TAU22 data and 150 epochs: keras-asc download, then keras-asc train."
    )
    print(f"keras-asc demo finished in {time.perf_counter() - start:.0f} s; everything is in {out}")
    return results
