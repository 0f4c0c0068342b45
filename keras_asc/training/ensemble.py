"""Combine trained models into a weighted-logit ensemble, check its budget and save it.

The ensemble is a ``keras_asc.models.Ensemble``: every member keeps its own front-end and
reads the same 1-s waveform; the logits are summed with fixed weights. The DCASE budget
applies to the sum of the members (parameters and MACs), so :func:`build_ensemble` refuses an
ensemble over it and says by how much.

Example:
    >>> ensemble = build_ensemble(["runs/cp_resnet59", "runs/moflenet57"], preset="v2",
    ...                           out_dir="runs/ensemble_v2")
    >>> keras_asc.training.evaluate("runs/ensemble_v2", "/data/tau22")

Reference:
    "Low complexity acoustic scene classification with MofleNet", DCASE 2024 Task 1 report
    (v1: CP-ResNet59 0.5 / MofleNet57 0.5; v2: CP-ResNet59 0.6 / MofleNet57 0.4).
"""

from __future__ import annotations

import os

import keras

from keras_asc import complexity, registry
from keras_asc.data.tau22 import expand_path, split_title
from keras_asc.files import FINAL_MODEL, RUN_CONFIG, RunDirError, save_model_atomic
from keras_asc.models.ensemble import Ensemble
from keras_asc.training.evaluation import (
    evaluate,
    format_comparison,
    report_result,
    resolve_model_path,
)
from keras_asc.training.rundir import RunDir
from keras_asc.training.saving import load_model
from keras_asc.version import __version__

# Short names for the built-in presets of keras_asc.models.presets.ENSEMBLE_PRESETS.
PRESET_ALIASES = {
    "v1": "moflenet57_cp_resnet59_v1",
    "v2": "moflenet57_cp_resnet59_v2",
}


def preset_weights(preset):
    """The ``{member model name: weight}`` map of an ensemble preset.

    Args:
        preset: ``"v1"``, ``"v2"`` or the name of any registered ensemble (plugins included).

    Example:
        >>> preset_weights("v2")
        {'cp_resnet59': 0.6, 'moflenet57': 0.4}
    """
    name = PRESET_ALIASES.get(preset, preset)
    table = registry.ensembles()
    if name not in table:
        known = sorted(list(PRESET_ALIASES) + list(table))
        raise ValueError(f"Unknown ensemble preset {preset!r}. Known presets: {', '.join(known)}.")
    return dict(table[name].members)


class _Member:
    """One ensemble member: where it comes from and the model name it is matched by."""

    def __init__(self, member):
        self.model = None
        self.source = None
        self.split = self.fingerprint = None
        if isinstance(member, keras.Model):
            self.model, self.name = member, member.name
            return
        if not isinstance(member, (str, os.PathLike)):
            raise TypeError(
                "Ensemble members must be Keras models, run directories or .keras files. "
                f"Received: {member!r}"
            )
        self.path, run_dir = resolve_model_path(member)
        if not self.path.endswith(".keras"):
            raise ValueError(
                f"Ensemble member {os.fspath(member)!r}: only Keras models (.keras) can be "
                "combined; ensemble the float models, then quantise the ensemble."
            )
        self.source = os.path.abspath(expand_path(member))
        # The run's recorded model name and split are known without loading the model.
        config = RunDir(run_dir).read_config() if run_dir is not None else None
        self.name = None if config is None else config.model
        if config is not None:
            self.split, self.fingerprint = config.split, config.split_fingerprint

    def describe_split(self):
        if self.split is None:
            return "split unknown"
        shown = split_title(self.split)
        return shown if self.fingerprint is None else f"{shown}, clips {self.fingerprint[:12]}"

    def load(self):
        if self.model is None:
            self.model = load_model(self.path)
            self.name = self.name or self.model.name
        return self.model


