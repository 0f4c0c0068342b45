"""PNG plots of evaluation results: confusion matrix, accuracy per device, model comparison.

matplotlib is optional (``pip install keras-asc[plot]``) and imported only when a plot is drawn.
Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas, never through
``pyplot``, so plotting works without a display and leaves the caller's pyplot state alone.

Example:
    >>> from keras_asc.training import plots
    >>> if plots.matplotlib_available():
    ...     plots.save_evaluation_plots(result, "runs/moflenet57/eval-test")
"""

import importlib.util
import os

import numpy as np

from keras_asc.data.tau22 import DEVICE_GROUPS
from keras_asc.files import atomic_path

CONFUSION_MATRIX_PNG = "confusion_matrix.png"
DEVICE_ACCURACY_PNG = "device_accuracy.png"
COMPARISON_PNG = "model_comparison.png"

# Two horizontal lines closer than this (in accuracy points, on a 0-100 axis about 3 inches
# high) print on top of each other.
_MIN_LINE_GAP = 3.0

# One colour per device group, so real, seen and unseen devices read apart at a glance.
_GROUP_COLOURS = {"real": "#1f77b4", "seen": "#2ca02c", "unseen": "#d62728", None: "#7f7f7f"}


def matplotlib_available():
    """Whether matplotlib can be imported (plots are skipped without it)."""
    return importlib.util.find_spec("matplotlib") is not None


