"""A CDF listing kept in memory and refreshed by lastUpdatedTime, so a page costs the changes, not the whole list.

The first read lists everything (in parallel partitions, when given); each later one lists only what CDF stamped at
or after the newest lastUpdatedTime seen, minus OVERLAP_MS: a write in flight when the previous listing ran (stamped
before it, committed after) is read again, and items seen twice replace themselves by key. Deletions are not
listed: the registry and the audit trail never delete what the dashboard keeps (a deleted version is a tombstone, an
update).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

OVERLAP_MS = 2_000

Fetch = Callable[[dict[str, int] | None, int | None], Iterable[Any]]


@dataclass
class Listing:
    """fetch(last_updated_time filter or None, partitions) -> items with `last_updated_time` (ms)."""

    fetch: Fetch
    partitions: int | None = None
    newest_ms: int = 0  # the highest lastUpdatedTime seen
    reads: int = 0
    last_seconds: float = 0.0
    last_count: int = 0

    def changes(self) -> list[Any]:
        """Everything on the first call, then what changed since (with the overlap)."""
        start = time.perf_counter()
        first = self.reads == 0
        window = None if first else {"min": max(0, self.newest_ms - OVERLAP_MS)}
        found = list(self.fetch(window, self.partitions if first else None))
        for item in found:
            self.newest_ms = max(self.newest_ms, int(getattr(item, "last_updated_time", 0) or 0))
        self.reads += 1
        self.last_seconds, self.last_count = time.perf_counter() - start, len(found)
        return found
