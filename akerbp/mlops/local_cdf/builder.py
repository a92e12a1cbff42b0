"""Turn an uploaded function code zip into a runnable folder and pick the Python that runs it.

Mirrors what CDF does at deploy time: unzip, check that `handle` exists with allowed arguments, and
pip-install requirements.txt (here into a cached venv that also sees the server's site-packages, like
CDF's image where cognite-sdk is preinstalled).
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import venv
import zipfile
from pathlib import Path, PurePosixPath

ALLOWED_HANDLE_ARGS = frozenset({"data", "client", "secrets", "function_call_info"})
READY_MARKER = ".local-cdf-ready"


class BuildError(Exception):
    """A function cannot be deployed; `message` goes to the function's error, `trace` holds the details."""

    def __init__(self, message: str, trace: str = ""):
        super().__init__(message)
        self.message = message
        self.trace = trace


class BuildCancelled(BuildError):
    """The server is stopping: the build gave up, which says nothing about the function's code."""

    def __init__(self) -> None:
        super().__init__("The build was cancelled: the local CDF is stopping")


_CANCEL_POLL_S = 0.1  # how quickly a waiting lock or a running pip notices that the server is stopping


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise BuildCancelled()


def _inside(root: Path, candidate: Path) -> bool:
    try:
        candidate.relative_to(root)
        return True
    except ValueError:
        return False