def _new_figure(width, height):
    if not matplotlib_available():
        raise ImportError(
            "Plotting needs matplotlib, which is not installed: pip install 'keras-asc[plot]'."
        )
    # matplotlib is optional (keras-asc[plot]) and slow to import: only when a plot is drawn.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path):
    """Write ``figure`` as PNG atomically (temporary file in the same folder, then rename)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, format="png", bbox_inches="tight")
    return path


def _title(result, what):
    parts = [what]
    if result.model_name:
        parts.append(result.model_name)
    if result.split is not None:
        parts.append(f"split {result.split}")
    return " - ".join(parts)


def plot_confusion_matrix(result, path, normalize=True):
    """Draw the confusion matrix of an evaluation result as a PNG.

    Args:
        result: a ``keras_asc.training.evaluation.EvaluationResult``.
        path: output PNG path.
        normalize: colour and annotate each row as a percentage of the true class (the
            diagonal then reads as the per-class accuracy); otherwise raw counts.

    Returns:
        ``path``.
    """
    confusion = np.asarray(result.confusion_matrix, dtype=np.float64)
    names = list(result.class_names)
    if normalize:
        totals = confusion.sum(axis=1, keepdims=True)
        values = np.divide(100 * confusion, totals, out=np.zeros_like(confusion), where=totals > 0)
    else:
        values = confusion
    size = max(5.0, 0.6 * len(names) + 2.5)
    figure = _new_figure(size + 1.0, size)
    axes = figure.add_subplot()
    image = axes.imshow(values, cmap="Blues", vmin=0, vmax=100 if normalize else None)
    figure.colorbar(image, ax=axes, label="% of true class" if normalize else "clips")
    axes.set_xticks(range(len(names)), labels=names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), labels=names)
    axes.set_xlabel("predicted scene")
    axes.set_ylabel("true scene")
    threshold = values.max() / 2 if values.size else 0
    for row in range(len(names)):
        for column in range(len(names)):
            text = f"{values[row, column]:.0f}" if normalize else f"{int(values[row, column])}"
            axes.text(
                column,
                row,
                text,
                ha="center",
                va="center",
                fontsize=8,
                color="white" if values[row, column] > threshold else "black",
            )
    axes.set_title(
        f"{_title(result, 'Confusion matrix')}\nmacro accuracy {100 * result.macro_accuracy:.2f} %"
    )
    return _save(figure, path)


def accuracy_lines(accuracy, macro_accuracy):
    """The horizontal lines of the per-device plot, as ``(value, style, label)`` tuples.

    Overall and macro accuracy are equal on a class-balanced split (the TAU22 test split is)
    and close on most others: two lines that close would print on top of each other. So the
    macro class-wise accuracy (the DCASE metric) gets a dashed line, and the overall accuracy
    joins its label unless the two are at least ``_MIN_LINE_GAP`` points apart, when it gets a
    dotted line of its own.
    """
    macro = dict(color="black", linestyle="--")
    if abs(100 * (accuracy - macro_accuracy)) < _MIN_LINE_GAP:
        label = f"macro class-wise {100 * macro_accuracy:.1f} % (overall {100 * accuracy:.1f} %)"
        return [(macro_accuracy, macro, label)]
    return [
        (macro_accuracy, macro, f"macro class-wise {100 * macro_accuracy:.1f} %"),
        (accuracy, dict(color="#555555", linestyle=":"), f"overall {100 * accuracy:.1f} %"),
    ]


def plot_device_accuracy(result, path):
    """Draw accuracy per device (coloured by group) and per group as a bar chart PNG.

    A dashed line marks the macro class-wise accuracy, a dotted one the overall accuracy when
    it is far enough away to be seen (see :func:`accuracy_lines`).

    Args:
        result: an ``EvaluationResult`` with device information.
        path: output PNG path.

    Returns:
        ``path``.

    Raises:
        ValueError: the result has no per-device accuracy (evaluated without devices).
    """
    if not result.device_accuracy:
        raise ValueError(
            "This result has no per-device accuracy (it was computed without devices); "
            "there is nothing to plot."
        )
    group_of = {device: group for group, devices in DEVICE_GROUPS.items() for device in devices}
    labels = list(result.device_accuracy) + [f"{g}\n(all)" for g in result.group_accuracy]
    values = [100 * v for v in result.device_accuracy.values()]
    values += [100 * v for v in result.group_accuracy.values()]
    colours = [_GROUP_COLOURS[group_of.get(d)] for d in result.device_accuracy]
    colours += [_GROUP_COLOURS[g] for g in result.group_accuracy]
    hatches = [""] * len(result.device_accuracy) + ["//"] * len(result.group_accuracy)

    figure = _new_figure(max(6.0, 0.7 * len(labels) + 2.0), 4.5)
    axes = figure.add_subplot()
    bars = axes.bar(range(len(labels)), values, color=colours)
    for bar, hatch in zip(bars, hatches, strict=True):
        bar.set_hatch(hatch)
    for index, value in enumerate(values):
        axes.text(index, value + 1, f"{value:.1f}", ha="center", va="bottom", fontsize=8)
    for value, style, label in accuracy_lines(result.accuracy, result.macro_accuracy):
        axes.axhline(100 * value, linewidth=1.2, label=label, **style)
    axes.set_xticks(range(len(labels)), labels=labels)
    axes.set_ylim(0, 118)
    axes.set_yticks(range(0, 101, 20))
    axes.set_xlabel("recording device (hatched: all devices of a group)")
    axes.set_ylabel("accuracy (%)")
    axes.set_title(_title(result, "Accuracy per device"))
    axes.legend(loc="upper center", ncol=2, fontsize=8, frameon=False)
    return _save(figure, path)


def plot_model_comparison(results, path):
    """Draw macro accuracy and the device-group accuracies of several models as grouped bars.

    Args:
        results: dict model name -> ``EvaluationResult``.
        path: output PNG path.

    Returns:
        ``path``.
    """
    if not results:
        raise ValueError("plot_model_comparison needs at least one result. Received none.")
    names = list(results)
    groups = []
    for result in results.values():
        groups += [g for g in result.group_accuracy if g not in groups]
    series = [("macro", [100 * r.macro_accuracy for r in results.values()], "#444444")]
    series += [
        (g, [100 * r.group_accuracy.get(g, np.nan) for r in results.values()], _GROUP_COLOURS[g])
        for g in groups
    ]
    width = 0.8 / len(series)
    figure = _new_figure(max(6.0, 1.6 * len(names) + 2.0), 4.5)
    axes = figure.add_subplot()
    for offset, (label, values, colour) in enumerate(series):
        positions = np.arange(len(names)) + (offset - (len(series) - 1) / 2) * width
        axes.bar(positions, values, width=width, color=colour, label=label)
        for x, value in zip(positions, values, strict=True):
            if np.isfinite(value):
                axes.text(x, value + 1, f"{value:.0f}", ha="center", va="bottom", fontsize=7)
    axes.set_xticks(range(len(names)), labels=names)
    axes.set_ylim(0, 118)
    axes.set_yticks(range(0, 101, 20))
    axes.set_xlabel("model")
    axes.set_ylabel("accuracy (%)")
    axes.set_title("Model comparison: macro class-wise accuracy and accuracy per device group")
    axes.legend(loc="upper center", ncol=len(series), fontsize=8, frameon=False)
    return _save(figure, path)


def save_evaluation_plots(result, out_dir):
    """Write ``confusion_matrix.png`` and, when the result has devices, ``device_accuracy.png``.

    Returns:
        The list of written paths.
    """
    out_dir = os.fspath(out_dir)
    written = [plot_confusion_matrix(result, os.path.join(out_dir, CONFUSION_MATRIX_PNG))]
    if result.device_accuracy:
        written.append(plot_device_accuracy(result, os.path.join(out_dir, DEVICE_ACCURACY_PNG)))
    return written
