"""One deployer at a time per live function: a lock held in CDF itself, so it serialises deploys from any machine.

Two pipelines for one branch run at once in Bitbucket unless told otherwise; without a lock the second can replace
the first's fresh code with older code, or delete its standby. The lock is a CDF event with the external id
`mlops-lock/{live xid}`: CDF's uniqueness of external ids makes taking it atomic. Its metadata names the owner and
an expiry that a heartbeat thread moves forward while the deploy runs; a killed deployer stops heartbeating, and the
next one takes its lock over once it has expired (deleting it by internal id, so two that race for an expired lock
cannot both win). Clocks: expiry is the holder's wall clock plus LOCK_TTL_S, generous against small skews.
"""
from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Callable

from cognite.client.exceptions import CogniteDuplicatedError, CogniteNotFoundError

from akerbp.mlops.vocabulary import lock_external_id
from akerbp.mlops.deployment import interrupts
from akerbp.mlops.utils import transient
from akerbp.mlops.errors import MlopsError
from akerbp.mlops.utils.provenance import who

EVENT_TYPE = "mlops_lock"
LOCK_TTL_S = float(os.environ.get("MLOPS_DEPLOY_LOCK_TTL", "120"))  # a killed deployer's lock blocks this long
POLL_S = 0.5
PROGRESS_EVERY_S = 10.0


class LockTimeout(MlopsError):
    """Another deploy of the same function held the lock until this deploy's deadline."""


lock_xid = lock_external_id


def _now_ms() -> int:
    return int(time.time() * 1000)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class DeployLock:
    """`with DeployLock(client, live, deadline, say):` holds the lock of `live` for the block (see the module doc).
    `waited` tells whether another deploy held it first (then what is live may have changed meanwhile)."""

    def __init__(self, client, live: str, deadline: float, progress: Callable[[str], None] | None = None,
                 ttl: float | None = None):
        self.client, self.live, self.deadline, self.progress = client, live, deadline, progress
        self.ttl = LOCK_TTL_S if ttl is None else ttl
        self.token = uuid.uuid4().hex
        self.owner = f"{who()} on {socket.gethostname()} (pid {os.getpid()})"
        self.waited = False
        self.lost = False
        self._id: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> "DeployLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _metadata(self) -> dict:
        return {"owner": self.owner[:500], "token": self.token, "expires_at": str(_now_ms() + int(self.ttl * 1000))}

    def _create(self):
        from cognite.client.data_classes import EventWrite

        return self.client.events.create(EventWrite(
            external_id=lock_xid(self.live), type=EVENT_TYPE, subtype=self.live[:64], start_time=_now_ms(),
            description=f"deploy of {self.live} in progress"[:500], metadata=self._metadata()))

    def _mine(self):
        held = self.client.events.retrieve(external_id=lock_xid(self.live))
        return held if held is not None and (held.metadata or {}).get("token") == self.token else transient.NOT_YET

    def acquire(self) -> None:
        started = last_report = time.monotonic()
        while True:
            try:
                event = transient.retry(self._create, check=self._mine, deadline=self.deadline)
                self._id = event.id
                break
            except CogniteDuplicatedError:
                pass
            held = self.client.events.retrieve(external_id=lock_xid(self.live))
            if held is None:
                continue  # released meanwhile
            md = held.metadata or {}
            if md.get("token") == self.token:  # our create went through although its answer was lost
                self._id = held.id
                break
            expires = int(md.get("expires_at") or 0)
            if expires < _now_ms():
                try:
                    self.client.events.delete(id=held.id)
                    self._say(f"took over the lock of {self.live}: its holder {md.get('owner', '?')} stopped "
                              f"without releasing it (expired {_when(expires)})")
                except CogniteNotFoundError:
                    pass  # another deployer removed it first: race for the create again
                continue
            self.waited = True
            now = time.monotonic()
            if now >= self.deadline:
                raise LockTimeout(
                    f"{self.live} is being deployed by {md.get('owner', '?')} (since {_when(held.start_time or 0)}); "
                    f"gave up waiting after {now - started:.0f} s (--timeout). If that deploy was killed, its lock "
                    f"expires at {_when(expires)}: deploy again after that")
            if now - last_report >= PROGRESS_EVERY_S or last_report == started:
                last_report = now
                self._say(f"waiting for another deploy of {self.live} to finish: {md.get('owner', '?')}, since "
                          f"{_when(held.start_time or 0)} ({now - started:.0f} s)")
            interrupts.check(f"while waiting for another deploy of {self.live}")
            time.sleep(min(POLL_S, max(0.0, self.deadline - now)))
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name=f"lock {self.live}", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        from cognite.client.data_classes import EventUpdate

        while not self._stop.wait(self.ttl / 4):
            try:
                self.client.events.update(EventUpdate(id=self._id).metadata.add(self._metadata()))
            except CogniteNotFoundError:
                self.lost = True  # taken over: this deployer was presumed dead (stalled past the TTL)
                return
            except Exception:  # noqa: BLE001 - a missed beat is retried at the next one; the TTL covers several
                continue

    def check(self) -> None:
        """Raise if the lock was taken over (this deploy stalled past its TTL): it must not change CDF any more."""
        if self.lost:
            raise MlopsError(f"the deploy lock of {self.live} was taken over by another deploy while this one "
                             f"stalled for over {self.ttl:.0f} s: stopped without changing {self.live} further")

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=30)
        if self._id is not None and not self.lost:
            try:
                transient.retry(lambda: self.client.events.delete(id=self._id))
            except CogniteNotFoundError:
                pass
            except Exception:  # noqa: BLE001 - an unreleased lock expires after the TTL
                self._say(f"could not release the deploy lock of {self.live}: it expires in {self.ttl:.0f} s")
        self._id = None

    def _say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)
