"""A function's Python environment, made at build time as CDF makes it: the runtime's Python with cognite-sdk
preinstalled, plus requirements.txt pip-installed; a requirement pip cannot install fails the build with pip's output.

Two layers, each a venv built once and cached by what it is made of, under the data dir's venvs/ (or the folder
$MLOPS_LOCAL_CDF_VENV_CACHE names: data dirs sharing it build each venv once, e.g. a test suite's many local CDFs):
  base      what CDF preinstalls. On the server's own Python version: the server's environment itself, nothing is
            built. On another version (py312 asked, the server runs 3.11): a venv of that Python with cognite-sdk
            at the server's version, since compiled packages cannot be shared between versions.
  function  a venv of the same Python, without system site packages, whose .pth file lists the base's site dirs:
            the base's packages are importable and visible to pip (importlib.metadata), so
            `pip install -r requirements.txt` installs only what is missing or at another version, into the
            function's own site-packages, where it shadows the base. The .pth lists folders only, so the base's own
            .pth files (an editable akerbp.mlops) are not run: a function sees its bundled framework, as in CDF.
Isolation "shared-no-install" skips both and runs every function in the server's interpreter with nothing installed:
fast, but a missing requirement fails only when the code imports it.

A cached venv is built at its final path (venvs embed absolute paths) under a file lock, and counts only once its
ready marker is written, last: no process uses a half-built one, and a leftover failed build is wiped first.
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import pythons
from .builder import BuildCancelled, BuildError

VENV = "venv"
SHARED_NO_INSTALL = "shared-no-install"
ISOLATIONS = (VENV, SHARED_NO_INSTALL)
ISOLATION_ENV = "MLOPS_LOCAL_CDF_ISOLATION"
CACHE_ENV = "MLOPS_LOCAL_CDF_VENV_CACHE"
READY_MARKER = ".local-cdf-ready"
PIP_LOG = "local-cdf-pip.log"
BASE_PTH = "_local_cdf_base.pth"
PIP_FLAGS = ("--no-input", "--disable-pip-version-check", "--no-compile")
_CANCEL_POLL_S = 0.1  # how quickly a waiting lock or a running pip notices that the server is stopping
_STEP_TIMEOUT_S = 120  # creating a venv takes well under a second; this bounds a hung interpreter


def check_isolation(value: str, where: str = "isolation") -> str:
    if value not in ISOLATIONS:
        renamed = (f" ('shared' is now '{SHARED_NO_INSTALL}': it never installs requirements.txt)"
                   if value == "shared" else "")
        raise ValueError(f"{where} must be one of {', '.join(ISOLATIONS)}, got {value!r}{renamed}")
    return value


def default_isolation() -> str:
    """$MLOPS_LOCAL_CDF_ISOLATION, else venv: the embedded local CDF of every mlops command and `serve` share it."""
    return check_isolation(os.environ.get(ISOLATION_ENV) or VENV, f"${ISOLATION_ENV}")


def cache_root(data_dir: Path) -> Path:
    """Where a data dir's venvs are cached: $MLOPS_LOCAL_CDF_VENV_CACHE, else its own venvs/ folder."""
    shared = os.environ.get(CACHE_ENV, "").strip()
    return Path(shared) if shared else Path(data_dir) / "venvs"


@dataclass(frozen=True)
class Environment:
    python: str  # the interpreter that runs the function
    version: str  # its version, "3.12.1"
    note: str = ""  # why it is not the runtime's version, when it is not


@dataclass(frozen=True)
class _Base:
    site_dirs: tuple[str, ...]
    identity: str  # changes when what the base holds changes, so function venvs on it are rebuilt
    has_pip: bool


