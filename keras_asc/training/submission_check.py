"""Check a DCASE 2024 Task 1 submission package against the challenge's published rules.

:func:`check_package` reads a package (a ``.zip``, or a folder laid out like one) and returns
one line per problem; an empty list means the package follows every rule below. These are the
rules of the challenge's submission validator (2024 edition), restated here:

Layout
    ``task1/<label>/<label>.output.split_{5,10,25,50,100}.csv`` and
    ``task1/<label>/<label>.meta.yaml``; every other file is a problem, except PDF files (the
    technical report travels in the same zip). The label reads
    ``[last name]_[institute abbreviation]_task1_[1-4]`` (four parts separated by ``_``), and
    the folder, the file names and ``submission.label`` in the meta file agree.
Output files
    Tab-separated; the header ``filename  scene_label`` then the ten scene classes in
    alphabetical order; twelve fields on every row; a file name ``<index>.wav`` (a leading
    folder such as ``audio/`` is ignored) with an index from 0 to 135,729, each file once; a
    scene label from the ten classes; a number in every class column; exactly 135,730 files
    (the evaluation set). Given the evaluation folder, the files must instead be exactly its
    WAV files (a rehearsal on another set of files).
Meta file
    YAML with the blocks ``submission`` (``label``, ``name``, ``abbreviation`` of at most 10
    characters, ``authors``: each with ``lastname``, ``firstname``, ``email``,
    ``affiliation``, exactly one marked ``corresponding: true``), ``system`` (``description``
    with ``input_sampling_rate``, ``acoustic_features``, ``data_augmentation``,
    ``machine_learning_method``, ``external_data_usage``, ``complexity_management``,
    ``pipeline``, ``framework``, ``split_adaptations``, ``system_adaptations``;
    ``complexity`` with ``total_model_size``, ``total_parameters`` (an integer) and ``macs``;
    ``external_datasets``, each entry with ``name``, ``url``, ``total_audio_length``;
    ``source_code``) and ``results.development_dataset`` with ``split_5`` ... ``split_100``,
    each holding ``overall``, ``class_wise`` (the ten classes) and ``device_wise`` (a, b, c,
    s1-s6), every entry a numeric ``accuracy`` and ``logloss``. A required field that is
    present but empty (``null`` or ``""``) is reported too: the challenge's result tables need
    a value.

Problems of one kind in one output file are reported on one line, with their count and the
first row they occur on, so a file with a wrong column does not print 135,730 lines.

No library checks this format; the rules are written from the challenge's published rules
(the validator's required-field lists), not from its code.

Example:
    >>> for line in check_package("submission.zip"):
    ...     print(line)
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import zipfile

from keras_asc.data.tau22 import DEVICES, SCENE_LABELS, SPLIT_PERCENTAGES

TASK = "task1"
EVALUATION_FILES = 135_730  # files 0.wav ... 135729.wav of the DCASE 2024 evaluation set
OUTPUT_HEADER = ("filename", "scene_label", *SCENE_LABELS)
MAX_ABBREVIATION = 10
SUBMISSION_FIELDS = ("label", "name", "abbreviation", "authors")
AUTHOR_FIELDS = ("lastname", "firstname", "email", "affiliation")
SYSTEM_FIELDS = ("description", "complexity", "external_datasets", "source_code")
DESCRIPTION_FIELDS = (
    "input_sampling_rate",
    "acoustic_features",
    "data_augmentation",
    "machine_learning_method",
    "external_data_usage",
    "complexity_management",
    "pipeline",
    "framework",
    "split_adaptations",
    "system_adaptations",
)
COMPLEXITY_FIELDS = ("total_model_size", "total_parameters", "macs")
EXTERNAL_DATASET_FIELDS = ("name", "url", "total_audio_length")
RESULT_FIELDS = ("accuracy", "logloss")
_OUTPUT_NAME = re.compile(r"^(?P<label>[^/]+)\.output\.split_(?P<split>\d+)\.csv$")
_META_NAME = re.compile(r"^(?P<label>[^/]+)\.meta\.yaml$")


def label_problem(label):
    """Why ``label`` is not a submission label ``Lastname_INST_task1_N`` (N 1-4), or ``None``."""
    if not isinstance(label, str):
        return f"the submission label must be text, received {label!r}"
    parts = label.split("_")
    if len(parts) != 4 or not all(parts) or parts[2] != TASK or parts[3] not in "1234":
        return (
            f"submission label {label!r} must read [last name]_[institute abbreviation]_"
            "task1_[1-4], for example Doe_ACME_task1_1"
        )
    return None


def _empty(value):
    return value is None or (isinstance(value, str) and not value.strip())


def _is_number(value):
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _fields(block, required, where, problems, allow_empty=()):
    """Report the fields of ``required`` that ``block`` lacks (absent, ``null`` or ``""``)."""
    if not isinstance(block, dict):
        problems.append(f"{where}: expected a mapping, found {type(block).__name__}")
        return False
    absent = [field for field in required if field not in block]
    empty = [
        field
        for field in required
        if field in block and field not in allow_empty and _empty(block[field])
    ]
    if absent:
        problems.append(f"{where}: missing required fields {', '.join(absent)}")
    if empty:
        problems.append(f"{where}: required fields left empty: {', '.join(empty)}")
    return True


def meta_problems(meta):
    """The problems of a parsed meta file (a dict), each one line without the file name."""
    problems = []
    if not isinstance(meta, dict):
        return [f"expected a YAML mapping, found {type(meta).__name__}"]
    for block in ("submission", "system", "results"):
        if block not in meta:
            problems.append(f"the '{block}' block is missing")
    submission = meta.get("submission")
    if submission is not None and _fields(submission, SUBMISSION_FIELDS, "submission", problems):
        label = submission.get("label")
        if not _empty(label) and label_problem(label):
            problems.append(f"submission.label: {label_problem(label)}")
        abbreviation = submission.get("abbreviation")
        if not _empty(abbreviation) and len(str(abbreviation)) > MAX_ABBREVIATION:
            problems.append(
                f"submission.abbreviation {abbreviation!r} is longer than {MAX_ABBREVIATION} "
                "characters"
            )
        authors = submission.get("authors")
        if "authors" in submission and not isinstance(authors, list):
            problems.append("submission.authors: expected a list of authors")
        elif isinstance(authors, list):
            corresponding = 0
            for index, author in enumerate(authors):
                if _fields(author, AUTHOR_FIELDS, f"submission.authors[{index}]", problems):
                    corresponding += author.get("corresponding") is True
            if authors and corresponding != 1:
                problems.append(
                    f"submission.authors: exactly one author must be marked corresponding: "
                    f"true, found {corresponding}"
                )
    system = meta.get("system")
    if system is not None and _fields(
        system, SYSTEM_FIELDS, "system", problems, allow_empty=("external_datasets",)
    ):
        if "description" in system:
            _fields(system["description"], DESCRIPTION_FIELDS, "system.description", problems)
        complexity = system.get("complexity")
        if complexity is not None and _fields(
            complexity, COMPLEXITY_FIELDS, "system.complexity", problems
        ):
            parameters = complexity.get("total_parameters")
            if not _empty(parameters) and (
                isinstance(parameters, bool) or not isinstance(parameters, int)
            ):
                problems.append(
                    f"system.complexity.total_parameters: expected an integer, found {parameters!r}"
                )
        datasets = system.get("external_datasets")
        if datasets is not None and not isinstance(datasets, list):
            problems.append("system.external_datasets: expected a list (empty when none)")
        elif datasets:
            for index, dataset in enumerate(datasets):
                _fields(
                    dataset, EXTERNAL_DATASET_FIELDS, f"system.external_datasets[{index}]", problems
                )
    results = meta.get("results")
    if results is not None and _fields(results, ("development_dataset",), "results", problems):
        development = results["development_dataset"]
        splits = [f"split_{split}" for split in SPLIT_PERCENTAGES]
        if _fields(development, splits, "results.development_dataset", problems):
            for split in splits:
                if isinstance(development.get(split), dict):
                    _result_problems(
                        development[split], f"results.development_dataset.{split}", problems
                    )
    return problems


def _result_problems(block, where, problems):
    if not _fields(block, ("overall", "class_wise", "device_wise"), where, problems):
        return
    entries = [(f"{where}.overall", block.get("overall"))]
    for group, names in (("class_wise", SCENE_LABELS), ("device_wise", DEVICES)):
        if isinstance(block.get(group), dict) and _fields(
            block[group], names, f"{where}.{group}", problems
        ):
            entries += [(f"{where}.{group}.{name}", block[group].get(name)) for name in names]
    for name, entry in entries:
        if entry is None or not _fields(entry, RESULT_FIELDS, name, problems):
            continue
        wrong = [f for f in RESULT_FIELDS if not _empty(entry.get(f)) and not _is_number(entry[f])]
        if wrong:
            problems.append(f"{name}: not a number: {', '.join(wrong)}")


class _Tally:
    """Problems of one kind in one output file: their count and the first occurrence."""

    def __init__(self):
        self.kinds = {}

    def add(self, kind, row, example):
        count, first = self.kinds.get(kind, (0, (row, example)))
        self.kinds[kind] = (count + 1, first)

    def lines(self):
        lines = []
        for kind, (count, (row, example)) in self.kinds.items():
            where = f"row {row}" if count == 1 else f"{count} rows, first row {row}"
            lines.append(f"{kind} ({where}: {example})")
        return lines


def output_problems(text, expected_files=None):
    """The problems of one output file's text, each one line without the file name.

    Args:
        text: the file's content.
        expected_files: the file names (``<index>.wav``) the rows must hold exactly; ``None``
            for the DCASE 2024 evaluation set (0.wav ... 135729.wav, 135,730 files).
    """
    lines = text.splitlines()
    if not lines:
        return ["the file is empty (expected a header and one row per evaluation file)"]
    rows = csv.reader(io.StringIO(text), delimiter="\t")
    header = next(rows)
    problems = []
    if tuple(header) != OUTPUT_HEADER:
        problems.append(
            f"the header must be {' '.join(OUTPUT_HEADER)} (tab-separated); found "
            f"{' '.join(header)}"
        )
        if "filename" not in header:
            return problems
    column = {name: header.index(name) for name in OUTPUT_HEADER if name in header}
    filename, scene = column["filename"], column.get("scene_label")
    classes = [(label, column[label]) for label in SCENE_LABELS if label in column]
    scenes = set(SCENE_LABELS)
    width = len(OUTPUT_HEADER)
    tally = _Tally()
    seen = set()
    for number, row in enumerate(rows, start=2):
        if len(row) != width:
            tally.add(f"rows must have {width} tab-separated fields", number, len(row))
            if filename >= len(row):
                continue
        name = row[filename].replace("\\", "/").rsplit("/", 1)[-1]
        if name in seen:
            tally.add("a file is listed twice", number, name)
        seen.add(name)
        if not name.endswith(".wav"):
            tally.add("file names must end in .wav", number, name)
        elif expected_files is None:
            stem = name[: -len(".wav")]
            if not stem.isdigit():
                tally.add("file names must be <index>.wav", number, name)
            elif int(stem) >= EVALUATION_FILES:
                tally.add(f"file index outside 0-{EVALUATION_FILES - 1}", number, name)
        if expected_files is not None and name not in expected_files:
            tally.add("a file that is not in the evaluation folder", number, name)
        if scene is not None and scene < len(row) and row[scene] not in scenes:
            tally.add("scene labels must be one of the 10 classes", number, row[scene])
        try:  # the common case at once; the column-by-column loop names a wrong value
            if all(map(math.isfinite, map(float, (row[index] for _, index in classes)))):
                continue
        except (ValueError, IndexError):
            pass
        for label, index in classes:
            if index >= len(row):
                continue
            try:
                value = float(row[index])
            except ValueError:
                tally.add("class columns must hold numbers", number, f"{label}={row[index]!r}")
                continue
            if not math.isfinite(value):
                tally.add("class columns must hold finite numbers", number, f"{label}={value}")
    problems += tally.lines()
    wanted = EVALUATION_FILES if expected_files is None else len(expected_files)
    if len(seen) != wanted:
        what = "the evaluation set" if expected_files is None else "the evaluation folder"
        problems.append(f"{len(seen):,} unique files listed; {what} has {wanted:,}")
    return problems


class _Package:
    """The files of a zip or of a folder, by their ``/``-separated name inside the package."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.zip = None
        if os.path.isdir(self.path):
            root, prefix = os.path.abspath(self.path), ""
            # The task1/<label> folder itself (where `keras-asc submit` writes the files).
            if not os.path.isdir(os.path.join(root, TASK)):
                parent = os.path.dirname(root)
                if os.path.basename(parent) == TASK:
                    prefix = f"{TASK}/{os.path.basename(root)}/"
                    root = os.path.dirname(parent)
            self.root = root
            names = (
                os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
                for folder, _, files in os.walk(root)
                for name in files
            )
            self.names = sorted(name for name in names if name.startswith(prefix))
        elif zipfile.is_zipfile(self.path):
            self.zip = zipfile.ZipFile(self.path)
            self.names = sorted(info.filename for info in self.zip.infolist() if not info.is_dir())
        elif os.path.exists(self.path):
            raise ValueError(f"{self.path}: expected a .zip file or a folder.")
        else:
            raise FileNotFoundError(f"Submission package not found: {self.path!r}.")

    def read(self, name):
        if self.zip is not None:
            return self.zip.read(name)
        with open(os.path.join(self.root, *name.split("/")), "rb") as handle:
            return handle.read()


