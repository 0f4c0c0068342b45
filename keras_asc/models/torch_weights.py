"""Load PyTorch state dicts into keras-asc models.

Why this is hand-written: no library maps a PyTorch ``state_dict`` onto the layers of a Keras
functional model. The two frameworks name and lay out the same tensors differently (torch conv
kernels are (out, in / groups, kh, kw), Keras kernels (kh, kw, in / groups, out); torch
BatchNorm2d ``weight`` / ``bias`` / ``running_mean`` / ``running_var`` are Keras ``gamma`` /
``beta`` / ``moving_mean`` / ``moving_variance``), and each public PyTorch code base names its
modules its own way. This module maps by structure and name, never by blind order: every Keras
weight asks for the torch key it expects under the chosen layout, and a tensor left over, a
weight with nothing to read or a shape that does not fit is an error naming the key.

Accepted layouts (``layout="auto"`` detects them from the keys):

* ``"torch_reference"``: ``benchmarks/torch_reference.py`` of this repository (``MobileNetwork``
  for ``moflenet57`` / ``dcase24_baseline``, ``CPResNet59`` for ``cp_resnet59``), e.g.
  ``stem1.conv.weight``, ``blocks.stage1_block1.expand.conv.weight``,
  ``blocks.stage1_block1.grn.gamma``, ``head.bn.running_mean``; ``network.`` in front when the
  network is wrapped with its front-end in ``WaveformModel``.
* ``"dcase2024_baseline"``: the DCASE 2024 Task 1 baseline (CP-Mobile) of CP-JKU, for
  ``dcase24_baseline``: ``in_c.0.0`` / ``in_c.0.1`` (stem conv / BN), ``stages.s1.b1.block.0.0``
  (expansion conv) ... ``block.2.1`` (projection BN), ``feed_forward.0`` / ``feed_forward.1``
  (head conv / BN).
* ``"cpjku_cp_resnet"``: the CP-JKU CP-ResNet naming, for ``cp_resnet59`` / ``cp_resnet_128k``:
  ``in_c.0`` / ``in_c.1`` (stem), ``stage1.block1.conv1`` / ``.bn1`` / ``.conv2`` / ``.bn2`` /
  ``.shortcut.conv`` / ``.shortcut.bn``, ``feed_forward.0`` / ``.1`` (head). Its blocks are
  matched to the Keras blocks in order of appearance (pooling layers have no weights).

PyTorch-Lightning checkpoints (weights under ``"state_dict"`` with a module prefix such as
``"model."``) load directly: the prefix is found from the keys, and entries outside it (the
mel front-end buffers ``mel.*``, other modules) are ignored, as are ``num_batches_tracked``
counters. Files are only ever read with ``torch.load(..., weights_only=True)``; a checkpoint
that also pickled other objects (hyper-parameter namespaces, callbacks) is refused, and the
error says how to re-save just its ``state_dict``. The Keras log-mel front-end has no weights
to load: it is computed from its config. The torch network must have the preset's
architecture (widths, expansion, groups); the first tensor that does not fit is reported with
both shapes.

Example:
    >>> import keras_asc
    >>> from keras_asc.models.torch_weights import load_torch_weights
    >>> model = keras_asc.build("dcase24_baseline")
    >>> report = load_torch_weights(model, "baseline_state_dict.pt")
    >>> print(report)  # Loaded 105 tensors (dcase2024_baseline layout, prefix 'model.') ...
"""

import collections.abc
import dataclasses
import os
import re
import warnings

import keras
import numpy as np

from keras_asc.layers.blocks import leaf_layers
from keras_asc.layers.frontend import LogMelSpectrogram
from keras_asc.layers.normalization import GlobalResponseNormalization
from keras_asc.text import install_hint

LAYOUTS = ("torch_reference", "dcase2024_baseline", "cpjku_cp_resnet")

