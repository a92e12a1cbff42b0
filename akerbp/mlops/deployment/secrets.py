"""Secret values, resolved in one place: a function's secrets by name, from MLOPS_SECRET_<NAME> (settings.py's
secret_values, a deploy, a rollback, putting a replaced function back).

CDF never hands a function's secret values back, so every path that creates a function reads them here, registers
each value for masking (utils.logger), and fails with one message naming every variable that is missing.
"""
from __future__ import annotations

import os
from typing import Callable, Iterable, Mapping

from akerbp.mlops.errors import UsageError
from akerbp.mlops.vocabulary import secret_env_var


def resolve(names: Iterable[str], missing: Callable[[list[str]], str], *,
            given: Mapping[str, str] | None = None) -> dict[str, str]:
    """Secret name -> value: from `given` (values this deploy resolved already), else from MLOPS_SECRET_<NAME>.
    Raises UsageError(missing(variables)) naming the variables not set; every value found is registered for
    masking."""
    from akerbp.mlops.utils.logger import register_secret

    values: dict[str, str] = {}
    absent: list[str] = []
    for name in names:
        value = (given or {}).get(name) or os.environ.get(secret_env_var(name), "")
        if value:
            register_secret(value)
            values[name] = value
        else:
            absent.append(secret_env_var(name))
    if absent:
        raise UsageError(missing(absent))
    return values
