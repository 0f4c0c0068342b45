"""Download TAU Urban Acoustic Scenes 2022 Mobile, the DCASE 2024 splits and the MicIRP DIRs.

Standard library only (``urllib``). Every file is fetched into ``<data_dir>/downloads/`` as
``<name>.part`` (resumed with an HTTP ``Range`` request after an interruption) and checked
against its published checksum. A file without one counts as complete only at the size the
server declared: a missing size or a refused resume never promotes a partial file. Archives are
then extracted through a staging folder, so a corrupt one leaves nothing behind (members may
not escape the target folder); plain files are moved into place. Manifest targets may not
leave the data folder. A small ``<name>.done`` record makes a second run skip finished files.
Files without a published checksum are still downloaded; their SHA-256 is printed and
recorded so that it can be compared with a trusted source.

The resulting tree is the TAU22 layout that :func:`keras_asc.data.tau22.load_split` reads::

    <data_dir>/audio/*.wav, meta.csv, evaluation_setup/, README.* (from the Zenodo archives)
    <data_dir>/splits/split5.csv ... split100.csv, test.csv (DCASE 2024 Task 1)
    <data_dir>/micirp_dirs/*.wav (device impulse responses for DIR augmentation)

Example:
    >>> from keras_asc.data.download import download_tau22
    >>> download_tau22("/data/tau22", only=("meta", "splits"))

Reference:
    TAU Urban Acoustic Scenes 2022 Mobile, Development dataset, Zenodo record 6337421
    (Heittola, Mesaros, Virtanen; Tampere University). DCASE 2024 Task 1 baseline
    (CPJKU/dcase2024_task1_baseline). Microphone Impulse Response Project (MicIRP),
    micirp.blogspot.com, via Xaudia.com, Creative Commons.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import lzma
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib

from keras_asc.data.tau22 import OFFICIAL_SPLIT_ROWS
from keras_asc.files import write_text_atomic

GROUPS = ("meta", "splits", "dirs", "audio")
DOWNLOADS_FOLDER = "downloads"
_CHUNK = 1 << 20
# Not worth retrying: the request itself is wrong or the file is gone.
_RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


class DownloadError(RuntimeError):
    """A file could not be fetched (the message names the file, the URL and the reason)."""


class ChecksumMismatchError(DownloadError):
    """A downloaded file does not match its published checksum."""


class CorruptArchiveError(ValueError):
    """An archive cannot be read to the end (truncated, bad CRC, not an archive)."""


# What reading a damaged zip or tar raises (zipfile: BadZipFile for a bad CRC or header;
# tarfile: ReadError and friends; both: EOFError or zlib.error on a cut compressed stream).
_CORRUPTION = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the target folder (absolute path, "..", link)."""


def _is_confined(relative):
    """True when ``relative`` is a relative path that stays inside its root (no "..")."""
    normalized = relative.replace("\\", "/")
    if normalized.startswith("/") or re.match(r"^[A-Za-z]:", normalized) or "\0" in normalized:
        return False
    return ".." not in normalized.split("/")


