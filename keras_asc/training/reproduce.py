"""Reproduce a results table: train, ensemble, quantise and evaluate every cell of it.

A *table* names rows (models, ensembles of other rows, optionally quantised after training),
the DCASE 2024 training splits (its columns) and the seeds to repeat each cell with. Every
cell, one row x split x seed, gets its own folder under the output folder and runs the public
workflow: :func:`keras_asc.training.train` (or :func:`~keras_asc.training.ensemble.build_ensemble`
on the row's member cells of the same split and seed), then
:func:`~keras_asc.training.quantize.quantize_run` (QAT or post-training quantisation), then
:func:`~keras_asc.training.evaluation.evaluate` on the development test split. The table of
dev-test macro accuracies, mean +- standard deviation over the seeds, is written beside the
numbers of the DCASE 2024 report as Markdown, CSV and (with matplotlib) PNG.

A table is a TOML file (``tomllib``; ``tomli`` on Python 3.10) or a built-in name
(:data:`BUILTIN_TABLES`: ``report``, the rows of the report's Tables 4 and 5, and
``report-float``, the same rows without quantisation)::

    title = "MofleNet and CP-ResNet after QAT"
    splits = [100, 25, 5]
    seeds = [0, 1, 2]

    [train]                      # keras_asc.train keyword arguments for every training cell
    epochs = 150

    [[rows]]
    model = "moflenet57"
    quantize = "qat"             # "qat", "ptq" or "none"
    report = "moflenet57_qat"    # the report's numbers shown beside this row

    [[rows]]
    model = "moflenet57_cp_resnet59_v2"   # an ensemble preset: its member rows are added
    quantize = "qat"

A cell folder (``OUT/cells/<row>/split<S>-seed<N>``) holds ``run/`` (the training run or
ensemble folder), ``int8/`` (the quantised files), ``quantized.json`` and, written atomically
last, ``evaluation.json``: the mark of a finished cell, which later runs skip. A cell is
locked (``.keras-asc.lock``, an ``flock`` the kernel releases when the process dies) while a
process works on it, so several processes, one per GPU, can work through the same table side
by side: each takes the next cell no other process holds. An interrupted cell continues where
it stopped (training resumes from its last backup). A row's members (ensembles) and teachers
(knowledge distillation) are cells of the same split and seed, run first and reused.

Why hand-written: experiment runners (Hydra multirun, Ray Tune, Snakemake) schedule jobs but
know nothing of DCASE splits, ensembles of earlier cells or the report's table; the work here
is that bookkeeping, on top of ``keras_asc.files`` (atomic writes, folder locks).

Example:
    >>> from keras_asc.training.reproduce import reproduce
    >>> result = reproduce("report", data_dir="/data/tau22", out_dir="runs/report",
    ...                    dirs_dir="/data/micirp_dirs")
    >>> print(result.markdown)

Reference:
    "Low complexity acoustic scene classification with MofleNet", DCASE 2024 Task 1 technical
    report, Tables 4 and 5 (dev-test macro accuracy after QAT by training split).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import inspect
import io
import json
import math
import os
import sys
import time

from keras_asc import registry
from keras_asc.data.tau22 import normalize_split
from keras_asc.files import (
    FINAL_MODEL,
    INT8_DIR,
    RUN_CONFIG,
    FolderLock,
    FolderLockedError,
    atomic_path,
    write_text_atomic,
)
from keras_asc.training import plots as plots_module
from keras_asc.training.ensemble import PRESET_ALIASES, build_ensemble, preset_weights
from keras_asc.training.evaluation import evaluate
from keras_asc.training.train import train
from keras_asc.version import __version__

try:  # Python 3.11+
    import tomllib
except ImportError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

REPORT_TITLE = (
    '"Low complexity acoustic scene classification with MofleNet", DCASE 2024 Task 1 '
    "technical report, Tables 4 and 5"
)
# Dev-test macro class-wise accuracy (%) by training split (%), from the report's Tables 4
# and 5. Keys are what a table row names as ``report``.
REPORT_RESULTS = {
    "dcase24_baseline_quantized": {
        "label": "DCASE24 baseline (quantised)",
        "accuracy": {100: 56.99, 50: 53.19, 25: 50.29, 10: 45.29, 5: 42.40},
    },
    "moflenet57_qat": {
        "label": "MofleNet57 after QAT",
        "accuracy": {100: 58.79, 50: 56.71, 25: 52.21, 10: 45.40, 5: 41.22},
    },
    "cp_resnet59_qat": {
        "label": "CP-ResNet59 after QAT",
        "accuracy": {100: 58.49, 50: 57.52, 25: 54.81, 10: 48.79, 5: 44.92},
    },
    "ensemble_v2_qat": {
        "label": "ensemble v2 after QAT",
        "accuracy": {100: 62.51, 50: 60.07, 25: 57.18, 10: 51.52, 5: 47.58},
    },
}

_REPORT_ROWS = [
    {"model": "dcase24_baseline", "quantize": "qat", "report": "dcase24_baseline_quantized"},
    {"model": "moflenet57", "quantize": "qat", "report": "moflenet57_qat"},
    {"model": "cp_resnet59", "quantize": "qat", "report": "cp_resnet59_qat"},
    {
        "model": "moflenet57_cp_resnet59_v2",
        "members": ["cp_resnet59", "moflenet57"],
        "quantize": "qat",
        "report": "ensemble_v2_qat",
    },
]
# Tables by name: what ``keras-asc reproduce NAME`` runs without a file.
BUILTIN_TABLES = {
    "report": {
        "title": "Report Tables 4 and 5: models and ensemble v2 after QAT",
        "splits": [100, 50, 25, 10, 5],
        "seeds": [0, 1, 2],
        "rows": _REPORT_ROWS,
    },
    "report-float": {
        "title": "Report Tables 4 and 5 rows, float models (no quantisation)",
        "splits": [100, 50, 25, 10, 5],
        "seeds": [0, 1, 2],
        "rows": [
            {k: v for k, v in row.items() if k not in ("quantize", "report")}
            | {"quantize": "none", "label": label}
            for row, label in zip(
                _REPORT_ROWS,
                (
                    "DCASE24 baseline (float)",
                    "MofleNet57 (float)",
                    "CP-ResNet59 (float)",
                    "ensemble v2 (float)",
                ),
                strict=True,
            )
        ],
    },
}

QUANTIZATIONS = ("qat", "ptq", "none")
TABLE_KEYS = ("title", "splits", "seeds", "train", "qat", "evaluate", "rows")
ROW_KEYS = (
    "name",
    "label",
    "model",
    "members",
    "preset",
    "weights",
    "teachers",
    "quantize",
    "train",
    "qat",
    "report",
    "show",
)
EVALUATE_KEYS = ("batch_size",)
# train() arguments the table cannot set: reproduce sets them per cell.
_CELL_TRAIN_ARGUMENTS = ("model", "data_dir", "split", "seed", "out_dir", "teachers")
_CELL_QAT_ARGUMENTS = ("run", "data_dir", "split", "seed", "out_dir", "ptq", "evaluate_split")

CELLS_DIR = "cells"
CELL_RUN_DIR = "run"
CELL_DONE = "evaluation.json"  # written atomically last: the cell is finished
CELL_QUANTIZED = "quantized.json"
TABLE_RECORD = "table.json"
RESULTS_MD = "results.md"
RESULTS_CSV = "results.csv"
RESULTS_PNG = "results.png"


# === The table ===


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a table: a model trained by ``train`` or an ensemble of other rows.

    Attributes:
        name: unique name (the cell folders' name).
        label: text in the table's first column.
        model: registered model name (a training row) or the ensemble's name.
        members: member row names (an ensemble row), else ``()``.
        weights: logit weight per member (an ensemble row without a preset).
        preset: ensemble preset (``"v1"``, ``"v2"`` or a registered ensemble name).
        teachers: teacher row names, distilled from (knowledge distillation).
        quantize: ``"qat"``, ``"ptq"`` or ``"none"``.
        train: ``keras_asc.train`` keyword arguments of the row.
        qat: ``quantize_run`` keyword arguments of the row.
        report: key of :data:`REPORT_RESULTS` shown beside the row, or ``None``.
        show: whether the row appears in the results (added member rows do not).
    """

    name: str
    label: str
    model: str
    members: tuple = ()
    weights: tuple | None = None
    preset: str | None = None
    teachers: tuple = ()
    quantize: str = "none"
    train: dict = dataclasses.field(default_factory=dict)
    qat: dict = dataclasses.field(default_factory=dict)
    report: str | None = None
    show: bool = True

    @property
    def is_ensemble(self):
        return bool(self.members)

    @property
    def dependencies(self):
        return tuple(self.members) + tuple(self.teachers)


