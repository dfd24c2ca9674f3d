"""The console the commands print their tables on."""

from __future__ import annotations

from rich.console import Console

OFF_TERMINAL_WIDTH = 160  # into a file or a pipe: wide enough for every table, rather than rich's default 80


def report_console() -> Console:
    """A terminal's own width; off a terminal (a CI log, `| tee`, a file) wide enough that no table is cut."""
    console = Console()
    return console if console.is_terminal else Console(width=OFF_TERMINAL_WIDTH)
