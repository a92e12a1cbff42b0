"""The train step: the training service's own code path (services/training.py: train into a folder, upload a
version in the first environment, metrics in its metadata), called from the automation function; the version is
tagged with the automation and the execution id.

Its output carries what the later steps need and no more: the version, its model id, the numbers of train()'s
metadata the gate reads (never the whole metadata), the execution and what started it, and the function's commit.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from akerbp.mlops.automations.upstream import environments, running_execution
from akerbp.mlops.vocabulary import automation_function_external_id

if TYPE_CHECKING:
    from cognite.client import CogniteClient

MAX_METRICS = 50  # numbers of train()'s metadata carried to the gate


def train(definition: dict[str, Any], upstream: Mapping[str, Any], client: CogniteClient, secrets: dict[str, str],
          root: Path) -> dict[str, Any]:
    from akerbp.mlops.services import runtime, training

    env = environments(definition)[0]
    began, t = time.time(), time.monotonic()
    execution = running_execution(client, definition)
    fn = client.functions.retrieve(external_id=automation_function_external_id(definition["model"], definition["env"]))
    out: dict[str, Any] = {"ok": False, "env": env, "execution_id": execution[0], "trigger": execution[1],
                           "started_at": round(began, 3),
                           "commit": ((fn.metadata or {}) if fn is not None else {}).get("mlops_git_commit", ""),
                           "phases": {"look-up": round(time.monotonic() - t, 3)}}
    settings = {**runtime.load_settings(root), "service": "training", "env": env}
    t = time.monotonic()
    answer = training.serve((definition["action"].get("training") or {}).get("data") or {}, client, settings, root,
                            secrets)
    out["phases"]["train + upload"] = round(time.monotonic() - t, 3)
    trained = answer.get("training") or {}
    if answer.get("status") != "ok":
        out["error"] = f"training failed: {answer.get('message') or answer}"
        return out
    if not trained.get("uploaded"):
        out["error"] = "training did not upload a version"
        return out
    t = time.monotonic()
    _tag_version(client, trained.get("file_id"), definition["name"], execution[0])
    out["phases"]["tag version"] = round(time.monotonic() - t, 3)
    out.update(ok=True, version=trained["version"], model_id=trained["model_id"],
               metrics=_numbers(trained.get("metadata")))
    return out


def _tag_version(client: CogniteClient, file_id: int | None, automation: str, execution_id: str | None) -> None:
    """The automation and the execution that trained a version, in its metadata (user keys: promotion copies
    them)."""
    if file_id is None:
        return
    from cognite.client.data_classes import FileMetadataUpdate

    tags = {"automation": automation, "automation_execution_id": execution_id or ""}
    client.files.update(FileMetadataUpdate(id=file_id).metadata.add({k: v for k, v in tags.items() if v}))


def _numbers(metadata: object) -> dict[str, Any]:
    """What the gate reads of train()'s metadata: its metrics and top-level numbers (at most MAX_METRICS each)."""
    if not isinstance(metadata, dict):
        return {}

    def numeric(values: Mapping[str, Any]) -> dict[str, float]:
        kept = {str(k): v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return dict(list(kept.items())[:MAX_METRICS])

    metrics = metadata.get("metrics")
    out: dict[str, Any] = numeric(metadata)
    if isinstance(metrics, dict):
        out["metrics"] = numeric(metrics)
    return out
