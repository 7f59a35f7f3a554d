"""Plain-text tables for the terminal: one row per log entry or trial, aligned columns."""

import math

_MAX_CELL = 48


def cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return format(value, ".4g") if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(item) for item in value)
    text = str(value)
    return text if len(text) <= _MAX_CELL else "..." + text[-(_MAX_CELL - 3):]


def format_table(rows: list, columns: list = None) -> str:
    """``rows`` (dicts) as aligned text; ``columns`` default to every key, in first-seen order."""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[cell(row.get(column)) for column in columns] for row in rows]
    widths = [max([len(column)] + [len(line[i]) for line in cells]) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths))]
    lines += ["  ".join(value.ljust(width) for value, width in zip(line, widths)).rstrip() for line in cells]
    return "\n".join(lines)


def format_mapping(values: dict) -> str:
    """``name  value`` lines, names aligned (final metrics)."""
    if not values:
        return ""
    width = max(len(str(name)) for name in values)
    return "\n".join(f"{str(name).ljust(width)}  {cell(value)}" for name, value in values.items())
