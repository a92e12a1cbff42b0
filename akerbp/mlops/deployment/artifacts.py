"""Step 2 of a deploy: which model artifact the prediction service ships.

dev: the local artifact folder, as version `{model}/dev/1` (the original framework's rule), unless
artifact_version pins a registry version or the folder does not exist (then the latest dev version, e.g. one a
training service uploaded). test/prod: the pinned or latest version of that environment from the registry,
verified against its sha256 and cached under .mlops/cache/artifacts, so an unchanged redeploy downloads nothing.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from akerbp.mlops.errors import MlopsError


@dataclass
class Artifact:
    path: Path
    model_id: str
    version: int
    source: str  # for humans: "local folder model_artifact" or "registry (sha256 1a2b...)"


def _how_to_get(model: str, env: str) -> str:
    steps = []
    if env != "prod":
        steps.append(f"upload one (mlops models upload {model} --env {env} --folder PATH)")
    if env != "dev":
        steps.append(f"promote one (mlops models promote {model} --version N --to {env})")
    steps.append(f"or train one: ENV={env} bash deploy_training_service.sh, then call the training service "
                 f"(mlops call {model} --service training --env {env})")
    return ", ".join(steps)


def resolve(settings, env: str, client: Callable[[], object], cache_root: Path) -> Artifact:
    """The artifact to deploy; `client` is called only when the registry is needed."""
    model = settings.model_name
    pinned = settings.artifact_version
    if env == "dev" and pinned is None and settings.has_local_artifacts:
        return Artifact(settings.artifact_path, f"{model}/dev/1", 1, f"local folder {settings.artifact_folder}")
    from akerbp.mlops import model_manager

    cdf = client()
    try:
        info = model_manager.get_model_version(model, env, pinned, client=cdf)
    except MlopsError as e:
        where = f"version {pinned} (artifact_version)" if pinned else f"no version in {env}"
        raise MlopsError(
            f"no artifact to deploy for model {model} in {env} ({where}): {e}. To get one: {_how_to_get(model, env)}"
        ) from None
    version, sha = info["version"], info["sha256"] or "unknown"
    target = cache_root / model / env / f"{version}-{sha[:16]}"
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            model_manager.download_model_version(model, env, tmp / "artifact", version, client=cdf)
            try:
                (tmp / "artifact").rename(target)
            except OSError:  # filled concurrently: theirs is the same verified content
                if not target.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return Artifact(target, info["model_id"], version, f"registry (sha256 {sha[:12]})")
