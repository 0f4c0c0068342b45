"""The name -> builder tables that ``keras_asc.build`` reads, filled through the plugin hooks.

Each table is built on first use by calling every plugin's hook implementation separately, so a
plugin that raises while registering is reported by name and the others still load. A name
claimed by two plugins is reported naming both, and never stops the rest: when one of them is
built in, the built-in keeps the name (built-in models stay usable); otherwise neither gets it,
and building it is an error naming both.
"""

import dataclasses

from keras_asc import logs, plugins
from keras_asc.text import format_table

AUGMENTATION_STAGES = ("waveform", "spectrogram")


class PluginConflictError(ValueError):
    """Two plugins registered the same name."""


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: object
    config: dict
    description: str
    plugin: str

    def build(self, **overrides):
        return self.builder(**{**self.config, **overrides})


@dataclasses.dataclass(frozen=True)
class EnsembleEntry:
    name: str
    members: dict
    description: str
    plugin: str


@dataclasses.dataclass(frozen=True)
class AugmentationEntry:
    name: str
    augmentation: type
    stage: str
    description: str
    plugin: str


_tables = {}
# hook name -> {name claimed by two plugins (neither built-in) -> the error using it raises}.
_conflicts = {}
registration_errors = []
# The plugins.generation the tables were built for: register_plugin and unregister_plugin bump
# it, and the next lookup starts afresh.
_generation = None


def reset():
    """Forget the tables; the next lookup calls the hooks again."""
    global _generation
    _tables.clear()
    _conflicts.clear()
    registration_errors.clear()
    _generation = plugins.generation


def _is_builtin(plugin_name):
    return plugin_name in plugins.BUILTIN_PLUGINS


def _problem(message):
    registration_errors.append(message)
    logs.warn(message)


def _collect(hook_name, make_entry):
    if _generation != plugins.generation:
        reset()
    if hook_name in _tables:
        return _tables[hook_name]
    manager = plugins.load_plugins()
    table, conflicts = {}, {}
    for impl in getattr(manager.hook, hook_name).get_hookimpls():
        plugin_name = impl.plugin_name

        def register(name, *args, _plugin=plugin_name, **kwargs):
            entry = make_entry(name, *args, plugin=_plugin, **kwargs)
            if name in conflicts:
                conflicts[name].append(_plugin)
            elif name in table:
                # A name claimed twice: a built-in keeps it (so built-in models stay usable);
                # between two other plugins neither gets it, and using it names both.
                first = table[name].plugin
                if _is_builtin(first) or _is_builtin(_plugin):
                    kept = first if _is_builtin(first) else _plugin
                    table[name] = table[name] if kept == first else entry
                    _problem(
                        f"{hook_name}: the name {name!r} is registered by both plugin "
                        f"{first!r} and plugin {_plugin!r}; the built-in one is used. Uninstall "
                        f"the other or narrow loading with {plugins.ENV_VAR}."
                    )
                else:
                    del table[name]
                    conflicts[name] = [first, _plugin]
                return
            else:
                table[name] = entry

        try:
            impl.function(register=register)
        except Exception as error:  # noqa: BLE001 - report the plugin, keep the others
            _problem(
                f"plugin {plugin_name!r} raised while registering ({hook_name}): "
                f"{type(error).__name__}: {' '.join(str(error).split())}"
            )
    for name, owners in conflicts.items():
        message = (
            f"{hook_name}: the name {name!r} is registered by "
            f"{' and '.join(f'plugin {owner!r}' for owner in owners)}, so neither is used. "
            f"Uninstall one of them or narrow loading with {plugins.ENV_VAR}."
        )
        _problem(message)
    _tables[hook_name] = table
    _conflicts[hook_name] = {
        name: PluginConflictError(
            f"{hook_name}: the name {name!r} is registered by "
            f"{' and '.join(f'plugin {owner!r}' for owner in owners)}. Uninstall one of them or "
            f"narrow loading with {plugins.ENV_VAR}."
        )
        for name, owners in conflicts.items()
    }
    return table


def _model_entry(name, builder, config=None, description="", *, plugin):
    if not callable(builder):
        raise TypeError(f"Model {name!r}: builder must be callable. Received: builder={builder!r}")
    return ModelEntry(name, builder, dict(config or {}), description, plugin)


def _ensemble_entry(name, members, description="", *, plugin):
    members = dict(members)
    if len(members) < 2:
        raise ValueError(f"Ensemble {name!r} needs at least two members. Received: {members}")
    return EnsembleEntry(name, members, description, plugin)


