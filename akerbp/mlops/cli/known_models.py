"""One rule for the model a command is given: it is known when the settings define it or CDF holds something of it
(registry versions, services, audit records); otherwise the command stops with exit 2 and one message naming the
known models (settings.unknown_model_error, which `mlops deploy --model` uses too, with the settings alone).

Checked only when the command found nothing for the model, so a known model costs nothing extra: a typo is told
apart from a model that simply has no versions, services or records yet (exit 0 or the command's own message).
The CDF queries are deployment/live.py's.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from cognite.client import CogniteClient


def check_known(model: str, clients: Iterable[CogniteClient]) -> None:
    """UsageError (exit 2) unless the settings or one of `clients` (the CDFs the command reads) know `model`."""
    from akerbp.mlops.deployment.live import holds_model, models_in
    from akerbp.mlops.settings import defined_model_names, unknown_model_error

    where, names = defined_model_names()
    if model in names:
        return
    clients = list(clients)
    if any(holds_model(client, model) for client in clients):
        return
    known = set(names).union(*(models_in(client) for client in clients))
    raise unknown_model_error(model, known, f"{where} and CDF" if where else "CDF; no settings file here")
