"""The audit trail of one CDF in memory (audit.py's events, every model), refreshed incrementally: the history page
and the automations' runs read it without a request per model or per automation."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from akerbp.mlops.audit import EVENT_TYPE, STANDARD_KEYS
from akerbp.mlops.ui.incremental import Listing, sdk_fetch
from akerbp.mlops.ui.versions_index import iso_ms

if TYPE_CHECKING:
    from cognite.client import CogniteClient
    from cognite.client.data_classes import Event


def record(event: Event) -> dict[str, Any]:
    """An event as audit.history gives it: time, action, the standard keys, id and the rest as extra."""
    meta = dict(event.metadata or {})
    row: dict[str, Any] = {"time": iso_ms(event.start_time) or "", "action": event.subtype or ""}
    row.update({key: meta.pop(key, "") for key in STANDARD_KEYS})
    row["id"] = event.id
    row["extra"] = meta
    row["_sort"] = (event.start_time or 0, event.end_time or 0, event.id or 0)
    return row


class AuditIndex:
    """Audit records by event id; newest() sorts them once per change."""

    def __init__(self, client: CogniteClient):
        self.records: dict[int, dict[str, Any]] = {}
        self._newest: list[dict[str, Any]] | None = None
        self.listing = Listing(sdk_fetch(lambda **kw: client.events.list(type=EVENT_TYPE, **kw)))

    def refresh(self) -> int:
        changed = self.listing.changes()
        for event in changed:
            self.records[event.id] = record(event)
        if changed:
            self._newest = None
        return len(changed)

    def newest(self) -> list[dict[str, Any]]:
        """Every record, newest first (audit.history's order)."""
        if self._newest is None:
            self._newest = sorted(self.records.values(), key=lambda r: r["_sort"], reverse=True)
        return self._newest
