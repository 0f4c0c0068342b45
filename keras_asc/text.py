"""The one plain-text table renderer of keras-asc (complexity summaries, evaluation reports,
``keras-asc list``), and the one wording of an install hint.

Hand-written because the tables are a few lines of fixed-width text, and a dependency
(``tabulate``, ``rich``) would be the package's only reason to need one.
"""


def format_table(header, rows, left_columns=1):
    """Fixed-width text table: header, a rule of dashes, one line per row.

    Args:
        header: column titles.
        rows: sequences of cells (anything ``str`` accepts), one per row.
        left_columns: how many leading columns are left-aligned; the rest (numbers) are
            right-aligned. ``len(header)`` aligns every column left.

    Returns:
        The lines, without trailing spaces.

    Example:
        >>> print("\\n".join(format_table(("model", "params"), [("moflenet57", "60,440")])))
        model       params
        ------------------
        moflenet57  60,440
    """
    rows = [tuple(str(cell) for cell in row) for row in rows]
    header = tuple(str(cell) for cell in header)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(
            cell.ljust(width) if column < left_columns else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), "-" * (sum(widths) + 2 * (len(widths) - 1)), *(line(row) for row in rows)]


def install_hint(extra):
    """How to install an optional extra, in the two forms that work.

    No ``keras-asc`` package is on PyPI, so the index form needs a package index that has it;
    from a clone of the repository, the extra is installed from the folder. The quotes keep
    shells such as zsh from expanding the brackets.

    Example:
        >>> install_hint("micro")
        'pip install "keras-asc[micro]" (from a clone of the repository: pip install ".[micro]")'
    """
    return f'pip install "keras-asc[{extra}]" (from a clone of the repository: pip install ".[{extra}]")'