def _inside(root, relative, what):
    """``root/relative`` after resolving links; refused when it lands outside ``root``."""
    root = os.path.realpath(root)
    destination = os.path.realpath(os.path.join(root, relative))
    if os.path.commonpath([root, destination]) != root:
        raise UnsafeArchiveError(
            f"{what} {relative!r} resolves to {destination}, outside the data folder {root}; "
            "refusing to write there."
        )
    return destination


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One file of a download manifest.

    Args:
        name: file name under ``<data_dir>/downloads/``.
        url: where to fetch it.
        group: ``"meta"``, ``"splits"``, ``"dirs"`` or ``"audio"`` (what ``--only`` selects).
        md5: published MD5 hex digest, or None.
        sha256: published SHA-256 hex digest, or None. With neither, the SHA-256 of the
            download is printed and recorded instead of checked.
        size: size in bytes when published (checked when given).
        extract_to: for an archive, the folder (relative to ``data_dir``, ``""`` = the root)
            to extract into; None for a plain file.
        strip_prefix: leading member path removed while extracting when present, e.g. the
            archive's top folder.
        target: for a plain file, its destination relative to ``data_dir``.
        expected_rows: for a split file, the number of rows after the header.
        source: where the URL and checksum were confirmed (documentation only).
    """

    name: str
    url: str
    group: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    extract_to: str | None = None
    strip_prefix: str | None = None
    target: str | None = None
    expected_rows: int | None = None
    source: str = ""

    def __post_init__(self):
        if self.group not in GROUPS:
            raise ValueError(
                f"{self.name}: group must be one of {GROUPS}. Received: {self.group!r}"
            )
        if (self.extract_to is None) == (self.target is None):
            raise ValueError(
                f"{self.name}: give exactly one of extract_to (archives) or target (plain "
                f"files). Received: extract_to={self.extract_to!r}, target={self.target!r}"
            )
        if "/" in self.name or "\\" in self.name or self.name in ("", ".", ".."):
            raise ValueError(f"name must be a plain file name. Received: name={self.name!r}")
        for field in ("target", "extract_to"):
            value = getattr(self, field)
            if value is not None and not _is_confined(value):
                raise ValueError(
                    f"{self.name}: {field} must be a relative path inside the data folder, "
                    f"without '..'. Received: {field}={value!r}"
                )
        if self.target is not None and not self.target.strip("/\\"):
            raise ValueError(f"{self.name}: target must name a file. Received: target={self.target!r}")
        for algorithm, digest, length in (("md5", self.md5, 32), ("sha256", self.sha256, 64)):
            if digest is not None and not re.fullmatch(f"[0-9a-f]{{{length}}}", digest):
                raise ValueError(
                    f"{self.name}: {algorithm} must be {length} lowercase hex digits. "
                    f"Received: {digest!r}"
                )


# ----------------------------------------------------------------------------- the data table

TAU22_RECORD_URL = "https://zenodo.org/records/6337421/files/"
DCASE24_SPLITS_URL = "https://github.com/CPJKU/dcase2024_task1_baseline/releases/download/files/"
MICIRP_DIRS_URL = "https://github.com/CPJKU/cpjku_dcase24/releases/download/files/dirs.zip"
TAU22_ARCHIVE_PREFIX = "TAU-urban-acoustic-scenes-2022-mobile-development/"

# MD5 digests of the Zenodo record 6337421 files, as listed by the soundata TAU22 loader
# (soundata/datasets/tau2022uas_mobile.py, REMOTES); meta, audio.1, audio.9 and audio.16 are
# confirmed independently by a second public download script, which also gives the sizes.
_TAU22_ARCHIVES = (
    ("meta", "meta", "419b6ff6570f1030730352dc80cd8d15", None),
    ("meta", "doc", "9c4f610bdb5d3e3e72a17d393a26452a", None),
    ("audio", "audio.1", "8be14bdbd844481dce059ab31fbd2239", 1736050960),
    ("audio", "audio.2", "e821abda49b069248bb75eab39df7575", None),
    ("audio", "audio.3", "9c7897f78bb42ca0008936daddf3f8f3", None),
    ("audio", "audio.4", "53ec3e37c0fc0be75f53c5abbc5300b8", None),
    ("audio", "audio.5", "528422c33c5d10263203d2c61cb1f3be", None),
    ("audio", "audio.6", "4759a9465c903e13e57d5e82e791fc28", None),
    ("audio", "audio.7", "6d545fc83a55a17856a9ccc1ac9aff6b", None),
    ("audio", "audio.8", "3a2916a9b5d3f43cc7a22a62b180b0d9", None),
    ("audio", "audio.9", "071f664c86639ad730f7be4e3c39d886", 1790044829),
    ("audio", "audio.10", "e0839d019e9b77ecbcbb0eff85965530", None),
    ("audio", "audio.11", "fc60f1c83726be3963ae14fbcb95eeb4", None),
    ("audio", "audio.12", "02246547f86c0a814dc63ec65d7033bb", None),
    ("audio", "audio.13", "88ae9ef884665140d1572d8061725e00", None),
    ("audio", "audio.14", "c3f400d74ae90e5190dc518cde43de47", None),
    ("audio", "audio.15", "85594c6fe4f91c10aa2a410f748103b8", None),
    ("audio", "audio.16", "6e2df8438c69f6789414aeba8cbad9d8", 435379083),
)


def tau22_manifest(
    record_url=TAU22_RECORD_URL,
    splits_url=DCASE24_SPLITS_URL,
    dirs_url=MICIRP_DIRS_URL,
):
    """The files of ``keras-asc download tau22``, in download order.

    Args:
        record_url: base URL of the TAU22 development archives (Zenodo record 6337421).
        splits_url: base URL of the DCASE 2024 split files (``split5.csv`` ... ``test.csv``).
        dirs_url: URL of the zip with the MicIRP device impulse responses.

    Returns:
        A tuple of :class:`RemoteFile`. The split files and the DIR zip have no published
        checksum: their SHA-256 is printed; the split files are checked by row count.

    Example:
        >>> [f.name for f in tau22_manifest() if f.group == "splits"][:2]
        ['split5.csv', 'split10.csv']
    """
    if not record_url.endswith("/") or not splits_url.endswith("/"):
        raise ValueError(
            "record_url and splits_url must end with '/'. "
            f"Received: record_url={record_url!r}, splits_url={splits_url!r}"
        )
    zenodo = "Zenodo record 6337421; MD5 from the soundata TAU22 loader"

    def archive(group, part, md5, size):
        name = f"TAU-urban-acoustic-scenes-2022-mobile-development.{part}.zip"
        return RemoteFile(
            name=name,
            url=f"{record_url}{name}?download=1",
            group=group,
            md5=md5,
            size=size,
            extract_to="",
            strip_prefix=TAU22_ARCHIVE_PREFIX,
            source=zenodo,
        )

    # The small files first, so that a failure on the 26 GB of audio leaves them in place.
    manifest = [archive(*row) for row in _TAU22_ARCHIVES if row[0] == "meta"]
    # DCASE 2024 Task 1: split{5,10,25,50,100}.csv and test.csv, fetched by the official
    # baseline (CPJKU/dcase2024_task1_baseline, dataset/dcase24.py) from this release.
    for split in (5, 10, 25, 50, 100, "test"):
        name = "test.csv" if split == "test" else f"split{split}.csv"
        manifest.append(
            RemoteFile(
                name=name,
                url=f"{splits_url}{name}",
                group="splits",
                target=f"splits/{name}",
                expected_rows=OFFICIAL_SPLIT_ROWS[split],
                source="CPJKU/dcase2024_task1_baseline release 'files'; no published checksum",
            )
        )
    # Device impulse responses (MicIRP, Creative Commons), as released by CP-JKU for their
    # DCASE systems (CPJKU/cpjku_dcase24, download_resources.py: "dirs.zip").
    manifest.append(
        RemoteFile(
            name="micirp_dirs.zip",
            url=dirs_url,
            group="dirs",
            extract_to="micirp_dirs",
            strip_prefix="dirs/",
            source="CPJKU/cpjku_dcase24 release 'files'; no published checksum",
        )
    )
    manifest += [archive(*row) for row in _TAU22_ARCHIVES if row[0] == "audio"]
    return tuple(manifest)


def load_manifest(path):
    """Read a manifest from JSON: a list of objects with :class:`RemoteFile` fields.

    Lets a mirror (or a test server) replace the built-in table:
    ``keras-asc download tau22 DIR --manifest mirror.json``.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            entries = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a JSON manifest ({error}).") from None
    if not isinstance(entries, list):
        raise ValueError(
            f"{path}: a manifest is a JSON list of objects, received {type(entries).__name__}."
        )
    fields = {field.name for field in dataclasses.fields(RemoteFile)}
    manifest = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) - fields:
            raise ValueError(
                f"{path}, entry {index}: expected an object with keys from {sorted(fields)}. "
                f"Received: {entry!r}"
            )
        manifest.append(RemoteFile(**entry))
    return tuple(manifest)


