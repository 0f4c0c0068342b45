"""The results of a table: mean +- standard deviation over seeds per row and split, beside the
report's numbers, as Markdown, CSV and (with matplotlib) PNG.

Each row says what its cells ran, float, QAT or PTQ, as their ``evaluation.json`` records it
(not from the report row it is compared with); a report number measured after something else
than the row ran is marked with its kind.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import math
import os

from keras_asc.files import atomic_path, write_text_atomic
from keras_asc.training import plots as plots_module
from keras_asc.training.reproduce.cells import (
    RESULTS_CSV,
    RESULTS_MD,
    RESULTS_PNG,
    plan_cells,
    read_cell_result,
)
from keras_asc.training.reproduce.tables import (
    KINDS,
    REPORT_RESULTS,
    REPORT_TITLE,
    Row,
    Table,
    load_table,
)


@dataclasses.dataclass(frozen=True)
class TableEntry:
    """One row x split of the results: accuracy (%) per finished seed and the report's."""

    row: Row
    split: int
    values: dict  # seed -> dev-test macro accuracy (%) of the row's final model
    expected_seeds: int
    report: float | None
    float_values: dict = dataclasses.field(default_factory=dict)  # seed -> before quantisation
    kinds: tuple = ()  # what the finished seeds ran: "float", "QAT" or "PTQ"

    @property
    def report_kind(self):
        """What the report's number was measured after (``"QAT"``, ``"quantised"``)."""
        return REPORT_RESULTS[self.row.report]["kind"] if self.row.report else None

    @property
    def mean(self):
        return sum(self.values.values()) / len(self.values) if self.values else None

    @property
    def std(self):
        """Sample standard deviation over the seeds (``None`` with fewer than two)."""
        if len(self.values) < 2:
            return None
        mean = self.mean
        return math.sqrt(
            sum((v - mean) ** 2 for v in self.values.values()) / (len(self.values) - 1)
        )

    def text(self):
        if not self.values:
            ours = "-"
        elif self.std is None:
            ours = f"{self.mean:.2f}"
        else:
            ours = f"{self.mean:.2f} ± {self.std:.2f}"
        if self.values and len(self.values) < self.expected_seeds:
            ours += f" [{len(self.values)}/{self.expected_seeds} seeds]"
        if self.report is not None:
            ran = set(self.kinds) or {KINDS[self.row.quantize]}
            same = ran == {self.report_kind} or (
                self.report_kind == "quantised" and "float" not in ran
            )
            ours += f" ({self.report:.2f})" if same else f" ({self.report:.2f} {self.report_kind})"
        return ours


