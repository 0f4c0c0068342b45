"""Safe extraction of downloaded zip and tar archives, and the progress line of downloads.

Hand-written on top of ``zipfile``/``tarfile`` because neither checks what this needs: every
member is checked before anything is written (absolute paths, ``..``, links, device files,
two members with one path, a destination outside the target folder), the members' declared
sizes must fit an extraction budget (a zip bomb is refused without unpacking it), each member
is cut off at its declared size, and everything is written under a staging folder and moved
into place only once the whole archive has been read, so a corrupt archive leaves nothing.
(Python 3.12's ``tarfile`` extraction filters cover only part of this, and nothing for zip.)
"""

from __future__ import annotations

import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
import zlib

_CHUNK = 1 << 20


class CorruptArchiveError(ValueError):
    """An archive cannot be read to the end (truncated, bad CRC, not an archive)."""


# What reading a damaged zip or tar raises (zipfile: BadZipFile for a bad CRC or header;
# tarfile: ReadError and friends; both: EOFError or zlib.error on a cut compressed stream).
_CORRUPTION = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the target folder (absolute path, "..", link),
    two members share a path, or the archive would unpack to more than its budget."""


# Extraction budget: the members' declared sizes may add up to at most this many times the
# archive's own size (plus _EXPANSION_ALLOWANCE for tiny archives), and must fit on the disk.
# The TAU22 audio archives hold WAVs that deflate hardly at all (ratio ~1.1) and its CSV/text
# files about 5-10x; a zip bomb reaches ~1000x (300 MB out of 300 kB). Each member is also
# cut off at the size its header declares, so a header that lies cannot exceed the budget.
MAX_EXPANSION_RATIO = 100
_EXPANSION_ALLOWANCE = 1 << 20


class Progress:
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
            plan.append((relative, info.is_dir(), info, info.file_size))
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
            plan.append((relative, member.isdir(), member, member.size))
    return plan


def _check_plan(archive, plan, root, max_ratio):
    """Refuse, before anything is written, members that share a path (or a file that another
    member needs as a folder) and an archive whose declared sizes exceed the budget."""
    files, folders = {}, set()
    for relative, is_dir, _, _ in plan:
        parents = relative.split("/")[:-1]
        folders.update("/".join(parents[: i + 1]) for i in range(len(parents)))
        if is_dir:
            folders.add(relative)
        elif relative in files:
            raise UnsafeArchiveError(
                f"{archive}: two members are named {relative!r}; expected each path once "
                "(refusing to extract, nothing was written)."
            )
        else:
            files[relative] = True
    clash = sorted(set(files) & folders)
    if clash:
        raise UnsafeArchiveError(
            f"{archive}: {clash[0]!r} is both a file and a folder in the archive; expected each "
            "path once (refusing to extract, nothing was written)."
        )
    declared = sum(size for _, is_dir, _, size in plan if not is_dir)
    budget = max_ratio * os.path.getsize(archive) + _EXPANSION_ALLOWANCE
    if declared > budget:
        raise UnsafeArchiveError(
            f"{archive}: its members would unpack to {_megabytes(declared)} from "
            f"{_megabytes(os.path.getsize(archive))}; expected at most {max_ratio} times the "
            "archive's size (a zip bomb or a damaged archive; nothing was written)."
        )
    free = shutil.disk_usage(root).free
    if declared > free:
        raise UnsafeArchiveError(
            f"{archive}: its members declare {_megabytes(declared)} but {root} has "
            f"{_megabytes(free)} free; expected room for the extracted files (nothing was "
            "written)."
        )


def _megabytes(size):
    return f"{size / 1e6:,.1f} MB"


def _copy_capped(archive, relative, source, output, declared):
    """Copy a member, refusing one that holds more than its header declares."""
    remaining = declared
    while True:
        chunk = source.read(min(_CHUNK, remaining + 1))
        if not chunk:
            return
        if len(chunk) > remaining:
            raise UnsafeArchiveError(
                f"{archive}: member {relative!r} holds more than the {declared:,} bytes its "
                "header declares; the archive is damaged or crafted (nothing was extracted)."
            )
        output.write(chunk)
        remaining -= len(chunk)


def safe_extract(
    archive, target_dir, strip_prefix=None, stream=None, max_ratio=MAX_EXPANSION_RATIO
):
    """Extract a zip or tar archive, refusing any member that would escape ``target_dir``.

    Every member is checked before anything is written: absolute paths, ``..`` components,
    symbolic and hard links, and device files are refused, and each resolved destination
    must lie inside ``target_dir`` (links already on disk included). Two members with the same
    path are refused, and so is an archive whose members declare more than ``max_ratio``
    times its own size (plus 1 MiB) or more than the free disk space; each member is cut off
    at its declared size. Files are written to a temporary name and renamed.

    Args:
        archive: path of a ``.zip`` or ``.tar[.gz|.bz2|.xz]`` file.
        target_dir: folder to extract into (created if needed).
        strip_prefix: leading path removed from members that start with it.
        stream: progress output (None: silent).
        max_ratio: the extraction budget, as a multiple of the archive's size.

    Returns:
        The number of files written.

    Raises:
        UnsafeArchiveError: a member is unsafe, two members share a path, or the archive is
            over its budget; nothing has been extracted.
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
        _check_plan(archive, plan, root, max_ratio)
        for relative, _, _, _ in plan:
            destination = os.path.realpath(os.path.join(root, relative))
            if os.path.commonpath([root, destination]) != root:
                raise UnsafeArchiveError(
                    f"{archive}: member {relative!r} would be written to {destination}, outside "
                    f"{root}; refusing to extract."
                )
        progress = Progress(
            f"extracting {os.path.basename(archive)}", len(plan), stream, "files", 1
        )
        # Everything is written under a staging folder first and moved into place only once
        # every member has been read (and its CRC checked): a corrupt archive leaves nothing.
        staging = tempfile.mkdtemp(prefix=".extracting-", dir=root)
        try:
            written = []
            for relative, is_dir, member, declared in plan:
                if not is_dir:
                    staged = os.path.join(staging, relative)
                    os.makedirs(os.path.dirname(staged), exist_ok=True)
                    source = handle.open(member) if kind == "zip" else handle.extractfile(member)
                    with source, open(staged, "wb") as output:
                        _copy_capped(archive, relative, source, output, declared)
                    written.append(relative)
                progress.update(1)
        except _CORRUPTION as error:
            raise CorruptArchiveError(
                f"{archive}: the archive is corrupt ({type(error).__name__}: {error}); "
                "nothing was extracted."
            ) from None
        else:
            for relative, is_dir, _, _ in plan:
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