def extract_code(zip_path: Path, dest: Path) -> None:
    """Unzip into `dest`, refusing entries that would land outside it (zip slip, absolute paths, symlinks).

    Extraction happens in a sibling temp dir that is renamed at the end, so `dest` is either complete or absent.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    if not zipfile.is_zipfile(zip_path):
        raise BuildError("The function's code file is not a zip archive", trace=f"file: {zip_path.name}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        root = tmp.resolve()
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                name = info.filename
                posix = PurePosixPath(name.replace("\\", "/"))
                if posix.is_absolute() or (posix.parts and posix.parts[0].endswith(":")) or ".." in posix.parts:
                    raise BuildError(f"Unsafe path in the function's code zip: {name!r}")
                target = (root / posix).resolve()
                if not _inside(root, target):
                    raise BuildError(f"Unsafe path in the function's code zip: {name!r}")
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    link = zf.read(info).decode("utf-8", "replace")
                    link_target = (target.parent / link).resolve()
                    if os.path.isabs(link) or not _inside(root, link_target):
                        raise BuildError(f"Symlink in the function's code zip points outside it: {name!r} -> {link!r}")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(link, target)
                    continue
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if not _inside(root, target.parent.resolve()):
                    raise BuildError(f"Unsafe path in the function's code zip: {name!r}")
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
                if mode & 0o111:
                    os.chmod(target, 0o755)
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(tmp, dest)
    except zipfile.BadZipFile as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BuildError("The function's code zip is corrupt", trace=str(err)) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _handle_node(tree: ast.Module):
    """The last top-level `handle` definition or assignment, as the SDK picks it."""
    for node in reversed(tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "handle":
            return node
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            if isinstance(node.targets[0], ast.Name) and node.targets[0].id == "handle":
                return node
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            if isinstance(node.target, ast.Name) and node.target.id == "handle":
                return node
    return None


def validate_handler(folder: Path, function_path: str = "handler.py") -> None:
    """Check the entry point statically (no import: that is the worker's job, see WorkerPool.check_import)."""
    rel = PurePosixPath(function_path)
    if not function_path.endswith(".py") or rel.is_absolute() or ".." in rel.parts:
        raise BuildError(f"functionPath must be a relative path to a .py file, got {function_path!r}")
    file = Path(folder) / rel
    if not file.is_file():
        raise BuildError(
            f"No file {rel.name} found in the function's code (functionPath={function_path})",
            trace=f"Looked for {rel} in the root of the uploaded zip.",
        )
    source = file.read_bytes()
    try:
        tree = ast.parse(source, filename=function_path)
    except SyntaxError as err:
        raise BuildError(f"Syntax error in {function_path} line {err.lineno}: {err.msg}", trace=str(err)) from err
    node = _handle_node(tree)
    if node is None:
        raise BuildError(f"{function_path} must contain a top-level function named 'handle'")
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        args = node.args
        names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
        if args.vararg or args.kwarg:
            raise BuildError(
                f"handle() in {function_path} must not take *args/**kwargs; "
                f"allowed arguments are {sorted(ALLOWED_HANDLE_ARGS)}"
            )
        bad = [n for n in names if n not in ALLOWED_HANDLE_ARGS]
        if bad:
            raise BuildError(
                f"handle() in {function_path} has unsupported argument(s) {bad}; "
                f"allowed arguments are {sorted(ALLOWED_HANDLE_ARGS)}"
            )


def _venv_key(requirements: str, index_url: str | None, extra_index_urls: list[str] | None) -> str:
    h = hashlib.sha256()
    for part in (requirements, index_url or "", "\n".join(extra_index_urls or []), sys.version, sys.executable):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def _venv_python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def prepare_python(
    folder: Path,
    cache_root: Path,
    mode: str,
    index_url: str | None = None,
    extra_index_urls: list[str] | None = None,
    cancel: threading.Event | None = None,
) -> str:
    """Return the interpreter that runs the function.

    "shared": the server's own interpreter. "venv": a cached venv per (requirements, indexes, python) with
    requirements.txt installed; the same requirements are installed once, guarded by a file lock.
    The venv is built at its final path (venvs and pip's console scripts embed absolute paths, so a
    build-then-rename would leave broken scripts); it becomes visible only when the ready marker is written
    last, so no process ever uses a half-built venv, and a leftover failed build is wiped before rebuilding.
    Setting `cancel` makes a build waiting for the lock or running pip stop with BuildCancelled.
    """
    if mode not in ("shared", "venv"):
        raise ValueError(f"Unknown python mode {mode!r}; expected 'shared' or 'venv'")
    req = Path(folder) / "requirements.txt"
    if mode == "shared" or not req.is_file():
        return sys.executable
    requirements = req.read_text()
    cache_root = Path(cache_root)
    cache_root.mkdir(parents=True, exist_ok=True)
    env_dir = cache_root / _venv_key(requirements, index_url, extra_index_urls)
    if (env_dir / READY_MARKER).is_file():
        return str(_venv_python(env_dir))
    with open(cache_root / f"{env_dir.name}.lock", "w") as lock:
        _lock(lock, cancel)
        try:
            if (env_dir / READY_MARKER).is_file():
                return str(_venv_python(env_dir))
            if env_dir.exists():
                shutil.rmtree(env_dir)
            try:
                _build_venv(env_dir, req, index_url, extra_index_urls, cancel)
            except BaseException:
                shutil.rmtree(env_dir, ignore_errors=True)
                raise
            (env_dir / READY_MARKER).write_text(requirements)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return str(_venv_python(env_dir))


def _lock(lock, cancel: threading.Event | None) -> None:
    """Wait for the venv's file lock (another build of the same requirements holds it), giving up on `cancel`."""
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


def _build_venv(env_dir: Path, req: Path, index_url: str | None, extra_index_urls: list[str] | None,
                cancel: threading.Event | None = None) -> None:
    # Without its own pip (fast): the venv sees the server's pip through --system-site-packages.
    venv.EnvBuilder(system_site_packages=True, with_pip=False, symlinks=True).create(env_dir)
    python = str(_venv_python(env_dir))
    probe = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True)
    if probe.returncode != 0:
        subprocess.run([python, "-m", "ensurepip", "--default-pip"], capture_output=True, text=True, check=False)
    cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-r", str(req)]
    if index_url:
        cmd += ["--index-url", index_url]
    for url in extra_index_urls or []:
        cmd += ["--extra-index-url", url]
    _check(cancel)
    with tempfile.TemporaryFile() as output:  # a file, not a pipe: nobody reads while pip runs
        proc = subprocess.Popen(cmd, cwd=req.parent, stdin=subprocess.DEVNULL, stdout=output,
                                stderr=subprocess.STDOUT, start_new_session=True)
        while True:
            try:
                proc.wait(timeout=_CANCEL_POLL_S if cancel is not None else None)
                break
            except subprocess.TimeoutExpired:
                if cancel.is_set():
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    raise BuildCancelled() from None
        output.seek(0)
        if proc.returncode != 0:
            raise BuildError("Failed to install requirements",
                             trace=output.read().decode("utf-8", "replace"))