def check_package(path, expected_files=None):
    """Check a submission package; return one line per problem (empty: it passes).

    Args:
        path: a ``.zip`` file, or a folder laid out like one (holding ``task1/``), or the
            ``task1/<label>`` folder itself.
        expected_files: file names the output rows must hold exactly, instead of the DCASE
            2024 evaluation set's 0.wav ... 135729.wav (see ``keras_asc.training.submission.expected_evaluation_files``).

    Raises:
        FileNotFoundError: no file or folder at ``path``.
        ValueError: ``path`` is neither a zip file nor a folder.
    """
    package = _Package(path)
    try:
        return _package_problems(package, expected_files)
    finally:
        if package.zip is not None:
            package.zip.close()


def _package_problems(package, expected_files):
    import yaml

    problems = []
    labels = {}
    for name in package.names:
        parts = name.split("/")
        if name.lower().endswith(".pdf"):
            continue  # the technical report
        if len(parts) != 3 or parts[0] != TASK:
            problems.append(f"{name}: not a submission file (expected task1/<label>/<file>)")
            continue
        folder, filename = parts[1], parts[2]
        match = _OUTPUT_NAME.match(filename) or _META_NAME.match(filename)
        if match is None or (
            "split" in match.groupdict() and int(match["split"]) not in SPLIT_PERCENTAGES
        ):
            problems.append(
                f"{name}: not a submission file (expected <label>.output.split_N.csv with N in "
                "5, 10, 25, 50, 100, or <label>.meta.yaml)"
            )
            continue
        if match["label"] != folder:
            problems.append(f"{name}: the file's label {match['label']!r} differs from its folder")
        labels.setdefault(folder, []).append((name, match))
    if not labels and not problems:
        problems.append(f"{package.path}: no task1/<label>/ submission files found")
    for label, files in labels.items():
        where = f"{TASK}/{label}"
        if label_problem(label):
            problems.append(f"{where}: {label_problem(label)}")
        splits = {int(m["split"]) for _, m in files if "split" in m.groupdict()}
        missing = [s for s in SPLIT_PERCENTAGES if s not in splits]
        if missing:
            problems.append(
                f"{where}: output files missing for splits {', '.join(map(str, missing))}"
            )
        metas = [name for name, m in files if "split" not in m.groupdict()]
        if not metas:
            problems.append(f"{where}: no {label}.meta.yaml")
        for name, match in files:
            try:
                text = package.read(name).decode("utf-8")
            except UnicodeDecodeError:
                problems.append(f"{name}: not UTF-8 text")
                continue
            except (zipfile.BadZipFile, OSError) as error:
                problems.append(f"{name}: damaged, cannot be read ({error})")
                continue
            if "split" in match.groupdict():
                problems += [f"{name}: {line}" for line in output_problems(text, expected_files)]
                continue
            try:
                meta = yaml.safe_load(text)
            except yaml.YAMLError as error:
                problems.append(f"{name}: not valid YAML ({' '.join(str(error).split())})")
                continue
            problems += [f"{name}: {line}" for line in meta_problems(meta)]
            recorded = (
                (meta.get("submission") or {}).get("label") if isinstance(meta, dict) else None
            )
            if isinstance(meta, dict) and not _empty(recorded) and recorded != label:
                problems.append(
                    f"{name}: submission.label {recorded!r} differs from the folder and file "
                    f"label {label!r}"
                )
    return problems


__all__ = [
    "EVALUATION_FILES",
    "check_package",
    "label_problem",
    "meta_problems",
    "output_problems",
]
