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

The modules:

- :mod:`~keras_asc.training.reproduce.tables`: the report's numbers, the built-in tables and
  the table file format (:func:`load_table`);
- :mod:`~keras_asc.training.reproduce.cells`: the cell folders and what marks a cell finished
  (:func:`plan_cells`, :func:`cell_status`);
- :mod:`~keras_asc.training.reproduce.runner`: running cells under their locks
  (:func:`reproduce`);
- :mod:`~keras_asc.training.reproduce.results`: the results table (:func:`summarize`,
  :func:`write_results`).

A cell is locked (``.keras-asc.lock``, an ``flock`` the kernel releases when the process dies)
while a process works on it, so several processes, one per GPU or one per task of a batch
scheduler's job array on machines sharing the output folder, can work through the same table
side by side: each takes the next cell no other process holds. An interrupted or killed cell
continues where it stopped (training resumes from its last backup). A row's members
(ensembles) and teachers (knowledge distillation) are cells of the same split and seed, run
first and reused.

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

from keras_asc.training.reproduce.cells import (
    CELL_DONE,
    CELL_QUANTIZED,
    CELL_RUN_DIR,
    CELL_TRAINED,
    CELLS_DIR,
    RESULTS_CSV,
    RESULTS_MD,
    RESULTS_PNG,
    TABLE_RECORD,
    Cell,
    cell_status,
    model_problem,
    plan_cells,
    read_cell_result,
    select_cells,
    split_fingerprint,
    trained_steps,
)
from keras_asc.training.reproduce.results import (
    TableEntry,
    TableSummary,
    plot_summary,
    summarize,
    write_results,
)
from keras_asc.training.reproduce.runner import CellBusy, CellError, ReproduceResult, reproduce
from keras_asc.training.reproduce.tables import (
    BUILTIN_TABLES,
    KINDS,
    QUANTIZATIONS,
    REPORT_RESULTS,
    REPORT_TITLE,
    Row,
    Table,
    load_table,
)

__all__ = [
    "BUILTIN_TABLES",
    "CELLS_DIR",
    "CELL_DONE",
    "CELL_QUANTIZED",
    "CELL_RUN_DIR",
    "CELL_TRAINED",
    "KINDS",
    "QUANTIZATIONS",
    "REPORT_RESULTS",
    "REPORT_TITLE",
    "RESULTS_CSV",
    "RESULTS_MD",
    "RESULTS_PNG",
    "TABLE_RECORD",
    "Cell",
    "CellBusy",
    "CellError",
    "ReproduceResult",
    "Row",
    "Table",
    "TableEntry",
    "TableSummary",
    "cell_status",
    "load_table",
    "model_problem",
    "plan_cells",
    "read_cell_result",
    "reproduce",
    "select_cells",
    "split_fingerprint",
    "summarize",
    "trained_steps",
    "write_results",
]
