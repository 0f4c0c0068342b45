"""Running a results table: each cell trains (or builds its ensemble), quantises and evaluates,
under a lock, after the cells it depends on.

Processes share a table through the cell locks alone (``.keras-asc.lock`` in each cell folder,
an ``flock`` the kernel releases when its process dies): a process takes each selected cell
that is neither finished nor held by another process, so several processes, on one machine
or on several machines sharing the output folder, work through the same table side by side,
and a cell whose process was killed is taken over by the next process that reaches it
(training resumes from the run's last backup).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time

from keras_asc.files import (
    INT8_DIR,
    FolderLock,
    FolderLockedError,
    write_text_atomic,
)
from keras_asc.training.ensemble import build_ensemble
from keras_asc.training.evaluation import evaluate
from keras_asc.training.reproduce.cells import (
    CELL_QUANTIZED,
    CELL_TRAINED,
    LOCK_OWNER,
    TABLE_RECORD,
    member_digests,
    model_problem,
    plan_cells,
    recorded_split,
    select_cells,
    split_fingerprint,
    trained_steps,
)
from keras_asc.training.reproduce.results import summarize, write_results
from keras_asc.training.reproduce.tables import (
    _CELL_QAT_ARGUMENTS,
    _CELL_TRAIN_ARGUMENTS,
    Table,
    _quantize_run_function,
    _taken_keywords,
    _unknown_keywords,
    load_table,
)
from keras_asc.training.rundir import RunDir
from keras_asc.training.train import train
from keras_asc.version import __version__


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
    fingerprints: dict = dataclasses.field(default_factory=dict)


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
        with _cell_lock(cell):
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


@contextlib.contextmanager
def _cell_lock(cell, tries=3, pause=0.2):
    """Hold the cell's lock. A lock held for an instant (``cell_status``, e.g. ``--list`` run
    by someone watching the table, tests it by taking it) is tried again before the cell is
    left to another process; ``FolderLockedError`` when it stays held."""
    for attempt in range(tries):
        try:
            lock = FolderLock(cell.folder, owner=LOCK_OWNER).__enter__()
            break
        except FolderLockedError:
            if attempt == tries - 1:
                raise
            time.sleep(pause)
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


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


class CellError(ValueError):
    """A cell cannot be finished as it stands (e.g. its training run took no step)."""


def _record_training(cell, result):
    """Write the cell's ``trained.json`` (steps taken, digest of the run's ``model.keras``) when
    ``train`` trained in this call; a complete run it only loaded keeps its earlier record.
    (The run's own completion record holds the same count; this one also covers a run folder
    written before runs recorded their steps.)"""
    if result.training_model is None or result.steps_trained is None:
        return
    record = {
        "steps": int(result.steps_trained),
        "sha256": RunDir(cell.run_dir).model_digest(),
    }
    write_text_atomic(os.path.join(cell.folder, CELL_TRAINED), json.dumps(record, indent=2) + "\n")


def _needs_new_run(cell):
    """Whether the cell's run folder holds a finished run without a usable model: one that took
    0 steps (or that nothing records the steps of), or whose ``model.keras`` was deleted. Such
    a run is replaced; an interrupted one (no model yet) is continued."""
    run = RunDir(cell.run_dir)
    if run.has_model():
        return model_problem(cell) is not None
    return os.path.isfile(run.complete_path)


def _float_model(context, cell):
    """Train the cell's model, or build its ensemble from the member cells' runs; raise
    :class:`CellError` unless a trained model is then in the cell's run folder."""
    row = cell.row
    if row.is_ensemble:
        if model_problem(cell) is not None:  # none yet, or built from other member models
            members = [_cell_for(context, cell, name).run_dir for name in row.members]
            build_ensemble(
                members,
                weights=list(row.weights) if row.weights is not None else None,
                preset=row.preset,
                name=row.model,
                out_dir=cell.run_dir,
            )
            record = {
                "members": member_digests(cell),
                "sha256": RunDir(cell.run_dir).model_digest(),
            }
            path = os.path.join(cell.folder, CELL_TRAINED)
            write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    else:
        arguments = _train_arguments(context, cell)
        if _needs_new_run(cell):
            _say(context, f"cell {cell.index} {cell.name}: {model_problem(cell)}; training anew")
            arguments["overwrite"] = True
        _record_training(cell, train(**arguments))
    problem = model_problem(cell)
    if problem is not None:
        raise CellError(
            f"Cell {cell.index} {cell.name}: {problem}, so it has no trained model to quantise "
            "or evaluate and stays unfinished; check that the split holds at least one batch "
            "of clips (--batch-size) and run it again."
        )