# ----------------------------------------------------------------------------- progress


class _Progress:
    """A one-line progress bar on a stream (redrawn in place on a terminal)."""

    def __init__(self, label, total, stream, unit="MB", scale=1e6):
        self.label, self.total, self.stream = label, total, stream
        self.unit, self.scale = unit, scale
        self.done = 0
        self.start = time.monotonic()
        self.last_draw = 0.0
        self.interactive = stream is not None and hasattr(stream, "isatty") and stream.isatty()

    def update(self, amount):
        self.done += amount
        now = time.monotonic()
        if self.interactive and now - self.last_draw > 0.2:
            self.last_draw = now
            self.stream.write("\r" + self._line(now))
            self.stream.flush()

    def _line(self, now):
        elapsed = max(now - self.start, 1e-6)
        rate = self.done / self.scale / elapsed
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            bar = "#" * int(30 * fraction) + "." * (30 - int(30 * fraction))
            return (
                f"{self.label} [{bar}] {100 * fraction:5.1f}% "
                f"{self.done / self.scale:.1f}/{self.total / self.scale:.1f} {self.unit} "
                f"{rate:.1f} {self.unit}/s"
            )
        return f"{self.label} {self.done / self.scale:.1f} {self.unit} {rate:.1f} {self.unit}/s"

    def close(self):
        if self.stream is None:
            return
        prefix = "\r" if self.interactive else ""
        self.stream.write(prefix + self._line(time.monotonic()) + "\n")
        self.stream.flush()


