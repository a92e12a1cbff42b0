"""Turn an uploaded function code zip into a checked function folder, as CDF does at deploy time: unzip safely and
check that `handle` exists with allowed arguments. The Python environment it runs in is environments.py's.
"""

from __future__ import annotations

import ast
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

ALLOWED_HANDLE_ARGS = frozenset({"data", "client", "secrets", "function_call_info"})
# What one code zip may extract to (a zip bomb must not fill the disk): local limits, as CDF publishes none for the
# unzipped code. MLOPS_LOCAL_CDF_MAX_CODE_BYTES / MLOPS_LOCAL_CDF_MAX_CODE_FILES change them.
MAX_CODE_BYTES = 500 * 1024 * 1024
MAX_CODE_FILES = 100_000


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


def _inside(root: Path, candidate: Path) -> bool:
    try:
        candidate.relative_to(root)
        return True
    except ValueError:
        return False


def _limit(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _copy_capped(src, out, used: int, limit: int, name: str) -> int:
    """Copy while the code's total stays within `limit` bytes (counted as read: a zip's declared sizes can lie);
    the new total."""
    while chunk := src.read(1 << 20):
        used += len(chunk)
        if used > limit:
            raise BuildError(f"The function's code zip extracts to more than {limit / (1024 * 1024):g} MB (refused at "
                             f"{name!r}); make the code smaller, e.g. leave data and packages out of the zip")
        out.write(chunk)
    return used


def _check_links(root: Path) -> None:
    """Every symlink, once all exist, must resolve inside `root`: links chained through other links (b -> ., then
    d -> b/b/../etc) only show where they lead when the whole tree is there."""
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            if path.is_symlink() and not _inside(root, Path(os.path.realpath(path))):
                rel = path.relative_to(root).as_posix()
                raise BuildError(f"Symlink in the function's code zip points outside it: {rel!r} -> "
                                 f"{os.readlink(path)!r}")


def extract_code(zip_path: Path, dest: Path) -> None:
    """Unzip into `dest`, refusing entries that would land outside it (zip slip, absolute paths, symlinks, however
    chained) and zips that extract to more than MAX_CODE_BYTES or MAX_CODE_FILES.

    Extraction happens in a sibling temp dir that is renamed at the end, so `dest` is either complete or absent.
    """
    max_bytes = _limit("MLOPS_LOCAL_CDF_MAX_CODE_BYTES", MAX_CODE_BYTES)
    max_files = _limit("MLOPS_LOCAL_CDF_MAX_CODE_FILES", MAX_CODE_FILES)
    zip_path, dest = Path(zip_path), Path(dest)
    if not zipfile.is_zipfile(zip_path):
        raise BuildError("The function's code file is not a zip archive", trace=f"file: {zip_path.name}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        root = tmp.resolve()
        with zipfile.ZipFile(zip_path) as zf:
            entries = zf.infolist()
            if len(entries) > max_files:
                raise BuildError(f"The function's code zip has {len(entries)} entries; the limit is {max_files}")
            used = 0
            for info in entries:
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
                    used = _copy_capped(src, out, used, max_bytes, name)
                if mode & 0o111:
                    os.chmod(target, 0o755)
        _check_links(root)
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