# A key that every state dict of the layout holds, and which fixes the module prefix in front
# of the network (``""``, ``"model."``, ``"network."``, ...).
_ANCHORS = {
    "torch_reference": re.compile(r"^((?:[^.]+\.)*?)stem1?\.conv\.weight$"),
    "dcase2024_baseline": re.compile(r"^((?:[^.]+\.)*?)in_c\.0\.0\.weight$"),
    "cpjku_cp_resnet": re.compile(r"^((?:[^.]+\.)*?)in_c\.0\.weight$"),
}
_ANCHOR_EXAMPLES = {
    "torch_reference": "stem1.conv.weight or stem.conv.weight",
    "dcase2024_baseline": "in_c.0.0.weight",
    "cpjku_cp_resnet": "in_c.0.weight",
}
# Top-level modules below the prefix that belong to a torch front-end, not to the network.
_FRONTEND_MODULES = ("mel", "frontend")

_BLOCK = r"(stage\d+_block\d+)"
_MOBILE_PARTS = ("expand", "depthwise", "project")
_RESNET_PARTS = {
    "conv1_conv": "conv1",
    "conv1_bn": "bn1",
    "conv2_conv": "conv2",
    "conv2_bn": "bn2",
    "shortcut_conv": "shortcut.conv",
    "shortcut_bn": "shortcut.bn",
}


@dataclasses.dataclass(frozen=True)
class TorchWeightsReport:
    """What ``load_torch_weights`` did.

    Attributes:
        layout: the layout used (detected or given).
        prefix: the module prefix in front of the network keys (``""`` when none).
        mapped: ``(torch key, Keras weight path)`` pairs, in Keras layer order.
        ignored: torch keys skipped on purpose (outside the prefix, front-end buffers,
            ``num_batches_tracked``).
        missing: Keras weight paths left unchanged (only with ``strict=False``).
        unexpected: torch keys with no Keras counterpart (only with ``strict=False``).
    """

    layout: str
    prefix: str
    mapped: tuple
    ignored: tuple
    missing: tuple = ()
    unexpected: tuple = ()

    def __str__(self):
        text = (
            f"Loaded {len(self.mapped)} tensors ({self.layout} layout, prefix {self.prefix!r}); "
            f"ignored {len(self.ignored)}"
        )
        if self.missing:
            text += f"; {len(self.missing)} Keras weights left unchanged"
        if self.unexpected:
            text += f"; {len(self.unexpected)} torch tensors unused"
        return text + "."