def prepare(folder: Path, cache_root: Path, isolation: str, runtime: str = "py311", index_url: str | None = None,
            extra_index_urls: list[str] | None = None, cancel: threading.Event | None = None) -> Environment:
    """The environment that runs the function in `folder` (its requirements.txt installed unless shared-no-install).

    Setting `cancel` makes a build waiting for a lock or running pip stop with BuildCancelled."""
    check_isolation(isolation)
    server = pythons.server()
    if isolation == SHARED_NO_INSTALL:
        note = "" if pythons.runtime_minor(runtime) == server.minor else (
            f"runtime {runtime} asked, but isolation {SHARED_NO_INSTALL} runs every function on the server's "
            f"Python {server.version}")
        return Environment(sys.executable, server.version, note)
    found = pythons.find(runtime)
    python = found or server
    note = "" if found else (
        f"runtime {runtime} asked, but no Python {'.'.join(map(str, pythons.runtime_minor(runtime)))} was found on "
        f"this machine (PATH, pyenv, uv, asdf, ${pythons.ENV_VAR}): it runs on the server's Python {server.version}")
    cache_root = Path(cache_root).absolute()  # pip runs in the function folder
    base = _server_base() if python == server else _base_image(python, cache_root, cancel)
    req = Path(folder).absolute() / "requirements.txt"
    requirements = req.read_text() if req.is_file() else ""
    key = _digest(requirements, index_url or "", "\n".join(extra_index_urls or []), python.executable,
                  python.version, base.identity)
    env_dir = cache_root / key
    _cached(env_dir, lambda: _build_function_env(env_dir, python, base, req, index_url, extra_index_urls, cancel),
            cancel)
    return Environment(str(_venv_python(env_dir)), python.version, note)


