"""What CDF should hold for one registered automation: its workflow, the workflow's one version (the tasks.py task
list, carrying the definition but its trigger's part) and its schedule trigger, whose metadata records the
registration hash (the definition's and its function's) that the plan (prepare.py) compares.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from akerbp.mlops.vocabulary import AUTOMATION_WORKFLOW_VERSION, automation_workflow_external_id

if TYPE_CHECKING:
    from cognite.client.data_classes.workflows import WorkflowTriggerUpsert, WorkflowUpsert, WorkflowVersionUpsert

    from akerbp.mlops.automations.definition import AutomationDefinition

HASH_KEY = "mlops_hash"


def registration_hash(definition_hash: str, function_hash: str) -> str:
    """What a trigger's `mlops_hash` holds: the definition and the code of the function its tasks call."""
    return hashlib.sha256(f"{definition_hash}:{function_hash}".encode()).hexdigest()


def workflow_upsert(definition: AutomationDefinition, env: str) -> WorkflowUpsert:
    from cognite.client.data_classes.workflows import WorkflowUpsert

    about = f"mlops automation {definition.name} of model {definition.model} ({env})"
    return WorkflowUpsert(external_id=automation_workflow_external_id(definition.name, env),
                          description=about + (f": {definition.description}" if definition.description else ""),
                          max_concurrent_executions=1)


def version_upsert(definition: AutomationDefinition, env: str, function_xid: str) -> WorkflowVersionUpsert:
    from cognite.client.data_classes.workflows import WorkflowDefinitionUpsert, WorkflowVersionUpsert

    from akerbp.mlops.automations.tasks import workflow_tasks

    return WorkflowVersionUpsert(
        workflow_external_id=automation_workflow_external_id(definition.name, env),
        version=AUTOMATION_WORKFLOW_VERSION,
        workflow_definition=WorkflowDefinitionUpsert(tasks=workflow_tasks(task_definition(definition), function_xid),
                                                     description=f"{_shape(definition)}: {definition.name}"))


def _shape(definition: AutomationDefinition) -> str:
    """The tasks in a few words, for the version's description."""
    from akerbp.mlops.automations.tasks import action_steps, is_metric_triggered

    steps = ", ".join(action_steps(definition.as_dict()))
    return f"check, then when it triggers: {steps}" if is_metric_triggered(definition.as_dict()) else steps


def trigger_upsert(definition: AutomationDefinition, env: str, wanted_hash: str, definition_hash: str,
                   function_hash: str, commit: str) -> WorkflowTriggerUpsert:
    from zoneinfo import ZoneInfo

    from cognite.client.data_classes.workflows import WorkflowScheduledTriggerRule, WorkflowTriggerUpsert

    trigger = definition.as_dict()["trigger"]
    xid = automation_workflow_external_id(definition.name, env)
    return WorkflowTriggerUpsert(
        external_id=xid, workflow_external_id=xid, workflow_version=AUTOMATION_WORKFLOW_VERSION,
        trigger_rule=WorkflowScheduledTriggerRule(cron_expression=trigger["cron"],
                                                  timezone=ZoneInfo(trigger["timezone"] or "UTC")),
        metadata={HASH_KEY: wanted_hash, "mlops_definition_hash": definition_hash, "mlops_function_hash": function_hash,
                  "mlops_automation": definition.name, "mlops_model": definition.model, "mlops_env": env,
                  "mlops_enabled": "true" if definition.enabled else "false", "mlops_commit": commit})


def task_definition(definition: AutomationDefinition) -> dict:
    """The definition the workflow version's tasks carry: all but the trigger's part (cron, timezone, enabled,
    execute_immediately), which lives on the trigger, so a changed cron rewrites the trigger alone."""
    values = definition.as_dict()
    values.pop("enabled", None)
    values.pop("execute_immediately", None)
    trigger = values["trigger"]
    if trigger.get("type") == "metric":  # the check step reads the metric, threshold and cooldown
        values["trigger"] = {k: v for k, v in trigger.items() if k not in ("cron", "timezone")}
    else:
        values["trigger"] = {"type": trigger.get("type", "schedule")}
    return values