def load_torch_weights(model, source, *, layout="auto", strict=True, prefix=None):
    """Copy a PyTorch state dict into a keras-asc model, by structure and name.

    Conv kernels are transposed from (out, in / groups, kh, kw) to (kh, kw, in / groups, out),
    depthwise kernels from (C, 1, kh, kw) to (kh, kw, C, 1); BatchNorm2d ``weight``, ``bias``,
    ``running_mean`` and ``running_var`` become ``gamma``, ``beta``, ``moving_mean`` and
    ``moving_variance``; GRN scalars are copied as they are. Everything is checked before the
    first weight is written, so a failed load leaves the model unchanged.

    Args:
        model: a classifier from ``keras_asc.build(preset)`` (its front-end has no weights to
            load; the weights go into its ``backbone``) or a backbone. For an ensemble, load
            each member.
        source: path of a file written by ``torch.save`` (a ``state_dict``, or a
            PyTorch-Lightning checkpoint with the weights under ``"state_dict"``), or an
            in-memory mapping of torch tensors or NumPy arrays. Files are read with
            ``torch.load(path, map_location="cpu", weights_only=True)`` only, never with
            unrestricted pickle.
        layout: ``"auto"`` (detect from the keys), ``"torch_reference"``,
            ``"dcase2024_baseline"`` or ``"cpjku_cp_resnet"``; see the module docstring.
        strict: raise when a torch tensor has no Keras counterpart or a Keras weight has
            nothing in the state dict. With ``strict=False`` both are listed in the report and
            the weights concerned keep their values. Shape mismatches always raise.
        prefix: module prefix in front of the network keys (for example ``"model."``);
            ``None`` finds it from the keys. Keys outside the prefix are ignored.

    Returns:
        A ``TorchWeightsReport`` with the layout and prefix used and the
        ``(torch key, Keras weight path)`` pairs copied.

    Raises:
        ValueError: unreadable file, unknown or undetectable layout, a tensor without Keras
            counterpart, a Keras weight without tensor, or a shape mismatch (one line naming
            the key).
        ImportError: ``source`` is a path and torch is not installed.

    Example:
        >>> import keras_asc
        >>> from keras_asc.models.torch_weights import load_torch_weights
        >>> model = keras_asc.build("cp_resnet59")
        >>> report = load_torch_weights(model, "cp_resnet59.pt")
        >>> print(report)  # Loaded 60 tensors (torch_reference layout, prefix '') ...
    """
    if layout != "auto" and layout not in LAYOUTS:
        raise ValueError(
            f"Unknown layout {layout!r}. Accepted layouts: 'auto', "
            + ", ".join(repr(name) for name in LAYOUTS)
            + "."
        )
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a Keras model. Received: {type(model).__name__}")
    if isinstance(getattr(model, "backbone", None), keras.Model):
        model = model.backbone
    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    if nested:
        raise ValueError(
            f"{model.name!r} contains nested models {nested}; load each member separately, "
            f"e.g. load_torch_weights(model.get_layer({nested[0]!r}), ...)."
        )
    tensors, description = _read_source(source)
    layout, prefix = _resolve_layout(tensors, description, layout, prefix)

    ignored, relative = [], {}
    for key in tensors:
        if not key.startswith(prefix):
            ignored.append(key)
            continue
        rest = key[len(prefix) :]
        if rest.endswith("num_batches_tracked") or rest.split(".")[0] in _FRONTEND_MODULES:
            ignored.append(key)
        else:
            relative[rest] = key

    block_map = None
    if layout == "cpjku_cp_resnet":
        block_map = _cp_resnet_block_map(model, relative, description)
    layer_prefix = _keras_layer_prefix(model)

    mapped, missing, assignments, used = [], [], [], set()
    for layer in leaf_layers(model):
        if not layer.weights or _is_frontend(layer):
            continue
        suffix = (
            layer.name[len(layer_prefix) :] if layer.name.startswith(layer_prefix) else layer.name
        )
        module = _torch_module(layout, suffix, block_map)
        for variable, param, kind in _layer_variables(layer):
            path = _variable_path(layer, variable)
            if module is None or param is None:
                missing.append((path, None))
                continue
            rel_key = f"{module}.{param}"
            if rel_key not in relative:
                missing.append((path, prefix + rel_key))
                continue
            key = relative[rel_key]
            used.add(rel_key)
            value = _to_keras(tensors[key], kind, tuple(variable.shape), key, layer, path)
            assignments.append((variable, value))
            mapped.append((key, path))

    unexpected = [key for rel_key, key in relative.items() if rel_key not in used]
    if strict and unexpected:
        raise ValueError(
            f"{_count(unexpected, 'tensor')} in {description} "
            f"({layout} layout, prefix {prefix!r}) with no Keras counterpart in "
            f"{model.name!r}: {_listing(unexpected)}. Pass strict=False to skip them."
        )
    if strict and missing:
        found = len(mapped)
        listed = [
            f"{path} (expected key {key!r})" if key else f"{path} (no {layout} counterpart)"
            for path, key in missing
        ]
        raise ValueError(
            f"Nothing in {description} ({layout} layout, prefix {prefix!r}) for "
            f"{_count(missing, 'Keras weight')} of {model.name!r} ({found} of "
            f"{found + len(missing)} found): {_listing(listed, quote=False)}. "
            f"Pass strict=False to keep their current values."
        )
    for variable, value in assignments:
        variable.assign(value.astype(_numpy_dtype(variable)))
    return TorchWeightsReport(
        layout=layout,
        prefix=prefix,
        mapped=tuple(mapped),
        ignored=tuple(ignored),
        missing=tuple(path for path, _ in missing),
        unexpected=tuple(unexpected),
    )


