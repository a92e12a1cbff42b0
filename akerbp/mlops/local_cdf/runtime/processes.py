"""Which process is which, across a crash: pids with their start time, and the function workers a server recorded.

A local CDF killed with SIGKILL cannot clean up after itself. Its workers end themselves (runner.py watches its
request pipe), but whatever a worker could not end (a worker stopped or stuck holding the GIL) is recorded in the
data dir with the server that owns it. The next server on that data dir ends the processes of owners that are gone.
A pid alone is not enough to kill anything: pids are reused, so a process counts as the recorded one only when its
start time (and the machine's boot) match too.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..store import Store


@lru_cache(maxsize=1)
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()[:8]
    except OSError:
        return "boot"


def start_time(pid: int) -> str | None:
    """An opaque token for when `pid` started (None when no such process, or it is a zombie): equal tokens mean the
    same process."""
    if not os.path.isdir("/proc/self"):
        return _ps_start_time(pid)
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            stat = f.read()
    except (OSError, ValueError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    if fields[0] == "Z":  # exited, waiting to be reaped: nothing left to end
        return None
    return f"{_boot_id()}.{fields[19]}"  # field 22 of stat: start time in clock ticks since boot


def _ps_start_time(pid: int) -> str | None:
    """Where there is no /proc (macOS): ps's start time, to the second."""
    try:
        out = subprocess.run(["ps", "-o", "lstart=", "-p", str(int(pid))], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def is_running(pid: int | None, started: str | None) -> bool:
    """Whether the process recorded as (pid, started) still runs; a reused pid is another process."""
    return bool(pid) and pid is not None and started is not None and start_time(int(pid)) == started


def me() -> tuple[int, str]:
    return os.getpid(), start_time(os.getpid()) or ""


def end(pid: int, started: str) -> bool:
    """SIGKILL the recorded process and its process group (a worker leads a session of its own, so this ends what
    the function started too), only if it is still that process. Whether it was running."""
    if not is_running(pid, started):
        return False
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class Registry:
    """The function workers this process runs, recorded in the store so a later server can end them if this one
    dies without stopping them."""

    def __init__(self, store: "Store") -> None:
        self.store = store
        self.owner = me()

    def record(self, pid: int, folder: str) -> None:
        started = start_time(pid)
        if started is not None:  # already gone: nothing to end later
            self.store.record_process(pid, started, *self.owner, folder)

    def forget(self, pid: int) -> None:
        self.store.forget_process(pid, *self.owner)


def end_orphans(store: "Store") -> list[int]:
    """End the recorded workers whose server is gone and remove their temporary folders; the pids ended."""
    ended = []
    for pid, started, owner_pid, owner_started, folder in store.recorded_processes():
        if is_running(owner_pid, owner_started):
            continue  # a live server (this one, or another process sharing the data dir) owns it
        if end(pid, started):
            ended.append(pid)
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
        store.forget_process(pid, owner_pid, owner_started)
    return ended
