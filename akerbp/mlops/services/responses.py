"""Service answers and the services' logger: what every service needs, stdlib only (masking: masking.py).

A service never raises: every failure becomes {"status": "error", "message": ...}, with the (masked) traceback
printed so it lands in the call's logs.
"""
from __future__ import annotations

import json
import logging
import sys
import traceback
import types

from akerbp.mlops.services.masking import mask  # noqa: F401 - the services' mask

RESPONSE_LIMIT_BYTES = 1_000_000  # CDF refuses larger function responses

_framework_logger: types.ModuleType | None
try:  # bundled in the function folder; guarded so a service still answers if it is not
    from akerbp.mlops.utils import logger as _framework_logger
except ImportError:  # pragma: no cover - depends on what the deploy step bundles
    _framework_logger = None


class ServiceError(Exception):
    """A failure whose message says it all (no exception type needed in the answer)."""


def get_log() -> logging.Logger:
    if _framework_logger is not None and hasattr(_framework_logger, "get_logger"):
        return _framework_logger.get_logger("akerbp.mlops.services")
    log = logging.getLogger("akerbp.mlops.services")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    return log


def register_secrets(secrets: dict | None) -> None:
    """Tell the framework logger about the call's secret values so no log line shows them."""
    register = getattr(_framework_logger, "register_secret", None)
    if register is None:
        return
    for value in (secrets or {}).values():
        if isinstance(value, str):
            register(value)


def error(message: str, model_id, secrets: dict | None) -> dict:
    return {"status": "error", "message": mask(message, secrets), "model_id": model_id}


def failure(exc: BaseException, model_id, secrets: dict | None, during: str | None = None) -> dict:
    """An error answer for an exception: 'during: Type: message', and the masked traceback in the logs."""
    print(mask("".join(traceback.format_exception(exc)), secrets), file=sys.stderr, flush=True)
    described = str(exc) if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"
    return error(f"{during}: {described}" if during else described, model_id, secrets)


def json_problem(value, what: str) -> str | None:
    """Why `value` cannot be a function response (not JSON, NaN/Infinity, over CDF's size limit), or None."""
    try:
        encoded = json.dumps(value, allow_nan=False)
    except ValueError as e:
        return f"{what} contains NaN or Infinity, which JSON cannot carry ({e}); return None for missing values"
    except (TypeError, RecursionError) as e:
        return (
            f"{what} is not JSON-serialisable ({e}); "
            "return lists, dicts, str, int, float, bool or None (e.g. array.tolist())"
        )
    if len(encoded) > RESPONSE_LIMIT_BYTES:
        return f"{what} is {len(encoded) / 1e6:.1f} MB as JSON, over CDF's 1 MB limit for a function response"
    return None
