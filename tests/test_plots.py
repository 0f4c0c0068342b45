"""The evaluation plots are legible: no line hidden under another, every axis labelled."""

import numpy as np
import pytest

from keras_asc.training import plots
from keras_asc.training.evaluation import evaluate_predictions

CLASSES = ("x", "y", "z")


def _result(labels, predicted, devices):
    logits = np.zeros((len(predicted), len(CLASSES)))
    logits[np.arange(len(predicted)), predicted] = 2.0
    return evaluate_predictions(logits, labels, devices, CLASSES, model_name="toy", split="test")


def test_equal_overall_and_macro_accuracy_share_one_line():
    # A class-balanced split: overall accuracy equals the macro class-wise accuracy.
    lines = plots.accuracy_lines(0.7, 0.7)
    assert len(lines) == 1
    value, style, label = lines[0]
    assert value == 0.7 and style["linestyle"] == "--"
    assert label == "macro class-wise 70.0 % (overall 70.0 %)"


def test_close_accuracies_share_one_line_distant_ones_get_two():
    assert len(plots.accuracy_lines(0.71, 0.70)) == 1
    lines = plots.accuracy_lines(5 / 6, 2 / 3)
    assert [round(value, 4) for value, _, _ in lines] == [0.6667, 0.8333]
    assert [style["linestyle"] for _, style, _ in lines] == ["--", ":"]
    assert [label for _, _, label in lines] == ["macro class-wise 66.7 %", "overall 83.3 %"]


@pytest.fixture
def drawn_figures(monkeypatch):
    """The matplotlib figures the plot functions draw, kept for inspection."""
    pytest.importorskip("matplotlib")
    figures = []
    new_figure = plots._new_figure

    def keep(width, height):
        figure = new_figure(width, height)
        figures.append(figure)
        return figure

    monkeypatch.setattr(plots, "_new_figure", keep)
    return figures


def test_device_plot_draws_one_line_on_a_balanced_split(drawn_figures, tmp_path):
    # Two clips per class, one wrong in each of x and y: overall 4/6 = macro (1/2 + 1/2 + 1) / 3.
    result = _result([0, 0, 1, 1, 2, 2], [0, 1, 1, 0, 2, 2], ["a", "b", "s1", "s4", "a", "s4"])
    assert result.accuracy == pytest.approx(result.macro_accuracy)
    plots.plot_device_accuracy(result, tmp_path / "device.png")
    axes = drawn_figures[0].axes[0]
    horizontal = [line for line in axes.get_lines() if len(set(line.get_ydata())) == 1]
    assert len(horizontal) == 1
    assert horizontal[0].get_ydata()[0] == pytest.approx(100 * 4 / 6)
    assert axes.get_xlabel() and axes.get_ylabel() == "accuracy (%)"
    assert (tmp_path / "device.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_plot_labels_both_axes(drawn_figures, tmp_path):
    result = _result([0, 0, 0, 0, 1, 2], [0, 0, 0, 0, 0, 2], ["a", "a", "b", "s1", "s4", "s4"])
    plots.save_evaluation_plots(result, tmp_path)
    plots.plot_model_comparison({"toy": result, "toy2": result}, tmp_path / "cmp.png")
    assert len(drawn_figures) == 3
    for figure in drawn_figures:
        axes = figure.axes[0]
        assert axes.get_xlabel() and axes.get_ylabel(), axes.get_title()
    # The unbalanced result: overall 83.3 %, macro 66.7 %, far enough apart for two lines.
    device_axes = drawn_figures[1].axes[0]
    levels = sorted(line.get_ydata()[0] for line in device_axes.get_lines())
    assert levels == pytest.approx([100 * 2 / 3, 100 * 5 / 6])
