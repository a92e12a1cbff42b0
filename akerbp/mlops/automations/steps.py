"""What each task of an automation's workflow does: the body of the automation function's handler
(services/runtime.py dispatches an automation folder's calls here), one module per step.

    train   train_step.py: the training service's own code path (services/training.py: train into a folder, upload
            a version in the first environment, metrics in its metadata), called; the version is tagged with the
            automation and the execution id
    gate    gate_step.py: every deployment condition (conditions.check): BuildMetric on the new version's metadata,
            DeployedModelMetric against the version live in each listed environment (the live prediction
            function's mlops_version, its metadata from the registry)
    deploy  deploy_step.py: only if the gate passed: the deploy path of `mlops deploy`
            (deployment.deploy.deploy_in_function: build, service test, standby, replace, smoke, automatic rollback,
            audit) to each environment in order; a later one (prod) first gets the version by promotion from the
            one before; a failure stops the rest
    batch   batch_step.py: a BatchExecution: akerbp.mlops.batch.run over the input files with the live prediction
            service
    notify  notify_step.py: on_success (the run succeeded, deployed or not) or on_error (it failed), the audit
            event, and then, when the run failed, an exception naming the failed step, so the task and the
            execution end FAILED

A metric-based automation first runs `check` (metric_check.py), whose output chooses the tasks of the `run` task.

train, gate and deploy never raise for a model or deploy failure: they answer {"ok": false, "error": ...} and the
next step passes that on without acting (upstream.py: what a step reads of the ones before it). A task that crashed
or timed out answers nothing (the workflow runs them with onFailure skipTask, so its output is null): the next step
treats null as a failure of that step.
Every output is small (numbers, ids, verdicts; never train()'s whole metadata, never a secret value) and records
its duration per phase ("phases").
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from akerbp.mlops.automations.batch_step import batch
from akerbp.mlops.automations.deploy_step import deploy
from akerbp.mlops.automations.gate_step import gate
from akerbp.mlops.automations.notify_step import notify
from akerbp.mlops.automations.train_step import train
from akerbp.mlops.automations.upstream import STEPS
from akerbp.mlops.services import masking, responses

if TYPE_CHECKING:
    from cognite.client import CogniteClient


def handle(data: Any, client: CogniteClient | None, secrets: Mapping[str, str] | None,
           root: Path | None = None) -> dict[str, Any]:
    """One task of an automation: data = {"step", "automation": the definition's dict, "upstream": {step: its
    output or null}}. `root`: the function folder (default: the one this bundled module is in)."""
    secrets = dict(secrets or {})
    folder = Path(root) if root is not None else Path(__file__).resolve().parents[3]
    if not isinstance(data, dict) or data.get("step") == "ping" or not data:
        return {"ok": True, "step": "ping"}  # put_live's proof that the bundle imports and answers
    step = data.get("step")
    definition = data.get("automation")
    if step not in STEPS or not isinstance(definition, dict):
        return {"ok": False, "step": step, "error": f"an automation task needs 'step' (one of {', '.join(STEPS)}) "
                                                    "and 'automation' (the definition): re-register the automation"}
    if client is None:
        return {"ok": False, "step": step, "error": "no CDF client: an automation step runs in a CDF Function"}
    given = data.get("upstream")
    upstream: dict[str, Any] = given if isinstance(given, dict) else {}
    started = time.monotonic()
    if step == "notify":
        return notify(definition, upstream, client, secrets, started)
    from akerbp.mlops.automations.metric_check import check

    body: Callable[..., dict[str, Any]] = {"check": check, "train": train, "gate": gate, "deploy": deploy,
                                           "batch": batch}[step]
    try:
        out = body(definition, upstream, client, secrets, folder)
    except Exception as e:  # noqa: BLE001 - a bug or an SDK error: this step failed, notify says so
        responses.get_log().exception("the %s step failed", step)
        out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    out = {"step": step, **out}
    out.setdefault("phases", {})[step] = round(time.monotonic() - started, 3)
    return masking.mask_value(out, secrets)
