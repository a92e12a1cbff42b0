"""What of the framework a function folder carries: the bundled akerbp/mlops files and its handler.py.

A deployed function runs only what it carries, so the bundle must hold every module the function imports and
nothing deploy-time; build.py puts it beside the model's code. A prediction or training function carries the runtime
its service needs (RUNTIME_PACKAGES, RUNTIME_FILES); an automation function (automations/function.py) runs the steps
of a model's automations, deploys included, so it carries the deploy path and the settings too (AUTOMATION_PACKAGES),
but never the CLI, the local CDF or the templates. Both lists are completed by walking the imports (lazy ones too)
of what they carry, transitively; each file is parsed once per content: in this process, and across processes
through a cache on disk.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import threading
import uuid
from pathlib import Path

import akerbp.mlops as mlops_package
from akerbp.mlops.function_folder import BUNDLE_DIR, HANDLER_FILE, handler_source
from akerbp.mlops.vocabulary import AUTOMATION

RUNTIME_FILES = ("__init__.py", "errors.py", "audit.py", "model_manager.py", "conditions.py",  # model_manager: the seed's name
                 # the recording half of analytics (stdlib only), which services/prediction.py imports: the walk
                 # below follows top-level modules only, not a package's
                 "analytics/__init__.py", "analytics/summary.py", "analytics/recorder.py")
RUNTIME_PACKAGES = ("services", "utils", "registry")
# Deploy-time modules a function must never carry (pydantic settings, CLI-side logic), even if named in a lazy import.
NEVER_BUNDLED = ("settings", "settings_schema", "settings_files", "pipeline")
# An automation function deploys from inside CDF: the deploy path, the settings and CDF access come along; the
# packages it never carries (cli/, local_cdf/, templates/) are simply not walked, and no bundled module imports them
# at its top.
AUTOMATION_PACKAGES = RUNTIME_PACKAGES + ("deployment", "automations", "cdf", "analytics", "batch")
AUTOMATION_NEVER_BUNDLED = ("pipeline", "model_repo")


def _imported_modules(path: Path, known: dict[str, list[str]] | None = None) -> frozenset[str]:
    """Top-level akerbp.mlops modules a file imports (at any depth of the code: lazy imports count); parsed once per
    content of the file (see runtime_files). known: the on-disk cache, content digest -> modules; updated here."""
    status = path.stat()
    key = (status.st_mtime_ns, status.st_size)
    cached = _parsed.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    source = path.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:32]
    if known is not None and isinstance(known.get(digest), list):
        _parsed[path] = (key, frozenset(known[digest]))
        return _parsed[path][1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["akerbp", "mlops"] and len(parts) > 2:
                found.add(parts[2])
    _parsed[path] = (key, frozenset(found))
    if known is not None:
        known[digest] = sorted(found)
    return _parsed[path][1]


# What each framework file imports, by (mtime, size) of the file: a build parses only files that changed since the
# last one (an editable install may be edited while a process runs). _runtime_lock makes the walk one thread's at a
# time: two concurrent builds parsing the same files once crashed the interpreter's AST parser.
_parsed: dict[Path, tuple[tuple[int, int], frozenset[str]]] = {}
_runtime_lock = threading.Lock()
# The same, across processes: parsing the ~75 files an automation function bundles costs about a second, which every
# `mlops automations register` (and the first deploy of a process) paid to hash an unchanged folder. Keyed by the
# file's content digest, so an edited file is parsed again; any problem with the file (read-only home, a corrupt or
# concurrent write) only means parsing.
IMPORTS_CACHE_VERSION = 1
IMPORTS_CACHE_LIMIT = 5000  # entries: a few dozen framework versions' files


def _imports_cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "akerbp-mlops" / f"imports-v{IMPORTS_CACHE_VERSION}.json"


def _read_imports_cache() -> dict[str, list[str]]:
    try:
        known = json.loads(_imports_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _write_imports_cache(known: dict[str, list[str]]) -> None:
    """Merged with what another process wrote meanwhile; bounded (framework versions come and go)."""
    path = _imports_cache_file()
    kept = {**_read_imports_cache(), **known}
    if len(kept) > IMPORTS_CACHE_LIMIT:
        kept = dict(known)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps(kept, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def runtime_files(service: str = "prediction") -> list[Path]:
    """The bundled runtime: the services and utils packages (an automation's: AUTOMATION_PACKAGES), RUNTIME_FILES,
    and every top-level module of akerbp.mlops they import, transitively (audit, vocabulary, ...). Thread-safe; files
    are re-parsed only when they changed."""
    source = Path(mlops_package.__file__).resolve().parent
    packages = AUTOMATION_PACKAGES if service == AUTOMATION else RUNTIME_PACKAGES
    never = AUTOMATION_NEVER_BUNDLED if service == AUTOMATION else NEVER_BUNDLED
    with _runtime_lock:
        files = [p for package in packages for p in sorted((source / package).rglob("*.py"))
                 if "__pycache__" not in p.parts]
        queue = [source / name for name in RUNTIME_FILES if (source / name).is_file()] + files
        seen: set[Path] = set()
        fresh = any(_parsed.get(p, ((0, 0),))[0] != _stat_key(p) for p in queue)
        known = _read_imports_cache() if fresh else None
        before = dict(known) if known is not None else None
        while queue:
            path = queue.pop()
            if path in seen:
                continue
            seen.add(path)
            for module in _imported_modules(path, known):
                candidate = source / f"{module}.py"
                if candidate.is_file() and module not in never:
                    queue.append(candidate)
        if known is not None and known != before:
            _write_imports_cache(known)
        return sorted(seen)


def _stat_key(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_mtime_ns, status.st_size


def copy_runtime(dest: Path, service: str = "prediction", analytics: bool = False) -> None:
    """The bundled framework and handler.py, as every function folder holds them (analytics: a prediction's handler
    names `client`, to write its rows)."""
    source = Path(mlops_package.__file__).resolve().parent
    for path in runtime_files(service):
        target = dest / BUNDLE_DIR / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    shutil.copy2(source.joinpath(*handler_source(service, analytics)), dest / HANDLER_FILE)
