"""Faults met by a training run folder, driven through ``keras-asc train`` (``cli.main``) and
``keras_asc.train`` as a user meets them: a second process on the folder, a folder holding
other files, a stale ``model.keras``, a corrupt backup, a full or read-only disk, a path under
a regular file, and kills at the epoch end. Each gives one line and loses or mixes up nothing;
the same command continues once the cause is fixed.

Runs use a tiny MofleNet registered by a plugin (as in test_train.py), 2 steps per epoch,
no XLA and no TensorBoard, so that each costs seconds on a CPU.
"""

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import keras
import pytest
from helpers import TESTS_DIR, TinyMofle

import keras_asc
from keras_asc import plugins
from keras_asc.cli import main
from keras_asc.files import FolderLock


@pytest.fixture(scope="module", autouse=True)
def tiny_model():
    name = plugins.register_plugin(TinyMofle(), name="tiny-mofle-faults")
    yield "tiny_mofle"
    plugins.unregister_plugin(name)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from keras_asc.data.synthetic import make_synthetic_tau22

    return make_synthetic_tau22(
        str(tmp_path_factory.mktemp("tau22") / "synth"), clips_per_class=20, test_clips_per_class=9
    )


def _jit():
    return False if keras.backend.backend() == "tensorflow" else "auto"


def _options(data, out, epochs=2, **extra):
    return {
        "model": "tiny_mofle",
        "data_dir": data,
        "split": 100,
        "epochs": epochs,
        "batch_size": 8,
        "steps_per_epoch": 2,
        "out_dir": str(out),
        "verbose": 0,
        "tensorboard": False,
        "jit_compile": _jit(),
        **extra,
    }


def _cli(data, out, *extra, epochs=2):
    args = ["train", "--model", "tiny_mofle", "--split", "100", "--data", data]
    args += ["--epochs", str(epochs), "--batch-size", "8", "--steps-per-epoch", "2"]
    args += ["--out", str(out), "--verbose", "0", *extra]
    if _jit() is False:
        args.append("--no-jit")
    return main(args)


def _error_line(capsys):
    """The one error line of a refused command (and no traceback)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _epochs(out):
    with open(os.path.join(out, "log.csv"), newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


class _Stop(Exception):
    pass


class _StopAt(keras.callbacks.Callback):
    """Interrupts a run at the start of epoch ``epoch`` (after the backup of the one before)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Stop()


# --- one process per run folder ---------------------------------------------------------------