def _say(stream, message):
    if stream is not None:
        stream.write(message + "\n")
        stream.flush()


# ----------------------------------------------------------------------------- fetching


def file_digest(path, algorithm):
    """Hex digest (``"md5"`` or ``"sha256"``) of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(entry, path):
    """Check a downloaded file against ``entry``'s size and checksum.

    Returns:
        ``{"sha256": ..., "md5": ...}`` digests that were computed (the SHA-256 always).

    Raises:
        ChecksumMismatchError: the size or a digest differs; the message names the file and
            both values.
    """
    actual_size = os.path.getsize(path)
    if entry.size is not None and actual_size != entry.size:
        raise ChecksumMismatchError(
            f"{entry.name}: size {actual_size} bytes does not match the published "
            f"{entry.size} bytes (from {entry.url})."
        )
    digests = {"sha256": file_digest(path, "sha256")}
    if entry.md5 is not None:
        digests["md5"] = file_digest(path, "md5")
    for algorithm in ("md5", "sha256"):
        expected = getattr(entry, algorithm)
        if expected is not None and digests[algorithm] != expected:
            raise ChecksumMismatchError(
                f"{entry.name}: {algorithm} {digests[algorithm]} does not match the published "
                f"{expected} (from {entry.url}). The file is corrupt or has changed upstream."
            )
    return digests


def _http_error_message(entry, error):
    return f"{entry.name}: HTTP {error.code} {error.reason} from {entry.url}"


def fetch(entry, destination, retries=3, retry_wait=2.0, timeout=60.0, stream=sys.stderr):
    """Download ``entry.url`` to ``destination``, resuming ``destination + ".part"``.

    An existing ``.part`` file is continued with a ``Range: bytes=<size>-`` request; a server
    that answers 200 instead of 206 makes the download start over. Network errors and
    5xx/408/429 answers are retried ``retries`` times (waiting ``retry_wait * 2**attempt``
    seconds), each retry resuming where the last stopped; other HTTP errors fail at once.

    Args:
        entry: the :class:`RemoteFile`.
        destination: final path; written only once the transfer is complete.
        retries: retries after the first attempt.
        retry_wait: base wait in seconds between attempts.
        timeout: socket timeout in seconds.
        stream: where the progress bar goes (None: silent).

    Raises:
        DownloadError: the file could not be fetched; the message names it, the URL and why.
    """
    partial = destination + ".part"
    last_error = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(retry_wait * 2 ** (attempt - 1))
            _say(stream, f"{entry.name}: retry {attempt}/{retries} after: {last_error}")
        try:
            if _transfer(entry, partial, timeout, stream):
                os.replace(partial, destination)
                return destination
            last_error = "the server closed the connection before the end of the file"
        except _StartOver as error:
            _remove(partial)
            last_error = str(error)
        except urllib.error.HTTPError as error:
            if error.code == 416 and os.path.exists(partial):
                # Range beyond the end. The partial file is complete only when its size is the
                # one the server declares (Content-Range: bytes */SIZE), or when a published
                # checksum will decide; otherwise it is dropped and fetched from the start.
                declared = _declared_size(error.headers)
                have = os.path.getsize(partial)
                if have == declared or (declared is None and _has_checksum(entry)):
                    os.replace(partial, destination)
                    return destination
                _remove(partial)
                last_error = (
                    f"{entry.name}: the server refused to resume at byte {have} (HTTP 416, "
                    f"declared size {declared if declared is not None else 'unknown'}); "
                    "starting over"
                )
                continue
            if error.code not in _RETRYABLE_STATUS:
                raise DownloadError(_http_error_message(entry, error)) from error
            last_error = _http_error_message(entry, error)
        except (
            urllib.error.URLError,
            http.client.HTTPException,
            ConnectionError,
            TimeoutError,
        ) as error:
            last_error = f"{type(error).__name__}: {getattr(error, 'reason', error)}"
    raise DownloadError(
        f"{entry.name}: giving up after {retries + 1} attempts to fetch {entry.url}: {last_error}. "
        f"Run the command again to resume from {partial}."
    )


class _StartOver(Exception):
    """The partial file cannot be trusted; the next attempt starts from byte 0."""


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _has_checksum(entry):
    return entry.md5 is not None or entry.sha256 is not None


def _declared_size(headers):
    """SIZE from a ``Content-Range: bytes */SIZE`` (416) header, else None."""
    match = re.match(r"bytes \*/(\d+)$", (headers or {}).get("Content-Range", "") or "")
    return int(match.group(1)) if match else None


def _transfer(entry, partial, timeout, stream):
    """One attempt. Returns True when the whole file is in ``partial``."""
    start = os.path.getsize(partial) if os.path.exists(partial) else 0
    request = urllib.request.Request(entry.url, headers={"User-Agent": "keras-asc-download"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        status = response.status
        length = response.headers.get("Content-Length")
        if status == 206:
            match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != start:
                raise DownloadError(
                    f"{entry.name}: the server answered the range request for byte {start} with "
                    f"Content-Range {response.headers.get('Content-Range')!r} ({entry.url})."
                )
            total = int(match.group(2)) if match.group(2) != "*" else None
            mode = "ab"
        elif status == 200:
            if start:
                _say(stream, f"{entry.name}: the server ignored the resume request; starting over.")
            start = 0
            total = int(length) if length is not None else None
            mode = "wb"
        else:
            raise DownloadError(f"{entry.name}: unexpected HTTP {status} from {entry.url}.")
        total = total if total is not None else entry.size
        progress = _Progress(entry.name, total, stream)
        progress.done = start
        with open(partial, mode) as output:
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                output.write(chunk)
                progress.update(len(chunk))
        progress.close()
    received = os.path.getsize(partial)
    if total is None:
        if _has_checksum(entry):
            return True  # the published checksum decides (verify_file)
        raise DownloadError(
            f"{entry.name}: the server declared no size (no Content-Length) and no checksum is "
            f"published, so a complete file cannot be told from a cut one; not keeping it "
            f"({entry.url}). The {received} bytes received stay in {partial}."
        )
    if received > total:
        raise _StartOver(
            f"{entry.name}: {received} bytes on disk but the server declared {total}; "
            "starting over"
        )
    return received == total


# ----------------------------------------------------------------------------- extraction


def _member_path(archive, name, strip_prefix):
    """The member's path relative to the target, after checks; None for the stripped root."""
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or re.match(r"^[A-Za-z]:", normalized):
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} has an absolute path; refusing to extract."
        )
    if strip_prefix and normalized.startswith(strip_prefix):
        normalized = normalized[len(strip_prefix) :]
    parts = [part for part in normalized.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} points outside the target folder (..); refusing to extract."
        )
    return "/".join(parts) if parts else None


