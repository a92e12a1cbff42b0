"""The local hint that a model's function was verified with its current inputs: `.mlops/verified/{xid}.json`.

Written when a deploy confirms a verified function or finds it unchanged; read at the next deploy's start. When it
matches the inputs' digest (below), the deploy expects `unchanged` and starts neither the model tests nor the
ServiceTest process until the plan is known, so an unchanged redeploy costs about what reading CDF costs. It is only a
prediction: the plan decides, and a changed plan (someone deployed other content, a secret rotated, a new registry
version) starts the tests then. A hint that is absent, stale, corrupt or unreadable is ignored: the tests start first.

The digest covers what the deploy reads locally, cheaply: the code folder's files, the test file, the requirements,
the local artifact folder (dev, unpinned), the settings entry's values, the service and environment, and the
framework's version. Not the secret values (a local file must not help guess them) nor registry artifacts: the
content hash, compared after the build, and the plan catch those.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from akerbp.mlops.deployment.build import tree_digest

if TYPE_CHECKING:
    from akerbp.mlops.settings import ModelSettings

HINT_VERSION = 1


@dataclass(frozen=True)
class Hint:
    content_hash: str
    inputs: str  # inputs_digest() when it was written


def path(settings: ModelSettings, xid: str) -> Path:
    return settings.root / ".mlops" / "verified" / f"{xid}.json"


def _file_digest(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else "missing"


def inputs_digest(settings: ModelSettings, service: str, env: str) -> str:
    """sha256 over what a deploy of `service` to `env` reads locally (see the module's docstring)."""
    from akerbp.mlops import __version__

    code = settings.root / settings.code_folder
    parts = {
        "service": service, "env": env, "framework": __version__,
        "settings": settings.model_dump(mode="json"),
        "code": tree_digest(code)[1] if code.is_dir() else "missing",
        "test": _file_digest(settings.test_path), "requirements": _file_digest(settings.req_path),
    }
    if service == "prediction" and env == "dev" and settings.artifact_version is None:
        parts["artifact"] = tree_digest(settings.artifact_path)[1] if settings.artifact_path.is_dir() else "missing"
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def read(file: Path) -> Hint | None:
    """The hint in `file`; None when it is absent, unreadable or not a hint this version wrote."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != HINT_VERSION:
        return None
    content_hash, inputs = data.get("content_hash"), data.get("inputs")
    if not isinstance(content_hash, str) or not isinstance(inputs, str):
        return None
    return Hint(content_hash, inputs)


def write(file: Path, hint: Hint) -> None:
    """Atomically (a temporary file renamed over it): a reader sees the old hint or the new one, never half."""
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".tmp", dir=file.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"version": HINT_VERSION, "content_hash": hint.content_hash, "inputs": hint.inputs}, out)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove(file: Path) -> None:
    try:
        file.unlink(missing_ok=True)
    except OSError:
        pass  # a hint that stays is only a prediction: the plan still decides
