"""Step 2 of a deploy: which model artifact the prediction service ships, and the one id that names it.

dev: the local artifact folder, named `{model}/dev/local-{digest[:10]}` (a digest of its files): an id the registry
never issues (its ids end in a number), so `{model}/dev/N` always means the registry's version N, e.g. the one a dev
training run uploaded, and one id always means one content. A missing folder is an error naming it. To deploy a
registry version in dev (a trained one), pin artifact_version. test/prod: the pinned or latest version of that
environment from the registry, verified against its sha256 and cached under .mlops/cache/artifacts, so an unchanged
redeploy downloads nothing.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from akerbp.mlops.vocabulary import LOCAL_DIGEST_CHARS, local_artifact_id  # noqa: F401
from akerbp.mlops.errors import MlopsError, UsageError

if TYPE_CHECKING:
    from cognite.client import CogniteClient

    from akerbp.mlops.settings import ModelSettings

@dataclass
class Artifact:
    path: Path
    model_id: str
    version: int | None  # None: the local folder, not a registry version
    source: str  # for humans: "local folder model_artifact" or "registry (sha256 1a2b...)"


def local_model_id(model: str, folder: Path) -> str:
    """The id of a local artifact folder's content: `{model}/dev/local-{digest}`, never a registry id."""
    from akerbp.mlops.deployment.build import tree_digest

    return local_artifact_id(model, tree_digest(folder)[1])


def _how_to_train(model: str, env: str) -> str:
    """The way to a version that the registry's own advice (upload, promote) leaves out."""
    return (f"or train one: ENV={env} bash deploy_training_service.sh, then call the training service "
            f"(mlops call {model} --service training --env {env})")


def resolve(settings: ModelSettings, env: str, client: Callable[[], CogniteClient], cache_root: Path) -> Artifact:
    """The artifact to deploy; `client` is called only when the registry is needed."""
    model = settings.model_name
    pinned = settings.artifact_version
    if env == "dev" and pinned is None:
        missing = settings.deploy_problems("dev", ("prediction",))
        if missing:  # the local folder, as `mlops settings validate --env dev` says
            raise UsageError(missing[0])
        return Artifact(settings.artifact_path, local_model_id(model, settings.artifact_path), None,
                        f"local folder {settings.artifact_folder}")
    from akerbp.mlops import registry

    cdf = client()
    try:
        info = registry.get_model_version(model, env, pinned, client=cdf)
    except registry.VersionUnavailable as e:
        # The registry's message says what is missing and how to upload or promote a version: only add training.
        if pinned is not None:
            raise MlopsError(f"no artifact to deploy for model {model} in {env} (artifact_version {pinned}): {e}; "
                             "or pin another version, or remove artifact_version to deploy the latest") from None
        raise MlopsError(f"no artifact to deploy for model {model} in {env}: {e}; {_how_to_train(model, env)}") from None
    version, sha = info["version"], info["sha256"] or "unknown"
    target = cache_root / model / env / f"{version}-{sha[:16]}"
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            registry.download_model_version(model, env, tmp / "artifact", version, client=cdf)
            try:
                (tmp / "artifact").rename(target)
            except OSError:  # filled concurrently: theirs is the same verified content
                if not target.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return Artifact(target, info["model_id"], version, f"registry (sha256 {sha[:12]})")
