"""Classify the acoustic scene of audio files of any length, rate and channel count.

Each file is decoded with ``keras_asc.data.audio.load_audio`` (libsndfile: WAV of any bit
depth, FLAC, OGG, MP3, any sample rate and channel count; stereo is averaged to mono;
resampled to 32 kHz with ``scipy.signal.resample_poly``) and cut into windows of the model's
input length (1 s for every keras-asc model):

- windows do not overlap and start at sample 0;
- a trailing remainder shorter than one window is **dropped** when the recording holds at
  least one full window (it would be mostly padding, and a scene is stationary enough that
  the full windows speak for it);
- a recording shorter than one window is **repeated** (wrapped around) to fill one window,
  rather than zero-padded: digital silence is not a scene and would bias the log-mel
  statistics the model was trained on.

The softmax probabilities of the windows are averaged into one distribution per file. A file
that cannot be read gets an error entry and the other files are still classified; so does a
file for which the model gives a NaN or infinite score (never a ``nan %``). A ``.keras`` model
whose weights are NaN or infinite is refused before any file is read.

Example:
    >>> predictions = predict_files("runs/moflenet57", ["street.wav", "park.wav"], top=3)
    >>> print(format_predictions(predictions))
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from keras_asc.data.audio import AudioDecodeError, load_audio
from keras_asc.data.resampling import resampler_of
from keras_asc.data.tau22 import SCENE_LABELS
from keras_asc.training.evaluation import (
    load_predictor,
    predict_logits,
    predictor_num_samples,
    softmax,
)

SAMPLING_RATE = 32000


@dataclasses.dataclass(frozen=True)
class FilePrediction:
    """The scene prediction for one file, or the reason it failed.

    Args:
        path: the file as given.
        probabilities: (classes,) mean window probabilities, ``None`` when ``error`` is set.
        num_windows: windows classified (0 on error).
        duration_seconds: length of the decoded recording in seconds (``None`` on error).
        class_names: one name per probability.
        top_scenes: the ``top`` most probable scenes as ``((name, probability), ...)``,
            best first (empty on error).
        window_seconds: window length in seconds.
        error: why the file could not be classified, else ``None``.
    """

    path: str
    probabilities: np.ndarray | None
    num_windows: int
    duration_seconds: float | None
    class_names: tuple = SCENE_LABELS
    top_scenes: tuple = ()
    window_seconds: float = 1.0
    error: str | None = None

    @property
    def ok(self):
        """Whether the file was classified."""
        return self.error is None

    def ranked(self, k=None):
        """The ``k`` most probable scenes (all when ``None``) as ``[(name, probability)]``,
        best first."""
        if not self.ok:
            return []
        order = np.argsort(-self.probabilities, kind="stable")
        if k is not None:
            order = order[: max(1, int(k))]
        return [(self.class_names[i], float(self.probabilities[i])) for i in order]

    @property
    def scene(self):
        """The most probable scene name (``None`` on error)."""
        return self.ranked(1)[0][0] if self.ok else None

    def to_dict(self):
        """A JSON-serialisable dict (``probabilities`` keyed by scene)."""
        return {
            "path": self.path,
            "error": self.error,
            "num_windows": self.num_windows,
            "duration_seconds": self.duration_seconds,
            "top": [{"scene": name, "probability": p} for name, p in self.top_scenes],
            "probabilities": None
            if self.probabilities is None
            else dict(zip(self.class_names, map(float, self.probabilities), strict=True)),
        }


def split_windows(waveform, window_length):
    """Cut a 1-D waveform into non-overlapping windows of ``window_length`` samples.

    The trailing remainder is dropped when at least one full window exists; a shorter
    recording is repeated (wrapped) to fill exactly one window.

    Args:
        waveform: (samples,) float array.
        window_length: samples per window.

    Returns:
        (windows, window_length) float32 array.

    Raises:
        ValueError: the waveform is empty or not one-dimensional.

    Example:
        >>> split_windows(np.arange(5.0), 2)
        array([[0., 1.],
               [2., 3.]], dtype=float32)
        >>> split_windows(np.arange(3.0), 4)
        array([[0., 1., 2., 0.]], dtype=float32)
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim != 1:
        raise ValueError(f"Expected a mono (samples,) waveform. Received shape {waveform.shape}.")
    if waveform.size == 0:
        raise ValueError("the recording holds no samples")
    count = waveform.size // window_length
    if count == 0:
        return np.resize(waveform, (1, window_length))  # np.resize repeats the data
    return waveform[: count * window_length].reshape(count, window_length)


