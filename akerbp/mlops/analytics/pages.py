"""Fetching a model's call rows from RAW as pages of bytes, unparsed: each page's `items` array is written to a file
as it comes (the bytes between `{"items":` and `,"nextCursor"...}`), for DuckDB to parse (sync.py loads them). A
full fetch reads parallel cursors, an increment one cursor from the last sync's mark.
"""
from __future__ import annotations

import email.utils
import json
import queue
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from cognite.client import CogniteClient

PAGE_ROWS = 10_000  # RAW's page limit
PARTITIONS = 4  # parallel cursors of a full fetch (the SDK's default for raw reads is 10; 2 cores locally)

# The page's own nextCursor: the last '"nextCursor":"' of the body. Inside strings quotes are escaped, so the text
# occurs only as a key; CDF writes it after "items", so a sampled input holding such a key cannot be taken for it.
_NEXT = re.compile(rb'"nextCursor"\s*:\s*"([^"\\]*)"')


def _rows_url(client: CogniteClient, db: str, table: str) -> str:
    return (f"/api/v1/projects/{quote(client.config.project, safe='')}/raw/dbs/{quote(db, safe='')}"
            f"/tables/{quote(table, safe='')}")


# A page as CDF writes it: {"items": [ ... ], "nextCursor": "..."} (the cursor absent or null on the last page).
_HEAD = re.compile(rb'\s*\{\s*"items"\s*:\s*\[')
_TAIL = re.compile(rb'\]\s*(?:,\s*"nextCursor"\s*:\s*(?:"[^"\\\]]*"|null)\s*)?\}\s*')


def items_array(body: bytes) -> memoryview | bytes:
    """The page's `items` as a JSON array, without parsing it: the bytes from its '[' to its ']' when the page has
    CDF's shape (the last ']' is the array's when only the cursor follows it); else parsed and written again."""
    head = _HEAD.match(body)
    end = body.rfind(b"]")
    if head is not None and end >= head.end() - 1 and _TAIL.fullmatch(body, end):
        return memoryview(body)[head.end() - 1:end + 1]
    return json.dumps(json.loads(body).get("items") or []).encode()


def response_date_ms(response: Any) -> int | None:
    """The server's clock at a response (its Date header, whole seconds: rounded down), or None."""
    try:
        return int(email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp() * 1000)
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def _next_cursor(body: bytes) -> str | None:
    at = body.rfind(b'"nextCursor"')
    if at < 0:
        return None
    match = _NEXT.match(body, at)
    return match.group(1).decode() if match else None


class Pages:
    """RAW's row pages written as they come (their items arrays, unparsed: DuckDB parses them)."""

    def __init__(self, client: CogniteClient, db: str, table: str, folder: Path):
        self.client, self.url, self.folder = client, _rows_url(client, db, table), folder
        self.ready: queue.Queue[Path | None] = queue.Queue()  # pages written, None when the fetch has ended
        self.requests = 0
        self.server_ms: int | None = None  # the server's clock at the first response
        self.stopped = False  # the loader failed: fetch no further
        self._lock = threading.Lock()

    def _get(self, path: str, params: dict[str, Any]) -> bytes:
        with self._lock:
            self.requests += 1
        response = self.client.get(self.url + path, params=params)
        if self.server_ms is None:
            self.server_ms = response_date_ms(response)
        return response.content

    def read(self, cursor: str | None, min_updated: int | None, part: int) -> None:
        """Every page from `cursor` (a partition's) or from the start, filtered by lastUpdatedTime > min_updated."""
        page = 0
        while not self.stopped:
            params: dict[str, Any] = {"limit": PAGE_ROWS}
            if cursor:
                params["cursor"] = cursor
            elif min_updated is not None:
                params["minLastUpdatedTime"] = min_updated
            body = self._get("/rows", params)
            if b'"key"' in body:  # an empty page adds nothing
                path = self.folder / f"{part:04d}-{page:06d}.json"
                with path.open("wb") as out:
                    out.write(items_array(body))
                self.ready.put(path)
            page += 1
            cursor = _next_cursor(body)
            if not cursor:
                return

    def read_all(self, min_updated: int | None, partitions: int) -> None:
        params: dict[str, Any] = {"numberOfCursors": partitions}
        if min_updated is not None:
            params["minLastUpdatedTime"] = min_updated
        cursors = json.loads(self._get("/cursors", params))["items"]
        with ThreadPoolExecutor(max(1, len(cursors))) as pool:
            list(pool.map(lambda pc: self.read(pc[1], None, pc[0]), enumerate(cursors)))


def _missing(error: Exception) -> bool:
    """RAW answers 404 when the database or table does not exist yet: no call was recorded."""
    return getattr(error, "code", None) == 404


def fetch(pages: Pages, min_updated: int | None, *, full: bool, partitions: int = PARTITIONS) -> None:
    """The pages of rows RAW updated after min_updated (all when None) into pages.ready, then None: parallel cursors
    for a full fetch, one cursor for an increment (usually one page; the SDK's partitioned reads poll every 0.5 s)."""
    from cognite.client.exceptions import CogniteAPIError

    try:
        if full:
            pages.read_all(min_updated, partitions)
        else:
            pages.read(None, min_updated, 0)
    except CogniteAPIError as e:
        if not _missing(e):
            raise
    finally:
        pages.ready.put(None)
