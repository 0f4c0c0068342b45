"""The keras-asc plugin manager: built-ins and entry-point plugins, with a kill switch.

Set ``KERAS_ASC_PLUGINS`` to narrow what is loaded: unset loads every installed plugin, an empty
string loads none (built-ins only), and a comma-separated list of distribution or entry-point
names loads only those.
"""

import importlib.metadata
import inspect
import os
import re

import pluggy

from keras_asc import hookspecs, logs

ENTRY_POINT_GROUP = "keras_asc"
ENV_VAR = "KERAS_ASC_PLUGINS"
BUILTIN_PLUGINS = ("keras_asc.builtin",)

pm = pluggy.PluginManager("keras_asc")
pm.add_hookspecs(hookspecs)

_loaded = False
# name -> distribution name (or "keras_asc" for built-ins), for `keras-asc plugins`.
plugin_sources = {}
# (plugin name, error message) for plugins that failed to import; they do not break the rest.
load_errors = []
# Bumped whenever the set of registered plugins changes at runtime; keras_asc.registry rebuilds
# its tables when it sees a new value. (The registry sits above this module and reads it; this
# module never imports the registry, so the two do not import each other.)
generation = 0


def _hook_names():
    return sorted(
        name for name in dir(hookspecs) if getattr(getattr(hookspecs, name), "keras_asc_spec", None)
    )


def _validate(plugin, name):
    """Problems with a plugin's hook implementations, as one-line messages naming the plugin
    and the hook: a name that is no keras-asc hook (a misspelling would otherwise be ignored)
    and a signature other than the hook's."""
    known = _hook_names()
    problems = []
    for attribute in dir(plugin):
        if pm.parse_hookimpl_opts(plugin, attribute) is None:
            continue
        if attribute not in known:
            problems.append(
                f"plugin {name!r}: hook {attribute!r} is not a keras-asc hook (known hooks: "
                f"{', '.join(known)})"
            )
            continue
        expected = list(inspect.signature(getattr(hookspecs, attribute)).parameters)
        try:
            parameters = inspect.signature(getattr(plugin, attribute)).parameters.values()
        except (TypeError, ValueError):
            continue
        required = [
            p.name
            for p in parameters
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"
        ]
        if required != expected:
            problems.append(
                f"plugin {name!r}: hook {attribute!r} takes ({', '.join(required)}), expected "
                f"({', '.join(expected)})"
            )
    return problems


def _one_line(error, name):
    """A pluggy validation error as one line naming the plugin and the hook."""
    text = str(getattr(error, "message", error))
    hook = re.search(r"hook '(\w+)'", text)
    reason = [line.strip() for line in text.splitlines() if line.strip()][-1]
    return f"plugin {name!r}: hook {hook.group(1) if hook else '?'!r}: {reason}"


def _warn(message):
    logs.warn(message)


def _allowed_names():
    value = os.environ.get(ENV_VAR)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def load_plugins():
    """Load the built-in plugin and the installed entry-point plugins once per process."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    for module_name in BUILTIN_PLUGINS:
        module = importlib.import_module(module_name)
        pm.register(module, name=module_name)
        plugin_sources[module_name] = "keras_asc"
    allowed = _allowed_names()
    seen, installed = set(), set()
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        distribution = entry_point.dist.name if entry_point.dist else entry_point.name
        installed.add(entry_point.name)
        problems = []
        if allowed is not None and entry_point.name not in allowed and distribution not in allowed:
            continue
        seen.update((entry_point.name, distribution))
        if pm.get_plugin(entry_point.name) is not None:
            continue
        try:
            plugin = entry_point.load()
            problems = _validate(plugin, entry_point.name)
            if problems:
                raise pluggy.PluginValidationError(plugin, "; ".join(problems))
            pm.register(plugin, name=entry_point.name)
        except Exception as error:  # noqa: BLE001 - one broken plugin must not break the rest
            if isinstance(error, pluggy.PluginValidationError):
                message = _one_line(error, entry_point.name) if not problems else error.args[-1]
            else:
                message = f"{type(error).__name__}: {' '.join(str(error).split())}"
            load_errors.append((entry_point.name, message))
            _warn(
                f"plugin {entry_point.name!r} from {distribution!r} failed to load and is "
                f"skipped ({message})"
            )
            continue
        plugin_sources[entry_point.name] = distribution
    if allowed:
        unknown = sorted(allowed - seen)
        if unknown:
            _warn(
                f"{ENV_VAR} names {', '.join(map(repr, unknown))}, which is not an installed "
                f"keras-asc plugin (installed: {', '.join(sorted(installed)) or 'none'})"
            )
    return pm


def _changed():
    global generation
    generation += 1


def register_plugin(module_or_object, name=None, source=None):
    """Register a plugin object at runtime (tests, notebooks) and refresh the registries."""
    load_plugins()
    label = name or getattr(module_or_object, "__name__", type(module_or_object).__name__)
    problems = _validate(module_or_object, label)
    if problems:
        raise pluggy.PluginValidationError(module_or_object, "; ".join(problems))
    try:
        name = pm.register(module_or_object, name=name)
    except pluggy.PluginValidationError as error:
        raise pluggy.PluginValidationError(module_or_object, _one_line(error, label)) from None
    plugin_sources[name] = source or name
    _changed()
    return name


def unregister_plugin(name):
    """Remove a runtime-registered plugin and refresh the registries."""
    pm.unregister(name=name)
    plugin_sources.pop(name, None)
    _changed()