def predict_waveform(predictor, waveform, *, batch_size=64, clip="the recording"):
    """Mean softmax probabilities of ``predictor`` over the 1-s windows of one waveform.

    Args:
        predictor: anything ``keras_asc.training.evaluation.load_predictor`` accepts.
        waveform: (samples,) float waveform at 32 kHz.
        batch_size: windows per ``predict`` call.
        clip: the recording's name, for the error on a NaN or infinite score.

    Returns:
        ``(probabilities, num_windows)``.

    Raises:
        keras_asc.finite.NonFiniteError: the model gave a NaN or infinite score for a window.
    """
    predictor = load_predictor(predictor)
    windows = split_windows(waveform, predictor_num_samples(predictor))
    names = [
        clip if len(windows) == 1 else f"{clip} (window {index + 1} of {len(windows)})"
        for index in range(len(windows))
    ]
    logits = np.concatenate(
        [
            predict_logits(
                predictor,
                windows[start : start + batch_size],
                names[start : start + batch_size],
            )
            for start in range(0, len(windows), batch_size)
        ]
    )
    return softmax(logits).mean(axis=0), len(windows)


def predict_files(model, paths, top=3, *, batch_size=64, class_names=SCENE_LABELS):
    """Classify audio files; a file that cannot be read gets an error entry, the rest go on.

    Args:
        model: a Keras model, a run directory, a ``.keras``/``.tflite`` file, or any object
            with ``predict(waveforms) -> logits`` (see ``load_predictor``).
        paths: audio files: WAV of any bit depth, FLAC, OGG, MP3 or anything else libsndfile
            reads, at any rate and channel count.
        top: how many of the most probable scenes each result lists in ``top_scenes``
            (``probabilities`` always holds every class).
        batch_size: windows per ``predict`` call.
        class_names: one name per logit column.

    Returns:
        A list of :class:`FilePrediction`, in the order of ``paths``.

    Example:
        >>> for p in predict_files("runs/ensemble_v2", ["a.wav"]):
        ...     print(p.path, p.top_scenes)
    """
    if int(top) != top or top < 1:
        raise ValueError(f"top must be a positive integer. Received: top={top}")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    predictor = load_predictor(model)
    window_seconds = predictor_num_samples(predictor) / SAMPLING_RATE
    resampler = resampler_of(predictor)  # the front-end's: as the model was trained
    results = []
    for path in paths:
        path = os.fspath(path)
        try:
            waveform = load_audio(
                path, sampling_rate=SAMPLING_RATE, mono=True, resampler=resampler
            )
            probabilities, num_windows = predict_waveform(
                predictor, waveform, batch_size=batch_size, clip=path
            )
        # A missing file, an unreadable one (OSError) and a corrupt or empty one (ValueError,
        # which AudioDecodeError is) are the user's data problems: report and continue. So is
        # a NaN or infinite score (NonFiniteError, a ValueError): that file gets no
        # probabilities, and its error names the model and the file.
        except (AudioDecodeError, OSError, ValueError) as error:
            message = str(error)
            if path not in message:
                message = f"{path}: {message}"
            results.append(
                FilePrediction(
                    path, None, 0, None, tuple(class_names), (), window_seconds, error=message
                )
            )
            continue
        if len(probabilities) != len(class_names):
            raise ValueError(
                f"The model returns {len(probabilities)} scores per window but "
                f"{len(class_names)} class names were given."
            )
        prediction = FilePrediction(
            path,
            probabilities,
            num_windows,
            waveform.size / SAMPLING_RATE,
            tuple(class_names),
            window_seconds=window_seconds,
        )
        results.append(dataclasses.replace(prediction, top_scenes=tuple(prediction.ranked(top))))
    return results


def format_predictions(predictions, top=None):
    """Render predictions as text: per file, its windows and its most probable scenes
    (``top_scenes``, or the ``top`` best when given)."""
    lines = []
    for prediction in predictions:
        if not prediction.ok:
            lines.append(f"{prediction.path}: ERROR: {prediction.error}")
            continue
        windows = "window" if prediction.num_windows == 1 else "windows"
        lines.append(
            f"{prediction.path} ({prediction.duration_seconds:.2f} s, "
            f"{prediction.num_windows} {windows} of {prediction.window_seconds:g} s)"
        )
        scenes = prediction.top_scenes if top is None else prediction.ranked(top)
        for rank, (name, probability) in enumerate(scenes, start=1):
            lines.append(f"  {rank}. {name:<18} {100 * probability:6.2f} %")
    return "\n".join(lines)