def _plan_zip(archive, handle, strip_prefix):
    plan = []
    for info in handle.infolist():
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafeArchiveError(
                f"{archive}: member {info.filename!r} is a symbolic link; refusing to extract."
            )
        relative = _member_path(archive, info.filename, strip_prefix)
        if relative is not None:
            plan.append((relative, info.is_dir(), info))
    return plan


def _plan_tar(archive, handle, strip_prefix):
    plan = []
    for member in handle.getmembers():
        if member.issym() or member.islnk():
            raise UnsafeArchiveError(
                f"{archive}: member {member.name!r} is a link; refusing to extract."
            )
        if not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(
                f"{archive}: member {member.name!r} is a device or fifo; refusing to extract."
            )
        relative = _member_path(archive, member.name, strip_prefix)
        if relative is not None:
            plan.append((relative, member.isdir(), member))
    return plan


def safe_extract(archive, target_dir, strip_prefix=None, stream=None):
    """Extract a zip or tar archive, refusing any member that would escape ``target_dir``.

    Every member is checked before anything is written: absolute paths, ``..`` components,
    symbolic and hard links, and device files are refused, and each resolved destination
    must lie inside ``target_dir`` (links already on disk included). Files are written to a
    temporary name and renamed.

    Args:
        archive: path of a ``.zip`` or ``.tar[.gz|.bz2|.xz]`` file.
        target_dir: folder to extract into (created if needed).
        strip_prefix: leading path removed from members that start with it.
        stream: progress output (None: silent).

    Returns:
        The number of files written.

    Raises:
        UnsafeArchiveError: a member is unsafe; nothing has been extracted.
        CorruptArchiveError: the file is not a zip or tar archive, or cannot be read to the
            end (truncated, bad CRC); nothing has been extracted.
    """
    archive = os.fspath(archive)
    if zipfile.is_zipfile(archive):
        opener, planner, kind = zipfile.ZipFile, _plan_zip, "zip"
    elif tarfile.is_tarfile(archive):
        opener, planner, kind = tarfile.open, _plan_tar, "tar"
    else:
        raise CorruptArchiveError(
            f"{archive} is neither a zip nor a tar archive (truncated or not an archive)."
        )
    os.makedirs(target_dir, exist_ok=True)
    root = os.path.realpath(target_dir)
    try:
        handle = opener(archive)
    except _CORRUPTION as error:
        raise CorruptArchiveError(
            f"{archive}: the archive is corrupt ({type(error).__name__}: {error}); nothing was "
            "extracted."
        ) from None
    with handle:
        try:
            plan = planner(archive, handle, strip_prefix)
        except _CORRUPTION as error:
            raise CorruptArchiveError(
                f"{archive}: the archive is corrupt ({type(error).__name__}: {error}); nothing "
                "was extracted."
            ) from None
        for relative, _, _ in plan:
            destination = os.path.realpath(os.path.join(root, relative))
            if os.path.commonpath([root, destination]) != root:
                raise UnsafeArchiveError(
                    f"{archive}: member {relative!r} would be written to {destination}, outside "
                    f"{root}; refusing to extract."
                )
        progress = _Progress(
            f"extracting {os.path.basename(archive)}", len(plan), stream, "files", 1
        )
        # Everything is written under a staging folder first and moved into place only once
        # every member has been read (and its CRC checked): a corrupt archive leaves nothing.
        staging = tempfile.mkdtemp(prefix=".extracting-", dir=root)
        try:
            written = []
            for relative, is_dir, member in plan:
                if not is_dir:
                    staged = os.path.join(staging, relative)
                    os.makedirs(os.path.dirname(staged), exist_ok=True)
                    source = handle.open(member) if kind == "zip" else handle.extractfile(member)
                    with source, open(staged, "wb") as output:
                        shutil.copyfileobj(source, output, _CHUNK)
                    written.append(relative)
                progress.update(1)
        except _CORRUPTION as error:
            raise CorruptArchiveError(
                f"{archive}: the archive is corrupt ({type(error).__name__}: {error}); "
                "nothing was extracted."
            ) from None
        else:
            for relative, is_dir, _ in plan:
                if is_dir:
                    os.makedirs(os.path.join(root, relative), exist_ok=True)
            for relative in written:
                destination = os.path.join(root, relative)
                os.makedirs(os.path.dirname(destination), exist_ok=True)
                os.replace(os.path.join(staging, relative), destination)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        progress.close()
    return len(written)
    return written