def test_a_second_train_on_a_locked_folder_is_refused(data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    # Another process holds the folder (as a running `keras-asc train` does) ...
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from keras_asc.files import FolderLock
            with FolderLock({str(out)!r}):
                print("locked", flush=True)
                time.sleep(600)
            """)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _cli(data, out) == 2
        line = _error_line(capsys)
        assert "in use by another keras-asc train" in line and str(out) in line
        assert sorted(os.listdir(out)) == [".keras-asc.lock"]  # nothing written
    finally:
        holder.kill()  # ... and dies: the kernel drops its lock, no stale lock file to remove
        holder.wait()
    assert _cli(data, out) == 0
    assert _epochs(out) == [0, 1]
    # The same process may train the folder again once the first call returned or raised.
    with FolderLock(out):
        with pytest.raises(keras_asc.files.RunDirError, match="in use"):
            keras_asc.train(**_options(data, out))


# --- a folder holding other files, and --overwrite -----------------------------------------------


def test_a_folder_with_other_files_needs_overwrite_which_keeps_them(data, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "log.csv").write_text("epoch,loss\n7,0.1\n")  # a log of some other run
    assert _cli(data, out) == 2
    line = _error_line(capsys)
    assert "did not write (log.csv, notes.txt)" in line and "--overwrite" in line
    assert sorted(os.listdir(out)) == ["log.csv", "notes.txt"]  # untouched, not even a lock file

    assert _cli(data, out, "--overwrite") == 0
    assert (out / "notes.txt").read_text() == "my notes"
    assert _epochs(out) == [0, 1]  # the foreign row 7 is gone, not mixed in
    first_id = json.loads((out / "run_config.json").read_text())["run_id"]
    # A complete run is replaced by --overwrite (and --no-resume alone refuses it).
    assert _cli(data, out, "--no-resume") == 2
    assert "--overwrite" in _error_line(capsys)
    assert _cli(data, out, "--overwrite") == 0
    assert json.loads((out / "run_config.json").read_text())["run_id"] != first_id
    assert _epochs(out) == [0, 1] and (out / "notes.txt").read_text() == "my notes"


# --- stale model.keras ------------------------------------------------------------------------


@pytest.mark.slow
def test_resuming_never_returns_a_stale_model(data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    keras_asc.train(**_options(data, out))
    # A model.keras that is not the one this run recorded (copied in from elsewhere).
    (out / "model.keras").write_bytes(b"left from an earlier run")
    capsys.readouterr()
    result = keras_asc.train(**_options(data, out))
    assert "is not this run's result" in capsys.readouterr().err
    assert keras_asc.load_model(str(out / "model.keras")) is not None
    assert result.history["epoch"] == [0, 1]

    # A kill between the final save and its completion record: the model is not trusted,
    # the backup (still there) finishes the run without training an epoch again.
    from keras_asc.training.rundir import RunDir

    other = tmp_path / "killed"

    def killed(*args):
        raise _Stop()

    with monkeypatch.context() as patch:
        patch.setattr(RunDir, "mark_complete", killed)
        with pytest.raises(_Stop):
            keras_asc.train(**_options(data, other))
    assert (other / "model.keras").exists() and (other / "backup").exists()
    capsys.readouterr()
    result = keras_asc.train(**_options(data, other))
    assert "is not this run's result" in capsys.readouterr().err
    assert result.history["epoch"] == [0, 1] and _epochs(other) == [0, 1]
    assert (other / "complete.json").exists() and not (other / "backup").exists()
    # Now complete: the same call loads it.
    keras_asc.train(**_options(data, other))
    assert "already complete" in capsys.readouterr().err


# --- corrupt backup ---------------------------------------------------------------------------


def test_a_corrupt_backup_is_named_with_how_to_restart(data, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(_Stop):
        keras_asc.train(**_options(data, out), callbacks=[_StopAt(1)])
    state_path = out / "backup" / "backup.json"
    state = json.loads(state_path.read_text())
    assert state["epoch"] == 1
    weights = out / "backup" / state["weights"]
    good = weights.read_bytes()

    state_path.write_text("{not json")
    assert _cli(data, out) == 2
    line = _error_line(capsys)
    assert "backup" in line and "corrupt" in line and "backup.json is unreadable" in line
    assert "--overwrite" in line

    state_path.write_text(json.dumps(state))
    weights.unlink()
    assert _cli(data, out) == 2
    assert f"names {state['weights']}, which is missing" in _error_line(capsys)

    weights.write_bytes(good[: len(good) // 3])  # cut short
    assert _cli(data, out) == 2
    assert f"{state['weights']} cannot be loaded" in _error_line(capsys)

    weights.write_bytes(good)  # the user restores it: the run continues
    assert _cli(data, out) == 0
    assert _epochs(out) == [0, 1]


@pytest.mark.slow
def test_a_corrupt_backup_restarts_with_overwrite(data, tmp_path, capsys):
    other = tmp_path / "other"
    with pytest.raises(_Stop):
        keras_asc.train(**_options(data, other), callbacks=[_StopAt(1)])
    (other / "backup" / "backup.json").write_text("[]")
    assert _cli(data, other) == 2
    assert "should hold integer 'epoch'" in _error_line(capsys)
    assert _cli(data, other, "--overwrite") == 0
    assert _epochs(other) == [0, 1]


# --- disks ------------------------------------------------------------------------------------


def test_a_path_under_a_regular_file(data, tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder")
    out = blocker / "run"
    assert _cli(data, out) == 2
    line = _error_line(capsys)
    assert "Cannot create the run directory" in line and "regular file" in line
    blocker.unlink()
    assert _cli(data, out) == 0 and _epochs(out) == [0, 1]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores mode bits")
def test_a_read_only_folder(data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir(mode=0o555)
    try:
        assert _cli(data, out) == 2
        assert "permission denied" in _error_line(capsys)
    finally:
        out.chmod(0o755)
    assert _cli(data, out) == 0 and _epochs(out) == [0, 1]


def _failing_replace(monkeypatch, code, target, after=0):
    """``os.replace`` onto a file named ``target`` fails with ``code`` after ``after`` successes."""
    real = os.replace
    calls = {"n": 0}

    def replace(source, destination, *args, **kwargs):
        if os.path.basename(os.fspath(destination)).endswith(target):
            calls["n"] += 1
            if calls["n"] > after:
                raise OSError(code, os.strerror(code), os.fspath(destination))
        return real(source, destination, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def test_a_full_disk_then_freed_space_resumes(data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    # The disk fills up at the second backup (end of epoch 0 is the first: 2 steps, no
    # mid-epoch backup): epoch 1's weights cannot be saved.
    with monkeypatch.context() as patch:
        _failing_replace(patch, errno.ENOSPC, ".weights.h5", after=1)
        assert _cli(data, out, epochs=3) == 2
    line = _error_line(capsys)
    assert "the disk is full" in line and "backup-2.weights.h5" in line and "continue" in line
    assert json.loads((out / "backup" / "backup.json").read_text())["epoch"] == 1
    assert not any(name.startswith(".") for name in os.listdir(out / "backup"))  # no temp file
    # Space freed: the same command continues from the last backup, each epoch logged once.
    assert _cli(data, out, epochs=3) == 0
    assert _epochs(out) == [0, 1, 2]


@pytest.mark.slow
def test_a_full_disk_at_the_final_save(data, tmp_path, capsys, monkeypatch):
    # Full while saving the final model: nothing is retrained once space is back.
    final = tmp_path / "final"
    with monkeypatch.context() as patch:
        _failing_replace(patch, errno.ENOSPC, "model.keras")
        assert _cli(data, final) == 2
    assert "the disk is full" in _error_line(capsys)
    assert not (final / "model.keras").exists()
    assert _cli(data, final) == 0 and _epochs(final) == [0, 1]


@pytest.mark.slow
def test_a_read_only_disk_then_writable_resumes(data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    # The file system turns read-only after the first epoch's log row: the checkpoint fails.
    with monkeypatch.context() as patch:
        _failing_replace(patch, errno.EROFS, "last.keras", after=1)
        assert _cli(data, out, epochs=3) == 2
    line = _error_line(capsys)
    assert "read-only" in line and "last.keras" in line
    assert _cli(data, out, epochs=3) == 0
    assert _epochs(out) == [0, 1, 2]


# --- kills at the epoch end (subprocess, SIGKILL) -----------------------------------------------

KILL_SOURCE = textwrap.dedent(
    f"""
    import json, os, signal, sys
    from keras_asc import plugins
    import keras_asc
    from keras_asc.training.callbacks import RunBackup

    sys.path.insert(0, {TESTS_DIR!r})
    from helpers import TinyMofle
    plugins.register_plugin(TinyMofle(), name="tiny-mofle-faults")
    options, where = json.loads(sys.argv[1]), sys.argv[2]
    save = RunBackup._save

    def killing_save(self, next_epoch):
        # Epoch-end backup of epoch 1 (next_epoch 2): kill just before or just after it.
        at_end = self.steps == 0
        if at_end and next_epoch == 2 and where == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        save(self, next_epoch)
        if at_end and next_epoch == 2 and where == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    RunBackup._save = killing_save
    keras_asc.train(**options)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["before", "after"])
