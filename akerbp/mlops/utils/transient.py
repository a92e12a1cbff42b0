"""Retrying what cognite-sdk does not: creates, deletes and calls that met a transient CDF failure.

The SDK retries 429/5xx itself for reads and idempotent POSTs, but not for creates and deletes (POST /functions,
/functions/delete, /functions/{id}/call, /files, /events, ...), since it cannot know whether CDF acted before the
answer was lost. We can: `check()` looks at what CDF did (is the function there, with our file? is it gone?) before
the action is tried again, so a create is never doubled and a lost answer is not a failure. cognite-sdk only: bundled into deployed functions
(the audit trail uses it).
"""
from __future__ import annotations

import time
from typing import Callable, TypeVar

from cognite.client.exceptions import CogniteAPIError, CogniteConnectionError, CogniteReadTimeout

T = TypeVar("T")
TRANSIENT_CODES = frozenset({429, 500, 502, 503, 504})
ATTEMPTS = 6
FIRST_WAIT_S = 0.25
MAX_WAIT_S = 4.0
NOT_YET = object()  # what check() returns when CDF did not act: try the action again


def is_transient(error: BaseException) -> bool:
    if isinstance(error, (CogniteConnectionError, CogniteReadTimeout)):
        return True
    return isinstance(error, CogniteAPIError) and error.code in TRANSIENT_CODES


def retry(action: Callable[[], T], *, check: Callable[[], object] | None = None, deadline: float | None = None,
          attempts: int = ATTEMPTS) -> T:
    """action(), again after a transient failure (backing off), at most `attempts` times and not past `deadline`.
    Before each retry, check() (if given) says what CDF did: a value other than NOT_YET is returned as the result."""
    wait = FIRST_WAIT_S
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as error:  # noqa: BLE001 - re-raised unless transient
            if not is_transient(error) or attempt == attempts:
                raise
            if deadline is not None and time.monotonic() + wait >= deadline:
                raise
            time.sleep(wait)
            wait = min(wait * 2, MAX_WAIT_S)
            if check is not None:
                try:
                    found = check()
                except Exception as again:  # noqa: BLE001 - the look itself failed transiently: retry the action
                    if not is_transient(again):
                        raise
                    continue
                if found is not NOT_YET:
                    return found  # type: ignore[return-value]
    raise AssertionError("unreachable")
