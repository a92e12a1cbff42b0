"""Registering automations in CDF: plan, then apply (cognite-toolkit's way), so a dry run shows exactly what the apply
would do and an unchanged register writes nothing.

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

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

from akerbp.mlops.automations.plan import (
    CREATED,
    REMOVED,
    UNCHANGED,
    UPDATED,
    PlannedAutomation,
    PlannedFunction,
    RegisterPlan,
)
from akerbp.mlops.errors import UsageError
from akerbp.mlops.vocabulary import (
    AUTOMATION_WORKFLOW_VERSION,
    automation_function_external_id,
    automation_workflow_external_id,
    automation_workflow_prefix,
    secret_env_var,
)

if TYPE_CHECKING:
    from pathlib import Path

    from cognite.client import CogniteClient
    from cognite.client.data_classes.workflows import (
        Workflow,
        WorkflowTrigger,
        WorkflowTriggerUpsert,
        WorkflowUpsert,
        WorkflowVersionUpsert,
    )

    from akerbp.mlops.automations.definition import AutomationDefinition
    from akerbp.mlops.automations.function import DesiredFunction
    from akerbp.mlops.automations.loader import LoadedAutomations
    from akerbp.mlops.settings import ModelSettings

Say = Callable[[str], None]

HASH_KEY = "mlops_hash"
FUNCTION_BUILD_TIMEOUT_S = 1800.0  # CDF builds a function in minutes; the deploys wait as long


def registration_hash(definition_hash: str, function_hash: str) -> str:
    """What a trigger's `mlops_hash` holds: the definition and the code of the function its tasks call."""
    return hashlib.sha256(f"{definition_hash}:{function_hash}".encode()).hexdigest()


# --- what CDF should hold ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Wanted:
    definition: AutomationDefinition
    function: DesiredFunction
    workflow: WorkflowUpsert
    version: WorkflowVersionUpsert
    trigger: WorkflowTriggerUpsert
    hash: str


@dataclass(frozen=True)
class _Removal:
    name: str
    workflow: str
    trigger: bool  # whether a trigger exists to delete
    model: str


@dataclass
class Prepared:
    """A plan and what applying it writes (not printed)."""

    plan: RegisterPlan
    wanted: list[_Wanted] = field(default_factory=list)
    functions: dict[str, DesiredFunction] = field(default_factory=dict)  # external id -> to put live
    removals: list[_Removal] = field(default_factory=list)
    functions_to_remove: list[str] = field(default_factory=list)
    existing_triggers: dict[str, WorkflowTrigger] = field(default_factory=dict)
    existing_workflows: dict[str, Workflow] = field(default_factory=dict)
    same_version: set[str] = field(default_factory=set)  # workflows whose registered version stays as it is


def resolve_secrets(definitions: Sequence[AutomationDefinition],
                    settings: Mapping[str, ModelSettings]) -> dict[str, dict[str, str]]:
    """Per model: its secrets and every notification secret of its automations, from MLOPS_SECRET_<NAME>. One
    UsageError (exit 2) names every variable missing, before anything is written."""
    from akerbp.mlops.deployment.secrets import resolve

    names: dict[str, set[str]] = {}
    for definition in definitions:
        names.setdefault(definition.model, set(settings[definition.model].secrets)).update(
            definition.secret_names())
    wanted = sorted(set().union(*names.values())) if names else []

    def missing(variables: list[str]) -> str:
        users = {name: sorted(d.name for d in definitions
                              if name in d.secret_names() or name in settings[d.model].secrets) for name in wanted}
        detail = "; ".join(f"{secret_env_var(n)} for {', '.join(users[n])}" for n in wanted
                           if secret_env_var(n) in variables)
        return (f"automations: set the environment variable(s) {', '.join(variables)} to the secret values "
                f"({detail}; in CI: secured repository or deployment variables); nothing was registered")

    values = resolve(wanted, missing)
    return {model: {n: values[n] for n in sorted(group)} for model, group in names.items()}


def _workflow_upsert(definition: AutomationDefinition, env: str) -> WorkflowUpsert:
    from cognite.client.data_classes.workflows import WorkflowUpsert

    about = f"mlops automation {definition.name} of model {definition.model} ({env})"
    return WorkflowUpsert(external_id=automation_workflow_external_id(definition.name, env),
                          description=about + (f": {definition.description}" if definition.description else ""),
                          max_concurrent_executions=1)