# -- the base: what CDF preinstalls ------------------------------------------------------------------------------
def _server_site_dirs() -> tuple[str, ...]:
    """The server's site dirs, in its sys.path order: its venv's, or the interpreter's and the user's."""
    dirs = set(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.add(site.getusersitepackages())
    return tuple(p for p in sys.path if p in dirs and os.path.isdir(p))


def _installed(site_dirs: tuple[str, ...]) -> str:
    """The distributions (name-version) in these dirs: a server environment whose packages change is another base."""
    names = []
    for folder in site_dirs:
        names += sorted(n for n in os.listdir(folder) if n.endswith((".dist-info", ".egg-info")))
    return "\n".join(names)


def _server_base() -> _Base:
    dirs = _server_site_dirs()
    identity = _digest("server", sys.executable, sys.version, *dirs, _installed(dirs))
    return _Base(dirs, identity, importlib.util.find_spec("pip") is not None)


def _cognite_requirement() -> str:
    """cognite-sdk at the server's version (the SDK the local CDF speaks to); the newest if the server has none."""
    try:
        return f"cognite-sdk=={importlib.metadata.version('cognite-sdk')}"
    except importlib.metadata.PackageNotFoundError:
        return "cognite-sdk"


def _base_image(python: pythons.Interpreter, cache_root: Path, cancel: threading.Event | None) -> _Base:
    """A venv of another Python with cognite-sdk installed, as CDF's image of that runtime has it."""
    spec = _cognite_requirement()
    env_dir = cache_root / f"base-py{python.minor[0]}{python.minor[1]}-{_digest(python.executable, python.version, spec)}"

    def build() -> None:
        _run([python.executable, "-m", "venv", "--without-pip", str(env_dir)], f"Could not create a venv with "
             f"{python.executable}", cancel)
        _pip_install(env_dir, _Base((), "", False), [spec], None, None, cancel,
                     f"Failed to install {spec} for Python {python.version} (CDF preinstalls it)")

    _cached(env_dir, build, cancel)
    dirs = (str(_site_packages(env_dir)),)
    return _Base(dirs, env_dir.name, (Path(dirs[0]) / "pip").is_dir())


# -- the function's venv ----------------------------------------------------------------------------------------
def _build_function_env(env_dir: Path, python: pythons.Interpreter, base: _Base, req: Path, index_url: str | None,
                        extra_index_urls: list[str] | None, cancel: threading.Event | None) -> None:
    if python == pythons.server():
        venv.EnvBuilder(system_site_packages=False, with_pip=False, symlinks=True).create(env_dir)
    else:
        _run([python.executable, "-m", "venv", "--without-pip", str(env_dir)],
             f"Could not create a venv with {python.executable}", cancel)
    (_site_packages(env_dir) / BASE_PTH).write_text("".join(f"{d}\n" for d in base.site_dirs))
    if req.is_file() and _has_requirements(req.read_text()):
        _pip_install(env_dir, base, ["-r", str(req)], index_url, extra_index_urls, cancel,
                     "Failed to install requirements", cwd=req.parent)


def _has_requirements(text: str) -> bool:
    return any(line.strip() and not line.strip().startswith("#") for line in text.splitlines())


def _pip_install(env_dir: Path, base: _Base, args: list[str], index_url: str | None,
                 extra_index_urls: list[str] | None, cancel: threading.Event | None, failure: str,
                 cwd: Path | None = None) -> None:
    """pip install into env_dir; its output is kept in the venv (PIP_LOG), and is the trace of a failure."""
    python = str(_venv_python(env_dir))
    if base.has_pip:
        pip = [python, "-m", "pip"]  # the base's pip, seen through the .pth file
    elif importlib.util.find_spec("pip") is not None:
        pip = [sys.executable, "-m", "pip", "--python", python]  # the server's pip, working on the venv
    else:
        _run([python, "-m", "ensurepip", "--default-pip"], "Could not install pip in the function's venv", cancel)
        pip = [python, "-m", "pip"]
    cmd = [*pip, "install", *PIP_FLAGS, *args]
    if index_url:
        cmd += ["--index-url", index_url]
    for url in extra_index_urls or []:
        cmd += ["--extra-index-url", url]
    code, output = _run_cancellable(cmd, cwd, cancel)
    (env_dir / PIP_LOG).write_text(output)
    if code != 0:
        raise BuildError(failure, trace=output)


def _run(cmd: list[str], failure: str, cancel: threading.Event | None) -> None:
    code, output = _run_cancellable(cmd, None, cancel, timeout=_STEP_TIMEOUT_S)
    if code != 0:
        raise BuildError(failure, trace=f"$ {' '.join(cmd)}\n{output}")


def _run_cancellable(cmd: list[str], cwd: Path | None, cancel: threading.Event | None,
                     timeout: float | None = None) -> tuple[int, str]:
    """Run to the end (or `timeout`): (exit code, output). A set `cancel` kills it with what it started."""
    _check(cancel)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    with tempfile.TemporaryFile() as output:  # a file, not a pipe: nobody reads while pip runs
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=output,
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                proc.wait(timeout=_CANCEL_POLL_S)
                break
            except subprocess.TimeoutExpired:
                stop = cancel is not None and cancel.is_set()
                if stop or (deadline is not None and time.monotonic() >= deadline):
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    if stop:
                        raise BuildCancelled() from None
                    output.seek(0)
                    return -9, output.read().decode("utf-8", "replace") + f"\n[killed after {timeout:g} s]"
        output.seek(0)
        return proc.returncode, output.read().decode("utf-8", "replace")


# -- the cache ----------------------------------------------------------------------------------------------------
def _cached(env_dir: Path, build: Callable[[], None], cancel: threading.Event | None) -> None:
    """Build env_dir once: under its file lock, unless its ready marker says another build finished it."""
    if (env_dir / READY_MARKER).is_file():
        return
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(env_dir.parent / f"{env_dir.name}.lock", "w") as lock:
        _lock(lock, cancel)
        try:
            if (env_dir / READY_MARKER).is_file():
                return
            if env_dir.exists():
                shutil.rmtree(env_dir)
            try:
                build()
            except BaseException:
                shutil.rmtree(env_dir, ignore_errors=True)
                raise
            (env_dir / READY_MARKER).write_text("")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _lock(lock, cancel: threading.Event | None) -> None:
    """Wait for a venv's file lock (another build of the same venv holds it), giving up on `cancel`."""
    if cancel is None:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if cancel.wait(_CANCEL_POLL_S):
                raise BuildCancelled() from None


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise BuildCancelled()


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def _venv_python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def _site_packages(env_dir: Path) -> Path:
    found = sorted(env_dir.glob("lib/python3.*/site-packages"))
    if len(found) != 1:
        raise BuildError(f"The venv {env_dir} has {len(found)} site-packages folders, expected one")
    return found[0]
