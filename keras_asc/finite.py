"""No silent numbers: the one check that every path printing, writing or returning
probabilities runs on a model's outputs (and on the weights of a model it loads).

A NaN or infinite logit turns into ``nan %`` in ``predict``, ``null`` in its JSON, a NaN row in a
submission file or a metric computed from garbage. :func:`check_finite` refuses such values with
one line naming the model and the clip; ``keras_asc.training.evaluation.predict_logits`` (which
``predict``, ``evaluate`` and ``submit`` call), ``evaluate_predictions`` and
``keras_asc.quantization.TFLiteClassifier`` run it. :func:`check_finite_weights` refuses a loaded
model whose weights are already broken, before any clip is classified.

Example:
    >>> logits = check_finite(model.predict(waveforms), model=model.name, clips=filenames)
"""

import numpy as np


class NonFiniteError(ValueError):
    """A model's output (or weights) hold NaN or infinite values; nothing is reported.

    Attributes:
        model: the model's name (``None`` when unknown).
        rows: indices of the clips hit, in the checked batch (empty for weights).
        total: clips in the checked batch.
        what: ``"scores"`` or ``"inputs"`` (see :func:`check_finite`).
    """

    def __init__(self, message, model=None, rows=(), total=0, what="scores"):
        super().__init__(message)
        self.model, self.rows, self.total, self.what = model, tuple(rows), total, what

    def with_clips(self, clips):
        """The same error with the clips named (``clips``: one name per row of the batch);
        itself when it has no rows or the names do not fit."""
        if not self.rows or clips is None or len(clips) != self.total:
            return self
        return _error(self.model, self.rows, self.total, self.what, clips)


def _bad_rows(values):
    values = np.asarray(values)
    if values.ndim == 0:
        values = values.reshape(1)
    if values.size == 0 or not np.issubdtype(values.dtype, np.floating):
        return values, np.zeros(0, np.int64)
    finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    return values, np.flatnonzero(~finite)


def _error(model, rows, total, what, clips=None):
    first = int(rows[0])
    clip = str(clips[first]) if clips is not None else f"clip {first + 1} of {total}"
    others = f" (and {len(rows) - 1} more of the {total} clips)" if len(rows) > 1 else ""
    name = "the model" if model is None else f"model {model!r}"
    if what == "inputs":
        found = f"the log-mel inputs of {name} are NaN or infinite for {clip}{others}"
        cause = "the audio or the front-end constants are broken"
    else:
        found = f"{name} gave NaN or infinite scores for {clip}{others}"
        cause = "the model's weights or this input are broken"
    return NonFiniteError(
        f"{found}; expected finite numbers: {cause}, so no probabilities are reported.",
        model,
        rows,
        total,
        what,
    )


def check_finite(values, model, clips=None, what="scores"):
    """Raise when any value is NaN or infinite, naming the model and the first clip hit.

    Args:
        values: (clips, ...) array, one row per clip (logits, spectrograms).
        model: the model's name, as the user knows it (``None``: "the model").
        clips: optional name of each row (a file, ``"a.wav (window 2 of 3)"``); without them a
            row is named by its index.
        what: ``"scores"`` (the model's output: its weights or the input are broken) or
            ``"inputs"`` (what its front-end computed: the audio or the front-end constants
            are broken).

    Returns:
        ``values`` as an array, unchanged.

    Raises:
        NonFiniteError: one line naming the model, the first clip and how many are hit.
    """
    values, bad = _bad_rows(values)
    if len(bad):
        raise _error(model, bad, len(values), what, clips)
    return values


def check_finite_weights(model, source=None):
    """Raise when a Keras model holds a NaN or infinite weight (before it classifies anything).

    Args:
        model: a Keras model.
        source: the file it was loaded from, for the message.

    Raises:
        NonFiniteError: one line naming the model (and file) and the first weight hit.
    """
    import keras

    broken = [
        weight.path
        for weight in model.weights
        if str(weight.dtype).startswith(("float", "bfloat"))
        and not np.isfinite(keras.ops.convert_to_numpy(weight)).all()
    ]
    if broken:
        where = f" ({source})" if source else ""
        raise NonFiniteError(
            f"model {model.name!r}{where} has NaN or infinite values in {len(broken)} of its "
            f"{len(model.weights)} weights (first: {broken[0]}); expected a trained model with "
            "finite weights, so nothing was classified."
        )