# === Reading the source ===


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError(f"Reading PyTorch files needs torch: {install_hint('torch')}.") from None
    return torch


def _read_source(source):
    """Return ``({key: numpy array}, description)`` from a path or a mapping."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        description = repr(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No PyTorch weights file at {path!r}.")
        torch = _import_torch()
        try:
            with warnings.catch_warnings():
                # Torch's note on a file pickled with another protocol: ours is the error below.
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                content = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # any failure means "not safely readable"
            raise ValueError(
                f"Could not read {path!r} safely with torch.load(weights_only=True): "
                f"{_load_failure(error)}. If it is a checkpoint that pickles other objects, "
                f"re-save only the state dict where you trust the file, e.g. "
                f'torch.save(ckpt["state_dict"], "weights.pt").'
            ) from None
    elif isinstance(source, collections.abc.Mapping):
        content, description = source, "the given state dict"
    else:
        raise TypeError(
            f"source must be a file path or a mapping of tensors. Received: {type(source).__name__}"
        )
    if isinstance(content, collections.abc.Mapping) and isinstance(
        content.get("state_dict"), collections.abc.Mapping
    ):
        content = content["state_dict"]
    if not isinstance(content, collections.abc.Mapping):
        raise ValueError(
            f"{description} holds a {type(content).__name__}, not a state dict (a mapping of "
            f"tensors, or a checkpoint with one under 'state_dict')."
        )
    tensors = {}
    for key, value in content.items():
        array = _to_numpy(value)
        if isinstance(key, str) and array is not None:
            tensors[key] = array
    if not tensors:
        raise ValueError(
            f"{description} holds no tensors, neither at the top level nor under 'state_dict'. "
            f"Keys: {_listing([str(key) for key in content])}."
        )
    return tensors, description


# What torch's weights-only unpickler says, in our words: (pattern, reason). Torch wraps these
# in several sentences of advice (re-run with weights_only=False, file an issue), which the
# message here replaces with its own.
_LOAD_FAILURES = (
    (r"Unsupported global: GLOBAL ([\w.]+)", "it pickles {0}, which weights_only loading refuses"),
    (
        r"unsupported GLOBAL ([\w.]+) whose module ([\w.]+) is blocked",
        "it pickles {0}, and module {1} is never loaded from a weights file",
    ),
    (
        r"Trying to call reduce for unrecognized function ([^\n]+?)(?: which belongs to|$)",
        "it calls {0} when unpickled, which weights_only loading refuses",
    ),
    (
        r"Can only (?:build|create new object)[^\n]* but got (<class [^>]+>|[\w.]+)",
        "it holds a {0}, which weights_only loading refuses",
    ),
    (
        r"Unsupported operand (\d+)",
        "pickle opcode {0} is not one torch.save writes (is it a torch.save file?)",
    ),
    # Any other refusal of the weights-only unpickler: its reason, whole.
    (r"WeightsUnpickler error:\s*([^\n]+?)\.?\s*$", "the weights-only unpickler refused it: {0}"),
)


def _load_failure(error):
    """A short reason for a failed ``torch.load``, in whole sentences of our own, without
    torch's multi-line advice."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    for pattern, reason in _LOAD_FAILURES:
        match = re.search(pattern, text, re.MULTILINE)
        if match:
            return reason.format(*match.groups())
    # Anything else: the first sentence torch wrote, whole.
    sentence = re.split(r"(?<=[.!?])\s|\n", text.strip(), maxsplit=1)[0].strip().rstrip(".")
    detail = f": {sentence}" if sentence else ""
    return f"{type(error).__name__}{detail} (is it a torch.save file?)"


def _to_numpy(value):
    """A NumPy array for a tensor or array; None for anything else."""
    if type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach"):
        value = value.detach().cpu()
        if value.is_floating_point() and value.element_size() < 4:
            value = value.float()  # float16 / bfloat16 have no (exact) NumPy twin
        return value.numpy()
    if isinstance(value, (str, bytes)) or not hasattr(value, "__array__"):
        return None
    array = np.asarray(keras.ops.convert_to_numpy(value))
    return None if array.dtype == object else array