def _version_upsert(definition: AutomationDefinition, env: str, function_xid: str) -> WorkflowVersionUpsert:
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


def _trigger_upsert(definition: AutomationDefinition, env: str, wanted_hash: str, definition_hash: str,
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


def _registered(client: CogniteClient, env: str) -> tuple[dict[str, WorkflowTrigger], dict[str, Workflow]]:
    """This env's automation triggers and workflows: two list requests."""
    prefix = automation_workflow_prefix(env)
    triggers = {t.external_id: t for t in client.workflows.triggers.list(limit=None)
                if t.external_id.startswith(prefix)}
    workflows = {w.external_id: w for w in client.workflows.list(limit=None) if w.external_id.startswith(prefix)}
    return triggers, workflows


def _live_function_hashes(client: CogniteClient, xids: Iterable[str]) -> dict[str, str]:
    """External id -> the content hash the live automation function holds (one request)."""
    wanted = sorted(set(xids))
    if not wanted:
        return {}
    found = client.functions.retrieve_multiple(external_ids=wanted, ignore_unknown_ids=True)
    # A function not Ready (building, failed) counts as changed: put_live builds it again.
    return {f.external_id: (f.metadata or {}).get(HASH_KEY, "") if f.status == "Ready" else f"({f.status})"
            for f in found if f.external_id}


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict) and value:
        out: dict[str, object] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _field_changes(old: dict | None, new: dict) -> list[str]:
    """'field: old -> new' for every changed leaf of two definitions (as_dict()); secrets hold only names."""
    if old is None:
        return []
    before, after = _flatten(old), _flatten(new)
    return [f"{key}: {json.dumps(before.get(key))} -> {json.dumps(after.get(key))}"
            for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]


def _trigger_changes(trigger: WorkflowTrigger, definition: AutomationDefinition, meta: Mapping[str, str]) -> list[str]:
    """What differs between the registered trigger (rule, enabled) and the definition's."""
    rule = definition.as_dict()["trigger"]
    zone = getattr(getattr(trigger.trigger_rule, "timezone", None), "key", None) or "UTC"
    cron = getattr(trigger.trigger_rule, "cron_expression", None)
    enabled = meta.get("mlops_enabled", "true") == "true"
    return [f"trigger.{key}: {json.dumps(old)} -> {json.dumps(new)}" for key, old, new in (
        ("cron", cron, rule["cron"]), ("timezone", zone, rule["timezone"] or "UTC"),
        ("enabled", enabled, definition.enabled)) if old != new]


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


def _registered_definitions(client: CogniteClient, xids: Sequence[str]) -> dict[str, dict]:
    """Workflow external id -> the definition its registered version's tasks carry (for the plan's changes)."""
    if not xids:
        return {}
    from cognite.client.data_classes.workflows import WorkflowVersionId

    out: dict[str, dict] = {}
    ids: list[WorkflowVersionId | tuple[str, str] | str] = [WorkflowVersionId(xid, AUTOMATION_WORKFLOW_VERSION)
                                                            for xid in xids]
    for version in client.workflows.versions.list(ids, limit=None):
        for task in version.workflow_definition.tasks:
            data = getattr(task.parameters, "data", None)
            if isinstance(data, dict) and isinstance(data.get("automation"), dict):
                out[version.workflow_external_id] = data["automation"]
                break
    return out


