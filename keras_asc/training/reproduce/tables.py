"""Results tables for ``keras-asc reproduce``: the report's numbers, the built-in tables, and
reading and checking a table file.

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

Why hand-written: the checks are specific to this format (keyword tables checked against the
signatures of ``train`` and ``quantize_run``, ensembles completed from the registry, rows
ordered after the rows they depend on); ``tomllib`` does the parsing.
"""

from __future__ import annotations

import dataclasses
import inspect
import os

from keras_asc import registry
from keras_asc.data.tau22 import normalize_split
from keras_asc.training.ensemble import PRESET_ALIASES, preset_weights
from keras_asc.training.train import train

try:  # Python 3.11+
    import tomllib
except ImportError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

REPORT_TITLE = (
    '"Low complexity acoustic scene classification with MofleNet", DCASE 2024 Task 1 '
    "technical report, Tables 4 and 5"
)
# Dev-test macro class-wise accuracy (%) by training split (%), from the report's Tables 4
# and 5. Keys are what a table row names as ``report``; ``model`` is the row's default label,
# ``kind`` what the report's number was measured after (a table shows its own rows' kind from
# what ran, and marks a report number measured after something else).
REPORT_RESULTS = {
    "dcase24_baseline_quantized": {
        "label": "DCASE24 baseline (quantised)",
        "model": "DCASE24 baseline",
        "kind": "quantised",
        "accuracy": {100: 56.99, 50: 53.19, 25: 50.29, 10: 45.29, 5: 42.40},
    },
    "moflenet57_qat": {
        "label": "MofleNet57 after QAT",
        "model": "MofleNet57",
        "kind": "QAT",
        "accuracy": {100: 58.79, 50: 56.71, 25: 52.21, 10: 45.40, 5: 41.22},
    },
    "cp_resnet59_qat": {
        "label": "CP-ResNet59 after QAT",
        "model": "CP-ResNet59",
        "kind": "QAT",
        "accuracy": {100: 58.49, 50: 57.52, 25: 54.81, 10: 48.79, 5: 44.92},
    },
    "ensemble_v2_qat": {
        "label": "ensemble v2 after QAT",
        "model": "ensemble v2",
        "kind": "QAT",
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
            | {"quantize": "none", "label": REPORT_RESULTS[row["report"]]["model"]}
            for row in _REPORT_ROWS
        ],
    },
}

QUANTIZATIONS = ("qat", "ptq", "none")
# What a table says a cell's model is, by the quantisation that ran ("none": the float model).
KINDS = {"none": "float", "qat": "QAT", "ptq": "PTQ"}
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
_CELL_TRAIN_ARGUMENTS = (
    "model",
    "data_dir",
    "split",
    "seed",
    "out_dir",
    "teachers",
    "resume",
    "overwrite",
)
_CELL_QAT_ARGUMENTS = ("run", "data_dir", "split", "seed", "out_dir", "ptq", "evaluate_split")


# === The table ===


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a table: a model trained by ``train`` or an ensemble of other rows.

    Attributes:
        name: unique name (the cell folders' name).
        label: the model's name in the table; float, QAT or PTQ is added from what ran.
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
    # The label names the model; the table adds float, QAT or PTQ from what each cell ran.
    label = data.get("label") or (REPORT_RESULTS[report]["model"] if report else name)
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
