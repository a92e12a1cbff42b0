"""Registering automations in CDF: plan, then apply (cognite-toolkit's way), so a dry run shows exactly what the apply
would do and an unchanged register writes nothing. Here: reading the file and settings (load), applying a prepared
plan (apply) and deleting one automation (delete); the plan is prepare.py's, what CDF should hold upserts.py's.

Per automation of the file that registers in ENV (`loaded.for_env(env)`: its last deployment environment), CDF holds
a workflow `mlops-automation-{env}-{name}` (maxConcurrentExecutions=1), its one version (the tasks.py task list), a
schedule trigger of the same external id and the automation function `{model}-automation-{env}` (function.py). The
trigger's metadata records what was registered: `mlops_hash` (the definition's hash and the function's content hash),
so the plan is read from a few list requests, not one per automation:

    created    no trigger yet
    updated    the hash differs (what changed is listed: fields of the definition, the function's code)
    unchanged  the hash matches and the workflow exists: nothing is written
    removed    with prune: a workflow of this env's prefix the file no longer has (its trigger, and the automation
               function once no automation of that model in that env remains)

Updates are upserts in place: a changed cron rewrites the trigger (its run history stays) and the version keeps its
executions. Secret values (MLOPS_SECRET_<NAME>) are resolved while planning, so a missing one fails before anything
is written.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Iterable

from akerbp.mlops.automations.prepare import live_function_hashes, registered_in
from akerbp.mlops.errors import UsageError
from akerbp.mlops.vocabulary import (
    AUTOMATION_WORKFLOW_VERSION,
    automation_function_external_id,
    automation_workflow_external_id,
)

if TYPE_CHECKING:
    from pathlib import Path

    from cognite.client import CogniteClient
    from cognite.client.data_classes.workflows import Workflow, WorkflowTrigger, WorkflowUpsert

    from akerbp.mlops.automations.definition import AutomationDefinition
    from akerbp.mlops.automations.loader import LoadedAutomations
    from akerbp.mlops.automations.plan import RegisterPlan
    from akerbp.mlops.automations.prepare import Prepared, Wanted
    from akerbp.mlops.settings import ModelSettings

Say = Callable[[str], None]

FUNCTION_BUILD_TIMEOUT_S = 1800.0  # CDF builds a function in minutes; the deploys wait as long


def load(root: Path, path: Path | None, env: str) -> tuple[LoadedAutomations, list[AutomationDefinition],
                                                         dict[str, ModelSettings]] | None:
    """The automations file (loader.load: every problem at once, exit 2), the definitions registering in env and
    the settings of their models; None when no path was given and the repo has no automations file."""
    from akerbp.mlops.automations import loader
    from akerbp.mlops.settings import find_settings_file, load_settings

    if path is None and loader.find_file(root) is None:
        return None  # before the settings: a repo without automations needs nothing else

    settings_file = find_settings_file(root)
    # The settings and the automations file are read by child processes at once, while this one imports the SDK
    # that planning needs next: together they were most of an unchanged register's time.
    with ThreadPoolExecutor(max_workers=2) as pool:
        pool.submit(_import_sdk)
        reading = pool.submit(load_settings, settings_file)

        def model_names() -> list[str]:
            return sorted(m.model_name for m in reading.result())

        loaded = loader.load(root, path, model_names=model_names)
        models = {m.model_name: m for m in reading.result()}
    if loaded is None:
        return None
    definitions = list(loaded.for_env(env))
    return loaded, definitions, {d.model: models[d.model] for d in definitions}


def _import_sdk() -> None:
    try:
        import cognite.client  # noqa: F401
    except Exception:  # noqa: BLE001 - the import that needs it reports the problem
        pass


# --- applying it ------------------------------------------------------------------------------------------------------

def _same_workflow(found: Workflow | None, wanted: WorkflowUpsert) -> bool:
    return found is not None and found.description == wanted.description and \
        found.max_concurrent_executions == wanted.max_concurrent_executions


def apply(client: CogniteClient, prepared: Prepared, *, say: Say, timeout_s: float = FUNCTION_BUILD_TIMEOUT_S
          ) -> RegisterPlan:
    """Write what the plan says, in an order that keeps every registered automation runnable: functions first
    (the tasks call them), then per automation the workflow, its version and last the trigger (whose metadata hash
    marks the registration complete), then removals. Returns the plan applied."""
    from akerbp.mlops.automations import function as automation_function

    deadline = time.monotonic() + timeout_s
    for xid, fn in prepared.functions.items():
        say(f"[{xid}] building the automation function")
        result = automation_function.put_live(client, fn, deadline=deadline, say=say)
        say(f"[{xid}] {result}")
    for wanted in prepared.wanted:
        _apply_one(client, prepared, wanted, say)
    for removal in prepared.removals:
        remove_workflow(client, removal.workflow, trigger=removal.trigger)
        say(f"[{removal.workflow}] removed")
    for xid in prepared.functions_to_remove:
        remove_function(client, xid)
        say(f"[{xid}] removed (no automation of its model is left in {prepared.plan.env})")
    return prepared.plan


def _apply_one(client: CogniteClient, prepared: Prepared, wanted: Wanted, say: Say) -> None:
    xid = wanted.trigger.external_id
    existing = prepared.existing_triggers.get(xid)
    if not _same_workflow(prepared.existing_workflows.get(xid), wanted.workflow):
        client.workflows.upsert(wanted.workflow)
    if xid not in prepared.same_version:
        client.workflows.versions.upsert(wanted.version)
    # The SDK's upsert makes a session from the registering credentials (a nonce), which the schedule runs with.
    client.workflows.triggers.upsert(wanted.trigger)
    if not wanted.definition.enabled:
        client.workflows.triggers.pause(xid)  # CDF keeps a trigger's pause across upserts; a new one starts active
    elif existing is not None and (existing.metadata or {}).get("mlops_enabled") == "false":
        client.workflows.triggers.resume(xid)  # enabled again in the file (a `pause` by hand stays paused)
    say(f"[{xid}] {'updated' if existing is not None else 'created'}"
        + ("" if wanted.definition.enabled else " (paused: enabled=False)"))
    if existing is None and wanted.definition.execute_immediately:
        execution = client.workflows.executions.run(xid, AUTOMATION_WORKFLOW_VERSION,
                                                    metadata={"mlops_trigger": "execute_immediately"})
        say(f"[{xid}] execute_immediately: execution {execution.id} started")


def remove_workflow(client: CogniteClient, xid: str, *, trigger: bool = True) -> None:
    """Delete an automation's trigger (its run history goes with it) and its workflow (its version; executions stay
    readable)."""
    from cognite.client.exceptions import CogniteAPIError

    if trigger:
        try:
            client.workflows.triggers.delete(xid)
        except CogniteAPIError as e:
            if e.code != 404:
                raise
    client.workflows.delete(xid, ignore_unknown_ids=True)


def remove_function(client: CogniteClient, xid: str) -> None:
    """Delete an automation function and its code files (ones already gone are fine)."""
    from akerbp.mlops.deployment import functions

    functions.delete(client, [xid])
    functions.delete_files(client, [f.id for f in functions.code_files(client, xid)])


def models_registered(triggers: Iterable[WorkflowTrigger]) -> set[str]:
    """The models some registered automation trigger belongs to."""
    return {(t.metadata or {}).get("mlops_model", "") for t in triggers} - {""}


def delete(client: CogniteClient, name: str, env: str) -> list[str]:
    """Delete one registered automation: its trigger and workflow, and the automation function when no other
    automation of its model remains in env. What was deleted, as external ids."""
    triggers, workflows = registered_in(client, env)
    xid = automation_workflow_external_id(name, env)
    if xid not in triggers and xid not in workflows:
        raise UsageError(f"automation {name!r} is not registered in {env}")
    trigger = triggers.get(xid)
    model = (trigger.metadata or {}).get("mlops_model", "") if trigger is not None else ""
    remove_workflow(client, xid, trigger=trigger is not None)
    deleted = [xid]
    others = [t for k, t in triggers.items() if k != xid]
    if model and model not in models_registered(others):
        fn = automation_function_external_id(model, env)
        if live_function_hashes(client, [fn]):
            remove_function(client, fn)
            deleted.append(fn)
    return deleted
