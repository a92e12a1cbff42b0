"""Any error as the one line a command prints: which CDF URL could not be reached and what to check for network
errors; the exception and how to see its traceback for anything else. Secrets are masked."""
from __future__ import annotations

import logging

from akerbp.mlops.errors import UsageError
from akerbp.mlops.utils.logger import get_logger, mask

# Classes (by name, so nothing heavy is imported) of errors that mean CDF could not be reached: httpx's transport
# errors, the SDK's wrappers of them, requests' and the OS's connection errors.
NETWORK_ERRORS = frozenset({"TransportError", "CogniteConnectionError", "CogniteReadTimeout", "ConnectionError",
                            "Timeout"})
DEBUG_HINT = "set MLOPS_LOG_LEVEL=DEBUG to see the traceback"


def causes(exc: BaseException) -> list[BaseException]:
    """The exception, then its causes and contexts, each once."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _request_url(exc: BaseException) -> str | None:
    try:
        request = getattr(exc, "request", None)  # httpx raises when an error carries no request
        url = getattr(request, "url", None)
    except Exception:  # noqa: BLE001
        return None
    return str(url) if url else None


def _configured_url() -> str:
    try:
        from akerbp.mlops.cdf.client import cdf_config_from_env

        config = cdf_config_from_env()
    except UsageError:
        config = None
    return config["base_url"] if config else "the local CDF"


def network_failure(exc: BaseException) -> str | None:
    """One line (masked) naming the URL that could not be reached, if `exc` is or wraps a network failure."""
    chain = causes(exc)
    network = [e for e in chain if any(cls.__name__ in NETWORK_ERRORS for cls in type(e).__mro__)]
    if not network:
        return None
    url = next((u for u in map(_request_url, chain) if u), None) or _configured_url()
    detail = next((e for e in network if _request_url(e)), network[-1])
    reason = f"{type(detail).__name__}: {detail}" if str(detail) else type(detail).__name__
    return mask(f"cannot reach CDF at {url}: {reason}; check COGNITE_BASE_URL and COGNITE_TOKEN_URL (or "
                "COGNITE_CLUSTER and COGNITE_TENANT_ID) and the network")


def describe_failure(exc: BaseException) -> str:
    """One line (secrets masked) for an error no caller expected: which URL could not be reached and what to check
    for network errors; the exception and how to see its traceback for anything else."""
    network = network_failure(exc)
    if network:
        return network
    if any(cls.__name__ == "CogniteException" for cls in type(exc).__mro__):
        text = f"a CDF request to {_configured_url()} failed: {type(exc).__name__}: {exc}"
    else:
        text = f"unexpected error: {exc!r}"
    if not get_logger().isEnabledFor(logging.DEBUG):
        text += f" ({DEBUG_HINT})"
    return mask(text)
