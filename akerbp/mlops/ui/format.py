"""How the pages show values (jinja2 filters): times, numbers, hashes and empty values, one way everywhere."""
from __future__ import annotations

from typing import Any, Callable

DASH = "-"


def dash(value: Any) -> Any:
    """None, "" and empty collections as "-"."""
    return DASH if value is None or value == "" or value == [] or value == {} else value


def when(iso: str | None) -> str:
    """An ISO 8601 UTC time ('2026-01-02T03:04:05.678Z') as '2026-01-02 03:04:05'; the page says it is UTC."""
    if not iso:
        return DASH
    text = str(iso).replace("T", " ").rstrip("Z")
    return text.split(".")[0].split("+")[0]


def num(value: Any) -> str:
    """A metric: floats to 4 significant digits, anything else as it is."""
    if value is None or value == "":
        return DASH
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def short(value: Any, length: int = 10) -> str:
    """A hash or commit, cut to `length` characters (the whole one is in the element's title)."""
    return DASH if not value else str(value)[:length]


def seconds(value: Any) -> str:
    if value is None or value == "":
        return DASH
    value = float(value)
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def yes_no(value: Any) -> str:
    return "yes" if value else "no"


FILTERS: dict[str, Callable[..., Any]] = {"dash": dash, "when": when, "num": num, "short": short, "seconds": seconds,
                                          "yes_no": yes_no}
