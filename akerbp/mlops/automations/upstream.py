"""What a step knows of the run it is part of: the steps a task can run, the outputs of the ones before it
("upstream"), where the run failed, the workflow execution running now and the environments the action deploys to.

Every step module reads the run through these, so a failed or silent step (its output null: the workflow runs the
steps with onFailure skipTask) means the same to each of them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from akerbp.mlops.vocabulary import AUTOMATION_WORKFLOW_VERSION, automation_workflow_external_id

if TYPE_CHECKING:
    from cognite.client import CogniteClient

STEPS = ("check", "train", "gate", "deploy", "batch", "notify")


def environments(definition: Mapping[str, Any]) -> list[str]:
    """The environments the action deploys to, in order (test when none is given)."""
    return list(((definition.get("action") or {}).get("deployment") or {}).get("environments") or ["test"])


def running_execution(client: CogniteClient, definition: Mapping[str, Any]) -> tuple[str | None, str]:
    """(the id of the RUNNING execution of this automation's workflow, what started it): at most one runs
    (maxConcurrentExecutions=1). The trigger is the execution metadata's mlops_trigger, else "schedule" when it
    carries the trigger's metadata, else "manual"."""
    workflow = automation_workflow_external_id(definition["name"], definition["env"])
    found = client.workflows.executions.list(workflow_version_ids=(workflow, AUTOMATION_WORKFLOW_VERSION),
                                             statuses=["running"], limit=10)
    if not found:
        return None, "unknown"
    execution = found[0]
    metadata = execution.metadata or {}
    trigger = metadata.get("mlops_trigger") or ("schedule" if "mlops_automation" in metadata else "manual")
    return execution.id, str(trigger)


def output(upstream: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A step's output, {} when it answered nothing."""
    found = upstream.get(name)
    return found if isinstance(found, dict) else {}


def first_failure(upstream: Mapping[str, Any], names: tuple[str, ...] = ("train", "gate", "deploy")
                  ) -> tuple[str | None, str | None]:
    """The step where the run failed (an upstream failure passed on names its origin), and its error."""
    for name in names:
        out = upstream.get(name)
        if not isinstance(out, dict):
            return name, f"the {name} task did not answer (it crashed or timed out)"
        if not out.get("ok"):  # the first failure in order is where the run failed (later ones pass it on)
            return name, str(out.get("error") or f"the {name} step failed")
    return None, None


def upstream_failure(upstream: Mapping[str, Any], names: tuple[str, ...]) -> str | None:
    """Why the run already failed before this step (the first failed step's error), or None."""
    return first_failure(upstream, names)[1]
