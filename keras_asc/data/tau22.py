"""TAU Urban Acoustic Scenes 2022 Mobile metadata and the DCASE 2024 Task 1 splits.

The development set keeps its clips under ``audio/`` and describes them in tab-separated
files: ``meta.csv`` (filename, scene_label, identifier, source_label),
``evaluation_setup/fold1_*.csv`` and, for DCASE 2024 Task 1, the nested training subsets
``split5/10/25/50/100.csv`` and ``test.csv`` (filename, scene_label). This module reads them
into :class:`Clip` records and refuses inconsistent data before any training starts.

A :class:`Split` is a split resolved once: the dataset folder, the split's name, its clips and
a fingerprint of the clip list. Training, distillation, quantisation and evaluation take the
same ``Split`` object, so no step reads a split file again and every artefact can record the
fingerprint of the clips it saw.

Example:
    >>> from keras_asc.data import tau22
    >>> split = tau22.Split.load("/data/TAU-urban-acoustic-scenes-2022-mobile-development", 25)
    >>> split.title, len(split.clips), split.fingerprint[:12]
    ('split25', 34900, '...')
    >>> tau22.split_summary(split.clips)["devices"]["a"]
    25520

Reference:
    Heittola, Mesaros, Virtanen, "Acoustic scene classification in DCASE 2020 Challenge:
    generalization across devices and low complexity solutions", DCASE 2020 (the dataset);
    DCASE 2024 Task 1, "Data-Efficient Low-Complexity Acoustic Scene Classification" (the splits).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import functools
import hashlib
import io
import os
import re
import warnings

# Alphabetical, as in the DCASE 2024 baseline's label encoder: the class index is the position.
SCENE_LABELS = (
    "airport",
    "bus",
    "metro",
    "metro_station",
    "park",
    "public_square",
    "shopping_mall",
    "street_pedestrian",
    "street_traffic",
    "tram",
)
DEVICES = ("a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6")
DEVICE_GROUPS = {
    "real": ("a", "b", "c"),
    "seen": ("s1", "s2", "s3"),
    "unseen": ("s4", "s5", "s6"),
}
SPLIT_PERCENTAGES = (5, 10, 25, 50, 100)
# Rows of the official files (header excluded); ``download`` checks fetched split files with them.
OFFICIAL_SPLIT_ROWS = {5: 6980, 10: 13960, 25: 34900, 50: 69800, 100: 139970, "test": 29680}

_LABEL_INDEX = {label: index for index, label in enumerate(SCENE_LABELS)}
_DEVICE_INDEX = {device: index for index, device in enumerate(DEVICES)}
_DEVICE_GROUP = {device: group for group, devices in DEVICE_GROUPS.items() for device in devices}
_SPLIT_NAME = re.compile(r"^(?:split)?(\d+)%?$")
_MAX_EXAMPLES = 5


class MissingFilesError(ValueError):
    """Audio files listed in a split are not on disk.

    Attributes:
        missing: the relative file names that were not found (all of them).
    """

    def __init__(self, message, missing):
        super().__init__(message)
        self.missing = tuple(missing)


@dataclasses.dataclass(frozen=True)
class Clip:
    """One 1-s TAU22 clip.

    Args:
        filename: path relative to the dataset root,
            ``audio/<scene>-<city>-<location>-<segment>-<subsegment>-<device>.wav``.
        scene_label: one of ``SCENE_LABELS``.
        device: one of ``DEVICES``.
        city: recording city, e.g. ``"lisbon"``.
        location: recording location as in meta.csv's ``identifier`` column,
            ``"<city>-<location id>"``, e.g. ``"lisbon-1000"`` (unique across cities).
        segment: id of the 10-s recording the clip was cut from, e.g. ``"40000"``.
        subsegment: position of the 1-s clip in that recording, 0-9.

    Example:
        >>> clip = parse_filename("audio/airport-lisbon-1000-40000-0-a.wav")
        >>> clip.label, clip.device_group
        (0, 'real')
    """

    filename: str
    scene_label: str
    device: str
    city: str
    location: str
    segment: str
    subsegment: int

    @property
    def label(self):
        """Class index of ``scene_label`` in ``SCENE_LABELS``."""
        return _LABEL_INDEX[self.scene_label]

    @property
    def device_index(self):
        """Index of ``device`` in ``DEVICES``."""
        return _DEVICE_INDEX[self.device]

    @property
    def device_group(self):
        """``"real"`` (a, b, c), ``"seen"`` (s1-s3) or ``"unseen"`` (s4-s6)."""
        return _DEVICE_GROUP[self.device]


def parse_filename(filename):
    """Derive a :class:`Clip` from a TAU22 file name.

    Args:
        filename: ``audio/<scene>-<city>-<location>-<segment>-<subsegment>-<device>.wav``
            (the ``audio/`` prefix is kept as given; a bare name is accepted too).

    Returns:
        A ``Clip`` whose ``scene_label`` is the scene named in the file name.

    Raises:
        ValueError: the name does not follow the pattern, or names an unknown scene or device.

    Example:
        >>> parse_filename("audio/metro_station-paris-1179-44167-8-s4.wav").location
        'paris-1179'
    """
    if not isinstance(filename, str):
        raise TypeError(f"filename must be a string. Received: filename={filename!r}")
    basename = filename.replace("\\", "/").rsplit("/", 1)[-1]
    stem, extension = os.path.splitext(basename)
    parts = stem.split("-")
    if extension.lower() != ".wav" or len(parts) != 6:
        raise ValueError(
            f"Malformed TAU22 file name {filename!r}: expected "
            "'audio/<scene>-<city>-<location>-<segment>-<subsegment>-<device>.wav'."
        )
    scene, city, location_id, segment, subsegment, device = parts
    if scene not in _LABEL_INDEX:
        raise ValueError(
            f"Malformed TAU22 file name {filename!r}: unknown scene {scene!r}; "
            f"accepted: {', '.join(SCENE_LABELS)}."
        )
    if device not in _DEVICE_INDEX:
        raise ValueError(
            f"Malformed TAU22 file name {filename!r}: unknown device {device!r}; "
            f"accepted: {', '.join(DEVICES)}."
        )
    if not (
        city.isalpha() and location_id.isdigit() and segment.isdigit() and subsegment.isdigit()
    ):
        raise ValueError(
            f"Malformed TAU22 file name {filename!r}: city must be letters and location, "
            f"segment and subsegment digits; got city={city!r}, location={location_id!r}, "
            f"segment={segment!r}, subsegment={subsegment!r}."
        )
    return Clip(
        filename=filename,
        scene_label=scene,
        device=device,
        city=city,
        location=f"{city}-{location_id}",
        segment=segment,
        subsegment=int(subsegment),
    )


def normalize_split(split):
    """Return ``5, 10, 25, 50, 100`` or ``"test"`` for any accepted spelling of a split.

    Args:
        split: an int percentage, ``"5"``, ``"split25"``, ``"25%"`` or ``"test"``.

    Example:
        >>> normalize_split("split25"), normalize_split("100%"), normalize_split("test")
        (25, 100, 'test')
    """
    accepted = "5, 10, 25, 50, 100 (also '25', 'split25', '25%') or 'test'"
    if isinstance(split, bool):
        raise ValueError(f"Unknown split {split!r}; accepted: {accepted}.")
    if isinstance(split, int):
        percentage = split
    elif isinstance(split, str):
        text = split.strip().lower()
        if text == "test":
            return "test"
        match = _SPLIT_NAME.match(text)
        if match is None:
            raise ValueError(f"Unknown split {split!r}; accepted: {accepted}.")
        percentage = int(match.group(1))
    else:
        raise ValueError(f"Unknown split {split!r}; accepted: {accepted}.")
    if percentage not in SPLIT_PERCENTAGES:
        raise ValueError(f"Unknown split {split!r}; accepted: {accepted}.")
    return percentage


def find_split_file(data_dir, split, splits_dir=None):
    """Locate the file listing a split.

    Search order, first hit wins: ``splits_dir`` (when given), ``data_dir``,
    ``data_dir/splits``, looking for ``split<N>.csv`` or ``test.csv``; then the TAU22
    originals: ``data_dir/evaluation_setup/fold1_train.csv`` for split 100 and
    ``.../fold1_evaluate.csv`` for test (the DCASE 2024 files are identical to them).

    Args:
        data_dir: dataset root (holds ``audio/`` and ``meta.csv``).
        split: any spelling accepted by :func:`normalize_split`.
        splits_dir: optional folder with the DCASE 2024 split files.

    Returns:
        The path of the split file.

    Raises:
        FileNotFoundError: no candidate exists; the message lists every place searched.
    """
    split = normalize_split(split)
    name = "test.csv" if split == "test" else f"split{split}.csv"
    folders = [splits_dir] if splits_dir is not None else []
    folders += [data_dir, os.path.join(data_dir, "splits")]
    candidates = [os.path.join(os.fspath(folder), name) for folder in folders]
    if split == 100:
        candidates.append(os.path.join(data_dir, "evaluation_setup", "fold1_train.csv"))
    elif split == "test":
        candidates.append(os.path.join(data_dir, "evaluation_setup", "fold1_evaluate.csv"))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"No file for split {split!r}. Searched, in order: {', '.join(candidates)}. "
        "Fetch the DCASE 2024 split files with `keras-asc download tau22 DIR --only splits` "
        "or pass splits_dir."
    )


# Longest field a split or meta row may hold: TAU22 file names are about 60 characters.
MAX_FIELD_LENGTH = 1024


def _rows_after_header(path, expected):
    """``_read_rows(path)`` after checking that line 1 starts with the ``expected`` columns."""
    reader = _read_rows(path)
    header = next(reader, (1, None))[1]
    if header is None or [column.strip() for column in header[: len(expected)]] != expected:
        raise ValueError(
            f"{path}: line 1 must be the header {'<TAB>'.join(expected)!r}. Received: {header!r}."
        )
    return reader


def _read_rows(path):
    """Yield ``(line_number, fields)`` of a tab-separated UTF-8 file, header first.

    Text that is not UTF-8, a field over :data:`MAX_FIELD_LENGTH` characters, a NUL byte and a
    line the csv module rejects are one-line ``ValueError`` s that name the file and the line.
    Quotes are plain characters.
    """
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{raw[error.start]:02x}); expected a "
            "UTF-8, tab-separated file."
        ) from None
    # No quoting: TAU22 files are plain tab-separated text, and a stray quote must not swallow
    # the lines after it (which would also put every later error on the wrong line).
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise ValueError(
                f"{path}, line {reader.line_num}: malformed row ({error}); expected "
                "tab-separated fields."
            ) from None
        for column, field in enumerate(row, start=1):
            if "\x00" in field:
                raise ValueError(
                    f"{path}, line {reader.line_num}: malformed row (field {column} holds a NUL "
                    "byte); expected tab-separated text."
                )
            if len(field) > MAX_FIELD_LENGTH:
                raise ValueError(
                    f"{path}, line {reader.line_num}: field {column} is {len(field)} characters "
                    f"long; expected at most {MAX_FIELD_LENGTH}."
                )
        yield reader.line_num, row


def _check_inside(path, line_number, filename):
    """Refuse a row whose file name points outside the dataset folder."""
    name = filename.replace("\\", "/")
    if (
        os.path.isabs(filename)
        or name.startswith("/")
        or (len(name) > 1 and name[1] == ":")
        or ".." in name.split("/")
    ):
        raise ValueError(
            f"{path}, line {line_number}: file name {filename!r} points outside the dataset "
            "folder; expected a relative path such as 'audio/<name>.wav'."
        )


def read_split_file(path):
    """Read a tab-separated ``filename<TAB>scene_label`` file into validated clips.

    Each row is checked: the file name must parse (:func:`parse_filename`), the label must be
    one of ``SCENE_LABELS`` and agree with the scene in the file name, and no file may be
    listed twice. Errors name the file and the line.

    Args:
        path: the split file.

    Returns:
        ``(clips, rows)``: the clips in file order and a dict filename -> line number.
    """
    clips = []
    rows = {}
    reader = _rows_after_header(path, ["filename", "scene_label"])
    for line_number, row in reader:
        if not row:
            continue
        if len(row) < 2:
            raise ValueError(
                f"{path}, line {line_number}: expected 'filename<TAB>scene_label', "
                f"received {row!r}."
            )
        filename, scene_label = row[0].strip(), row[1].strip()
        _check_inside(path, line_number, filename)
        if scene_label not in _LABEL_INDEX:
            raise ValueError(
                f"{path}, line {line_number}: unknown scene label {scene_label!r} for "
                f"{filename!r}; accepted: {', '.join(SCENE_LABELS)}."
            )
        try:
            clip = parse_filename(filename)
        except ValueError as error:
            raise ValueError(f"{path}, line {line_number}: {error}") from None
        if clip.scene_label != scene_label:
            raise ValueError(
                f"{path}, line {line_number}: label {scene_label!r} contradicts the scene "
                f"{clip.scene_label!r} in the file name {filename!r}."
            )
        if filename in rows:
            raise ValueError(
                f"{path}, line {line_number}: duplicate row for {filename!r} "
                f"(first listed on line {rows[filename]})."
            )
        rows[filename] = line_number
        clips.append(clip)
    return clips, rows


def split_title(split):
    """``"split25"`` or ``"test"``: how messages and file names show a normalised split."""
    return "test" if split == "test" else f"split{split}"


def expand_path(path):
    """``path`` with ``~`` and environment variables (``$HOME``, ``${DATA}``) expanded, as a
    string; ``None`` stays ``None``. Every path the API or the command line takes goes through
    it."""
    if path is None:
        return None
    return os.path.expandvars(os.path.expanduser(os.fspath(path)))


def clips_fingerprint(clips):
    """SHA-256 (hex) of a clip list with its labels, independent of the order of the clips.

    Each clip contributes one line ``filename<TAB>scene_label``; the lines are sorted, so the
    same clips listed in another order give the same fingerprint, and any added, removed or
    relabelled clip gives another.
    """
    digest = hashlib.sha256()
    for line in sorted(f"{clip.filename}\t{clip.scene_label}" for clip in clips):
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Split:
    """A DCASE 2024 split resolved once: where its clips are and which they are.

    Build one with :meth:`Split.load`; pass the same object to ``make_dataset``,
    ``keras_asc.training.distill.teacher_logits`` and the run record, so no later step reads
    the split file again or can read a different one.

    Attributes:
        root: the dataset folder (absolute, ``~`` and variables expanded), holding ``audio/``.
        name: ``5``, ``10``, ``25``, ``50``, ``100`` or ``"test"`` (as ``normalize_split``).
        clips: the split's :class:`Clip` records, in file order (a tuple).
        source: the split file they were read from (``None`` when built from a list).

    Properties: ``title`` (``"split25"`` / ``"test"``), ``labels`` (class indices),
    ``devices`` (device names), ``fingerprint`` (:func:`clips_fingerprint` of the clips).

    Example:
        >>> split = Split.load("/data/tau22", "split10")
        >>> split.name, split.labels[:3], split.devices[:3]
        (10, (0, 0, 0), ('a', 'a', 'b'))
    """

    root: str
    name: object
    clips: tuple
    source: str = None

    def __post_init__(self):
        object.__setattr__(self, "clips", tuple(self.clips))
        object.__setattr__(self, "name", normalize_split(self.name))

    @classmethod
    def load(cls, data_dir, split, splits_dir=None, check_test_overlap=True):
        """Read a split's file once, with every check of :func:`load_split` but the one for
        missing audio (``make_dataset`` reports those by its ``on_error``; see
        :meth:`missing_files`).

        Args:
            data_dir: dataset root (``~`` and environment variables are expanded).
            split: any spelling :func:`normalize_split` accepts.
            splits_dir: optional folder with the split files.
            check_test_overlap: refuse a training split sharing clips with the test split.
        """
        data_dir = expand_path(data_dir)
        splits_dir = expand_path(splits_dir)
        name, path, clips = _read_checked_split(data_dir, split, splits_dir, check_test_overlap)
        return cls(os.path.abspath(data_dir), name, clips, path)

    @property
    def title(self):
        """``"split25"`` or ``"test"``."""
        return split_title(self.name)

    @property
    def labels(self):
        """The class index of every clip, in clip order."""
        return tuple(clip.label for clip in self.clips)

    @property
    def devices(self):
        """The device of every clip, in clip order."""
        return tuple(clip.device for clip in self.clips)

    @functools.cached_property
    def fingerprint(self):
        """SHA-256 of the sorted clip list with labels (:func:`clips_fingerprint`)."""
        return clips_fingerprint(self.clips)

    def path_of(self, clip):
        """The absolute audio path of ``clip``."""
        return os.path.join(self.root, clip.filename)

    def missing_files(self):
        """The file names (relative to ``root``) of the clips whose audio is not on disk."""
        return [clip.filename for clip in self.clips if not os.path.isfile(self.path_of(clip))]

    def missing_files_error(self, missing):
        """A :class:`MissingFilesError` for ``missing`` (from :meth:`missing_files`)."""
        examples = ", ".join(repr(name) for name in missing[:_MAX_EXAMPLES])
        return MissingFilesError(
            f"{len(missing)} of {len(self.clips)} audio files listed in "
            f"{self.source or self.title} are missing under {self.root}, e.g. {examples}.",
            missing,
        )

    def without(self, filenames):
        """A copy without the clips named in ``filenames`` (its fingerprint changes)."""
        drop = set(filenames)
        return dataclasses.replace(
            self, clips=tuple(clip for clip in self.clips if clip.filename not in drop)
        )

    def __repr__(self):
        return f"Split({self.title}, {len(self.clips)} clips, root={self.root!r})"


def _read_checked_split(data_dir, split, splits_dir, check_test_overlap):
    """``(name, path, clips)`` of a split, with the test-overlap check."""
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"Dataset folder {data_dir!r} does not exist.")
    split = normalize_split(split)
    path = find_split_file(data_dir, split, splits_dir)
    clips, rows = read_split_file(path)
    if not clips:
        raise ValueError(f"{path}: the split lists no clips.")
    if split != "test" and check_test_overlap:
        try:
            test_path = find_split_file(data_dir, "test", splits_dir)
        except FileNotFoundError:
            test_path = None  # nothing to compare against; the test split is loaded on its own
        if test_path is not None:
            _, test_rows = read_split_file(test_path)
            overlap = [clip.filename for clip in clips if clip.filename in test_rows]
            if overlap:
                first = overlap[0]
                raise ValueError(
                    f"{len(overlap)} clip(s) of split {split} are also in the test split, e.g. "
                    f"{first!r} ({path}, line {rows[first]}; {test_path}, line "
                    f"{test_rows[first]}). Training and test clips must be disjoint."
                )
    return split, path, clips


def load_split(
    data_dir,
    split,
    splits_dir=None,
    check_files=True,
    on_missing="raise",
    check_test_overlap=True,
):
    """Load a DCASE 2024 training subset or the development test split as clips.

    Args:
        data_dir: dataset root, holding ``audio/`` (and ``meta.csv``).
        split: 5, 10, 25, 50, 100 (also ``"5"``, ``"split25"``, ``"25%"``) or ``"test"``.
        splits_dir: optional folder with the split files; see :func:`find_split_file` for
            the search order (``splits_dir``, ``data_dir``, ``data_dir/splits``, then
            ``data_dir/evaluation_setup/fold1_train.csv`` / ``fold1_evaluate.csv``).
        check_files: check that every listed audio file exists under ``data_dir``.
        on_missing: ``"raise"`` (default) raises :class:`MissingFilesError` with the count
            and a few examples; ``"warn"`` warns with the same text and drops those clips.
        check_test_overlap: for a training split, also read the test split (when one is
            found) and raise if any clip is in both.

    Returns:
        A list of :class:`Clip` in file order.

    Raises:
        ValueError: unknown label, duplicate row, label contradicting the file name, or a
            training clip that is also in the test split (the message names file and row).
        MissingFilesError: listed audio files are absent and ``on_missing="raise"``.
        FileNotFoundError: no split file was found.

    Example:
        >>> train = load_split("/data/tau22", "split25")
        >>> test = load_split("/data/tau22", "test")
    """
    if on_missing not in ("raise", "warn"):
        raise ValueError(
            f"on_missing must be 'raise' or 'warn'. Received: on_missing={on_missing!r}"
        )
    resolved = Split.load(data_dir, split, splits_dir, check_test_overlap=check_test_overlap)
    clips = list(resolved.clips)
    if check_files:
        missing = resolved.missing_files()
        if missing:
            error = resolved.missing_files_error(missing)
            if on_missing == "raise":
                raise MissingFilesError(
                    f"{error} Download or extract the audio, or pass on_missing='warn' to "
                    "drop them.",
                    missing,
                )
            warnings.warn(f"{error} Dropping them.", stacklevel=2)
            absent = set(missing)
            clips = [clip for clip in clips if clip.filename not in absent]
    return clips


def read_meta(data_dir):
    """Read ``meta.csv`` of a TAU22 tree and check it against the file names.

    ``meta.csv`` is tab-separated with header ``filename, scene_label, identifier,
    source_label``; ``identifier`` is ``<city>-<location id>`` and ``source_label`` the
    device. A row whose label, identifier or device disagrees with its file name is an error.

    Args:
        data_dir: dataset root holding ``meta.csv``.

    Returns:
        A list of :class:`Clip` in file order.

    Example:
        >>> devices = {clip.device for clip in read_meta("/data/tau22")}
    """
    data_dir = expand_path(data_dir)
    path = os.path.join(data_dir, "meta.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No meta.csv in {data_dir!r}: looked for {path!r}.")
    expected = ["filename", "scene_label", "identifier", "source_label"]
    clips = []
    seen = {}
    reader = _rows_after_header(path, expected)
    for line_number, row in reader:
        if not row:
            continue
        if len(row) < 4:
            raise ValueError(f"{path}, line {line_number}: expected 4 columns, received {row!r}.")
        filename, scene_label, identifier, source_label = (field.strip() for field in row[:4])
        _check_inside(path, line_number, filename)
        try:
            clip = parse_filename(filename)
        except ValueError as error:
            raise ValueError(f"{path}, line {line_number}: {error}") from None
        checks = (
            ("scene_label", scene_label, clip.scene_label),
            ("identifier", identifier, clip.location),
            ("source_label", source_label, clip.device),
        )
        for column, value, derived in checks:
            if value != derived:
                raise ValueError(
                    f"{path}, line {line_number}: {column} {value!r} contradicts the file "
                    f"name {filename!r} (which gives {derived!r})."
                )
        if filename in seen:
            raise ValueError(
                f"{path}, line {line_number}: duplicate row for {filename!r} "
                f"(first listed on line {seen[filename]})."
            )
        seen[filename] = line_number
        clips.append(clip)
    return clips


def split_summary(clips):
    """Count clips per scene, device and device group.

    Args:
        clips: an iterable of :class:`Clip`.

    Returns:
        ``{"clips": n, "scenes": {label: n}, "devices": {device: n},
        "device_groups": {group: n}}`` with every label, device and group listed in canonical
        order (zero when absent).

    Example:
        >>> split_summary(load_split("/data/tau22", "test"))["device_groups"]
        {'real': 9880, 'seen': 9900, 'unseen': 9900}
    """
    clips = list(clips)
    scenes = collections.Counter(clip.scene_label for clip in clips)
    devices = collections.Counter(clip.device for clip in clips)
    return {
        "clips": len(clips),
        "scenes": {label: scenes[label] for label in SCENE_LABELS},
        "devices": {device: devices[device] for device in DEVICES},
        "device_groups": {
            group: sum(devices[device] for device in members)
            for group, members in DEVICE_GROUPS.items()
        },
    }


def format_split_summary(summary):
    """Render :func:`split_summary` as a few aligned text lines for the command line."""
    lines = [f"clips: {summary['clips']}"]
    lines.append(
        "scenes:  " + "  ".join(f"{label}={count}" for label, count in summary["scenes"].items())
    )
    lines.append(
        "devices: " + "  ".join(f"{device}={count}" for device, count in summary["devices"].items())
    )
    lines.append(
        "groups:  "
        + "  ".join(f"{group}={count}" for group, count in summary["device_groups"].items())
    )
    return "\n".join(lines)
