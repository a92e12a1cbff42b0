"""The task list of an automation's workflow version: calls of the automation function, each given the definition
and the outputs of the steps before it (steps.py says what each does).

    TrainDeploy       train -> gate -> deploy -> notify
    BatchExecution    batch -> notify
    MetricBasedTrigger: check -> run, a dynamic task whose tasks are the check's output (CDF-native branching): the
                      action's tasks when the metric crossed its threshold outside the cooldown; else one `cdf` task
                      `not_triggered` (a GET of the workflow itself: CDF refuses an empty dynamic task list, and it
                      costs no function call), so the execution ends COMPLETED having trained and notified nobody;
                      when the check failed (its query), `notify` alone, which reports it on_error.

Retries 0 for every task: a retrain must not run twice. train, gate, deploy and batch answer their own failures; a
crash or timeout of one of them ends it COMPLETED_WITH_ERRORS (onFailure skipTask), its output null, so the steps
after it still run and notify reports the failure (a reference to a failed task's output resolves to null, in CDF
and in the local CDF). notify keeps abortWorkflow: it raises when the run failed, which fails the execution; so does
check (a check that crashed has nothing to branch on).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from akerbp.mlops.automations.deploy_step import DEFAULT_DEPLOY_TIMEOUT_S

if TYPE_CHECKING:
    from cognite.client.data_classes import WorkflowTask

    from akerbp.mlops.automations.definition import AutomationDefinition

# Seconds per task. A CDF Function call ends after 10 minutes, so train, deploy and batch are bounded by that
# anyway; notify sends at most one notification (webhook_delivery.worst_case_seconds: 52 s) and writes one event.
TIMEOUTS = {"check": 300, "train": 900, "gate": 120, "batch": 900, "notify": 180, "not_triggered": 60}
NAMES = {"check": "Check the trigger's metric", "run": "Run the action when the metric triggers it",
         "train": "Train a new version", "gate": "Check the deployment conditions",
         "deploy": "Deploy the new version", "batch": "Score the input files", "notify": "Notify and record the run",
         "not_triggered": "Not triggered: the metric did not cross its threshold (or the cooldown holds)"}
ACTION_STEPS = {"train_deploy": ("train", "gate", "deploy", "notify"), "batch": ("batch", "notify")}
CHECK_REFERENCE = "${check.output.response.tasks}"


def _as_dict(definition: AutomationDefinition | Mapping[str, Any]) -> dict[str, Any]:
    return dict(definition) if isinstance(definition, Mapping) else definition.as_dict()


def action_steps(definition: Mapping[str, Any]) -> tuple[str, ...]:
    """The steps of the automation's action, notify last."""
    return ACTION_STEPS[(definition.get("action") or {}).get("type") or "train_deploy"]


def is_metric_triggered(definition: Mapping[str, Any]) -> bool:
    return (definition.get("trigger") or {}).get("type") == "metric"


def _timeout(definition: Mapping[str, Any], step: str) -> int:
    if step != "deploy":
        return TIMEOUTS[step]
    deployment = (definition.get("action") or {}).get("deployment") or {}
    per_env = float(deployment.get("timeout") or DEFAULT_DEPLOY_TIMEOUT_S)  # deploy_step's deadline, per environment
    return int(per_env * len(deployment.get("environments") or ["test"])) + 60


def workflow_tasks(definition: AutomationDefinition | Mapping[str, Any], function_external_id: str) \
        -> list[WorkflowTask]:
    """The workflow version's tasks, as cognite-sdk WorkflowTasks calling `function_external_id`."""
    from cognite.client.data_classes import DynamicTaskParameters, FunctionTaskParameters, WorkflowTask

    as_dict = _as_dict(definition)
    if not is_metric_triggered(as_dict):
        return action_tasks(as_dict, function_external_id)
    inner = sum(_timeout(as_dict, step) for step in action_steps(as_dict))
    return [
        WorkflowTask(external_id="check", name=NAMES["check"], parameters=FunctionTaskParameters(
            external_id=function_external_id, data={"step": "check", "automation": as_dict}),
            retries=0, timeout=TIMEOUTS["check"], on_failure="abortWorkflow"),
        WorkflowTask(external_id="run", name=NAMES["run"], parameters=DynamicTaskParameters(tasks=CHECK_REFERENCE),
                     retries=0, timeout=inner + 60, on_failure="abortWorkflow", depends_on=["check"]),
    ]


def action_tasks(definition: Mapping[str, Any], function_external_id: str, *, after_check: bool = False,
                 steps: tuple[str, ...] | None = None) -> list[WorkflowTask]:
    """The action's tasks (or `steps` of them), each after the one before; after_check: inside the run task, each
    also given the check's output."""
    from cognite.client.data_classes import FunctionTaskParameters, WorkflowTask

    steps = steps or action_steps(definition)
    before: list[str] = ["check"] if after_check else []
    tasks = []
    for i, step in enumerate(steps):
        data: dict[str, Any] = {"step": step, "automation": dict(definition)}
        if before:
            data["upstream"] = {name: f"${{{name}.output.response}}" for name in before}
        tasks.append(WorkflowTask(
            external_id=step, name=NAMES[step], parameters=FunctionTaskParameters(external_id=function_external_id,
                                                                                   data=data),
            retries=0, timeout=_timeout(definition, step), on_failure="abortWorkflow" if step == "notify" else
            "skipTask", depends_on=[steps[i - 1]] if i else None))
        before.append(step)
    return tasks


def not_triggered_task(workflow_external_id: str) -> WorkflowTask:
    """What the run task holds when the trigger did not fire: a request that reads the workflow and changes nothing."""
    from cognite.client.data_classes import CDFTaskParameters, WorkflowTask

    return WorkflowTask(external_id="not_triggered", name=NAMES["not_triggered"],
                        parameters=CDFTaskParameters(resource_path=f"/workflows/{workflow_external_id}",
                                                     method="GET"),
                        retries=0, timeout=TIMEOUTS["not_triggered"], on_failure="abortWorkflow")