@dataclasses.dataclass(frozen=True)
class Table:
    """A parsed table: rows (dependencies first), splits, seeds and shared settings."""

    title: str
    rows: tuple
    splits: tuple
    seeds: tuple
    train: dict
    qat: dict
    evaluate: dict
    source: str

    def row(self, name):
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    def to_dict(self):
        return {
            "title": self.title,
            "source": self.source,
            "splits": list(self.splits),
            "seeds": list(self.seeds),
            "train": self.train,
            "qat": self.qat,
            "evaluate": self.evaluate,
            "rows": [dataclasses.asdict(row) for row in self.rows],
        }


def _table_error(source, message):
    return ValueError(f"Table {source}: {message}")


def _read_table_source(source):
    """``(dict, description)`` of a table given as a dict, a built-in name or a TOML path."""
    if isinstance(source, dict):
        return source, "(dict)"
    text = os.fspath(source)
    if text in BUILTIN_TABLES:
        return BUILTIN_TABLES[text], f"{text!r} (built in)"
    if not os.path.exists(text):
        raise FileNotFoundError(
            f"No table file at {text!r} and no built-in table of that name; built-in tables: "
            f"{', '.join(BUILTIN_TABLES)}; a table file is TOML (.toml)."
        )
    try:
        with open(text, "rb") as handle:
            return tomllib.load(handle), repr(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"Table {text!r} is not valid TOML: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"Cannot read the table {text!r}: {error}") from None


def _check_keys(source, where, data, allowed):
    if not isinstance(data, dict):
        raise _table_error(
            source, f"{where} must be a table (key = value pairs). Received: {data!r}"
        )
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise _table_error(
            source, f"{where} has unknown keys {unknown}; expected some of {list(allowed)}."
        )


def _int_list(source, where, values, check):
    if isinstance(values, (int, str)):
        values = [values]
    if not isinstance(values, (list, tuple)) or not values:
        raise _table_error(source, f"{where} must be a non-empty list. Received: {values!r}")
    result = []
    for value in values:
        try:
            result.append(check(value))
        except (TypeError, ValueError) as error:
            raise _table_error(source, f"{where}: {error}") from None
    if len(set(result)) != len(result):
        raise _table_error(source, f"{where} lists a value twice: {values!r}")
    return tuple(result)


def _split_value(value):
    split = normalize_split(value)
    if split == "test":
        raise ValueError("the test split is evaluated, not trained on; use 5, 10, 25, 50 or 100")
    return int(split)


def _seed_value(value):
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError(f"seeds are non-negative integers. Received: {value!r}")
    return int(value)


def _unknown_keywords(names, function, reserved):
    """The ``names`` that ``function`` does not take, or that reproduce sets per cell."""
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return sorted(set(names) & set(reserved))
    return sorted(set(names) - ({p.name for p in parameters} - set(reserved)))


def _taken_keywords(function, reserved):
    return sorted(set(inspect.signature(function).parameters) - set(reserved))


def _keyword_table(source, where, data, function, reserved):
    if not isinstance(data, dict):
        raise _table_error(
            source, f"{where} must be a table (key = value pairs). Received: {data!r}"
        )
    unknown = _unknown_keywords(data, function, reserved)
    if unknown:
        raise _table_error(
            source,
            f"{where} has keys {unknown} that {function.__module__}.{function.__name__} does "
            f"not take (or that reproduce sets per cell); it takes "
            f"{_taken_keywords(function, reserved)}.",
        )
    return dict(data)


def _quantize_run_function():
    from keras_asc.training.quantize import quantize_run

    return quantize_run


def _parse_row(source, index, data, settings_check):
    _check_keys(source, f"rows[{index}]", data, ROW_KEYS)
    model = data.get("model")
    members = data.get("members", ())
    if model is None and not members:
        raise _table_error(source, f"rows[{index}] needs a model (or members for an ensemble).")
    if model is None and not data.get("name"):
        raise _table_error(source, f"rows[{index}] (an ensemble of {members}) needs a name.")
    name = str(data.get("name") or PRESET_ALIASES.get(model, model))
    quantize = data.get("quantize", "none")
    if quantize is False:
        quantize = "none"
    if quantize not in QUANTIZATIONS:
        raise _table_error(
            source,
            f"row {name!r}: quantize must be one of {list(QUANTIZATIONS)} or false. "
            f"Received: {quantize!r}",
        )
    report = data.get("report")
    if report is not None and report not in REPORT_RESULTS:
        raise _table_error(
            source, f"row {name!r}: unknown report row {report!r}; known: {list(REPORT_RESULTS)}."
        )
    weights = data.get("weights")
    if weights is not None:
        weights = tuple(float(weight) for weight in weights)
    train_settings, qat_settings = settings_check(
        f"row {name!r} train", data.get("train", {}), f"row {name!r} qat", data.get("qat", {})
    )
    label = data.get("label") or (REPORT_RESULTS[report]["label"] if report else name)
    return Row(
        name=name,
        label=str(label),
        model=str(model or name),
        members=tuple(str(member) for member in members),
        weights=weights,
        preset=data.get("preset"),
        teachers=tuple(str(teacher) for teacher in data.get("teachers", ())),
        quantize=quantize,
        train=train_settings,
        qat=qat_settings,
        report=report,
        show=bool(data.get("show", True)),
    )


def _complete_ensembles(source, rows):
    """Fill in the members of rows whose model is a registered ensemble, adding hidden member
    rows for preset models no row trains, and check every member's and teacher's name."""
    by_name = {row.name: row for row in rows}
    if len(by_name) != len(rows):
        names = [row.name for row in rows]
        twice = sorted({name for name in names if names.count(name) > 1})
        raise _table_error(source, f"row names must be unique; give a name to the rows {twice}.")
    ensembles = registry.ensembles()
    result = []
    for row in rows:
        model = PRESET_ALIASES.get(row.model, row.model)
        if model not in ensembles:
            result.append(row)
            continue
        if row.is_ensemble:  # members named: the preset gives the weights unless the row does
            preset = row.preset if row.preset or row.weights else model
            result.append(dataclasses.replace(row, model=model, preset=preset))
            continue
        members = []
        for member_model in ensembles[model].members:
            found = [r for r in rows if r.model == member_model and not r.is_ensemble]
            if not found:
                hidden = Row(name=member_model, label=member_model, model=member_model, show=False)
                by_name[hidden.name] = hidden
                result.append(hidden)
                rows = [*rows, hidden]
                found = [hidden]
            members.append(found[0].name)
        preset = row.preset if row.preset or row.weights else model
        result.append(dataclasses.replace(row, model=model, members=tuple(members), preset=preset))
    by_name = {row.name: row for row in result}
    for row in result:
        for kind, names in (("members", row.members), ("teachers", row.teachers)):
            for name in names:
                if name not in by_name:
                    raise _table_error(
                        source,
                        f"row {row.name!r} names {kind} {name!r}, which is no row of "
                        f"the table; rows: {list(by_name)}.",
                    )
        if row.is_ensemble:
            if len(row.members) < 2:
                raise _table_error(source, f"ensemble row {row.name!r} needs two or more members.")
            if (row.weights is None) == (row.preset is None):
                raise _table_error(
                    source,
                    f'ensemble row {row.name!r}: give either preset (e.g. "v2") or '
                    "weights (one per member).",
                )
            if row.weights is not None and len(row.weights) != len(row.members):
                raise _table_error(
                    source,
                    f"ensemble row {row.name!r} has {len(row.weights)} weights for "
                    f"{len(row.members)} members.",
                )
            if row.preset is not None:
                preset_weights(row.preset)  # an unknown preset: its error lists the known ones
            if row.teachers:
                raise _table_error(source, f"ensemble row {row.name!r} cannot have teachers.")
        elif row.model not in registry.models():
            raise _table_error(
                source,
                f"row {row.name!r}: unknown model {row.model!r}; known models: "
                f"{sorted(registry.models())} and ensembles {sorted(ensembles)}.",
            )
    return _dependencies_first(source, result)


def _dependencies_first(source, rows):
    by_name = {row.name: row for row in rows}
    ordered, state = [], {}

    def visit(row, path):
        if state.get(row.name) == "done":
            return
        if state.get(row.name) == "visiting":
            raise _table_error(source, f"rows depend on each other in a cycle: {' -> '.join(path)}")
        state[row.name] = "visiting"
        for name in row.dependencies:
            visit(by_name[name], [*path, name])
        state[row.name] = "done"
        ordered.append(row)

    for row in rows:
        visit(row, [row.name])
    return tuple(ordered)


def load_table(source, *, splits=None, seeds=None, rows=None):
    """Read and check a table.

    Args:
        source: a TOML file path, a built-in table name (:data:`BUILTIN_TABLES`) or a dict
            of the same layout.
        splits: use these training splits instead of the table's (e.g. ``[25]``).
        seeds: use these seeds instead of the table's.
        rows: keep only these row names (and the rows they depend on).

    Returns:
        A :class:`Table`, rows ordered so that members and teachers come before the rows that
        use them.

    Raises:
        FileNotFoundError: no such file and no such built-in table.
        ValueError: the table is malformed; the message names the table and the field.

    Example:
        >>> table = load_table("report", splits=[25], seeds=[0, 1])
        >>> [row.name for row in table.rows]
        ['dcase24_baseline', 'moflenet57', 'cp_resnet59', 'moflenet57_cp_resnet59_v2']
    """
    data, where = _read_table_source(source)
    _check_keys(where, "the table", data, TABLE_KEYS)

    def settings_check(train_where, train_data, qat_where, qat_data):
        return (
            _keyword_table(where, train_where, train_data, train, _CELL_TRAIN_ARGUMENTS),
            _keyword_table(
                where, qat_where, qat_data, _quantize_run_function(), _CELL_QAT_ARGUMENTS
            ),
        )

    train_settings, qat_settings = settings_check(
        "[train]", data.get("train", {}), "[qat]", data.get("qat", {})
    )
    evaluate_settings = data.get("evaluate", {})
    _check_keys(where, "[evaluate]", evaluate_settings, EVALUATE_KEYS)
    raw_rows = data.get("rows")
    if not isinstance(raw_rows, list) or not raw_rows:
        raise _table_error(where, "needs [[rows]] entries (one per model or ensemble).")
    parsed = [_parse_row(where, i, row, settings_check) for i, row in enumerate(raw_rows)]
    table_rows = _complete_ensembles(where, parsed)
    if rows is not None:
        wanted = set(rows)
        unknown = sorted(wanted - {row.name for row in table_rows})
        if unknown:
            raise ValueError(
                f"--rows names {unknown}, which are not rows of table {where}; rows: "
                f"{[row.name for row in table_rows]}."
            )
        by_name = {row.name: row for row in table_rows}
        keep = set()

        def add(name):
            if name not in keep:
                keep.add(name)
                for dependency in by_name[name].dependencies:
                    add(dependency)

        for name in wanted:
            add(name)
        table_rows = tuple(
            row if row.name in wanted or not row.show else dataclasses.replace(row, show=False)
            for row in table_rows
            if row.name in keep
        )
    return Table(
        title=str(data.get("title") or "keras-asc results"),
        rows=table_rows,
        splits=_int_list(
            where, "splits", splits or data.get("splits", [100, 50, 25, 10, 5]), _split_value
        ),
        seeds=_int_list(
            where, "seeds", seeds if seeds is not None else data.get("seeds", [0]), _seed_value
        ),
        train=train_settings,
        qat=qat_settings,
        evaluate=dict(evaluate_settings),
        source=where,
    )


# === Cells ===


@dataclasses.dataclass(frozen=True)
class Cell:
    """One row x split x seed of a table, in its own folder.

    Attributes:
        index: position in the table's cell list (``--list``, ``--cell``).
        row: the :class:`Row`.
        split: training split (5, 10, 25, 50, 100).
        seed: seed of the training run, the QAT data order and the augmentations.
        folder: the cell's folder.
    """

    index: int
    row: Row
    split: int
    seed: int
    folder: str

    @property
    def name(self):
        return f"{self.row.name}/split{self.split}-seed{self.seed}"

    @property
    def run_dir(self):
        return os.path.join(self.folder, CELL_RUN_DIR)

    @property
    def done_path(self):
        return os.path.join(self.folder, CELL_DONE)

    @property
    def done(self):
        return read_cell_result(self) is not None


def plan_cells(table, out_dir):
    """Every cell of ``table`` under ``out_dir``, split by split, seed by seed, each row after
    the rows it depends on (so cells can be run in list order)."""
    cells = []
    for split in table.splits:
        for seed in table.seeds:
            for row in table.rows:
                folder = os.path.join(
                    os.fspath(out_dir), CELLS_DIR, row.name, f"split{split}-seed{seed}"
                )
                cells.append(Cell(len(cells), row, split, seed, folder))
    return cells


def read_cell_result(cell):
    """The finished cell's ``evaluation.json`` as a dict, or ``None``: absent, unreadable, or
    written for another quantisation than the row now asks for (the cell runs again, reusing
    its training run)."""
    try:
        with open(cell.done_path, encoding="utf-8") as handle:
            data = json.load(handle)
        float(data["macro_accuracy"])
        if data["quantization"] != cell.row.quantize:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return data


def cell_status(cell):
    """``"done"``, ``"running"`` (another process holds its lock), ``"started"`` or ``"pending"``."""
    if cell.done:
        return "done"
    if not os.path.isdir(cell.folder):
        return "pending"
    try:
        with FolderLock(cell.folder, owner="keras-asc reproduce"):
            pass
    except FolderLockedError:
        return "running"
    return "started"


def select_cells(cells, selection):
    """The cells named by ``selection``: indices (``3``, ``"3"``, ``"2-5"``) or names
    (``"moflenet57/split25-seed0"``)."""
    by_name = {cell.name: cell for cell in cells}
    chosen = []
    for item in selection:
        text = str(item).strip()
        if text in by_name:
            chosen.append(by_name[text])
            continue
        try:
            first, _, last = text.partition("-")
            indices = range(int(first), int(last or first) + 1)
        except ValueError:
            indices = None
        if indices is None or not indices or indices[-1] >= len(cells) or indices[0] < 0:
            raise ValueError(
                f"--cell {text!r} is neither a cell index (0 to {len(cells) - 1}, or a range "
                "like 2-5) nor a cell name such as "
                f"{cells[0].name!r}; see --list."
            )
        chosen.extend(cells[i] for i in indices)
    unique = {cell.index: cell for cell in chosen}
    return list(unique.values())


class CellBusy(Exception):
    """A cell (or a cell it needs) is being run by another process."""


@dataclasses.dataclass
class _Context:
    table: Table
    cells: dict
    data_dir: str
    dirs_dir: str | None
    cache_dir: str | None
    train_overrides: dict
    qat_overrides: dict
    verbose: int
    log: object
    ran: list


def _say(context, message):
    print(f"keras-asc reproduce: {message}", file=context.log, flush=True)


def _cell_for(context, cell, row_name):
    return context.cells[(row_name, cell.split, cell.seed)]


def _run_cell(context, cell):
    """Run ``cell`` (and first the cells it depends on) unless it is finished; raise
    :class:`CellBusy` when it or one of them is locked by another process."""
    if cell.done:
        return
    for name in cell.row.dependencies:
        _run_cell(context, _cell_for(context, cell, name))
    os.makedirs(cell.folder, exist_ok=True)
    # A FolderLockedError from inside (a training or ensemble folder that another process
    # holds) means the same: another process is on this cell.
    try:
        with FolderLock(cell.folder, owner="keras-asc reproduce"):
            if cell.done:  # another process finished it while this one ran its members
                return
            _say(context, f"cell {cell.index} {cell.name}: starting")
            started = time.monotonic()
            _work(context, cell)
            context.ran.append(cell.name)
            elapsed = time.monotonic() - started
            _say(context, f"cell {cell.index} {cell.name}: done in {elapsed:.0f} s")
    except FolderLockedError:
        raise CellBusy(cell.name) from None


def _train_arguments(context, cell):
    row = cell.row
    arguments = {**context.table.train, **row.train, **context.train_overrides}
    arguments.update(
        model=row.model,
        data_dir=context.data_dir,
        split=cell.split,
        seed=cell.seed,
        out_dir=cell.run_dir,
    )
    arguments.setdefault("dirs_dir", context.dirs_dir)
    arguments.setdefault("cache_dir", context.cache_dir)
    arguments.setdefault("verbose", context.verbose)
    if row.teachers:
        arguments["teachers"] = [_cell_for(context, cell, name).run_dir for name in row.teachers]
    return arguments


def _ensemble_ready(run_dir):
    try:
        with open(os.path.join(run_dir, RUN_CONFIG), encoding="utf-8") as handle:
            return json.load(handle).get("kind") == "ensemble" and os.path.isfile(
                os.path.join(run_dir, FINAL_MODEL)
            )
    except (OSError, ValueError, AttributeError):
        return False


def _work(context, cell):
    row = cell.row
    # 1. The float model: a training run, or the ensemble of the member cells' runs.
    if row.is_ensemble:
        if not _ensemble_ready(cell.run_dir):
            members = [_cell_for(context, cell, name).run_dir for name in row.members]
            build_ensemble(
                members,
                weights=list(row.weights) if row.weights is not None else None,
                preset=row.preset,
                name=row.model,
                out_dir=cell.run_dir,
            )
    else:
        train(**_train_arguments(context, cell))
    # 2. Quantisation (QAT fine-tuning or post-training calibration) and the int8 file.
    int8_path = None
    if row.quantize != "none":
        int8_path = _quantize(context, cell)
    # 3. Evaluation on the development test split; evaluation.json marks the cell finished.
    batch_size = context.table.evaluate.get("batch_size", 64)
    float_result = evaluate(
        cell.run_dir,
        context.data_dir,
        "test",
        batch_size=batch_size,
        cache_dir=context.cache_dir,
        verbose=False,
    )
    int8_result = None
    if int8_path is not None:
        int8_result = evaluate(
            int8_path,
            context.data_dir,
            "test",
            batch_size=batch_size,
            cache_dir=context.cache_dir,
            verbose=False,
        )
    final = int8_result or float_result
    record = {
        "row": row.name,
        "model": row.model,
        "split": cell.split,
        "seed": cell.seed,
        "quantization": row.quantize,
        "macro_accuracy": final.macro_accuracy,
        "float": float_result.to_dict(),
        "int8": int8_result.to_dict() if int8_result is not None else None,
        "int8_file": os.path.relpath(int8_path, cell.folder) if int8_path else None,
        "keras_asc_version": __version__,
    }
    write_text_atomic(cell.done_path, json.dumps(record, indent=2) + "\n")


def _quantize(context, cell):
    """QAT or PTQ of the cell's float model into ``int8/``; ``quantized.json`` records the file
    so that a cell interrupted during evaluation does not quantise again."""
    marker = os.path.join(cell.folder, CELL_QUANTIZED)
    try:
        with open(marker, encoding="utf-8") as handle:
            record = json.load(handle)
        path = os.path.join(cell.folder, record["file"])
        if record["quantization"] == cell.row.quantize and os.path.isfile(path):
            return path
    except (OSError, ValueError, KeyError, TypeError):
        pass
    quantize_run = _quantize_run_function()
    arguments = {**context.table.qat, **cell.row.qat, **context.qat_overrides}
    arguments.setdefault("cache_dir", context.cache_dir)
    arguments.setdefault("verbose", context.verbose)
    result = quantize_run(
        cell.run_dir,
        context.data_dir,
        split=cell.split,
        seed=cell.seed,
        ptq=cell.row.quantize == "ptq",
        out_dir=os.path.join(cell.folder, INT8_DIR),
        **arguments,
    )
    path = result.exports[0][1].path  # the model's (or whole ensemble's) file comes first
    record = {"file": os.path.relpath(path, cell.folder), "quantization": result.quantization}
    write_text_atomic(marker, json.dumps(record, indent=2) + "\n")
    return path


# === Running a table ===


@dataclasses.dataclass(frozen=True)
class ReproduceResult:
    """What :func:`reproduce` did and wrote.

    Attributes:
        table: the :class:`Table`.
        cells: every cell of the table.
        ran: names of the cells this call ran (finished cells are skipped).
        busy: names of the selected cells left unfinished because other processes hold them.
        summary: the :class:`TableSummary` of the finished cells.
        written: the result files written (Markdown, CSV, and PNG with matplotlib).
    """

    table: Table
    cells: tuple
    ran: tuple
    busy: tuple
    summary: object
    written: tuple

    @property
    def markdown(self):
        return self.summary.markdown()


def reproduce(
    table,
    data_dir,
    out_dir,
    *,
    cells=None,
    splits=None,
    seeds=None,
    rows=None,
    dirs_dir=None,
    cache_dir=None,
    train_overrides=None,
    qat_overrides=None,
    wait=False,
    poll_seconds=30.0,
    verbose=1,
    plots=True,
    log=None,
):
    """Run every unfinished cell of a table (or the ones chosen) and write the results table.

    Args:
        table: a :class:`Table`, or what :func:`load_table` takes (TOML path, built-in name,
            dict).
        data_dir: TAU22-layout dataset folder.
        out_dir: output folder: ``cells/``, ``table.json``, ``results.md``/``.csv``/``.png``.
        cells: run only these cells (indices, ranges like ``"2-5"`` or names; see
            :func:`plan_cells`) and the cells they depend on; default all.
        splits, seeds, rows: restrict the table (see :func:`load_table`).
        dirs_dir: impulse-response WAVs for the device impulse response augmentation.
        cache_dir: decoded-audio cache, shared by every cell.
        train_overrides: ``keras_asc.train`` arguments that override the table's (e.g.
            ``{"epochs": 1, "steps_per_epoch": 2}`` for a quick run).
        qat_overrides: ``quantize_run`` arguments that override the table's.
        wait: when cells are held by other processes, wait for them (polling every
            ``poll_seconds``) instead of leaving them to those processes.
        poll_seconds: seconds between checks while waiting.
        verbose: Keras progress output of training and QAT (0, 1 or 2).
        plots: write ``results.png`` (needs matplotlib; skipped without it).
        log: stream for progress lines (default ``sys.stderr``).

    Returns:
        A :class:`ReproduceResult`.

    Example:
        >>> result = reproduce("my_table.toml", "/data/tau22", "runs/table",
        ...                    train_overrides={"epochs": 10})
        >>> print(result.markdown)
    """
    if not isinstance(table, Table):
        table = load_table(table, splits=splits, seeds=seeds, rows=rows)
    out_dir = os.fspath(out_dir)
    all_cells = plan_cells(table, out_dir)
    chosen = select_cells(all_cells, cells) if cells is not None else all_cells
    os.makedirs(out_dir, exist_ok=True)
    write_text_atomic(
        os.path.join(out_dir, TABLE_RECORD), json.dumps(table.to_dict(), indent=2) + "\n"
    )
    context = _Context(
        table=table,
        cells={(cell.row.name, cell.split, cell.seed): cell for cell in all_cells},
        data_dir=os.fspath(data_dir),
        dirs_dir=dirs_dir,
        cache_dir=cache_dir,
        train_overrides=_checked_overrides(train_overrides, train, _CELL_TRAIN_ARGUMENTS),
        qat_overrides=_checked_overrides(
            qat_overrides, _quantize_run_function(), _CELL_QAT_ARGUMENTS
        ),
        verbose=verbose,
        log=log or sys.stderr,
        ran=[],
    )
    pending = [cell for cell in chosen if not cell.done]
    _say(
        context,
        f"{len(chosen) - len(pending)} of {len(chosen)} cells finished, {len(pending)} to run",
    )
    while True:
        busy = []
        for cell in pending:
            try:
                _run_cell(context, cell)
            except CellBusy as held:
                busy.append(cell)
                _say(
                    context,
                    f"cell {cell.index} {cell.name}: waiting, {held} is run by another process",
                )
        pending = busy
        if not pending or not wait:
            break
        time.sleep(poll_seconds)
    summary = summarize(table, out_dir)
    written = write_results(summary, out_dir, plots=plots)
    for path in written:
        _say(context, f"wrote {path}")
    return ReproduceResult(
        table,
        tuple(all_cells),
        tuple(context.ran),
        tuple(c.name for c in pending),
        summary,
        tuple(written),
    )


def _checked_overrides(overrides, function, reserved):
    overrides = {key: value for key, value in (overrides or {}).items() if value is not None}
    unknown = _unknown_keywords(overrides, function, reserved)
    if unknown:
        raise ValueError(
            f"{function.__name__} takes no {unknown} (or reproduce sets them per cell); it "
            f"takes {_taken_keywords(function, reserved)}."
        )
    return overrides


# === The results table ===


@dataclasses.dataclass(frozen=True)
class TableEntry:
    """One row x split of the results: accuracy (%) per finished seed and the report's."""

    row: Row
    split: int
    values: dict  # seed -> dev-test macro accuracy (%) of the row's final model
    expected_seeds: int
    report: float | None
    float_values: dict = dataclasses.field(default_factory=dict)  # seed -> before quantisation

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
            ours += f" ({self.report:.2f})"
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

    def markdown(self):
        """The table in the report's layout: rows x splits (100 % first), ``mean ± std``
        over seeds, the report's number in brackets."""
        seeds = ", ".join(str(seed) for seed in self.table.seeds)
        legend = (
            f"Dev-test macro class-wise accuracy (%) by training split, mean ± sample standard "
            f"deviation over seeds {seeds}"
        )
        if any(entry.report is not None for entry in self.entries):
            legend += f"; in brackets the number of the report ({REPORT_TITLE})"
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
            lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
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
                        row.quantize,
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
    results, float_results = {}, {}
    for cell in plan_cells(table, out_dir):
        data = read_cell_result(cell)
        if data is not None:
            key = (cell.row.name, cell.split, cell.seed)
            results[key] = 100.0 * float(data["macro_accuracy"])
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
            entries.append(TableEntry(row, split, values, len(table.seeds), report, floats))
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
                xs, means, yerr=stds, color=colour, marker="o", capsize=3, label=row.label
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
                label=f"{row.label} (report)",
            )
    axes.set_xticks(positions)
    axes.set_xticklabels([f"{split} %" for split in splits])
    axes.set_xlabel("training split")
    axes.set_ylabel("dev-test macro accuracy (%)")
    axes.set_title(summary.table.title)
    axes.grid(alpha=0.3)
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


__all__ = [
    "BUILTIN_TABLES",
    "REPORT_RESULTS",
    "Cell",
    "ReproduceResult",
    "Row",
    "Table",
    "TableSummary",
    "cell_status",
    "load_table",
    "plan_cells",
    "reproduce",
    "summarize",
    "write_results",
]
