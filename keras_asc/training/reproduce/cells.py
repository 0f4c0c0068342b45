"""The cells of a results table: their folders, what marks one finished, and which to run.

A cell is one row x split x seed of a table, in ``OUT/cells/<row>/split<S>-seed<N>``:

==================  ===========================================================================
``run/``            the training run (or ensemble) folder
``trained.json``    the optimiser steps the run took and the SHA-256 of its ``model.keras``
                    (an ensemble: the SHA-256 of each member's), written right after training
``int8/``           the quantised files; ``quantized.json`` names the file and what ran
``evaluation.json`` written atomically last: dev-test results, the quantisation that ran, the
                    split trained on with its fingerprint, and the steps trained
==================  ===========================================================================

A cell counts as finished only while its record is readable, was written for the quantisation
the row asks for, and the trained model it measured is still there (see
:func:`model_problem`): a cell whose run trained 0 steps, or whose ``model.keras`` (or int8
file) was deleted, runs again.
"""

from __future__ import annotations

import dataclasses
import json
import os

from keras_asc.data.tau22 import Split
from keras_asc.files import FINAL_MODEL, FolderLock, FolderLockedError, RunDirError
from keras_asc.training.reproduce.tables import Row
from keras_asc.training.rundir import RunDir, file_digest

CELLS_DIR = "cells"
CELL_RUN_DIR = "run"
CELL_DONE = "evaluation.json"  # written atomically last: the cell is finished
CELL_QUANTIZED = "quantized.json"
CELL_TRAINED = "trained.json"
TABLE_RECORD = "table.json"
RESULTS_MD = "results.md"
RESULTS_CSV = "results.csv"
RESULTS_PNG = "results.png"
LOCK_OWNER = "keras-asc reproduce"


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
    """The finished cell's ``evaluation.json`` as a dict, or ``None``: absent, unreadable,
    written for another quantisation than the row now asks for (the cell runs again, reusing
    its training run), or its trained model is gone or never trained (see
    :func:`model_problem`)."""
    try:
        with open(cell.done_path, encoding="utf-8") as handle:
            data = json.load(handle)
        float(data["macro_accuracy"])
        if data["quantization"] != cell.row.quantize:
            return None
        int8_file = data.get("int8_file")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if model_problem(cell) is not None:
        return None
    if int8_file and not os.path.isfile(os.path.join(cell.folder, int8_file)):
        return None
    return data


def trained_steps(cell):
    """The optimiser steps the cell's training run took, or ``None`` when nothing records them
    for the ``model.keras`` now in its run folder.

    The run's own completion record is read first (where it holds the step count), then the
    cell's ``trained.json``, which counts only while the digest it holds is that of the
    model in the run folder.
    """
    run = RunDir(cell.run_dir)
    try:
        record = run.completion() or {}
        steps = record.get("steps_trained")
        if isinstance(steps, int) and record.get("sha256") == run.model_digest():
            return steps
        with open(os.path.join(cell.folder, CELL_TRAINED), encoding="utf-8") as handle:
            record = json.load(handle)
        if record["sha256"] == run.model_digest():
            return int(record["steps"])
    except (OSError, ValueError, KeyError, TypeError, RunDirError):
        pass
    return None


def model_problem(cell):
    """``None`` when the cell has a trained float model, else why not, as a phrase: its
    ``model.keras`` is missing, or (a training row) its run took 0 steps or nothing records
    how many; or (an ensemble row) it is not the ensemble of the member models now in the
    member cells, each of which is checked on its own."""
    model_path = os.path.join(cell.run_dir, FINAL_MODEL)
    if not os.path.isfile(model_path):
        return f"{model_path} is missing"
    if cell.row.is_ensemble:
        try:
            with open(os.path.join(cell.folder, CELL_TRAINED), encoding="utf-8") as handle:
                record = json.load(handle)
            if record["sha256"] != file_digest(model_path):
                return f"{model_path} is not the ensemble {CELL_TRAINED} records"
            if record["members"] != member_digests(cell):
                return f"{model_path} was built from member models that have changed since"
        except (OSError, ValueError, KeyError, TypeError):
            return f"nothing records which member models {model_path} was built from"
        return None
    steps = trained_steps(cell)
    if steps is None:
        return f"nothing records how many optimiser steps trained {model_path}"
    if steps <= 0:
        return f"the run in {cell.run_dir} took 0 optimiser steps"
    return None


def member_digests(cell):
    """``{member row: SHA-256 of its model.keras, or None}`` for an ensemble cell's members
    (the member rows' cells of the same split and seed)."""
    rows_dir = os.path.dirname(os.path.dirname(cell.folder))
    digests = {}
    for name in cell.row.members:
        path = os.path.join(rows_dir, name, os.path.basename(cell.folder), CELL_RUN_DIR)
        path = os.path.join(path, FINAL_MODEL)
        digests[name] = file_digest(path) if os.path.isfile(path) else None
    return digests


def split_fingerprint(data_dir, split):
    """The fingerprint of a split's clips with their labels (``Split.fingerprint``: SHA-256 of
    the sorted ``filename<TAB>scene_label`` lines), the same for two cells exactly when they
    trained on the same clips, whatever order the split file lists them in."""
    return Split.load(data_dir, split, check_test_overlap=False).fingerprint


def recorded_split(cell):
    """``(split, fingerprint)`` that the cell's run (or ensemble) folder records it was
    trained on, or ``None`` where it records none."""
    try:
        config = RunDir(cell.run_dir).read_config()
    except (RunDirError, ValueError):
        return None
    if config is None or not config.split_fingerprint:
        return None
    return config.split, config.split_fingerprint


def cell_status(cell):
    """``"done"``, ``"running"`` (another process holds its lock), ``"started"`` or ``"pending"``."""
    if cell.done:
        return "done"
    if not os.path.isdir(cell.folder):
        return "pending"
    try:
        with FolderLock(cell.folder, owner=LOCK_OWNER):
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



__all__ = [
    "Cell",
    "cell_status",
    "model_problem",
    "plan_cells",
    "read_cell_result",
    "recorded_split",
    "select_cells",
    "split_fingerprint",
    "trained_steps",
]
