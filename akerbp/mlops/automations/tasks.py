"""The task list of an automation's workflow version: four calls of the automation function, train -> gate ->
deploy -> notify, each given the definition and the outputs of the steps before it (steps.py says what each does).

Retries 0 for every task: a retrain must not run twice. train, gate and deploy answer their own failures; a crash
or timeout of one of them ends it COMPLETED_WITH_ERRORS (onFailure skipTask), its output null, so the steps after it
still run and notify reports the failure (a reference to a failed task's output resolves to null, in CDF and in
the local CDF). notify keeps abortWorkflow: it raises when the run failed, which fails the execution.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from akerbp.mlops.automations.steps import DEFAULT_DEPLOY_TIMEOUT_S, STEPS

if TYPE_CHECKING:
    from cognite.client.data_classes import WorkflowTask

    from akerbp.mlops.automations.definition import AutomationDefinition

# Seconds per task. A CDF Function call ends after 10 minutes, so train and deploy are bounded by that anyway;
# notify sends at most one notification (notify.worst_case_seconds: 52 s) and writes one event.
TIMEOUTS = {"train": 900, "gate": 120, "notify": 180}  # deploy: its deadline per environment, + 60 s
NAMES = {"train": "Train a new version", "gate": "Check the deployment conditions",
         "deploy": "Deploy the new version", "notify": "Notify and record the run"}


def workflow_tasks(definition: AutomationDefinition | Mapping[str, Any], function_external_id: str) \
        -> list[WorkflowTask]:
    """train, gate, deploy, notify as cognite-sdk WorkflowTasks calling `function_external_id`."""
    from cognite.client.data_classes import FunctionTaskParameters, WorkflowTask

    as_dict = dict(definition) if isinstance(definition, Mapping) else definition.as_dict()
    deployment = (as_dict.get("action") or {}).get("deployment") or {}
    per_env = float(deployment.get("timeout") or DEFAULT_DEPLOY_TIMEOUT_S)  # steps.deploy's deadline, per environment
    deploy_timeout = int(per_env * len(deployment.get("environments") or ["test"])) + 60
    tasks = []
    for i, step in enumerate(STEPS):
        data: dict[str, Any] = {"step": step, "automation": as_dict}
        if i:
            data["upstream"] = {before: f"${{{before}.output.response}}" for before in STEPS[:i]}
        seconds = deploy_timeout if step == "deploy" else TIMEOUTS[step]
        tasks.append(WorkflowTask(
            external_id=step, name=NAMES[step], parameters=FunctionTaskParameters(external_id=function_external_id,
                                                                                   data=data),
            retries=0, timeout=seconds, on_failure="abortWorkflow" if step == "notify" else "skipTask",
            depends_on=[STEPS[i - 1]] if i else None))
    return tasks