@dataclasses.dataclass(frozen=True)
class TableSummary:
    """The results of a table: one :class:`TableEntry` per shown row and split."""

    table: Table
    entries: tuple

    def entry(self, row_name, split):
        for entry in self.entries:
            if entry.row.name == row_name and entry.split == split:
                return entry
        raise KeyError((row_name, split))

    @property
    def splits(self):
        return sorted(self.table.splits, reverse=True)

    @property
    def rows(self):
        return [row for row in self.table.rows if row.show]

    def kind(self, row):
        """What the row's finished cells ran (``"float"``, ``"QAT"``, ``"PTQ"``; joined with
        ``/`` if they differ); with none finished, what the row asks for."""
        kinds = sorted({k for e in self.entries if e.row.name == row.name for k in e.kinds})
        return "/".join(kinds) or KINDS[row.quantize]

    def label(self, row):
        """The row's label with what its cells ran, e.g. ``"MofleNet57 (PTQ)"``."""
        return f"{row.label} ({self.kind(row)})"

    def markdown(self):
        """The table in the report's layout: rows x splits (100 % first), ``mean ± std``
        over seeds, the report's number in brackets."""
        seeds = ", ".join(str(seed) for seed in self.table.seeds)
        legend = (
            f"Dev-test macro class-wise accuracy (%) by training split, mean ± sample standard "
            f"deviation over seeds {seeds}"
        )
        if any(entry.report is not None for entry in self.entries):
            legend += (
                f"; in brackets the number of the report ({REPORT_TITLE}), with what it was "
                "measured after where that differs from the row"
            )
        lines = [
            f"## {self.table.title}",
            "",
            legend + ".",
            "",
            "| model | " + " | ".join(f"{split} %" for split in self.splits) + " |",
            "|---|" + "---:|" * len(self.splits),
        ]
        for row in self.rows:
            cells = [self.entry(row.name, split).text() for split in self.splits]
            lines.append(f"| {self.label(row)} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def csv(self):
        """One line per row and split: seeds finished, mean, std, report, per-seed values."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(
            [
                "row",
                "label",
                "model",
                "quantization",
                "split",
                "seeds",
                "mean",
                "std",
                "report",
                "float_mean",
                "values",
            ]
        )
        for row in self.rows:
            for split in self.splits:
                entry = self.entry(row.name, split)
                writer.writerow(
                    [
                        row.name,
                        row.label,
                        row.model,
                        self.kind(row),
                        split,
                        len(entry.values),
                        "" if entry.mean is None else f"{entry.mean:.4f}",
                        "" if entry.std is None else f"{entry.std:.4f}",
                        "" if entry.report is None else f"{entry.report:.2f}",
                        _mean_text(entry.float_values),
                        " ".join(
                            f"{seed}:{value:.4f}" for seed, value in sorted(entry.values.items())
                        ),
                    ]
                )
        return buffer.getvalue()


def _mean_text(values):
    return f"{sum(values.values()) / len(values):.4f}" if values else ""


def summarize(table, out_dir):
    """Collect the finished cells of ``table`` under ``out_dir`` into a :class:`TableSummary`.

    Example:
        >>> print(summarize(load_table("report"), "runs/report").markdown())
    """
    if not isinstance(table, Table):
        table = load_table(table)
    results, float_results, kinds = {}, {}, {}
    for cell in plan_cells(table, out_dir):
        data = read_cell_result(cell)
        if data is not None:
            key = (cell.row.name, cell.split, cell.seed)
            results[key] = 100.0 * float(data["macro_accuracy"])
            kinds[key] = KINDS.get(data["quantization"], str(data["quantization"]))
            with contextlib.suppress(KeyError, TypeError, ValueError):
                float_results[key] = 100.0 * float(data["float"]["macro_accuracy"])
    entries = []
    for row in table.rows:
        if not row.show:
            continue
        for split in table.splits:
            values = {
                seed: results[(row.name, split, seed)]
                for seed in table.seeds
                if (row.name, split, seed) in results
            }
            floats = {
                seed: float_results[(row.name, split, seed)]
                for seed in values
                if (row.name, split, seed) in float_results
            }
            report = REPORT_RESULTS[row.report]["accuracy"].get(split) if row.report else None
            ran = tuple(sorted({kinds[(row.name, split, seed)] for seed in values}))
            entries.append(
                TableEntry(row, split, values, len(table.seeds), report, floats, ran)
            )
    return TableSummary(table, tuple(entries))


def plot_summary(summary, path):
    """Draw the results as a PNG: accuracy by split per row, mean ± std over seeds as error
    bars, the report's numbers as dashed lines of the same colour. Needs matplotlib."""
    figure = plots_module._new_figure(7.5, 4.5)
    axes = figure.add_subplot(1, 1, 1)
    splits = summary.splits
    positions = list(range(len(splits)))
    colours = [f"C{i}" for i in range(10)]
    for index, row in enumerate(summary.rows):
        colour = colours[index % len(colours)]
        entries = [summary.entry(row.name, split) for split in splits]
        points = [
            (x, e.mean, e.std or 0.0) for x, e in zip(positions, entries, strict=True) if e.values
        ]
        if points:
            xs, means, stds = zip(*points, strict=True)
            axes.errorbar(
                xs,
                means,
                yerr=stds,
                color=colour,
                marker="o",
                capsize=3,
                label=summary.label(row),
            )
        report = [
            (x, e.report) for x, e in zip(positions, entries, strict=True) if e.report is not None
        ]
        if report:
            xs, values = zip(*report, strict=True)
            axes.plot(
                xs,
                values,
                color=colour,
                linestyle="--",
                marker="x",
                alpha=0.7,
                label=f"{REPORT_RESULTS[row.report]['label']} (report)",
            )
    axes.set_xticks(positions)
    axes.set_xticklabels([f"{split} %" for split in splits])
    axes.set_xlabel("training split")
    axes.set_ylabel("dev-test macro accuracy (%)")
    axes.set_title(summary.table.title)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[1]:  # no finished cell yet: no legend to draw
        axes.legend(fontsize="small", loc="best")
    return plots_module._save(figure, path)


def write_results(summary, out_dir, plots=True):
    """Write ``results.md``, ``results.csv`` and (with matplotlib and ``plots``)
    ``results.png`` into ``out_dir`` atomically; return the paths written."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    markdown_path = os.path.join(out_dir, RESULTS_MD)
    csv_path = os.path.join(out_dir, RESULTS_CSV)
    write_text_atomic(markdown_path, summary.markdown())
    with (
        atomic_path(csv_path) as temporary,
        open(temporary, "w", encoding="utf-8", newline="") as handle,
    ):
        handle.write(summary.csv())
    written = [markdown_path, csv_path]
    if plots and plots_module.matplotlib_available():
        written.append(plot_summary(summary, os.path.join(out_dir, RESULTS_PNG)))
    return written



__all__ = ["TableEntry", "TableSummary", "plot_summary", "summarize", "write_results"]
