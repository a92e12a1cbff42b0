"""The audit trail: one CDF event per deploy, rollback, promotion and training run, read back newest first.

Events rather than a file in the repo, so the trail lives where the services live, survives the CI runner, and is
shared by every machine deploying to the project. Also bundled into deployed functions (the training service records
its runs), hence stdlib, cognite-sdk and the bundled utils only. Writing a record must never fail the operation it
describes.
"""
from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Mapping

from akerbp.mlops.vocabulary import AUDIT_PREFIX, audit_external_id  # noqa: F401 -- AUDIT_PREFIX re-exported
from akerbp.mlops.utils import transient
from akerbp.mlops.utils.provenance import git_commit, who

if TYPE_CHECKING:
    from cognite.client import CogniteClient

EVENT_TYPE = "mlops"
SOURCE = "akerbp.mlops"
ACTIONS = ("deploy", "rollback", "promotion", "training", "automation")
OUTCOMES = ("success", "failed", "unchanged", "rolled_back", "interrupted", "not_deployed")
MESSAGE_LIMIT = 1000  # characters kept of a record's message (and of each extra value)
STRUCTURED_LIMIT = 16_000  # of an extra list or mapping (JSON; CDF allows 128,000 per value, 200,000 in all)
DESCRIPTION_LIMIT = 500  # CDF's limit for an event description
KEY_LIMIT = 128  # CDF's limit for an event metadata key
STANDARD_KEYS = ("model", "service", "env", "version", "model_id", "hash", "git_commit", "who", "outcome",
                 "duration_s", "message")


def _mask(text: str) -> str:
    try:  # the framework logger knows the secrets of this process; absent in a stripped-down bundle
        from akerbp.mlops.utils.logger import mask
    except Exception:  # noqa: BLE001
        return text
    return mask(text)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    return str(value)


def _extra_text(value: Any) -> str:
    """An extra value as metadata text, masked. Lists and mappings stay valid JSON (readers parse them back) up to
    STRUCTURED_LIMIT characters: a longer list keeps its first items and ends with "... and N more"; any other value
    is cut at MESSAGE_LIMIT."""
    if not isinstance(value, (list, tuple, dict)):
        return _mask(_text(value))[:MESSAGE_LIMIT]
    text = _mask(_text(value))
    if len(text) <= STRUCTURED_LIMIT:
        return text
    if isinstance(value, (list, tuple)):
        items = list(value)
        for keep in range(len(items) - 1, -1, -1):
            shortened = _mask(_text(items[:keep] + [f"... and {len(items) - keep} more"]))
            if len(shortened) <= STRUCTURED_LIMIT:
                return shortened
    return text[:STRUCTURED_LIMIT]


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(action, model, service, env, outcome, model_id, version, code_hash) -> str:
    what = f"{action} {model}" + (f" {service}" if service else "") + f" in {env}: {outcome}"
    details = [d for d in (model_id or (f"version {version}" if version not in (None, "") else ""),
                           f"hash {code_hash[:10]}" if code_hash else "") if d]
    return what + (f" ({', '.join(details)})" if details else "")


@dataclass(frozen=True)
class AuditEntry:
    """One audit record to write. started: time.time() when the operation began (the event spans started..now);
    dataset: external id of a data set to file the event under, if it exists (never created here); extra: more
    metadata, values turned into strings (JSON for mappings and lists)."""

    action: str
    model: str
    env: str
    outcome: str
    started: float
    service: str | None = None
    version: Any = None
    model_id: str | None = None
    code_hash: str | None = None
    message: str = ""
    dataset: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def record(client: CogniteClient, action: str, *, model: str, env: str, outcome: str, started: float,
           service: str | None = None, version: Any = None, model_id: str | None = None,
           code_hash: str | None = None, message: str = "", dataset: str | None = None,
           extra: Mapping[str, Any] | None = None) -> None:
    """write() with the entry's fields as arguments (the training service's and the registry's calls)."""
    write(client, AuditEntry(action, model, env, outcome, started, service, version, model_id, code_hash, message,
                             dataset, extra or {}))


def write(client: CogniteClient, entry: AuditEntry) -> None:
    """Write one audit event; on any failure print a warning on stderr and return (never raises)."""
    action, model, env, outcome, started = entry.action, entry.model, entry.env, entry.outcome, entry.started
    service, version, model_id, code_hash = entry.service, entry.version, entry.model_id, entry.code_hash
    message, dataset, extra = entry.message, entry.dataset, entry.extra
    try:
        from cognite.client.data_classes import EventWrite

        now = time.time()
        start_ms = int(started * 1000)
        end_ms = max(start_ms, int(now * 1000))
        metadata = {
            "model": _text(model), "service": _text(service), "env": _text(env), "version": _text(version),
            "model_id": _text(model_id), "hash": _text(code_hash), "git_commit": git_commit(), "who": who(),
            "outcome": _text(outcome), "duration_s": f"{max(0.0, now - started):.1f}",
            "message": _mask(_text(message))[:MESSAGE_LIMIT],
        }
        for key, value in (extra or {}).items():
            key = _text(key)[:KEY_LIMIT]
            if key and key not in metadata:
                metadata[key] = _extra_text(value)
        data_set_id = None
        if dataset:
            found = client.data_sets.retrieve(external_id=dataset)
            data_set_id = found.id if found is not None else None
        description = _one_line(_describe(action, model, service, env, outcome, model_id, version, code_hash),
                                DESCRIPTION_LIMIT)
        # An external id makes the create safe to retry after a transient failure: a lost answer is found again.
        external_id = audit_external_id(uuid.uuid4().hex)
        transient.retry(lambda: client.events.create(EventWrite(
            external_id=external_id, type=EVENT_TYPE, subtype=action, start_time=start_ms, end_time=end_ms,
            description=description, metadata=metadata, source=SOURCE, data_set_id=data_set_id,
        )), check=lambda: client.events.retrieve(external_id=external_id) or transient.NOT_YET)
    except Exception as e:  # noqa: BLE001 -- an audit write must not fail the deploy it records
        reason = _one_line(_mask(f"{type(e).__name__}: {e}"), 300)
        print(f"warning: could not write the audit record ({action} of {model}"
              f"{' ' + service if service else ''} in {env}, {outcome}): {reason}", file=sys.stderr)


def _iso(ms) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def history(client, model: str, env: str | None = None, limit: int | None = 100) -> list[dict]:
    """The audit records of a model (in one environment if env is given), newest first, at most `limit`.

    Sorted here rather than by the server, so any CDF (and the local one) gives the same order.
    """
    metadata = {"model": model}
    if env:
        metadata["env"] = env
    events = client.events.list(type=EVENT_TYPE, metadata=metadata, limit=None)
    events = sorted(events, key=lambda e: (e.start_time or 0, e.end_time or 0, e.id or 0), reverse=True)
    if limit is not None:
        events = events[:limit]
    out = []
    for event in events:
        meta = dict(event.metadata or {})
        row = {"time": _iso(event.start_time), "action": event.subtype or ""}
        row.update({key: meta.pop(key, "") for key in STANDARD_KEYS})
        row["id"] = event.id
        row["extra"] = meta
        out.append(row)
    return out
