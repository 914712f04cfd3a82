"""Terminal output: a rich console, progress bars and tables."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

# Redirected to a file or a pipe, rich would wrap every line at 80 columns (its default width there): a log line
# stays one line, and tables get room (a terminal keeps its own width).
console = Console(highlight=False, soft_wrap=not sys.stdout.isatty(), width=None if sys.stdout.isatty() else 200)


@contextlib.contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Progress | None]:
    """A transient progress display for training epochs (None when disabled)."""
    if not enabled:
        yield None
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),  # "loss 1.2345" from the first host sync on, empty before
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with progress:
        yield progress


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title)
    for i, c in enumerate(columns):
        numeric = all(
            isinstance(r[i], int | float) or str(r[i]).rstrip("M%").replace(".", "", 1).isdigit() for r in rows
        )
        t.add_column(c, justify="right" if numeric and rows else "left")
    for r in rows:
        t.add_row(*[f"{v:.2f}" if isinstance(v, float) else escape(str(v)) for v in r])  # "kdlab[turbo]" is text
    return t