def _augmentation_entry(name, augmentation, stage, description="", *, plugin):
    if stage not in AUGMENTATION_STAGES:
        raise ValueError(
            f"Augmentation {name!r}: stage must be one of {AUGMENTATION_STAGES}. Received: stage={stage!r}"
        )
    return AugmentationEntry(name, augmentation, stage, description, plugin)


def models():
    return _collect("register_models", _model_entry)


def ensembles():
    return _collect("register_ensembles", _ensemble_entry)


def augmentations():
    return _collect("register_augmentations", _augmentation_entry)


def _unknown(kind, name, known):
    return ValueError(f"Unknown {kind} {name!r}. Known {kind}s: {', '.join(sorted(known))}.")


def _check_conflict(hook_name, name):
    error = _conflicts.get(hook_name, {}).get(name)
    if error is not None:
        raise error


def get_model(name):
    table = models()
    _check_conflict("register_models", name)
    if name not in table:
        raise _unknown("model", name, list(table) + list(ensembles()))
    return table[name]


def get_augmentation(name):
    table = augmentations()
    _check_conflict("register_augmentations", name)
    if name not in table:
        raise _unknown("augmentation", name, table)
    return table[name]


def build(name, **overrides):
    """Build a registered model or ensemble by name; ``overrides`` replace preset arguments.

    For an ensemble, overrides (for example ``num_classes``) are passed to every member.
    """
    ensemble_table = ensembles()
    _check_conflict("register_ensembles", name)
    if name in ensemble_table:
        # Keras: imported on use, since `import keras_asc` (which imports this module) stays
        # free of Keras and TensorFlow.
        from keras_asc.models.ensemble import Ensemble

        entry = ensemble_table[name]
        members = [get_model(member).build(**overrides) for member in entry.members]
        return Ensemble(members=members, weights=list(entry.members.values()), name=name)
    return get_model(name).build(**overrides)


def list_models():
    """Names of every registered model preset and ensemble, sorted."""
    return sorted(list(models()) + list(ensembles()))


def list_augmentations(stage=None):
    """Names of registered augmentations, optionally of one stage."""
    return sorted(n for n, e in augmentations().items() if stage is None or e.stage == stage)


def _source(plugin_name):
    distribution = plugins.plugin_sources.get(plugin_name, plugin_name)
    if distribution == "keras_asc":
        return "built-in"
    return distribution if distribution == plugin_name else f"{plugin_name} ({distribution})"


def describe():
    """Every registry entry as plain (JSON-ready) data, and the plugin problems.

    Returns:
        ``{"models": [...], "ensembles": [...], "augmentations": [...], "problems": [...]}``:
        one dict per entry (name, plugin, description; the members of an ensemble, the stage of
        an augmentation), sorted by name; ``problems`` lists the plugins that failed to load or
        raised while registering. ``keras-asc list --json`` prints it.
    """
    models_ = [
        {"name": e.name, "plugin": _source(e.plugin), "description": e.description}
        for e in sorted(models().values(), key=lambda e: e.name)
    ]
    ensembles_ = [
        {
            "name": e.name,
            "members": dict(e.members),
            "plugin": _source(e.plugin),
            "description": e.description,
        }
        for e in sorted(ensembles().values(), key=lambda e: e.name)
    ]
    augmentations_ = [
        {
            "name": e.name,
            "stage": e.stage,
            "plugin": _source(e.plugin),
            "description": e.description,
        }
        for e in sorted(augmentations().values(), key=lambda e: e.name)
    ]
    problems = [f"plugin {name!r} failed to load: {error}" for name, error in plugins.load_errors]
    problems += list(registration_errors)
    return {
        "models": models_,
        "ensembles": ensembles_,
        "augmentations": augmentations_,
        "problems": problems,
    }


def _left_aligned(header, rows):
    return format_table(header, rows, left_columns=len(header))


def format_description(description):
    """The models, ensembles and augmentations of :func:`describe` as text tables (what
    ``keras-asc list`` prints; the problems are left to the caller)."""
    lines = ["Models"]
    lines += _left_aligned(
        ("name", "plugin", "description"),
        [(e["name"], e["plugin"], e["description"]) for e in description["models"]],
    )
    lines += ["", "Ensembles"]
    lines += _left_aligned(
        ("name", "members (logit weights)", "plugin"),
        [
            (e["name"], ", ".join(f"{m} {w:g}" for m, w in e["members"].items()), e["plugin"])
            for e in description["ensembles"]
        ],
    )
    lines += ["", "Augmentations"]
    lines += _left_aligned(
        ("name", "stage", "plugin", "description"),
        [
            (e["name"], e["stage"], e["plugin"], e["description"])
            for e in description["augmentations"]
        ],
    )
    return "\n".join(lines)
