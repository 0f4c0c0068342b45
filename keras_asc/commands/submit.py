"""``keras-asc submit EVAL_DIR --system 5=RUN ... --out DIR --info INFO.yaml``: the DCASE 2024
Task 1 output files (one per training split) and the meta information file; ``keras-asc submit
--check PACKAGE``: check a package against the challenge's rules."""

import argparse

from keras_asc.commands import add_on_error_argument, check_positive


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
        help="write or check the DCASE 2024 Task 1 submission files",
        description="Classify a folder of evaluation WAVs with one system per training split "
        "(5, 10, 25, 50 and 100) and write OUT/task1/LABEL/ with LABEL.output.split_N.csv "
        "(tab-separated: filename, scene_label and the probability of every scene class, "
        "alphabetical) for each split and LABEL.meta.yaml: the submission information "
        "(--info), the complexity figures (parameters and MACs as `keras-asc summary` counts "
        "them, parameter memory at the deployed precision, the TFLite Micro arena when "
        "measured) and the development-test accuracy and log loss per split, class and "
        "device. Each system must be recorded as trained, quantised and distilled on its own "
        "split only. The development-test metrics come from each system's "
        "eval-test/metrics.json (`keras-asc evaluate SYSTEM --data DIR`), or are computed now "
        "with --data. The written folder is then checked as --check does, against that "
        "evaluation folder's files. With --check PACKAGE (a zip, or a folder holding task1/), "
        "nothing is written: every problem is printed on its own line, exit code 1 if any.",
    )
    parser.add_argument(
        "eval_dir",
        nargs="?",
        help="folder of evaluation WAVs (or a folder with audio/); with --check, optional: "
        "the rows must then list exactly its WAV files instead of the 135,730 of the DCASE "
        "2024 evaluation set",
    )
    parser.add_argument(
        "--check",
        metavar="PACKAGE",
        help="check a submission zip or folder against the DCASE 2024 Task 1 rules and print "
        "one line per problem",
    )
    parser.add_argument(
        "--system",
        action="append",
        type=_system,
        metavar="SPLIT=PATH",
        help="the system of one training split: a run directory (with model.keras), its "
        "model.keras, or an int8 RUN/int8/NAME.tflite; give it once per split (5, 10, 25, 50, "
        "100)",
    )
    parser.add_argument("--out", help="folder for the package: the files go to OUT/task1/LABEL/")
    parser.add_argument(
        "--info",
        help="YAML with the submission information: submission (label, name, abbreviation, "
        "authors: lastname, firstname, email, affiliation), system.description "
        "(data_augmentation, external_data_usage, pipeline, split_adaptations, "
        "system_adaptations), system.source_code, and optionally system.external_datasets "
        "(name, url, total_audio_length each)",
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


_WRITE_ONLY = ("system", "out", "info", "label", "name", "abbreviation", "data")


def check(args):
    from keras_asc.training.submission import expected_evaluation_files
    from keras_asc.training.submission_check import check_package

    given = [f"--{key}" for key in _WRITE_ONLY if getattr(args, key) is not None]
    if given:
        raise ValueError(f"--check reads a package and writes nothing: drop {', '.join(given)}.")
    expected = expected_evaluation_files(args.eval_dir) if args.eval_dir else None
    problems = check_package(args.check, expected_files=expected)
    for line in problems:
        print(line)
    if problems:
        print(f"keras-asc submit --check: {len(problems)} problem(s) in {args.check}")
        return 1
    against = f"the WAV files of {args.eval_dir}" if expected else "the DCASE 2024 evaluation set"
    print(
        f"{args.check}: follows the DCASE 2024 Task 1 submission rules (rows checked against {against})"
    )
    return 0


def run(args):
    if args.check is not None:
        return check(args)
    from keras_asc.training.submission import read_info, write_submission

    absent = [
        name
        for name, value in (
            ("EVAL_DIR", args.eval_dir),
            ("--out", args.out),
            ("--system", args.system),
        )
        if not value
    ]
    if absent:
        raise ValueError(
            f"missing {', '.join(absent)}: give EVAL_DIR, --out DIR and --system SPLIT=PATH for "
            "every split (or --check PACKAGE to check a package)."
        )
    check_positive("--batch-size", args.batch_size)
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
    for line in result.problems:
        print(line)
    if result.problems:
        print(f"keras-asc submit: the package breaks {len(result.problems)} rule(s) listed above")
        return 1
    print("checked against the DCASE 2024 Task 1 submission rules: no problems")
    return 0
