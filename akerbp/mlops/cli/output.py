"""How every mlops command prints: aligned tables and JSON on stdout, notes on stderr, secrets masked in all three.

Results go to stdout so scripts can pipe them; progress and notes go to stderr.
"""
from __future__ import annotations

import json

import click

from akerbp.mlops.utils.logger import mask


def table(rows: list[list], headers: list | None = None) -> str:
    """Rows (the first is the header unless `headers` is given) as left-aligned columns two spaces apart."""
    rows = [[str(cell) for cell in row] for row in ([headers] if headers is not None else []) + list(rows)]
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def echo(text: str = "") -> None:
    """A result line on stdout."""
    click.echo(mask(text))


def note(text: str) -> None:
    """A note or progress line on stderr."""
    click.echo(mask(text), err=True)


def print_table(rows: list[list], headers: list | None = None) -> None:
    echo(table(rows, headers))


def print_json(data) -> None:
    echo(json.dumps(data, indent=2))
