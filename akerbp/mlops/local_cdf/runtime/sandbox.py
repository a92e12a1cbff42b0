"""What a function's worker may reach: its own code folder, its environment, and nothing of the server's.

Where bubblewrap works (`bwrap`; as root, or for a user with unprivileged user namespaces), each worker runs in a
sandbox: the file system read-only, the data dir replaced by an empty one in which only the function's own folder
(read-only) and the venvs reappear, a private /tmp, its own PID namespace (the server and the other workers do not
exist for it, so it can neither read their /proc/<pid>/environ nor signal them), no capabilities.
Besides, when the server runs as root, each function's workers run as a uid (and gid) of their own, derived from the function
(project/id) in a range no account uses, with no supplementary groups. Then the kernel keeps them out of the store
(cdf.sqlite3 with the signing secret and every function's secrets, 0600 root), the blobs (0700 root), the other
functions' folders (0750 root:<their gid>) and workers, and the server's process (its /proc/<pid>/environ and
signals). Their own folder is readable, never writable, so a worker cannot tamper with the code the next one runs.
A server that is not root cannot switch users: its workers get a clean environment and nothing more (README).
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import subprocess
from functools import lru_cache
from pathlib import Path

log = logging.getLogger("akerbp.mlops.local_cdf")
UID_BASE, UID_RANGE = 0x20000000, 1 << 28  # far above any real account, below the 32-bit "nobody" values
_warned: set[str] = set()


SANDBOX_ENV = "MLOPS_LOCAL_CDF_SANDBOX"  # "off": no bubblewrap even where it works


@lru_cache(maxsize=1)
def _bwrap_works(bwrap: str) -> bool:
    try:
        return subprocess.run([bwrap, "--ro-bind", "/", "/", "--unshare-pid", "--proc", "/proc", "--dev", "/dev",
                               "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def bwrap() -> str | None:
    """The bubblewrap to sandbox workers with, or None (not installed, off, or refused: no user namespaces)."""
    path = shutil.which("bwrap")
    if os.environ.get(SANDBOX_ENV) == "off" or path is None or not _bwrap_works(path):
        return None
    return path


def wrap(argv: list[str], *, folder: str, data_dir: str | None, worker_dir: str, extra: list[str]) -> list[str]:
    """argv run inside bubblewrap (when it works) as described above, without capabilities; `extra` are folders
    the interpreter and the runner need (read-only)."""
    tool = bwrap()
    if tool is None:
        return argv
    args = [tool, "--ro-bind", "/", "/", "--dev", "/dev", "--tmpfs", "/dev/shm", "--proc", "/proc", "--unshare-pid",
            "--unshare-ipc", "--tmpfs", "/tmp"]
    if data_dir:
        args += ["--tmpfs", data_dir]
        if os.path.isdir(os.path.join(data_dir, "venvs")):
            args += ["--ro-bind", os.path.join(data_dir, "venvs"), os.path.join(data_dir, "venvs")]
    for path in extra:
        if os.path.isdir(path):
            args += ["--ro-bind", path, path]
    args += ["--ro-bind", folder, folder, "--bind", worker_dir, worker_dir, "--chdir", folder]
    return [*args, "--cap-drop", "ALL", "--", *argv]


def can_switch_users() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def function_uid(key: str) -> int:
    """The same uid for a function in every server process sharing the data dir (its files' group must match)."""
    return UID_BASE + int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) % UID_RANGE


def _reachable(path: Path) -> bool:
    """Whether another user can walk down to `path` (every folder above it searchable by others)."""
    for folder in Path(os.path.abspath(path)).parents:
        try:
            if not os.stat(folder).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def worker_uid(key: str, *paths) -> int | None:
    """The uid to run the function's worker as, or None (same user as the server) when bubblewrap sandboxes it
    (its mount namespace hides what another uid would protect), when the server cannot switch,
    or the worker could not reach its interpreter, runner or folder as another user (e.g. a data dir inside a
    0700 folder); that case is logged once per reason, as a server that is root expects isolation."""
    if bwrap() is not None or not can_switch_users():
        return None
    blocked = [str(p) for p in paths if not _reachable(Path(os.path.realpath(p)))]
    if blocked:
        reason = ", ".join(blocked)
        if reason not in _warned:
            _warned.add(reason)
            log.warning("Local CDF: functions run as root, not as a user of their own, because that user could not "
                        "reach %s (a folder above is not searchable by others, chmod o+x it, or use a data dir "
                        "elsewhere)", reason)
        return None
    return function_uid(key)


def grant(folder: Path, gid: int) -> None:
    """Make the function's folder readable (not writable) by its workers' group and by nobody else."""
    folder = Path(folder)
    os.chmod(folder.parent, 0o711)
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        mode = os.stat(path).st_mode
        os.chown(path, 0, gid)
        if stat.S_ISDIR(mode):
            os.chmod(path, 0o750)
        else:
            os.chmod(path, 0o750 if mode & stat.S_IXUSR else 0o640)


def give(path: Path, uid: int) -> None:
    """A worker's own temp folder or log file: its to write, nobody else's to read."""
    os.chown(path, uid, uid)


def protect_data_dir(data_dir: Path) -> None:
    """The data dir searchable (workers reach their folders and venvs below it), the store and blobs private."""
    data_dir = Path(data_dir)
    os.chmod(data_dir, 0o711)
    for name in ("functions", "venvs"):  # searchable, not listable: which functions exist is no worker's business
        (data_dir / name).mkdir(exist_ok=True)
        os.chmod(data_dir / name, 0o711)
    for path in data_dir.iterdir():
        if path.name.startswith("cdf.sqlite3") or path.name == "blobs":
            os.chmod(path, 0o700 if path.is_dir() else 0o600)
