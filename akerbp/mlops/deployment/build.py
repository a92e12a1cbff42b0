"""The function folder of one service: what CDF will run, built atomically, hashed and zipped deterministically.

The folder's layout is function_folder.py's (the runtime reads the same names).
Three kinds of folder (vocabulary: prediction, training and AUTOMATION): each holds the model's code and the
framework bundle.py says its service carries; a prediction's also holds the artifact, an automation function's the
model's test and requirements files and the model's settings as JSON.

Each build gets a folder of its own (.mlops/build/.{xid}.{pid}.{random}), which the deploy zips and service-tests:
two deploys of the same model at once (two terminals, two threads) never read each other's files, so the zip
shipped is always the content its hash names. .mlops/build/{xid} is a symlink to the latest build, to look at.
A build sweeps the folders of earlier builds of the same function that nobody uses any more (their process ended,
or, in this process, their BuiltFolder is gone); the latest build stays.

The content hash covers every file of the folder (so the artifact, the model code, the runtime and the function
options) plus a slow, salted digest of the secret values (a rotated secret redeploys; the digest stored in
function metadata cannot be reversed into the secret). Same hash as the live function = nothing to deploy.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
import threading
import uuid
import weakref
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from akerbp.mlops.deployment.bundle import copy_runtime
from akerbp.mlops.deployment.options import FunctionOptions
from akerbp.mlops.errors import MlopsError, UsageError
from akerbp.mlops.function_folder import (
    ARTIFACT_DIR,
    AUTOMATION_SETTINGS_KEY,
    HANDLER_FILE,
    OPTIONS_FILE,
    REQUIREMENTS_FILE,
    SERVICE_SETTINGS_FILE,
    is_reserved,
)
from akerbp.mlops.vocabulary import AUTOMATION

if TYPE_CHECKING:
    from akerbp.mlops.settings import ModelSettings

# What an automation function needs besides the model's requirements: the settings (pydantic, yaml), ServiceTest's
# checks and the model's test file (pytest), the notifications (requests). cognite-sdk is preinstalled in CDF.
AUTOMATION_REQUIREMENTS = ("pydantic>=2", "pyyaml>=6", "pytest>=7", "requests>=2")
IGNORED = ("__pycache__", "*.pyc", "*.pyo", ".pytest_cache", ".mypy_cache", ".ipynb_checkpoints", ".DS_Store", ".git")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
HASH_VERSION = b"akerbp.mlops function v1\0"
# The mlops_* keys deploy adds to function metadata (see deploy.function_metadata); CDF allows 16 pairs in all.
MLOPS_METADATA_KEYS = 10
MAX_FUNCTION_METADATA = 16
_FRAMEWORK_REQUIREMENT = re.compile(r"^\s*akerbp[._-]mlops\b", re.IGNORECASE)
_ignore = shutil.ignore_patterns(*IGNORED)


@dataclass
class BuiltFolder:
    path: Path
    content_hash: str
    options: FunctionOptions  # also written into the folder as mlops_function.json
    files: list[str] = field(default_factory=list)


def function_options(settings: ModelSettings, service: str, env: str) -> FunctionOptions:
    """What CDF needs besides the code: from the settings, never secret values (only their names)."""
    info = settings.service_info(service)
    user_metadata = dict(info.metadata)
    clashing = sorted(k for k in user_metadata if k.startswith("mlops_"))
    if clashing:
        raise UsageError(
            f"model '{settings.model_name}': field 'info.{service}.metadata': key(s) {', '.join(clashing)} start with "
            "'mlops_', which the deploy step reserves: rename them"
        )
    room = MAX_FUNCTION_METADATA - MLOPS_METADATA_KEYS
    if len(user_metadata) > room:
        raise UsageError(
            f"model '{settings.model_name}': field 'info.{service}.metadata' has {len(user_metadata)} pairs; "
            f"the deploy step adds {MLOPS_METADATA_KEYS} mlops_* keys and CDF allows {MAX_FUNCTION_METADATA} per "
            f"function: keep at most {room}"
        )
    return FunctionOptions(
        external_id=settings.function_external_id(service, env),
        name=f"{settings.human_friendly_model_name} ({service}, {env})"[:140],
        description=info.description or f"akerbp.mlops {service} service of {settings.model_name} ({env})",
        owner=info.owner,
        metadata=user_metadata,
        env_vars=dict(settings.env_vars),
        cpu=settings.cpu,
        memory=settings.memory,
        runtime=settings.python_version,
        function_path=HANDLER_FILE,
        secrets=list(settings.secrets),
    )


def requirements_txt(settings: ModelSettings, service: str = "prediction", extra: tuple[str, ...] = ()) -> str:
    """requirements.model without the framework (bundled; pip would fetch another copy), plus jsonschema when an
    input schema must be checked. cognite-sdk is preinstalled in CDF Functions."""
    lines = settings.req_path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if not _FRAMEWORK_REQUIREMENT.match(line)]
    names = {re.split(r"[\s<>=!~\[;]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
             for line in kept if line.strip() and not line.strip().startswith("#")}
    if settings.input_schema and "jsonschema" not in names:
        kept.append("jsonschema>=4.18  # added by akerbp.mlops: the input schema is checked in the function")
    if service == AUTOMATION:
        kept += [f"{r}  # added by akerbp.mlops: the automation function deploys" for r in AUTOMATION_REQUIREMENTS
                 if re.split(r"[<>=]", r, maxsplit=1)[0] not in names]
    kept += [f"{r}  # added by akerbp.mlops: the automations need it" for r in extra
             if re.split(r"[<>=]", r, maxsplit=1)[0] not in names]
    return "\n".join(kept).rstrip() + "\n"


def _service_settings(settings: ModelSettings, service: str, env: str, model_id: str | None,
                      schema: str | None) -> dict[str, Any]:
    condition = settings.deployment_condition.model_dump() if settings.deployment_condition else None
    return {
        "model_name": settings.model_name,
        "service": service,
        "env": env,
        "model_id": model_id,
        "model_module": settings.module,
        "artifact_folder": ARTIFACT_DIR if service == "prediction" else None,
        "input_schema": schema,
        "deployment_condition": condition,
        "dataset": settings.dataset,
        "secrets": list(settings.secrets),
        "analytics": settings.analytics.model_dump() if service == "prediction" else None,
    }


def _populate(dest: Path, settings: ModelSettings, service: str, env: str, artifact: Path | None,
              model_id: str | None, options: FunctionOptions, extra_requirements: tuple[str, ...] = ()) -> None:
    code = settings.code_folder
    if is_reserved(code):
        raise UsageError(
            f"model '{settings.model_name}': field 'model_file': its top folder {code!r} clashes with the function "
            "folder's own layout (akerbp/, artifact/): move the model code to another folder"
        )
    shutil.copytree(settings.root / code, dest / code, ignore=_ignore)
    copy_runtime(dest, service, service == "prediction" and settings.analytics.enabled)
    if service == AUTOMATION:  # what a deploy from inside the function reads besides the code folder
        for rel in (settings.test_file, settings.req_file):
            if not (dest / rel).is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(settings.root / rel, dest / rel)
    if service == "prediction":
        if artifact is None or not Path(artifact).is_dir():
            raise MlopsError(f"model '{settings.model_name}': no artifact folder to deploy ({artifact})")
        shutil.copytree(artifact, dest / ARTIFACT_DIR, ignore=_ignore)
    schema = settings.input_schema
    source = settings.input_schema_path  # set when schema is
    if schema and source is not None and not (dest / schema).is_file():
        (dest / schema).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest / schema)
    (dest / REQUIREMENTS_FILE).write_text(requirements_txt(settings, service, extra_requirements), encoding="utf-8")
    service_settings = _service_settings(settings, service, env, model_id, schema)
    if service == AUTOMATION:  # the deploy step validates them back into ModelSettings, rooted at the folder
        service_settings[AUTOMATION_SETTINGS_KEY] = settings.model_dump(mode="json")
    (dest / SERVICE_SETTINGS_FILE).write_text(json.dumps(service_settings, indent=2, sort_keys=True) + "\n")
    (dest / OPTIONS_FILE).write_text(json.dumps(options.as_dict(), indent=2, sort_keys=True) + "\n")


def build_folder(settings: ModelSettings, service: str, env: str, *, artifact: Path | None, model_id: str | None,
                 secrets: dict[str, str], build_root: Path | None = None,
                 options_update: Mapping[str, Any] | None = None,
                 extra_requirements: tuple[str, ...] = ()) -> BuiltFolder:
    """Build the function folder in a folder of this build's own under .mlops/build/, hash it, and point
    .mlops/build/{model}-{service}-{env} at it. The folder stays as long as the BuiltFolder is referenced.
    options_update: function options other than the settings' (an automation function's cpu, memory, env vars and
    secret names); extra_requirements: lines for its requirements.txt besides the model's (an automation function's
    duckdb)."""
    options = function_options(settings, service, env)
    if options_update:
        options = dataclasses.replace(options, **options_update)
    root = build_root or settings.root / ".mlops" / "build"
    root.mkdir(parents=True, exist_ok=True)
    xid = options.external_id
    _sweep(root, xid)
    with _lock:  # created and claimed at once: a sweep in another thread never sees it unclaimed
        folder = Path(tempfile.mkdtemp(prefix=f".{xid}.{os.getpid()}.", dir=root))
        _in_use.add(str(folder))
    try:
        _populate(folder, settings, service, env, artifact, model_id, options, extra_requirements)
        files, digest = tree_digest(folder)
        os.chmod(folder, 0o755)
    except BaseException:
        _release(str(folder))
        shutil.rmtree(folder, ignore_errors=True)
        raise
    built = BuiltFolder(folder, content_hash(digest, xid, secrets), options, files)
    weakref.finalize(built, _release, str(folder))
    _point(root / xid, folder)
    return built


# Folders of this process's builds still in use (their BuiltFolder is alive): a sweep keeps them.
_in_use: set[str] = set()
_lock = threading.Lock()


def _release(folder: str) -> None:
    with _lock:
        _in_use.discard(folder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, run by someone else
        return True
    return True


def _sweep(root: Path, xid: str) -> None:
    """Delete the build folders of xid that no build uses: of ended processes, or of this process and released;
    leftovers of older akerbp.mlops versions too. The latest build (the symlink's target) stays."""
    latest = (root / xid).resolve() if (root / xid).is_symlink() else None
    found = [p for p in root.glob(f".{xid}.*") if p.is_dir() and not p.is_symlink()]
    with _lock:  # after the glob: every folder found was claimed before this snapshot
        claimed = set(_in_use)
    for path in found:
        owner = path.name[len(xid) + 2:].split(".", 1)[0]
        pid = int(owner) if owner.isdigit() else None
        if path.resolve() == latest or str(path) in claimed:
            continue
        if pid is not None and pid != os.getpid() and _alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)


