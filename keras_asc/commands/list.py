"""``keras-asc list``: registered models, ensembles and augmentations, with their plugin."""

import json


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "list",
        help="list registered models, ensembles and augmentations",
        description="List the registered models, ensembles and augmentations and the plugin "
        "(distribution) that registered each.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(func=run)


def _source(plugin_name):
    from keras_asc import plugins

    distribution = plugins.plugin_sources.get(plugin_name, plugin_name)
    if distribution == "keras_asc":
        return "built-in"
    return distribution if distribution == plugin_name else f"{plugin_name} ({distribution})"


def _table(header, rows):
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(header, widths, strict=True))]
    lines.append("-" * len(lines[0]))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return [line.rstrip() for line in lines]


def collect():
    """Every registry entry as plain data: ``{"models": [...], "ensembles": [...], ...}``."""
    from keras_asc import registry

    models = [
        {"name": e.name, "plugin": _source(e.plugin), "description": e.description}
        for e in sorted(registry.models().values(), key=lambda e: e.name)
    ]
    ensembles = [
        {
            "name": e.name,
            "members": dict(e.members),
            "plugin": _source(e.plugin),
            "description": e.description,
        }
        for e in sorted(registry.ensembles().values(), key=lambda e: e.name)
    ]
    augmentations = [
        {
            "name": e.name,
            "stage": e.stage,
            "plugin": _source(e.plugin),
            "description": e.description,
        }
        for e in sorted(registry.augmentations().values(), key=lambda e: e.name)
    ]
    return {"models": models, "ensembles": ensembles, "augmentations": augmentations}


def run(args):
    from keras_asc import plugins, registry

    entries = collect()
    problems = [f"plugin {name!r} failed to load: {error}" for name, error in plugins.load_errors]
    problems += list(registry.registration_errors)
    if args.json:
        print(json.dumps({**entries, "problems": problems}, indent=2))
        return 1 if problems else 0
    lines = ["Models"]
    lines += _table(
        ("name", "plugin", "description"),
        [(e["name"], e["plugin"], e["description"]) for e in entries["models"]],
    )
    lines += ["", "Ensembles"]
    lines += _table(
        ("name", "members (logit weights)", "plugin"),
        [
            (e["name"], ", ".join(f"{m} {w:g}" for m, w in e["members"].items()), e["plugin"])
            for e in entries["ensembles"]
        ],
    )
    lines += ["", "Augmentations"]
    lines += _table(
        ("name", "stage", "plugin", "description"),
        [(e["name"], e["stage"], e["plugin"], e["description"]) for e in entries["augmentations"]],
    )
    print("\n".join(lines))
    for problem in problems:
        print(f"keras-asc list: warning: {problem}")
    # A broken plugin is worth a non-zero exit so scripts notice it.
    return 1 if problems else 0
