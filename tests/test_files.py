"""keras_asc.files: atomic writes keep the old file on failure and propagate the error."""

import os

import pytest

from keras_asc.files import atomic_path, save_model_atomic, write_text_atomic


def test_write_text_atomic_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "config.json"
    target.write_text("old")
    write_text_atomic(target, "new\n")
    assert target.read_text() == "new\n"
    assert os.listdir(tmp_path) == ["config.json"]


def test_a_failed_write_keeps_the_old_file_and_raises(tmp_path):
    target = tmp_path / "model.keras"
    target.write_bytes(b"old")

    class Broken:
        def save(self, path, overwrite=True):
            with open(path, "wb") as handle:
                handle.write(b"half")
            raise OSError("disk full")

    # Before the shared helper, two of the copies swallowed such errors and the run went on.
    with pytest.raises(OSError, match="disk full"):
        save_model_atomic(Broken(), target)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.keras"]
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as temporary:
        open(temporary, "w").close()
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["model.keras"]


def test_written_files_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "a.json", "{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
