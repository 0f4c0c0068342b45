"""The keras-asc plugin manager: built-ins and entry-point plugins, with a kill switch.

Set ``KERAS_ASC_PLUGINS`` to narrow what is loaded: unset loads every installed plugin, an empty
string loads none (built-ins only), and a comma-separated list of distribution or entry-point
names loads only those.
"""

import importlib.metadata
import os
import sys

import pluggy

from keras_asc import hookspecs

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
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        distribution = entry_point.dist.name if entry_point.dist else entry_point.name
        if allowed is not None and entry_point.name not in allowed and distribution not in allowed:
            continue
        if pm.get_plugin(entry_point.name) is not None:
            continue
        try:
            plugin = entry_point.load()
        except Exception as error:  # noqa: BLE001 - one broken plugin must not break the rest
            message = f"{type(error).__name__}: {error}"
            load_errors.append((entry_point.name, message))
            print(
                f"keras-asc: plugin {entry_point.name!r} from {distribution!r} failed to load "
                f"and is skipped ({message})",
                file=sys.stderr,
            )
            continue
        pm.register(plugin, name=entry_point.name)
        plugin_sources[entry_point.name] = distribution
    # A hook implementation with a misspelt name would otherwise be silently ignored.
    pm.check_pending()
    return pm


def _changed():
    global generation
    generation += 1


def register_plugin(module_or_object, name=None, source=None):
    """Register a plugin object at runtime (tests, notebooks) and refresh the registries."""
    load_plugins()
    name = pm.register(module_or_object, name=name)
    plugin_sources[name] = source or name
    pm.check_pending()
    _changed()
    return name


def unregister_plugin(name):
    """Remove a runtime-registered plugin and refresh the registries."""
    pm.unregister(name=name)
    plugin_sources.pop(name, None)
    _changed()