def _fingerprint(context, cell):
    """The fingerprint of the clips the cell's model was trained on: as its run folder records
    it, else computed from the split file."""
    recorded = recorded_split(cell)
    if recorded is not None:
        split, fingerprint = recorded
        if split != cell.split:
            raise CellError(
                f"Cell {cell.index} {cell.name}: the run in {cell.run_dir} was trained on "
                f"split {split}, not the cell's split {cell.split}; remove that folder."
            )
        return fingerprint
    key = (context.data_dir, cell.split)
    if key not in context.fingerprints:
        context.fingerprints[key] = split_fingerprint(context.data_dir, cell.split)
    return context.fingerprints[key]


def _work(context, cell):
    row = cell.row
    # 1. The float model: a training run, or the ensemble of the member cells' runs.
    _float_model(context, cell)
    # 2. Quantisation (QAT fine-tuning or post-training calibration) and the int8 file, on the
    # cell's own split.
    int8_path, quantization = None, "none"
    if row.quantize != "none":
        int8_path, quantization = _quantize(context, cell)
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
    trained = [cell] if not row.is_ensemble else [_cell_for(context, cell, n) for n in row.members]
    record = {
        "row": row.name,
        "model": row.model,
        "split": cell.split,
        # The clips the model was trained (and quantised) on: the split and its fingerprint.
        "split_fingerprint": _fingerprint(context, cell),
        "seed": cell.seed,
        # What ran: "qat" or "ptq" as quantize_run reports it, "none" for the float model.
        "quantization": quantization,
        "steps_trained": {c.row.name: trained_steps(c) for c in trained},
        "macro_accuracy": final.macro_accuracy,
        "float": float_result.to_dict(),
        "int8": int8_result.to_dict() if int8_result is not None else None,
        "int8_file": os.path.relpath(int8_path, cell.folder) if int8_path else None,
        "keras_asc_version": __version__,
    }
    write_text_atomic(cell.done_path, json.dumps(record, indent=2) + "\n")


def _quantize(context, cell):
    """QAT or PTQ of the cell's float model into ``int8/``: ``(int8 file, "qat" or "ptq")``.

    ``quantized.json`` records the file, what ran and the digest of the float model it came
    from, so that a cell interrupted during evaluation does not quantise again, and a cell
    whose float model was trained again does."""
    marker = os.path.join(cell.folder, CELL_QUANTIZED)
    model_digest = RunDir(cell.run_dir).model_digest()
    try:
        with open(marker, encoding="utf-8") as handle:
            record = json.load(handle)
        path = os.path.join(cell.folder, record["file"])
        if (
            record["quantization"] == cell.row.quantize
            and record["model_sha256"] == model_digest
            and os.path.isfile(path)
        ):
            return path, record["quantization"]
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
    record = {
        "file": os.path.relpath(path, cell.folder),
        "quantization": result.quantization,
        "model_sha256": model_digest,
    }
    write_text_atomic(marker, json.dumps(record, indent=2) + "\n")
    return path, result.quantization


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
    with _results_lock(out_dir):
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


@contextlib.contextmanager
def _results_lock(out_dir, timeout=120.0):
    """Hold the output folder's lock while the results are read and written, so that of
    processes finishing a table together the last to write saw every cell finished before
    it. Waits for another writer (a few seconds at most); past ``timeout`` writes anyway."""
    deadline, lock = time.monotonic() + timeout, None
    while lock is None:
        try:
            lock = FolderLock(out_dir, owner=LOCK_OWNER).__enter__()
        except FolderLockedError:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
    try:
        yield
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)


def _checked_overrides(overrides, function, reserved):
    overrides = {key: value for key, value in (overrides or {}).items() if value is not None}
    unknown = _unknown_keywords(overrides, function, reserved)
    if unknown:
        raise ValueError(
            f"{function.__name__} takes no {unknown} (or reproduce sets them per cell); it "
            f"takes {_taken_keywords(function, reserved)}."
        )
    return overrides



__all__ = ["CellBusy", "CellError", "ReproduceResult", "reproduce"]