def test_every_epoch_once_in_the_log_wherever_the_kill_lands(data, tmp_path, where):
    out = tmp_path / "run"
    options = _options(data, out, epochs=3)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    killed = subprocess.run(
        [sys.executable, "-c", KILL_SOURCE, json.dumps(options), where],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    # The row of epoch 1 is written before its backup; the backup says whether it is done.
    assert _epochs(out) == [0, 1]
    state = json.loads((out / "backup" / "backup.json").read_text())
    assert state["epoch"] == (1 if where == "before" else 2)
    result = keras_asc.train(**options)
    assert result.history["epoch"] == [0, 1, 2] and _epochs(out) == [0, 1, 2]


# --- the ensemble command writes run folders too ----------------------------------------------


def test_an_ensemble_never_replaces_a_training_run(tmp_path, capsys):
    members = []
    for index in range(2):
        run_dir = tmp_path / f"member{index}"
        run_dir.mkdir()
        keras_asc.build("tiny_mofle").save(run_dir / "model.keras")
        (run_dir / "run_config.json").write_text(json.dumps({"model": "tiny_mofle"}))
        members.append(str(run_dir))
    before = (tmp_path / "member0" / "model.keras").read_bytes()
    # --out names a training run (here one of the members): refused, nothing replaced.
    assert main(["ensemble", *members, "--weights", "0.5,0.5", "--out", members[0]]) == 2
    assert "not an ensemble" in _error_line(capsys)
    assert (tmp_path / "member0" / "model.keras").read_bytes() == before
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["ensemble", *members, "--weights", "0.5,0.5", "--out", str(blocker / "ens")]) == 2
    assert "Cannot write the ensemble" in _error_line(capsys)
    # An ensemble folder is rewritten by the next ensemble.
    assert main(["ensemble", *members, "--weights", "0.5,0.5", "--out", str(tmp_path / "ens")]) == 0
    assert main(["ensemble", *members, "--weights", "0.5,0.5", "--out", str(tmp_path / "ens")]) == 0
