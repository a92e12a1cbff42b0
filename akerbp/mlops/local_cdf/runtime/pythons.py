"""Which Python runs a function of a given runtime (py310, py311, ...), as CDF runs each runtime on its version.

The server's own interpreter when it is that version; else an interpreter of that version found on this machine;
else None, and the caller falls back to the server's and says so. Searched: $MLOPS_LOCAL_CDF_PYTHONS when set
(interpreters or folders holding `python3.X`, separated by os.pathsep), *instead of* the usual places (PATH, then
pyenv's, uv's and asdf's Pythons): to add one folder and keep the rest, write `/opt/py/bin:$PATH`. Each candidate is
run once to learn its real version and executable (a pyenv shim resolves to the interpreter behind it).
"""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "MLOPS_LOCAL_CDF_PYTHONS"
_RUNTIME = re.compile(r"^py(\d)(\d+)$")
_PROBE = "import platform, sys; print(platform.python_version()); print(sys.executable)"


@dataclass(frozen=True)
class Interpreter:
    executable: str
    version: str  # "3.12.1"

    @property
    def minor(self) -> tuple[int, int]:
        major, minor = self.version.split(".")[:2]
        return int(major), int(minor)


def runtime_minor(runtime: str) -> tuple[int, int]:
    """("py312") -> (3, 12)."""
    match = _RUNTIME.match(runtime or "")
    if not match:
        raise ValueError(f"runtime must look like py311, got {runtime!r}")
    return int(match[1]), int(match[2])


def server() -> Interpreter:
    return Interpreter(sys.executable, platform.python_version())


_found: dict[tuple, Interpreter | None] = {}
_lock = threading.Lock()


def find(runtime: str) -> Interpreter | None:
    """An interpreter of the runtime's version: the server's if it is one, else the first found (cached)."""
    wanted = runtime_minor(runtime)
    if sys.version_info[:2] == wanted:
        return server()
    key = (wanted, os.environ.get(ENV_VAR), os.environ.get("PATH"))
    with _lock:  # one search per version at a time: concurrent builds wait for it instead of repeating it
        if key not in _found:
            _found[key] = next(filter(None, (_probe(c, wanted) for c in _candidates(wanted))), None)
        return _found[key]


def _candidates(wanted: tuple[int, int]) -> list[Path]:
    name = f"python{wanted[0]}.{wanted[1]}"
    listed = os.environ.get(ENV_VAR)
    if listed is not None:
        places = [Path(p) for p in listed.split(os.pathsep) if p]
        files = [p for p in places if p.is_file()]
        folders = [p for p in places if p.is_dir()]
    else:
        files = []
        folders = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
        home = Path.home()
        managed = [
            (Path(os.environ.get("PYENV_ROOT") or home / ".pyenv") / "versions", "*"),
            (home / ".local" / "share" / "uv" / "python", "cpython-*"),
            (home / ".asdf" / "installs" / "python", "*"),
        ]
        for root, pattern in managed:
            if root.is_dir():
                folders += [d / "bin" for d in sorted(root.glob(pattern), key=_version_order, reverse=True)]
    seen, out = set(), []
    for path in files + [f / name for f in folders] + [f / "bin" / name for f in folders if listed is not None]:
        if path.is_file() and os.access(path, os.X_OK) and path not in seen:
            seen.add(path)
            out.append(path)
    return out


def _version_order(folder: Path) -> tuple[int, ...]:
    """Newest first among pyenv's 3.12.1, 3.12.10, uv's cpython-3.12.4-linux-x86_64-gnu, ..."""
    return tuple(int(n) for n in re.findall(r"\d+", folder.name)[:3])


def _probe(path: Path, wanted: tuple[int, int]) -> Interpreter | None:
    try:
        done = subprocess.run([str(path), "-I", "-c", _PROBE], capture_output=True, text=True, timeout=15,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.split("\n")
    if done.returncode != 0 or len(lines) < 2:
        return None  # e.g. a pyenv shim of a version that is not active
    found = Interpreter(lines[1] if lines[1] and os.path.isfile(lines[1]) else str(path), lines[0])
    return found if found.minor == wanted else None
