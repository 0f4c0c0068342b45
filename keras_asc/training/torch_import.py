"""A PyTorch state dict as a saved keras-asc model (``keras-asc import-torch``).

Example:
    >>> from keras_asc.training.torch_import import import_torch_model
    >>> report = import_torch_model("dcase24_baseline", "baseline.ckpt", "baseline.keras")
"""

from keras_asc import registry
from keras_asc.files import save_model_atomic
from keras_asc.models.torch_weights import load_torch_weights


def import_torch_model(preset, weights_path, out_path, *, layout="auto"):
    """Build ``preset``, copy the PyTorch weights into it and save it as a ``.keras`` model.

    Args:
        preset: registered model the weights belong to, for example ``"dcase24_baseline"``.
        weights_path: file written by ``torch.save`` (a state dict or a PyTorch-Lightning
            checkpoint), read with ``torch.load(weights_only=True)``.
        out_path: the ``.keras`` file to write (atomically).
        layout: module naming of the state dict (``"auto"``: detected from the keys); see
            ``keras_asc.models.torch_weights.load_torch_weights``.

    Returns:
        The ``keras_asc.models.TorchWeightsReport`` of the copy.

    Raises:
        FileNotFoundError, ValueError: a missing file, an unknown preset, or weights that do
            not fit the preset.
        ImportError: PyTorch is not installed.
    """
    model = registry.build(preset)
    report = load_torch_weights(model, weights_path, layout=layout)
    save_model_atomic(model, out_path)
    return report
