"""What the CLI prints: rich on stdout for people, plain JSON for programs, diagnostics on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text


class Output:
    """Human output through rich on stdout, JSON as plain text, diagnostics on stderr."""

    def __init__(self) -> None:
        # Consoles resolve sys.stdout/sys.stderr when writing, so redirected streams are honoured.
        # Not a terminal (a log, a pipe): do not squeeze tables into 80 columns.
        width = None if sys.stdout.isatty() else 200
        self.console = Console(highlight=False, width=width)
        self.err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)

    def print(self, *objects: Any, style: str | None = None) -> None:
        """Print; strings are taken literally (no rich markup: config paths contain brackets) and
        are not wrapped, so lines stay greppable in logs."""
        plain = all(isinstance(o, str) for o in objects)
        self.console.print(
            *(Text(o) if isinstance(o, str) else o for o in objects), style=style, soft_wrap=plain
        )

    def note(self, message: str) -> None:
        self.err.print(Text(message), style="dim", soft_wrap=True)

    def warn(self, message: str) -> None:
        for line in message.splitlines() or [""]:
            print(f"meshproof: warning: {line}", file=sys.stderr)

    @staticmethod
    def json(doc: object) -> None:
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        sys.stdout.flush()


def table(*columns: str) -> Table:
    t = Table(box=box.SIMPLE_HEAD, header_style="bold", show_edge=False, pad_edge=False)
    for c in columns:
        t.add_column(c, overflow="fold")
    return t


def row(t: Table, *cells: object) -> None:
    t.add_row(*(Text("" if c is None else str(c)) for c in cells))


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def print_counts(out: Output, what: str, counts: Mapping[str, int], total: int) -> None:
    t = table(what, "requests", "share")
    for key, n in counts.items():
        row(t, key, n, f"{n / total:.1%}" if total else "-")
    out.print(t)
