"""Tables for people, drawn with rich; imported only when a table is printed.

``--json`` runs and usage errors never import rich (about 20 ms). The first line is
the header and columns are two spaces apart, so ``awk '{print $1}'`` still works; on a
terminal the header is bold and statuses are coloured (``NO_COLOR`` turns colour off),
piped output is plain text. Tables are as wide as they need: no cell is cut.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Mapping, Sequence

#: Styles of member statuses (and of the states a service is in).
STATUS_STYLES = {
    "alive": "green",
    "up": "green",
    "suspect": "yellow",
    "draining": "yellow",
    "degraded": "yellow",
    "starting": "yellow",
    "waiting": "yellow",
    "restarting": "yellow",
    "dead": "red",
    "down": "red",
    "failed": "red",
    "left": "dim",
    "stopped": "dim",
}

#: Wide enough for any table: no cell is cut to fit a terminal or 80 columns.
_WIDTH = 100_000


def print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Collection[int] = (),
    styles: Mapping[int, Callable[[str], str | None]] | None = None,
) -> None:
    """Print ``rows`` under ``headers``; columns in ``right`` (indices) are right-aligned;
    ``styles`` maps a column to a function giving a cell's rich style (None: plain)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # As wide as the table needs: a narrow terminal wraps lines rather than cut ids.
    console = Console(highlight=False, width=_WIDTH)
    piped = not console.is_terminal
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for i, header in enumerate(headers):
        table.add_column(header, justify="right" if i in right else "left", no_wrap=i == 0)
    styles = styles or {}
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            style = styles[i](cell) if i in styles else None
            cells.append(Text(cell, style=style or ""))  # Text: no markup in names
        table.add_row(*cells)
    if piped:  # plain text: no trailing blanks from a last column left-aligned
        with console.capture() as captured:
            console.print(table)
        sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    else:
        console.print(table)
    sys.stdout.flush()


def status_style(status: str) -> str | None:
    """The style of a status or state cell."""
    return STATUS_STYLES.get(status)
