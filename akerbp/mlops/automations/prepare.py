"""Preparing `mlops automations register`'s plan (plan.py) without writing: the definitions' upserts (upserts.py)
and automation functions (function.py) against what CDF holds (this env's triggers and workflows, the live
functions' hashes, the registered versions' definitions: a few list requests), each automation and function created,
updated (with what changed), unchanged or, with prune, removed; and the secret values, so a missing one fails before
anything is written. register.py applies what it prepared.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from akerbp.mlops.automations.plan import (
    CREATED,
    REMOVED,
    UNCHANGED,
    UPDATED,
    PlannedAutomation,
    PlannedFunction,
    RegisterPlan,
)
from akerbp.mlops.automations.upserts import (
    HASH_KEY,
    registration_hash,
    task_definition,
    trigger_upsert,
    version_upsert,
    workflow_upsert,
)
from akerbp.mlops.vocabulary import (
    AUTOMATION_WORKFLOW_VERSION,
    automation_function_external_id,
    automation_workflow_external_id,
    automation_workflow_prefix,
    secret_env_var,
)

if TYPE_CHECKING:
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
    from akerbp.mlops.settings import ModelSettings


@dataclass(frozen=True)
class Wanted:
    """What applying writes for one automation created or updated."""

    definition: AutomationDefinition
    function: DesiredFunction
    workflow: WorkflowUpsert
    version: WorkflowVersionUpsert
    trigger: WorkflowTriggerUpsert
    hash: str


@dataclass(frozen=True)
class Removal:
    """A registered automation the file no longer has, removed with prune."""

    name: str
    workflow: str
    trigger: bool  # whether a trigger exists to delete
    model: str


@dataclass
class Prepared:
    """A plan and what applying it writes (not printed)."""

    plan: RegisterPlan
    wanted: list[Wanted] = field(default_factory=list)
    functions: dict[str, DesiredFunction] = field(default_factory=dict)  # external id -> to put live
    removals: list[Removal] = field(default_factory=list)
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


def registered_in(client: CogniteClient, env: str) -> tuple[dict[str, WorkflowTrigger], dict[str, Workflow]]:
    """This env's automation triggers and workflows: two list requests."""
    prefix = automation_workflow_prefix(env)
    triggers = {t.external_id: t for t in client.workflows.triggers.list(limit=None)
                if t.external_id.startswith(prefix)}
    workflows = {w.external_id: w for w in client.workflows.list(limit=None) if w.external_id.startswith(prefix)}
    return triggers, workflows


def live_function_hashes(client: CogniteClient, xids: Iterable[str]) -> dict[str, str]:
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
    triggers, workflows = registered_in(client, env)
    live_hashes = live_function_hashes(client, (f.external_id for f in desired_functions.values()))

    prepared = Prepared(RegisterPlan(env, file, commit, prune), existing_triggers=triggers, existing_workflows=workflows)
    planned_functions: list[PlannedFunction] = []
    for model, fn in desired_functions.items():
        live = live_hashes.get(fn.external_id)
        action = CREATED if live is None else UNCHANGED if live == fn.content_hash else UPDATED
        planned_functions.append(PlannedFunction(fn.external_id, model, action))
        if action != UNCHANGED:
            prepared.functions[fn.external_id] = fn

    items: list[PlannedAutomation] = []
    changed: list[tuple[int, Wanted]] = []
    for definition in definitions:
        fn = desired_functions[definition.model]
        xid = automation_workflow_external_id(definition.name, env)
        definition_hash = definition.hash()
        wanted_hash = registration_hash(definition_hash, fn.content_hash)
        wanted = Wanted(definition, fn, workflow_upsert(definition, env), version_upsert(definition, env,
                                                                                         fn.external_id),
                        trigger_upsert(definition, env, wanted_hash, definition_hash, fn.content_hash, commit),
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
        prepared.removals.append(Removal(name, xid, trigger is not None, model))
        items.append(PlannedAutomation(name, model, env, REMOVED, xid,
                                       automation_function_external_id(model, env) if model else ""))
    if prune:
        orphaned = sorted({r.model for r in prepared.removals if r.model} - remaining_models)
        if orphaned:
            existing = live_function_hashes(client, (automation_function_external_id(m, env) for m in orphaned))
            for model in orphaned:
                fn_xid = automation_function_external_id(model, env)
                if fn_xid in existing:
                    prepared.functions_to_remove.append(fn_xid)
                    planned_functions.append(PlannedFunction(fn_xid, model, REMOVED))
    prepared.plan = RegisterPlan(env, file, commit, prune, tuple(items), tuple(planned_functions), tuple(not_in_file))
    return prepared