def _renamed(model, name):
    """A copy of ``model`` named ``name`` with the same weights (ensemble members need
    distinct names, and two runs of one preset share their model name)."""
    config = {**model.get_config(), "name": name}
    copy = type(model).from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def _common_split(loaded):
    """``(split, fingerprint)`` the members were trained on (``(None, None)`` when no member
    records one); members trained on different splits (or different clip lists under one
    split name) are refused, since the ensemble would use clips outside one split."""
    known = [member for member in loaded if member.split is not None]
    if not known:
        return None, None
    first = known[0]
    for other in known[1:]:
        same_fingerprint = None in (first.fingerprint, other.fingerprint) or (
            first.fingerprint == other.fingerprint
        )
        if other.split != first.split or not same_fingerprint:
            raise ValueError(
                f"Ensemble members were trained on different splits: {first.source} "
                f"({first.describe_split()}) and {other.source} ({other.describe_split()}); "
                "combine runs trained on the same split."
            )
    fingerprints = {member.fingerprint for member in known} - {None}
    return first.split, (fingerprints.pop() if len(fingerprints) == 1 else None)


def _match_preset(preset, member_names):
    mapping = preset_weights(preset)
    unmatched = [name for name in member_names if name not in mapping]
    if unmatched or len(member_names) != len(mapping) or len(set(member_names)) != len(mapping):
        raise ValueError(
            f"Preset {preset!r} combines {dict(mapping)}, but the members are "
            f"{member_names} (names from each run's run_config.json, else the model name). "
            "Give one member per preset model, or use explicit weights instead."
        )
    return [mapping[name] for name in member_names]


def build_ensemble(
    members,
    weights=None,
    *,
    preset=None,
    name=None,
    out_dir=None,
    enforce_budget=True,
):
    """Load trained members, weight their logits, check the DCASE budget and optionally save.

    Args:
        members: two or more trained members: Keras models taking (batch, 32000) waveforms,
            run directories (``model.keras`` inside) or ``.keras`` files.
        weights: one logit weight per member, in the order of ``members``. Give either
            ``weights`` or ``preset``.
        preset: ``"v1"``, ``"v2"`` or a registered ensemble name; each member is matched to
            a preset model by the model name its run recorded (``run_config.json``), or by its
            Keras name, so the order of ``members`` does not matter.
        name: name of the ensemble model (default: the preset's name, else ``"ensemble"``).
        out_dir: when given, write ``model.keras`` and ``run_config.json`` there (atomically).
        enforce_budget: raise ``keras_asc.complexity.BudgetExceededError`` (naming the excess)
            when the combined members exceed 128,000 int8 bytes or 30 M MACs.

    Returns:
        The ``keras_asc.models.Ensemble``.

    Example:
        >>> ensemble = build_ensemble([cp_resnet, moflenet], weights=[0.6, 0.4], name="v2")
    """
    members = list(members)
    if len(members) < 2:
        raise ValueError(f"An ensemble needs two or more members. Received {len(members)}.")
    if (weights is None) == (preset is None):
        raise ValueError(
            "Give exactly one of weights (one per member) or preset ('v1', 'v2' or a registered "
            f"ensemble). Received: weights={weights!r}, preset={preset!r}"
        )
    loaded = [_Member(member) for member in members]
    split = _common_split(loaded)
    if any(member.name is None for member in loaded):
        for member in loaded:
            member.load()  # a bare .keras file: its name is the model's name
    member_names = [member.name for member in loaded]
    if preset is not None:
        weights = _match_preset(preset, member_names)
        name = name or PRESET_ALIASES.get(preset, preset)
    weights = [float(w) for w in weights]
    if len(weights) != len(members):
        raise ValueError(
            f"Got {len(weights)} weights for {len(members)} members; give one weight per member."
        )
    models = []
    seen = set()
    for index, member in enumerate(loaded):
        model = member.load()
        if model.name in seen:
            model = _renamed(model, f"{model.name}_{index}")
        seen.add(model.name)
        models.append(model)
    ensemble = Ensemble(models, weights=weights, name=name or "ensemble")
    report = complexity.check_budget(ensemble)
    if enforce_budget:
        complexity.assert_within_budget(ensemble)

    if out_dir is not None:
        _write_ensemble(ensemble, RunDir(out_dir), preset, loaded, models, weights, report, split)
    return ensemble


