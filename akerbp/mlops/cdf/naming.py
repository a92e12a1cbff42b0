"""External ids of the functions of a service, in one place (stdlib only: settings, CLI and deployment import it).

    live function      {model}-{service}-{env}
    standby function   {model}-{service}-{env}-{hash[:10]}   (model names hold no '-', so ids never collide)
"""
from __future__ import annotations


def function_external_id(model: str, service: str, env: str) -> str:
    """The live function of MODEL's SERVICE in ENV."""
    return f"{model}-{service}-{env}"


def is_standby(live: str, external_id: str | None) -> bool:
    """Whether `external_id` is a standby of the live function `live` (the rule of deployment/functions.standbys)."""
    suffix = (external_id or "")[len(live) + 1:]
    return (external_id or "").startswith(f"{live}-") and suffix.isalnum()
