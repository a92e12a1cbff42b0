"""The options several commands share, defined once (click's recipe: a function returning `click.option(...)`).

`--env` and `--service` offer the vocabulary's ENVIRONMENTS and SERVICES; `--json` always lands in `as_json`. What a
command means by the option (its default, its help text) is the command's, passed in:

    @options.env(help=options.ENV_HELP)
    @options.json_output(help="Print the services as JSON.")
"""
from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

import click

from akerbp.mlops.vocabulary import ENVIRONMENTS, SERVICES

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]

ENV_HELP = "Environment (default: ENV, else dev)."
ENV_FILTER_HELP = "Only this environment (default: all)."
JSON_HELP = "Print the result as JSON."


def env(help: str | None = ENV_HELP, choices: Sequence[str] = ENVIRONMENTS, **kwargs: Any) -> Decorator:
    """--env: one of dev, test, prod (or a subset, e.g. `models promote --to`); pass `required`, `default`, ..."""
    return click.option("--env", type=click.Choice(list(choices)), help=help, **kwargs)


def service(default: str | None = "prediction", multiple: bool = False, help: str | None = None,
            dest: str = "service") -> Decorator:
    """--service: prediction or training (default prediction, shown in --help)."""
    return click.option("--service", dest, type=click.Choice(SERVICES), multiple=multiple, help=help,
                        default=None if multiple else default, show_default=default is not None and not multiple)


def json_output(help: str = JSON_HELP) -> Decorator:
    """--json: the command's result as one JSON document on stdout (into the parameter `as_json`)."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def timeout(default: float, help: str, minimum: float = 0) -> Decorator:
    """--timeout SECONDS, at least `minimum`."""
    return click.option("--timeout", type=click.FloatRange(min=minimum), default=default, show_default=True,
                        help=help)


def model(help: str, multiple: bool = False, dest: str = "model") -> Decorator:
    """--model NAME (repeatable with multiple=True, e.g. `deploy --model a --model b`)."""
    return click.option("--model", dest, multiple=multiple, metavar="NAME", help=help)


def env_or_default(env: str | None) -> str:
    """The --env given, else $ENV, else dev (cdf.client.get_environment: a mistyped $ENV is a usage error)."""
    if env:
        return env
    from akerbp.mlops.cdf.client import get_environment

    return get_environment()