def _resolve_layout(tensors, description, layout, prefix):
    layouts = LAYOUTS if layout == "auto" else (layout,)
    found = set()
    for key in tensors:
        for name in layouts:
            match = _ANCHORS[name].match(key)
            if match and (prefix is None or match.group(1) == prefix):
                found.add((name, match.group(1)))
    if len(found) == 1:
        return found.pop()
    if not found:
        if layout != "auto" and prefix is not None:
            return layout, prefix
        expected = "; ".join(f"{name}: {_ANCHOR_EXAMPLES[name]}" for name in layouts)
        within = "" if prefix is None else f" under prefix {prefix!r}"
        raise ValueError(
            f"Could not detect the layout of {description}: no key{within} like ({expected}). "
            f"Accepted layouts: {', '.join(LAYOUTS)}. First keys: {_listing(list(tensors))}."
        )
    choices = ", ".join(f"{name} under {pre!r}" for name, pre in sorted(found))
    raise ValueError(
        f"{description} holds several networks ({choices}); pass layout= and prefix= to choose one."
    )


# === Keras side ===


def _keras_layer_prefix(model):
    prefix = f"{model.name}_"
    if any(layer.name.startswith(prefix) for layer in leaf_layers(model)):
        return prefix
    for layer in leaf_layers(model):  # the model was renamed after it was built
        if layer.name.endswith("_head_conv"):
            return layer.name[: -len("head_conv")]
    return prefix


def _is_frontend(layer):
    return isinstance(layer, LogMelSpectrogram)


def _layer_variables(layer):
    """``(variable, torch parameter name, kind)`` for every weight of a layer.

    The parameter name is None for layer types this loader does not know, so their weights
    are reported as missing rather than filled by guesswork.
    """
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        variables = [(layer.kernel, "weight", "depthwise")]
        if layer.use_bias:
            variables.append((layer.bias, "bias", "vector"))
        return variables
    if isinstance(layer, keras.layers.Conv2D):
        variables = [(layer.kernel, "weight", "conv")]
        if layer.use_bias:
            variables.append((layer.bias, "bias", "vector"))
        return variables
    if isinstance(layer, keras.layers.BatchNormalization):
        variables = []
        if layer.scale:
            variables.append((layer.gamma, "weight", "vector"))
        if layer.center:
            variables.append((layer.beta, "bias", "vector"))
        variables.append((layer.moving_mean, "running_mean", "vector"))
        variables.append((layer.moving_variance, "running_var", "vector"))
        return variables
    if isinstance(layer, GlobalResponseNormalization):
        return [(layer.gamma, "gamma", "scalar"), (layer.beta, "beta", "scalar")]
    return [(variable, None, None) for variable in layer.weights]


def _variable_path(layer, variable):
    # "layer/weight": layer names are unique in a keras-asc network, block sub-layers included.
    return f"{layer.name}/{variable.name}"


def _numpy_dtype(variable):
    return np.dtype(keras.backend.standardize_dtype(variable.dtype))


# === Layouts: Keras layer name (without the model prefix) -> torch module path ===


