"""Quiet by default: what keras-asc does so that the command line, the Python API and the
examples print only their own output.

Without ``--debug`` (the command line) or ``KERAS_ASC_DEBUG=1`` (anywhere):

- TensorFlow's native start-up log (absl's "All log messages before absl::InitializeLog()",
  oneDNN, the CUDA stub, the ``E0000 ... failed call to cuInit`` line, the CPU-feature note)
  is filtered out of file descriptor 2 while TensorFlow loads and finds its devices. Environment
  variables do not reach these lines (TensorFlow 2.21 writes them before it reads its log
  level), so the filter sits on the file descriptor. ``import keras_asc`` stays light: it only
  installs an import hook (:func:`install`), and the filter runs when something imports
  TensorFlow (Keras does, on the TensorFlow backend).
- TensorFlow's and absl's Python loggers (deprecation notes, ``tf.function`` retracing
  warnings) only pass errors.
- Deprecation warnings of other libraries (``DeprecationWarning``, ``FutureWarning``) are not
  shown.
- A warning keras-asc gives the user (:func:`warn`) is one line, ``keras-asc: warning: ...``,
  without the source line Python adds, and each message once per run.

With debugging on, nothing is filtered and warnings show as Python shows them.

Hand-written: these are process-level switches (a file descriptor, loggers, the warnings
display) that no library sets for another; they take effect only once, on first use.
"""

import contextlib
import importlib.abc
import logging
import os
import re
import sys
import tempfile
import warnings

DEBUG_VARIABLE = "KERAS_ASC_DEBUG"

# Native start-up log lines of TensorFlow / XLA / absl, written straight to file descriptor 2.
NATIVE_LOG_LINE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.]+\.(cc|h|cpp):\d+\]"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate)"
)
# Before TensorFlow is imported: its own log level, XLA's (glog) and gRPC's.
QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "TF_CPP_MAX_VLOG_LEVEL": "-1",
    "GLOG_minloglevel": "3",
    "GRPC_VERBOSITY": "ERROR",
    "GRPC_TRACE": "",
}
# Python loggers that pass errors only.
_QUIET_LOGGERS = ("tensorflow", "absl", "h5py", "jax._src.xla_bridge")


class KerasAscWarning(UserWarning):
    """A warning keras-asc gives the user: shown as one line, once per run."""


def debug_requested():
    """Whether ``KERAS_ASC_DEBUG`` asks for TensorFlow's logs and full warnings."""
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def warn(message):
    """Tell the user ``message`` (one line, once per run; a :class:`KerasAscWarning`, so a
    program can filter or catch it like any warning)."""
    warnings.warn(" ".join(str(message).split()), KerasAscWarning, stacklevel=2)


@contextlib.contextmanager
def native_stderr_filtered():
    """Send file descriptor 2 to a temporary file for the block, then copy to stderr every
    line of it that is not a native TensorFlow / absl log line."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (a detached process): nothing to filter
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line
                for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not NATIVE_LOG_LINE.match(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _quiet_python_loggers():
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    absl_logging = sys.modules.get("absl.logging")
    if absl_logging is not None:
        absl_logging.set_verbosity(absl_logging.ERROR)


def _start_tensorflow(tf):
    """Let TensorFlow find its devices (the cuInit line on machines without a GPU) and turn
    its Python logging down to errors."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        tf.config.list_physical_devices()
    _quiet_python_loggers()


def quiet_tensorflow_startup():
    """Import TensorFlow and let it find its devices with its start-up messages filtered out,
    so that later imports are silent. Does nothing when TensorFlow is already loaded."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if "tensorflow" in sys.modules:
        return
    with native_stderr_filtered():
        try:
            import tensorflow as tf
        except ImportError:
            return  # whoever needs it reports it
        _start_tensorflow(tf)


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader of ``tensorflow`` with its start-up log filtered."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with native_stderr_filtered():
            self.loader.exec_module(module)
            _start_tensorflow(module)

    def __getattr__(self, name):  # get_resource_reader, is_package, ...
        return getattr(self.loader, name)


class _TensorFlowFinder(importlib.abc.MetaPathFinder):
    """Gives the top-level ``tensorflow`` module a :class:`_QuietLoader`, the first time."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: find the real spec without this finder
        import importlib.util

        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _QuietLoader(spec.loader)
        return spec


_shown = set()
_show_original = None


def _show_warning(message, category, filename, lineno, file=None, line=None):
    # Ours: a KerasAscWarning, or any warning raised in keras-asc's own code.
    if issubclass(category, KerasAscWarning) or _package_file(filename):
        text = " ".join(str(message).split())
        if text not in _shown:
            _shown.add(text)
            print(f"keras-asc: warning: {text}", file=sys.stderr if file is None else file)
        return
    _show_original(message, category, filename, lineno, file, line)


_installed = False
_changes = {}


def _package_file(filename):
    return os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def install():
    """Quiet by default for this process (see the module doc); once, and not at all when
    ``KERAS_ASC_DEBUG`` is set. Called by ``import keras_asc``."""
    global _installed, _show_original
    if _installed:
        return
    _installed = True
    if debug_requested():
        return
    _changes["environment"] = [name for name in QUIET_ENVIRONMENT if name not in os.environ]
    for name in _changes["environment"]:
        os.environ[name] = QUIET_ENVIRONMENT[name]
    if "tensorflow" in sys.modules:
        _quiet_python_loggers()
    else:
        _changes["finder"] = _TensorFlowFinder()
        sys.meta_path.insert(0, _changes["finder"])
    before = list(warnings.filters)
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    # Every KerasAscWarning reaches _show_warning, which shows each message once.
    warnings.filterwarnings("always", category=KerasAscWarning)
    _changes["filters"] = [f for f in warnings.filters if f not in before]
    if warnings.showwarning is not _show_warning:
        _show_original = warnings.showwarning
        warnings.showwarning = _show_warning


def uninstall():
    """Undo :func:`install` (``keras-asc --debug``): TensorFlow's logs and Python's warnings
    as they come. Loggers already turned down stay so."""
    global _installed, _show_original
    _installed = False
    for name in _changes.pop("environment", ()):
        os.environ.pop(name, None)
    finder = _changes.pop("finder", None)
    if finder in sys.meta_path:
        sys.meta_path.remove(finder)
    for entry in _changes.pop("filters", ()):
        if entry in warnings.filters:
            warnings.filters.remove(entry)
    getattr(warnings, "_filters_mutated", lambda: None)()  # the filter cache (CPython)
    if _show_original is not None and warnings.showwarning is _show_warning:
        warnings.showwarning = _show_original
        _show_original = None