# ----------------------------------------------------------------------------- the command


def _count_rows(path):
    with open(path, encoding="utf-8") as handle:
        return max(sum(1 for line in handle if line.strip()) - 1, 0)


def parse_groups(only):
    """Groups selected by ``only``: None (all), a comma-separated string or an iterable.

    Example:
        >>> parse_groups("meta,splits")
        ('meta', 'splits')
    """
    if only is None:
        return GROUPS
    if isinstance(only, str):
        only = [part.strip() for part in only.split(",") if part.strip()]
    only = tuple(only)
    unknown = [group for group in only if group not in GROUPS]
    if unknown or not only:
        raise ValueError(f"only must name some of {', '.join(GROUPS)}. Received: {only!r}")
    return only


def _record_matches(record_path, entry):
    if not os.path.isfile(record_path):
        return False
    try:
        with open(record_path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError) as error:
        record = error
    if not isinstance(record, dict):
        reason = record if isinstance(record, Exception) else type(record).__name__
        raise ValueError(
            f"{record_path}: corrupt download record ({str(reason).splitlines()[0]}); expected "
            f"the JSON record written when {entry.name} finished; delete it to fetch "
            f"{entry.name} again."
        )
    return record.get("url") == entry.url and all(
        getattr(entry, algorithm) in (None, record.get(algorithm))
        for algorithm in ("md5", "sha256")
    )


