"""A CDF listing kept in memory and refreshed by lastUpdatedTime, so a page costs the changes, not the whole list.

The first read lists everything (in parallel partitions, when given); each later one lists what CDF stamped at or
after the previous read's start by the server's clock (its Date header: sync.started_ms), minus OVERLAP_MS: a write
in flight then (stamped before, committed after) is read again, and items seen twice replace themselves by key.
When the fetch gives no server time, the newest lastUpdatedTime seen stands in for it (a burst of writes is then read
again until a newer change moves it). Deletions are not listed: the registry and the audit trail never delete what
the dashboard keeps (a deleted version is a tombstone, an update).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

OVERLAP_MS = 2_000

# fetch(lastUpdatedTime filter or None, partitions) -> (items, the server's clock at its first answer or None)
Fetch = Callable[[dict[str, int] | None, int | None], tuple[Iterable[Any], int | None]]


def updated_ms(item: Any) -> int:
    """An item's lastUpdatedTime: an SDK object's attribute or a JSON item's key."""
    value = item.get("lastUpdatedTime") if isinstance(item, dict) else getattr(item, "last_updated_time", None)
    return int(value or 0)


@dataclass
class Listing:
    fetch: Fetch
    partitions: int | None = None
    newest_ms: int = 0  # the highest lastUpdatedTime seen
    began_ms: int | None = None  # when the previous read began, by the server's clock
    reads: int = 0
    last_seconds: float = 0.0
    last_count: int = 0

    def window(self) -> dict[str, int] | None:
        """The lastUpdatedTime filter of the next read: None (everything) the first time."""
        if self.reads == 0:
            return None
        since = self.began_ms if self.began_ms is not None else self.newest_ms
        return {"min": max(0, since - OVERLAP_MS)}

    def changes(self) -> list[Any]:
        """Everything on the first call, then what changed since (with the overlap)."""
        from akerbp.mlops.analytics.sync import started_ms

        start, client_ms = time.perf_counter(), int(time.time() * 1000)
        first = self.reads == 0
        items, server_ms = self.fetch(self.window(), self.partitions if first else None)
        found = list(items)
        for item in found:
            self.newest_ms = max(self.newest_ms, updated_ms(item))
        self.began_ms = started_ms(client_ms, server_ms) if server_ms is not None else None
        self.reads += 1
        self.last_seconds, self.last_count = time.perf_counter() - start, len(found)
        return found


def sdk_fetch(list_fn: Callable[..., Iterable[Any]]) -> Fetch:
    """A Fetch over an SDK list method taking last_updated_time= and partitions= (no server time: newest seen)."""
    return lambda window, parts: (list_fn(last_updated_time=window, partitions=parts, limit=None), None)
