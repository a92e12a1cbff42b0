"""The rows of a prediction function's calls, written to RAW in the background: a call only appends its row.

One Recorder per function folder in a worker (recorder_for). `record` appends to a bounded buffer (CAPACITY rows;
when full the oldest go, counted: a log line says so and the next row written carries `dropped_before`); a daemon
thread writes the buffer with client.raw.rows.insert every INTERVAL_S seconds, or as soon as BATCH rows wait. It uses
the latest call's client: CDF gives each call its own, and an older one's token may have expired.
A write that fails is retried with a growing pause (up to MAX_PAUSE_S), its rows kept in the buffer; a batch that
failed MAX_ATTEMPTS times is dropped and counted. Failures are logged at most once per LOG_EVERY_S and never raised:
analytics must never fail or slow a prediction.
Rows of a worker that is killed before its next write are lost: at most about INTERVAL_S seconds of calls (a worker
CDF retires idle is not killed mid-write, but one that runs out of memory or times out is).

Standard library only, plus the client passed in: it is bundled into every prediction function.
"""
from __future__ import annotations

import collections
import logging
import atexit
import threading
import time
from typing import Any

CAPACITY = 10_000
BATCH = 500
INTERVAL_S = 0.5
MAX_PAUSE_S = 30.0
MAX_ATTEMPTS = 5
LOG_EVERY_S = 60.0
EXIT_FLUSH_S = 1.5  # at interpreter exit (a worker stopped, not killed): within the local CDF runner's 2 s grace

_recorders: dict[tuple[str, str, str], "Recorder"] = {}
_lock = threading.Lock()


def recorder_for(folder: str, database: str, table: str, log: logging.Logger | None = None) -> "Recorder":
    """The worker's Recorder of a function folder (one flusher thread each), made on first use."""
    key = (folder, database, table)
    with _lock:
        found = _recorders.get(key)
        if found is None:
            found = _recorders[key] = Recorder(database, table, log=log)
        return found


class Recorder:
    def __init__(self, database: str, table: str, *, capacity: int = CAPACITY, batch: int = BATCH,
                 interval_s: float = INTERVAL_S, log: logging.Logger | None = None):
        self.database, self.table = database, table
        self.capacity, self.batch, self.interval_s = capacity, batch, interval_s
        self.log = log or logging.getLogger("akerbp.mlops.analytics")
        self._rows: collections.deque[tuple[str, dict]] = collections.deque()
        self._client: Any = None
        self._wake = threading.Condition()
        self._in_flight = 0  # rows taken from the buffer and not yet written or given back
        self._attempts = 0  # failed writes in a row of the batch at the head of the buffer
        self._pause_s = 0.0
        self._urgent = False  # flush() waits: write now, whatever the batch size or pause
        self._thread: threading.Thread | None = None
        self._last_log = -LOG_EVERY_S
        self.dropped = 0  # rows dropped since the worker started (buffer full, or a batch that kept failing)
        self._unreported = 0  # of which no written row tells yet (dropped_before)
        self.written = 0

    @property
    def buffered(self) -> int:
        """Rows waiting to be written (at most `capacity`)."""
        with self._wake:
            return len(self._rows) + self._in_flight

    # --- the call path: an append --------------------------------------------------------------------------------

    def record(self, key: str, columns: dict, client: Any) -> None:
        """Queue one row; never raises, never waits for CDF."""
        with self._wake:
            self._client = client
            if len(self._rows) + self._in_flight >= self.capacity:  # the rows being written count too
                self._dropped(1, "the buffer is full (RAW is slower than the calls, or unreachable)")
                if not self._rows:  # all of them are being written: this one goes
                    return
                self._rows.popleft()
            self._rows.append((key, columns))
            if self._thread is None or not self._thread.is_alive():
                if self._thread is None:  # a worker that is stopped (not killed) writes what it holds first
                    atexit.register(self.flush, EXIT_FLUSH_S)
                self._thread = threading.Thread(target=self._run, name=f"analytics-{self.table}", daemon=True)
                self._thread.start()
            if len(self._rows) >= self.batch:
                self._wake.notify_all()

    def flush(self, timeout: float) -> bool:
        """Write what is buffered now (for tests, and at the end of a batch); True when everything was written
        within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._wake:
            self._urgent = True
            self._wake.notify_all()
            try:
                while self._rows or self._in_flight:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._thread is None or not self._thread.is_alive():
                        return False
                    self._wake.wait(min(left, 0.05))
                return True
            finally:
                self._urgent = False

    # --- the flusher thread ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._urgent or (len(self._rows) >= self.batch and not self._pause_s),
                                    timeout=self._pause_s or self.interval_s)
                if not self._rows:
                    self._urgent = False
                    continue
                taken = [self._rows.popleft() for _ in range(min(self.batch, len(self._rows)))]
                self._in_flight, client, unreported = len(taken), self._client, self._unreported
            ok = self._write(client, taken, unreported)
            with self._wake:
                self._in_flight = 0
                if ok:
                    self.written += len(taken)
                    self._unreported -= unreported
                    self._attempts, self._pause_s = 0, 0.0
                elif self._attempts + 1 >= MAX_ATTEMPTS:
                    self._attempts, self._pause_s = 0, 0.0
                    self._dropped(len(taken), f"RAW refused them {MAX_ATTEMPTS} times")
                else:
                    self._attempts += 1
                    self._pause_s = min(MAX_PAUSE_S, self.interval_s * 2 ** self._attempts)
                    room = self.capacity - len(self._rows)  # put them back in front, within the bound
                    if room < len(taken):
                        self._dropped(len(taken) - max(room, 0), "the buffer is full (RAW is unreachable)")
                    self._rows.extendleft(reversed(taken[len(taken) - max(room, 0):]))
                self._wake.notify_all()

    def _write(self, client: Any, taken: list[tuple[str, dict]], unreported: int) -> bool:
        rows = dict(taken)
        if unreported:
            first = taken[0][0]
            rows[first] = {**rows[first], "dropped_before": unreported}
        try:
            client.raw.rows.insert(self.database, self.table, rows, ensure_parent=True)
            return True
        except Exception as e:  # anything: analytics never fails the worker
            self._warn(f"analytics: writing {len(rows)} row(s) to RAW {self.database}/{self.table} failed "
                       f"(attempt {self._attempts + 1} of {MAX_ATTEMPTS}): "
                       f"{type(e).__name__}: {str(e)[:300]}")
            return False

    def _dropped(self, n: int, why: str) -> None:
        self.dropped += n
        self._unreported += n
        self._warn(f"analytics: dropped {n} row(s) of {self.table}: {why}; {self.dropped} dropped since the worker "
                   "started (the next row written says how many in dropped_before)")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            try:
                self.log.warning("%s", message)
            except Exception:  # a broken log handler must not stop the flusher
                pass