def _write_record(record_path, entry, digests, detail):
    record = dict(name=entry.name, url=entry.url, **digests, **detail)
    write_text_atomic(record_path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def describe_manifest(manifest=None, only=None):
    """One line per file that :func:`download_tau22` would fetch: group, name, URL and checksum
    (what ``keras-asc download --dry-run`` prints).

    Args:
        manifest: the files, default :func:`tau22_manifest`.
        only: groups to list, as for :func:`download_tau22`.

    Example:
        >>> describe_manifest(only="splits")[0]  # doctest: +ELLIPSIS
        'splits  split5.csv  https://...'
    """
    groups = parse_groups(only)
    manifest = tau22_manifest() if manifest is None else tuple(manifest)
    lines = []
    for entry in manifest:
        if entry.group in groups:
            checksum = (
                f"md5 {entry.md5}"
                if entry.md5
                else f"sha256 {entry.sha256}"
                if entry.sha256
                else "no published checksum"
            )
            lines.append(f"{entry.group:7s} {entry.name}  {entry.url}  ({checksum})")
    return lines


def download_tau22(
    data_dir,
    only=None,
    manifest=None,
    keep_archives=False,
    retries=3,
    retry_wait=2.0,
    timeout=60.0,
    stream=sys.stderr,
):
    """Fetch TAU22 (development), the DCASE 2024 split files and the MicIRP DIRs.

    Args:
        data_dir: dataset root to create or complete.
        only: groups to fetch, a subset of ``("meta", "splits", "dirs", "audio")`` or a comma
            separated string; None fetches all (about 26 GB of audio archives).
        manifest: the files to fetch, default :func:`tau22_manifest`; tests and mirrors pass
            their own (see :func:`load_manifest`).
        keep_archives: keep the downloaded archives after extraction (default: delete them
            to halve the disk space; the ``.done`` records keep reruns idempotent).
        retries: retries per file after network errors and 5xx answers.
        retry_wait: base wait in seconds between retries (doubles each time).
        timeout: socket timeout in seconds.
        stream: progress and messages (None: silent).

    Returns:
        A dict ``name -> "downloaded" | "skipped"``.

    Raises:
        DownloadError: a file could not be fetched (ChecksumMismatchError on a bad checksum).
        UnsafeArchiveError: an archive member would escape its target folder.
        ValueError: a split file has the wrong number of rows.
    """
    groups = parse_groups(only)
    manifest = tau22_manifest() if manifest is None else tuple(manifest)
    data_dir = os.path.abspath(os.fspath(data_dir))
    downloads = os.path.join(data_dir, DOWNLOADS_FOLDER)
    os.makedirs(downloads, exist_ok=True)
    selected = [entry for entry in manifest if entry.group in groups]
    if not selected:
        raise ValueError(f"The manifest has no files in the groups {groups}.")
    results = {}
    for number, entry in enumerate(selected, start=1):
        archive = os.path.join(downloads, entry.name)
        record_path = archive + ".done"
        # Confined to data_dir, links already on disk included (a manifest is user input).
        final = _inside(data_dir, entry.target, f"{entry.name}: target") if entry.target else None
        extract_dir = (
            _inside(data_dir, entry.extract_to, f"{entry.name}: extract_to")
            if entry.extract_to is not None
            else None
        )
        if _record_matches(record_path, entry) and (final is None or os.path.isfile(final)):
            _say(stream, f"[{number}/{len(selected)}] {entry.name}: already done, skipping.")
            results[entry.name] = "skipped"
            continue
        _say(stream, f"[{number}/{len(selected)}] {entry.name}")
        if os.path.isfile(archive):
            try:
                digests = verify_file(entry, archive)
            except ChecksumMismatchError as error:
                _say(
                    stream,
                    f"{entry.name}: the file already here does not verify ({error}); fetching it again.",
                )
                os.remove(archive)
        if not os.path.isfile(archive):
            fetch(
                entry,
                archive,
                retries=retries,
                retry_wait=retry_wait,
                timeout=timeout,
                stream=stream,
            )
            try:
                digests = verify_file(entry, archive)
            except ChecksumMismatchError:
                os.remove(archive)  # a rerun must fetch it afresh rather than trust it
                raise
        if entry.md5 is None and entry.sha256 is None:
            _say(
                stream,
                f"{entry.name}: no published checksum; SHA-256 {digests['sha256']} "
                "(compare it with a trusted copy).",
            )
        if entry.extract_to is not None:
            try:
                count = safe_extract(
                    archive, extract_dir, strip_prefix=entry.strip_prefix, stream=stream
                )
            except CorruptArchiveError as error:
                os.remove(archive)  # never kept under its final name: a rerun fetches it again
                raise DownloadError(f"{entry.name}: {error} Removed it; run again to refetch.") from None
            detail = {"files_extracted": count}
            if not keep_archives:
                os.remove(archive)
        else:
            if entry.expected_rows is not None:
                rows = _count_rows(archive)
                if rows != entry.expected_rows:
                    raise ValueError(
                        f"{entry.name}: {rows} rows after the header, expected "
                        f"{entry.expected_rows} (from {entry.url}); the file is not the "
                        f"official one. It is kept at {archive} for inspection."
                    )
            os.makedirs(os.path.dirname(final), exist_ok=True)
            shutil.copyfile(archive, final + ".tmp")
            os.replace(final + ".tmp", final)
            detail = {"target": entry.target}
        _write_record(record_path, entry, digests, detail)
        results[entry.name] = "downloaded"
    return results
