"""The file names of a run folder, and atomic writes, in one place for all of keras-asc.

Every file keras-asc writes for a user (models, metrics, plots, WAVs, configs, caches) goes
through ``atomic_path``: it is written to a temporary file in the target folder and renamed
over the target with ``os.replace``, so a reader (or a run interrupted and resumed) sees the
old file or the new one, never half of one. The standard library has the two pieces
(``tempfile.mkstemp``, ``os.replace``) but no helper joining them; writers that need a path
rather than a handle (``model.save``, ``figure.savefig``, ``soundfile.write``) take the
temporary path.

Example:
    >>> with atomic_path("runs/x/model.keras") as temporary:
    ...     model.save(temporary)
    >>> write_text_atomic("runs/x/run_config.json", "{}\\n")
"""

import contextlib
import errno
import os
import tempfile

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not locked
    fcntl = None

# === A training run folder (keras_asc.train, keras-asc train) ===
RUN_CONFIG = "run_config.json"  # model, split, seed, epochs, data dir, the effective recipe
FINAL_MODEL = "model.keras"  # written last: a run folder with it is complete
LOG_FILE = "log.csv"  # one row per epoch
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.keras"
BEST_CHECKPOINT = "best.keras"
BEST_STATE = "best.json"
BACKUP_DIR = "backup"  # weights and optimiser state of the last backup, removed when the run ends
TENSORBOARD_DIR = "tensorboard"
LOCK_FILE = ".keras-asc.lock"  # held (flock) by the train process that owns the folder
COMPLETE_RECORD = "complete.json"  # run id + SHA-256 of model.keras, written right after it
# Everything a training run writes into its folder; --overwrite removes only these.
RUN_FILES = (
    RUN_CONFIG,
    FINAL_MODEL,
    COMPLETE_RECORD,
    LOG_FILE,
    CHECKPOINT_DIR,
    BACKUP_DIR,
    TENSORBOARD_DIR,
    LOCK_FILE,
)
INT8_DIR = "int8"  # keras-asc quantize output, by default
METRICS_JSON = "metrics.json"


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    On any exception (KeyboardInterrupt included) the temporary file is removed, ``path`` is
    left as it was, and the exception propagates. The file gets the user's umask, like a file
    written with ``open``.

    Args:
        path: the file to write; its folder must exist.
        suffix: suffix of the temporary name (some writers pick the format from it); default
            the suffix of ``path``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if suffix is None:
        suffix = os.path.splitext(path)[1] or ".tmp"
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=suffix)
    os.close(descriptor)
    # mkstemp creates the file private (0600); the result gets the mode a plain open() would.
    os.chmod(temporary, 0o666 & ~_umask())
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def _umask():
    current = os.umask(0o022)
    os.umask(current)
    return current


def write_text_atomic(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)


def save_model_atomic(model, path):
    """``model.save(path)`` atomically: ``path`` never holds a half-written archive."""
    with atomic_path(path, suffix=".keras") as temporary:
        model.save(temporary, overwrite=True)


class RunDirError(RuntimeError):
    """A run folder cannot be used as it is: locked, unwritable, or holding a corrupt state.
    The message is one line that names the folder or file and says how to go on."""


class FolderLockedError(RunDirError):
    """Another process holds the lock of a folder."""


class FolderLock:
    """An exclusive ``fcntl.flock`` on ``LOCK_FILE`` inside ``folder``, as a context manager.

    The kernel releases the lock when the holder's process dies (a kill, a crash), so a lock
    never outlives its run and there is no stale lock file to clean up by hand; a second
    process (or a second open in the same process) is refused at once instead of waiting.
    The standard library has ``fcntl.flock`` but no lock-file helper around it, hence this
    class. On platforms without ``fcntl`` (Windows) the folder is not locked.
    """

    def __init__(self, folder, owner="keras-asc train"):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, LOCK_FILE)
        self.owner = owner
        self.handle = None

    def __enter__(self):
        if fcntl is None:
            return self
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until __exit__)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise FolderLockedError(
                    f"{self.folder!r} is in use by another {self.owner} (it holds the lock "
                    f"{LOCK_FILE}); wait for it to finish or choose another folder."
                ) from None
            raise
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")  # for a person looking; the lock itself is the flock
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc_info):
        if self.handle is not None:
            self.handle.close()  # closing the descriptor releases the flock
            self.handle = None
        return False
