"""A griffe extension for the API reference (mkdocs.yml): reads a docstring's ``Example:``
section as griffe's ``Examples:``.

keras-asc's docstrings head their doctests ``Example:`` (keras-hub's spelling). griffe's Google
parser takes only the plural as an examples section and renders the singular as an admonition
of plain text, so ``>>>`` lines would lose their code formatting and their brackets would be
read as Markdown links. Renaming the header in the loaded docstring keeps the source as it is.
"""

import re

import griffe

_EXAMPLE_HEADER = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    def on_object(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE_HEADER.sub(r"\1Examples:", obj.docstring.value)