def _point(link: Path, folder: Path) -> None:
    """Make `link` a symlink to folder, atomically; where symlinks cannot be made, there is no link."""
    staged = link.parent / f".link.{link.name}.{uuid.uuid4().hex}"
    try:
        os.symlink(folder.name, staged)  # relative: the repo may move
        if link.is_dir() and not link.is_symlink():  # the folder an older akerbp.mlops built in place
            trash = Path(tempfile.mkdtemp(prefix=f".{link.name}.old.", dir=link.parent))
            os.rename(link, trash / "folder")
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(staged, link)
    except OSError:
        staged.unlink(missing_ok=True)


def _files(folder: Path) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", ".pytest_cache"))
        for name in filenames:
            if name.endswith((".pyc", ".pyo")):
                continue
            path = Path(dirpath) / name
            found.append((path.relative_to(folder).as_posix(), path))
    return sorted(found)


def _executable(path: Path) -> bool:
    return bool(path.stat().st_mode & stat.S_IXUSR)


def tree_digest(folder: Path) -> tuple[list[str], str]:
    """(relative file names, sha256 over every name, executable bit and content): same files -> same digest."""
    sha = hashlib.sha256()
    names = []
    for name, path in _files(folder):
        content = hashlib.sha256(path.read_bytes()).hexdigest()
        sha.update(f"{name}\0{int(_executable(path))}\0{content}\n".encode())
        names.append(name)
    return names, sha.hexdigest()


def content_hash(tree: str, external_id: str, secrets: dict[str, str]) -> str:
    sha = hashlib.sha256(HASH_VERSION + tree.encode())
    if secrets:
        # pbkdf2: the result is public (function metadata); slow and salted so weak secrets cannot be guessed back.
        packed = json.dumps(secrets, sort_keys=True).encode()
        sha.update(hashlib.pbkdf2_hmac("sha256", packed, f"akerbp.mlops:{external_id}".encode(), 100_000))
    return sha.hexdigest()


def zip_folder(folder: Path) -> bytes:
    """The folder as a zip whose bytes depend only on the content: sorted entries, fixed dates and modes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for name, path in _files(folder):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = ((0o100755 if _executable(path) else 0o100644) & 0xFFFF) << 16
            info.create_system = 3
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def read_options(zip_bytes: bytes) -> dict[str, Any]:
    """The function options stored in a code zip (for rollback)."""
    try:
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
            options: dict[str, Any] = json.loads(archive.read(OPTIONS_FILE))
            return options
    except (KeyError, zipfile.BadZipFile, ValueError) as e:
        raise MlopsError(f"the code file holds no readable {OPTIONS_FILE} ({e}): it was not built by akerbp.mlops") from e
