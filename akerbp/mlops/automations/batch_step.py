"""The batch step of a BatchExecution: akerbp.mlops.batch.run over the action's input files with the live prediction
service of the automation's environment; its output carries the result (files, rows, bad rows) notify summarises.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from akerbp.mlops.automations.upstream import running_execution
from akerbp.mlops.services import responses

if TYPE_CHECKING:
    from cognite.client import CogniteClient


def batch(definition: dict[str, Any], upstream: Mapping[str, Any], client: CogniteClient, secrets: dict[str, str],
          root: Path) -> dict[str, Any]:
    """Score the action's input with the live prediction service of the automation's environment."""
    from akerbp.mlops.batch import run

    began, t = time.time(), time.monotonic()
    execution_id, trigger = running_execution(client, definition)
    action = definition["action"]
    out: dict[str, Any] = {"ok": False, "execution_id": execution_id, "trigger": trigger,
                           "started_at": round(began, 3), "phases": {"look-up": round(time.monotonic() - t, 3)}}
    t = time.monotonic()
    log = responses.get_log()
    result = run(client, definition["model"], definition["env"], action["input"], action.get("output"),
                 int(action.get("batch_size") or 1000), execution=execution_id,
                 say=lambda message: log.info("%s", message), secrets=secrets)
    out["phases"]["batch"] = round(time.monotonic() - t, 3)
    out.update(ok=result.ok, result=result.as_dict())
    if not result.ok:
        failed = [f for f in out["result"].get("files") or [] if isinstance(f, dict) and f.get("error")]
        out["error"] = "batch failed: " + "; ".join(f"{f.get('source')}: {f.get('error')}" for f in failed[:5])[:4000]
    return out
