"""``keras-asc reproduce TABLE --data DIR --out DIR``: train, ensemble, quantise and evaluate
every cell of a results table, then write it beside the report's numbers."""

import sys

from keras_asc.commands import check_positive


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "reproduce",
        help="run a results table (models x splits x seeds) and write it beside the report's",
        description="Run every cell (row x split x seed) of a table: train the row's model (or "
        "build its ensemble from the member rows' cells of the same split and seed), quantise "
        "it (QAT or PTQ) when the row asks, evaluate it on the development test split. Each "
        "cell has its own folder under --out (OUT/cells/ROW/splitS-seedN) and is skipped once "
        "finished; an interrupted cell continues where it stopped. Several processes (one per "
        "GPU, or one per task of a batch scheduler's job array, on machines that share --out) "
        "can run the same table side by side: each locks the cell it works on and takes the "
        "next free one; a killed process's cell is taken over by the next process that reaches "
        "it. --list prints the cell indices that --cell takes (a job array: --cell "
        "$SLURM_ARRAY_TASK_ID --wait). Writes results.md, results.csv and results.png (with "
        "matplotlib): dev-test macro accuracy, mean +- std over seeds, beside the numbers of "
        "the DCASE 2024 MofleNet report (Tables 4 and 5).",
    )
    parser.add_argument(
        "table",
        metavar="TABLE",
        help="a TOML table file, or a built-in table: report (the report's Tables 4 and 5 "
        "rows after QAT), report-float (the same rows, float)",
    )
    parser.add_argument("--out", required=True, help="output folder for the cells and results")
    parser.add_argument("--data", help="TAU22-layout dataset folder (needed to run cells)")
    parser.add_argument(
        "--dirs",
        help="folder of impulse-response WAVs for the device impulse response augmentation",
    )
    parser.add_argument(
        "--cache", "--cache-dir", dest="cache", help="decoded-audio cache shared by every cell"
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="list the cells (index, name, status, folder) and exit; the indices are what "
        "--cell takes, e.g. a job array's task index",
    )
    parser.add_argument(
        "--cell",
        action="append",
        metavar="CELL",
        help="run only this cell (index or range from --list such as 3 or 2-5, or a name such "
        "as moflenet57/split25-seed0), after the cells it needs; repeatable",
    )
    parser.add_argument(
        "--summarize",
        action="store_true",
        help="write the results from the finished cells without running any",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="wait for cells other processes are running instead of leaving them to them "
        "(a job array task whose cell needs another task's cell, e.g. an ensemble's member)",
    )
    parser.add_argument(
        "--poll",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds between checks while --wait waits for other processes (default 30)",
    )
    parser.add_argument(
        "--splits", help="comma-separated splits instead of the table's, e.g. 25,100"
    )
    parser.add_argument("--seeds", help="comma-separated seeds instead of the table's, e.g. 0,1")
    parser.add_argument("--rows", help="comma-separated row names: only these (and what they need)")
    parser.add_argument("--epochs", type=int, help="training epochs (overrides the table)")
    parser.add_argument("--steps-per-epoch", type=int, help="training steps per epoch")
    parser.add_argument("--batch-size", type=int, help="training clips per batch")
    parser.add_argument("--qat-epochs", type=int, help="QAT epochs (overrides the table)")
    parser.add_argument("--qat-steps-per-epoch", type=int, help="QAT steps per epoch")
    parser.add_argument("--qat-batch-size", type=int, help="QAT clips per batch")
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=2,
        help="Keras progress output of training and QAT (default 2: one line per epoch)",
    )
    parser.set_defaults(func=run)


def _numbers(flag, text):
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"{flag} must be comma-separated integers, e.g. 25,100. Received: {text!r}"
        ) from None


def _positive_seconds(value):
    if not value > 0:  # also NaN
        raise ValueError(f"--poll must be a positive number of seconds. Received: {value!r}")
    return value


def run(args):
    from keras_asc.training.reproduce import (
        cell_status,
        load_table,
        plan_cells,
        reproduce,
        summarize,
        write_results,
    )

    table = load_table(
        args.table,
        splits=_numbers("--splits", args.splits),
        seeds=_numbers("--seeds", args.seeds),
        rows=[name.strip() for name in args.rows.split(",")] if args.rows else None,
    )
    if args.list:
        cells = plan_cells(table, args.out)
        for cell in cells:
            print(f"{cell.index:>4}  {cell.name:<48} {cell_status(cell):<8} {cell.folder}")
        print(
            f"{len(cells)} cells: --cell takes an index from 0 to {len(cells) - 1} (a job "
            f"array: --array=0-{len(cells) - 1}, --cell $SLURM_ARRAY_TASK_ID --wait)",
            file=sys.stderr,
        )
        return 0
    if args.summarize:
        summary = summarize(table, args.out)
        print(summary.markdown())
        for path in write_results(summary, args.out):
            print(f"wrote {path}")
        return 0
    if not args.data:
        raise ValueError("--data DIR (the TAU22-layout dataset) is needed to run cells.")
    train_overrides = {
        "epochs": check_positive("--epochs", args.epochs),
        "steps_per_epoch": check_positive("--steps-per-epoch", args.steps_per_epoch),
        "batch_size": check_positive("--batch-size", args.batch_size),
    }
    qat_overrides = {
        "epochs": check_positive("--qat-epochs", args.qat_epochs),
        "steps_per_epoch": check_positive("--qat-steps-per-epoch", args.qat_steps_per_epoch),
        "batch_size": check_positive("--qat-batch-size", args.qat_batch_size),
    }
    result = reproduce(
        table,
        args.data,
        args.out,
        cells=args.cell,
        dirs_dir=args.dirs,
        cache_dir=args.cache,
        train_overrides=train_overrides,
        qat_overrides=qat_overrides,
        wait=args.wait,
        poll_seconds=_positive_seconds(args.poll),
        verbose=args.verbose,
    )
    print(result.markdown)
    if result.busy:
        print(
            f"{len(result.busy)} cells are being run by other processes: "
            f"{', '.join(result.busy)}; run again (or with --wait) for the complete table."
        )
    return 0
