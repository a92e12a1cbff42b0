"""One rule for the model a command is given: it is known when the settings define it or CDF holds something of it
(registry versions, services, audit records); otherwise the command stops with exit 2 and one message naming the
known models (settings.unknown_model_error, which `mlops deploy --model` uses too, with the settings alone).

Checked only when the command found nothing for the model, so a known model costs nothing extra: a typo is told
apart from a model that simply has no versions, services or records yet (exit 0 or the command's own message).
"""
from __future__ import annotations

AUDIT_EVENT_TYPE = "mlops"  # audit.EVENT_TYPE, without importing cognite-sdk's data classes
REGISTRY_DIRECTORY = "/mlops"  # registry_rules.DIRECTORY
FUNCTIONS_LIMIT = 1000  # functions/list has no cursor: one page holds them all


def _holds(client, model: str) -> bool:
    """Whether this CDF has any registry file, function or audit record of `model` (three requests at most)."""
    # Model names have no '-' or '/', so these prefixes select this model only.
    if client.files.list(external_id_prefix=f"{model}/", limit=1):
        return True
    if client.functions.list(external_id_prefix=f"{model}-", limit=1):
        return True
    return bool(client.events.list(type=AUDIT_EVENT_TYPE, metadata={"model": model}, limit=1))


def _models_in(client) -> set[str]:
    """Every model this CDF holds versions or services of (for the message only)."""
    from akerbp.mlops.registry_rules import XID_RE

    names = {(fn.metadata or {}).get("mlops_model") for fn in client.functions.list(limit=FUNCTIONS_LIMIT)}
    for f in client.files.list(directory_prefix=REGISTRY_DIRECTORY, limit=None):
        match = XID_RE.match(f.external_id or "")
        if match:
            names.add(match.group(1))
    return {n for n in names if n}


def check_known(model: str, clients) -> None:
    """UsageError (exit 2) unless the settings or one of `clients` (the CDFs the command reads) know `model`."""
    from akerbp.mlops.settings import defined_model_names, unknown_model_error

    where, names = defined_model_names()
    if model in names:
        return
    clients = list(clients)
    if any(_holds(client, model) for client in clients):
        return
    known = set(names).union(*(_models_in(client) for client in clients))
    raise unknown_model_error(model, known, f"{where} and CDF" if where else "CDF; no settings file here")
