"""Tables the study commands print: rich tables for people, plain columns beyond a few hundred rows."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table


def records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as JSON values: NaN (a trial's value can be NaN) becomes null."""
    import math

    return [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()} for row in rows]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return "" if value is None else str(value)


_RICH_ROWS_AT_MOST = 200  # rich lays a table out at about 10 ms a row: 10,000 trials took minutes


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """A rich table on stdout; wide tables wrap rather than truncate when not on a terminal. Beyond
    a few hundred rows, plain columns, one line a row (same cells; `--json` is the form for scripts)."""
    console = Console(width=None if sys.stdout.isatty() else 200)
    if not rows:
        console.print(f"{title}: nothing yet")
        return
    if len(rows) > _RICH_ROWS_AT_MOST:
        _print_plain(title, rows)
        return
    table = Table(title=title, show_lines=False)
    for key in rows[0]:
        table.add_column(str(key), overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(k)) for k in rows[0]))
    console.print(table)


def _print_plain(title: str, rows: list[dict[str, Any]]) -> None:
    keys = list(rows[0])
    cells = [[_cell(row.get(k)) for k in keys] for row in rows]
    widths = [max(len(str(k)), *(len(line[i]) for line in cells)) for i, k in enumerate(keys)]
    lines = [title, "  ".join(str(k).ljust(w) for k, w in zip(keys, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    sys.stdout.write("\n".join(lines) + "\n")


__all__ = ["print_table", "records"]