def _ensemble_folder_error(out_dir, error):
    return RunDirError(f"Cannot write the ensemble to {out_dir!r}: {error.strerror or error}.")


def _write_ensemble(ensemble, run, preset, loaded, models, weights, report, split):
    """Write ``model.keras`` and ``run_config.json`` into the folder ``run``, locked (as a
    training run locks its folder), and never over a training run's files."""
    out_dir = run.path
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as error:
        raise _ensemble_folder_error(out_dir, error) from None
    with run.lock("keras-asc process"):
        if os.path.exists(run.config_path):
            try:
                kind = run.config.kind
            except RunDirError:
                kind = None
            if kind != "ensemble":
                raise FileExistsError(
                    f"--out {out_dir!r} holds a run that is not an ensemble ({RUN_CONFIG}); its "
                    f"{FINAL_MODEL} would be replaced: choose another folder."
                )
        run_config = {
            "kind": "ensemble",
            "model": ensemble.name,
            "preset": preset,
            "split": split[0],
            "split_fingerprint": split[1],
            "members": [
                {
                    "model": member.name,
                    "keras_name": model.name,
                    "source": member.source,
                    "split": member.split,
                    "split_fingerprint": member.fingerprint,
                    "weight": w,
                }
                for member, model, w in zip(loaded, models, weights, strict=True)
            ],
            "weights": weights,
            "complexity": {
                "params": report.params,
                "param_bytes_int8": report.param_bytes,
                "macs": report.macs,
                "within_budget": report.ok,
            },
            "keras_backend": keras.backend.backend(),
            "keras_asc_version": __version__,
        }
        try:
            save_model_atomic(ensemble, run.model_path)
            run.write_config(run_config)
        except OSError as error:
            raise _ensemble_folder_error(out_dir, error) from None


def ensemble_and_report(
    members,
    weights=None,
    *,
    preset=None,
    name=None,
    out_dir,
    data_dir=None,
    split="test",
    compare=False,
    batch_size=64,
    cache_dir=None,
):
    """:func:`build_ensemble` into ``out_dir``, print it and its budget, and optionally
    evaluate it: what ``keras-asc ensemble`` does.

    Args:
        members, weights, preset, name: as for :func:`build_ensemble` (the budget is enforced).
        out_dir: folder for ``model.keras`` and ``run_config.json``.
        data_dir: when given, evaluate the ensemble on this TAU22-layout dataset and save the
            metrics in ``out_dir/eval-<split>``.
        split: the split to evaluate.
        compare: with ``data_dir``, also evaluate every member and print a comparison table.
        batch_size: clips per prediction batch.
        cache_dir: optional folder for the decoded-audio cache.

    Returns:
        ``(ensemble, results)``: ``results`` maps names to
        :class:`~keras_asc.training.evaluation.EvaluationResult` (empty without ``data_dir``;
        the members too with ``compare``).
    """
    out_dir = expand_path(out_dir)
    ensemble = build_ensemble(members, weights, preset=preset, name=name, out_dir=out_dir)
    described = ", ".join(
        f"{m.name} {w:g}" for m, w in zip(ensemble.members, ensemble.member_weights, strict=True)
    )
    print(f"Ensemble {ensemble.name}: {described}")
    print(complexity.check_budget(ensemble))
    print(f"wrote {os.path.join(out_dir, FINAL_MODEL)}")
    if not data_dir:
        return ensemble, {}
    result = evaluate(ensemble, data_dir, split=split, batch_size=batch_size, cache_dir=cache_dir)
    results = {}
    if compare:
        for source, member in zip(members, ensemble.members, strict=True):
            results[f"{member.name} ({source})"] = evaluate(
                member,
                data_dir,
                split=split,
                batch_size=batch_size,
                cache_dir=cache_dir,
                verbose=False,
            )
    report_result(result, os.path.join(out_dir, f"eval-{split}"), command="ensemble")
    results[ensemble.name] = result
    if len(results) > 1:
        print()
        print(format_comparison(results))
    return ensemble, results