def prepare(client: CogniteClient, definitions: Sequence[AutomationDefinition], settings: Mapping[str, ModelSettings],
            env: str, *, file: str, prune: bool = False, commit: str = "") -> Prepared:
    """The plan for `definitions` (those registering in env), read from CDF without writing."""
    from akerbp.mlops.automations import function as automation_function

    secrets = resolve_secrets(definitions, settings)
    by_model: dict[str, list[AutomationDefinition]] = {}
    for definition in definitions:
        by_model.setdefault(definition.model, []).append(definition)
    desired_functions = {model: automation_function.desired(settings[model], env, group, secrets[model])
                         for model, group in by_model.items()}
    triggers, workflows = _registered(client, env)
    live_hashes = _live_function_hashes(client, (f.external_id for f in desired_functions.values()))

    prepared = Prepared(RegisterPlan(env, file, commit, prune), existing_triggers=triggers, existing_workflows=workflows)
    planned_functions: list[PlannedFunction] = []
    for model, fn in desired_functions.items():
        live = live_hashes.get(fn.external_id)
        action = CREATED if live is None else UNCHANGED if live == fn.content_hash else UPDATED
        planned_functions.append(PlannedFunction(fn.external_id, model, action))
        if action != UNCHANGED:
            prepared.functions[fn.external_id] = fn

    items: list[PlannedAutomation] = []
    changed: list[tuple[int, _Wanted]] = []
    for definition in definitions:
        fn = desired_functions[definition.model]
        xid = automation_workflow_external_id(definition.name, env)
        definition_hash = definition.hash()
        wanted_hash = registration_hash(definition_hash, fn.content_hash)
        wanted = _Wanted(definition, fn, _workflow_upsert(definition, env), _version_upsert(definition, env,
                                                                                                fn.external_id),
                         _trigger_upsert(definition, env, wanted_hash, definition_hash, fn.content_hash, commit),
                         wanted_hash)
        trigger, workflow = triggers.get(xid), workflows.get(xid)
        meta = (trigger.metadata or {}) if trigger is not None else {}
        if trigger is None:
            action = CREATED
        elif meta.get(HASH_KEY) == wanted_hash and workflow is not None:
            action = UNCHANGED
        else:
            action = UPDATED
        rule = definition.as_dict()["trigger"]
        items.append(PlannedAutomation(definition.name, definition.model, env, action, xid, fn.external_id,
                                       rule["cron"], rule["timezone"] or "UTC", definition.enabled))
        if action != UNCHANGED:
            prepared.wanted.append(wanted)
        if action == UPDATED:
            changed.append((len(items) - 1, wanted))
    if changed:
        registered = _registered_definitions(client, [items[i].workflow for i, _ in changed])
        for index, wanted in changed:
            item = items[index]
            trigger = triggers[item.workflow]
            meta = (trigger.metadata or {})
            old_tasks = registered.get(item.workflow)
            new_tasks = task_definition(wanted.definition)
            if old_tasks == new_tasks:
                prepared.same_version.add(item.workflow)  # only the trigger (or the workflow) changes
            notes = _field_changes(old_tasks, new_tasks) + _trigger_changes(trigger, wanted.definition, meta)
            if meta.get("mlops_function_hash") != wanted.function.content_hash:
                notes.append(f"function code: {meta.get('mlops_function_hash', '')[:10] or '-'} -> "
                             f"{wanted.function.content_hash[:10]}")
            if item.workflow not in workflows:
                notes.append("workflow: missing in CDF, registered again")
            items[index] = replace(item, changes=tuple(notes or ["registration changed"]))

    names = {d.name for d in definitions}
    stale = sorted(xid for xid in set(triggers) | set(workflows)
                   if xid[len(automation_workflow_prefix(env)):] not in names)
    not_in_file: list[str] = []
    remaining_models = set(by_model)
    for xid in stale:
        name = xid[len(automation_workflow_prefix(env)):]
        trigger = triggers.get(xid)
        model = (trigger.metadata or {}).get("mlops_model", "") if trigger is not None else ""
        if not prune:
            not_in_file.append(name)
            continue
        prepared.removals.append(_Removal(name, xid, trigger is not None, model))
        items.append(PlannedAutomation(name, model, env, REMOVED, xid,
                                       automation_function_external_id(model, env) if model else ""))
    if prune:
        orphaned = sorted({r.model for r in prepared.removals if r.model} - remaining_models)
        if orphaned:
            existing = _live_function_hashes(client, (automation_function_external_id(m, env) for m in orphaned))
            for model in orphaned:
                fn_xid = automation_function_external_id(model, env)
                if fn_xid in existing:
                    prepared.functions_to_remove.append(fn_xid)
                    planned_functions.append(PlannedFunction(fn_xid, model, REMOVED))
    prepared.plan = RegisterPlan(env, file, commit, prune, tuple(items), tuple(planned_functions), tuple(not_in_file))
    return prepared


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


def _apply_one(client: CogniteClient, prepared: Prepared, wanted: _Wanted, say: Say) -> None:
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
    triggers, workflows = _registered(client, env)
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
        if _live_function_hashes(client, [fn]):
            remove_function(client, fn)
            deleted.append(fn)
    return deleted