def _torch_module(layout, suffix, block_map):
    """The torch module path of a Keras layer under ``layout``, or None if it has none."""
    if layout == "torch_reference":
        match = re.fullmatch(r"(stem\d?|head)_(conv|bn)", suffix)
        if match:
            return f"{match.group(1)}.{match.group(2)}"
        match = re.fullmatch(_BLOCK + r"_(expand|depthwise|project)_(conv|bn)", suffix)
        if match:
            return f"blocks.{match.group(1)}.{match.group(2)}.{match.group(3)}"
        match = re.fullmatch(_BLOCK + r"_grn", suffix)
        if match:
            return f"blocks.{match.group(1)}.grn"
        match = re.fullmatch(_BLOCK + r"_(conv1|conv2|shortcut)_(conv|bn)", suffix)
        if match:
            return f"{match.group(1)}.{match.group(2)}.{match.group(3)}"
        return None
    if layout == "dcase2024_baseline":
        match = re.fullmatch(r"stem([12])_(conv|bn)", suffix)
        if match:
            return f"in_c.{int(match.group(1)) - 1}.{0 if match.group(2) == 'conv' else 1}"
        match = re.fullmatch(r"stage(\d+)_block(\d+)_(expand|depthwise|project)_(conv|bn)", suffix)
        if match:
            stage, block, part, kind = match.groups()
            index = _MOBILE_PARTS.index(part)
            return f"stages.s{stage}.b{block}.block.{index}.{0 if kind == 'conv' else 1}"
        return _feed_forward(suffix)
    # cpjku_cp_resnet
    if suffix in ("stem_conv", "stem_bn"):
        return "in_c.0" if suffix == "stem_conv" else "in_c.1"
    match = re.fullmatch(_BLOCK + "_(" + "|".join(_RESNET_PARTS) + ")", suffix)
    if match and match.group(1) in block_map:
        return f"{block_map[match.group(1)]}.{_RESNET_PARTS[match.group(2)]}"
    return _feed_forward(suffix)


def _feed_forward(suffix):
    return {"head_conv": "feed_forward.0", "head_bn": "feed_forward.1"}.get(suffix)


def _cp_resnet_block_map(model, relative, description):
    """Keras block name -> CP-JKU block path, both in order of appearance."""
    layer_prefix = _keras_layer_prefix(model)
    keras_blocks = set()
    for layer in leaf_layers(model):
        match = re.fullmatch(re.escape(layer_prefix) + _BLOCK + "_conv1_conv", layer.name)
        if match:
            keras_blocks.add(match.group(1))
    torch_blocks = set()
    for key in relative:
        match = re.match(r"(stage(\d+)\.block(\d+))\.", key)
        if match:
            torch_blocks.add(match.group(1))
    keras_blocks = sorted(keras_blocks, key=_block_order)
    torch_blocks = sorted(torch_blocks, key=_block_order)
    if len(keras_blocks) != len(torch_blocks):
        raise ValueError(
            f"{description} has {len(torch_blocks)} CP-ResNet blocks ({', '.join(torch_blocks)}) "
            f"but {model.name!r} has {len(keras_blocks)} ({', '.join(keras_blocks)}); the "
            f"cpjku_cp_resnet layout maps them one to one in order."
        )
    return dict(zip(keras_blocks, torch_blocks, strict=True))


def _block_order(name):
    return tuple(int(number) for number in re.findall(r"\d+", name))


# === Tensor conversion ===


def _to_keras(array, kind, keras_shape, key, layer, path):
    """Convert a torch-layout array to the Keras layout of ``path``; ValueError on mismatch."""
    if kind == "conv":
        expected = (keras_shape[3], keras_shape[2], keras_shape[0], keras_shape[1])
    elif kind == "depthwise":
        channels, multiplier = keras_shape[2], keras_shape[3]
        expected = (channels * multiplier, 1, keras_shape[0], keras_shape[1])
    else:
        expected = keras_shape
    shape = tuple(array.shape)
    if kind == "scalar" and array.size == 1 and keras_shape == ():
        shape = ()  # a GRN scalar saved as (1,) or (1, 1, 1, 1)
    if shape != tuple(expected):
        raise ValueError(
            f"Shape mismatch for {key!r}: torch shape {tuple(array.shape)} does not fit Keras "
            f"layer {layer.name!r} ({type(layer).__name__}) weight {path!r} of shape "
            f"{keras_shape} (expected torch shape {tuple(expected)})."
        )
    if kind == "conv":
        return array.transpose(2, 3, 1, 0)
    if kind == "depthwise":
        channels, multiplier = keras_shape[2], keras_shape[3]
        return array.reshape(channels, multiplier, *keras_shape[:2]).transpose(2, 3, 0, 1)
    return array.reshape(keras_shape)


# === Messages ===


def _count(items, noun):
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _listing(items, limit=6, quote=True):
    shown = [repr(item) if quote else str(item) for item in items[:limit]]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(shown) + more
