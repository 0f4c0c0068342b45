"""``keras-asc submit EVAL_DIR --system 5=RUN ... --out DIR``: the DCASE 2024 Task 1 output
files (one per training split) and the meta information file."""

import argparse

from keras_asc.commands import add_on_error_argument


def _system(text):
    split, separator, path = text.partition("=")
    if not separator or not split.strip() or not path.strip():
        raise argparse.ArgumentTypeError(
            f"expected SPLIT=PATH (for example 25=runs/moflenet57-split25). Received: {text!r}"
        )
    return split.strip(), path.strip()


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "submit",
        help="write the DCASE 2024 Task 1 submission files",
        description="Classify a folder of evaluation WAVs with one system per training split "
        "(5, 10, 25, 50 and 100) and write LABEL.output.split_N.csv (tab-separated: filename, "
        "scene_label and the probability of every scene class, alphabetical) for each split, "
        "and LABEL.meta.yaml with the submission information, the complexity figures "
        "(parameters, MACs, parameter memory at the deployed precision, the TFLite Micro arena "
        "when measured) and the development-test accuracy and log loss per split, class and "
        "device. The development-test metrics come from each system's eval-test/metrics.json "
        "(`keras-asc evaluate SYSTEM --data DIR`), or are computed now with --data. Fields "
        "keras-asc cannot know (authors, augmentation, ...) come from --info; those left empty "
        "are listed at the end. Exit code 1 when --on-error skip left files out.",
    )
    parser.add_argument("eval_dir", help="folder of evaluation WAVs (or a folder with audio/)")
    parser.add_argument(
        "--system",
        action="append",
        type=_system,
        required=True,
        metavar="SPLIT=PATH",
        help="the system of one training split: a run directory (with model.keras), .keras "
        "or int8 .tflite file; give it once per split (5, 10, 25, 50, 100)",
    )
    parser.add_argument("--out", required=True, help="folder for the submission files")
    parser.add_argument(
        "--info",
        help="YAML with the submission information: submission (label, name, abbreviation, "
        "authors) and system values (description, external_datasets, source_code)",
    )
    parser.add_argument("--label", help="submission label Lastname_INST_task1_N (overrides --info)")
    parser.add_argument("--name", help="system name for the result tables (overrides --info)")
    parser.add_argument(
        "--abbreviation", help="system name of at most 10 characters (overrides --info)"
    )
    parser.add_argument(
        "--data",
        help="TAU22-layout development set: evaluate every system on its test split now",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="files per batch (default 64)")
    add_on_error_argument(
        parser,
        skipped="leave them out of the output files and list them (the files are then incomplete)",
    )
    parser.set_defaults(func=run)


def run(args):
    from keras_asc.training.submission import empty_fields, read_info, write_submission

    systems = {}
    for split, path in args.system:
        if split in systems:
            raise ValueError(f"--system: split {split} is given twice.")
        systems[split] = path
    info = read_info(args.info) if args.info else {}
    submission = dict(info.get("submission") or {})
    for key in ("label", "name", "abbreviation"):
        if getattr(args, key) is not None:
            submission[key] = getattr(args, key)
    if not submission.get("label"):
        raise ValueError(
            "The submission label is missing: give --label or submission.label in --info."
        )
    info["submission"] = submission
    result = write_submission(
        systems,
        args.eval_dir,
        args.out,
        info=info,
        data_dir=args.data,
        batch_size=args.batch_size,
        on_error=args.on_error,
    )
    for split, evaluation in result.results.items():
        print(
            f"split {split:>3}: development-test macro accuracy "
            f"{100 * evaluation.macro_accuracy:6.2f} %, log loss {evaluation.log_loss:.4f}"
        )
    for path in result.paths:
        print(f"wrote {path}")
    print(f"{result.num_files:,} evaluation files classified")
    if result.skipped:
        print(f"keras-asc submit: {len(result.skipped)} unreadable files left out:")
        for name, reason in result.skipped:
            print(f"  {name}: {reason}")
    empty = empty_fields(result.meta)
    if empty:
        print("fill in before submitting: " + ", ".join(empty))
    return 1 if result.skipped else 0
