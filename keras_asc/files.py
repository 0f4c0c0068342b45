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
import os
import tempfile

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
