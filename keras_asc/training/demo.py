"""The whole keras-asc workflow on built-in synthetic data, in a few minutes on a CPU
(``keras-asc demo``).

Generates a small synthetic dataset in the TAU22 layout, trains MofleNet57 and CP-ResNet59
briefly with their recipes, combines them into the v2 ensemble (CP-ResNet59 0.6, MofleNet57
0.4), evaluates all three on the test split (every device, including the unseen s4-s6) and
prints the tables; metrics and PNG plots are written beside each run.

Each model gets the training it needs. MofleNet57 learns more slowly than CP-ResNet59 on small
training sets: on TAU22 at 40 epochs it reaches 73.39 % against CP-ResNet59's 84.29 %, and the
v2 ensemble gains most with MofleNet57 trained twice as long. On the demo's 600 clips the gap is
wider: with its recipe's peak learning rate, MofleNet57 reached 59 % after 16 epochs where
CP-ResNet59 reached 86 % after 8 (measured on this dataset, seed 0). So the demo trains
MofleNet57 for ``MOFLENET_EPOCH_FACTOR`` times CP-ResNet59's epochs at
``MOFLENET_LEARNING_RATE_FACTOR`` times its recipe's peak learning rate (three times the epochs
at twice the rate: 78.5 % after 18 epochs against CP-ResNet59's 78.9 % after 6, seed 0),
both recorded in the run's ``run_config.json``. With equal training it ends far behind, and the
ensemble then falls below CP-ResNet59 alone, the opposite of what the method shows on real
recordings.

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
from keras_asc.training.recipes import get_recipe
from keras_asc.training.train import train

DEMO_MARKER = "demo.json"
MODELS = ("moflenet57", "cp_resnet59")
ENSEMBLE_PRESET = "v2"
# Small enough for a few minutes on 2 CPU cores, large enough to learn well above chance
# (measured: see the project README). `keras-asc demo` has the same defaults.
DEFAULT_EPOCHS = 6
# MofleNet57's epochs as a multiple of CP-ResNet59's, and its peak learning rate as a multiple
# of its recipe's, in the demo (see the module docstring).
MOFLENET_EPOCH_FACTOR = 3
MOFLENET_LEARNING_RATE_FACTOR = 2
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


def model_epochs_for(epochs):
    """Each model's epochs in a demo of ``epochs`` (CP-ResNet59's; MofleNet57 trains longer)."""
    return {"moflenet57": MOFLENET_EPOCH_FACTOR * epochs, "cp_resnet59": epochs}


def model_overrides():
    """Each model's recipe overrides in the demo (``--set`` keys): MofleNet57's peak learning
    rate is raised for the short run; CP-ResNet59 trains with its recipe as it is."""
    peak = get_recipe("moflenet57").schedule.max_learning_rate
    return {
        "moflenet57": {"schedule.max_learning_rate": MOFLENET_LEARNING_RATE_FACTOR * peak},
        "cp_resnet59": {},
    }


def summary_line(results):
    """One line saying what the demo's numbers mean, and whether the ensemble beat both members.

    Args:
        results: the dict of :func:`run_demo`: ``"moflenet57"``, ``"cp_resnet59"`` and
            ``"ensemble v2"`` -> ``EvaluationResult``.
    """
    ensemble = results[f"ensemble {ENSEMBLE_PRESET}"].macro_accuracy
    members = {name: results[name].macro_accuracy for name in MODELS}
    best = max(members, key=members.get)
    if ensemble > members[best]:
        verdict = (
            f"the v2 ensemble beats both members, by {100 * (ensemble - members[best]):.1f} points"
        )
    else:
        verdict = (
            f"here the v2 ensemble does not beat {best} "
            f"({100 * ensemble:.1f} % against {100 * members[best]:.1f} %)"
        )
    return (
        "macro acc % is the DCASE metric: the mean of the 10 scenes' accuracies on synthetic test "
        f"clips from all 9 devices (chance 10 %); {verdict}."
    )


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
        epochs: CP-ResNet59's epochs; MofleNet57 trains ``MOFLENET_EPOCH_FACTOR`` times as
            many.
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
    model_epochs = model_epochs_for(epochs)
    overrides = model_overrides()
    settings = {
        "epochs": epochs,
        "model_epochs": model_epochs,
        "model_overrides": overrides,
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
        changes = "".join(f", {key}={value:g}" for key, value in overrides[model].items())
        _stage(
            f"Training {model} for {model_epochs[model]} epochs (batch {batch_size}{changes})",
            start,
        )
        result = train(
            model,
            data_dir=data_dir,
            split=100,
            epochs=model_epochs[model],
            batch_size=batch_size,
            out_dir=os.path.join(runs_dir, model),
            seed=seed,
            cache_dir=cache_dir,
            verbose=verbose,
            overrides=overrides[model] or None,
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
    print(summary_line(results))
    if plots.matplotlib_available():
        path = plots.plot_model_comparison(results, os.path.join(out, plots.COMPARISON_PNG))
        print(f"wrote {path}")
    print(
        "\nThese models trained for minutes on synthetic clips; the report's accuracies "
        "need the real TAU22 data and 150 epochs: keras-asc download, then keras-asc train."
    )
    print(f"keras-asc demo finished in {time.perf_counter() - start:.0f} s; everything is in {out}")
    return results
