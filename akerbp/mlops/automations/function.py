"""The automation function of one model and environment (`{model}-automation-{env}`): the function whose calls are
the tasks (train, gate, deploy, notify) of that model's automations registered there.

`desired` builds its folder with deployment/build.py (the AUTOMATION kind: the framework with the deploy path, the
settings, analytics/ and batch/, the model's code, test and requirements files, the model's settings as JSON; duckdb
added to its requirements when an automation evaluates SQL or scores files) and hashes it; the
function's options are the automations' TrainingSpecifications (cpu, memory, env_vars), which automations sharing the
function must agree on; its secrets are the model's plus every notification secret of those automations.
`put_live` releases it as deploys do (deployment/release.py, under the deploy lock): a standby is built first when
one is live, so the old function keeps answering until the new one is Ready; then a ping call proves the bundle
imports and answers (else the previous one is put back), and the standby and old code files go. The same content
already live and Ready is "unchanged": nothing is written.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from akerbp.mlops.automations.definition import secret_names, uses_sql
from akerbp.mlops.deployment import build, functions, records, release
from akerbp.mlops.deployment.functions import Progress
from akerbp.mlops.deployment.lock import DeployLock
from akerbp.mlops.deployment.options import FunctionOptions
from akerbp.mlops.errors import MlopsError, UsageError
from akerbp.mlops.utils import provenance
from akerbp.mlops.vocabulary import AUTOMATION, automation_function_external_id

if TYPE_CHECKING:
    from cognite.client import CogniteClient

    from akerbp.mlops.automations.definition import AutomationDefinition
    from akerbp.mlops.settings import ModelSettings

PING = {"step": "ping"}  # the call that proves a new automation function answers (steps.handle)
OPTION_FIELDS = ("cpu", "memory", "env_vars")  # TrainingSpecifications fields that are the function's options
# What analytics SQL (a metric-based trigger, a dynamic threshold) and batch files (parquet) need in CDF. Only the
# functions of models whose automations use them get it: the others build as fast as before (no 20 MB wheel).
DUCKDB_REQUIREMENT = "duckdb>=1.0"


@dataclass
class DesiredFunction:
    """The automation function a register wants live: its folder, content hash, options and secret values."""

    external_id: str
    content_hash: str
    folder: Path
    options: FunctionOptions
    secrets: dict[str, str]  # values: never printed, only their digest is in the hash
    model: str
    env: str
    dataset: str
    commit: str
    built: build.BuiltFolder  # keeps the build folder alive as long as this value is

    def as_dict(self) -> dict[str, Any]:
        """What a plan may print: no secret value."""
        return {"external_id": self.external_id, "hash": self.content_hash, "secrets": sorted(self.secrets),
                "cpu": self.options.cpu, "memory": self.options.memory, "env_vars": sorted(self.options.env_vars)}


def _as_dict(definition: AutomationDefinition | Mapping[str, Any]) -> dict[str, Any]:
    return dict(definition) if isinstance(definition, Mapping) else definition.as_dict()


def function_options(settings: ModelSettings, definitions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """cpu, memory and env_vars of the automations' training specifications (env_vars on top of the model's); two
    automations that disagree are a UsageError naming both."""
    chosen: dict[str, tuple[str, Any]] = {}
    problems = []
    for d in definitions:
        training = (d.get("action") or {}).get("training") or {}
        for field in OPTION_FIELDS:
            value = training.get(field)
            if value is None or value == {}:
                continue
            if field in chosen and chosen[field][1] != value:
                problems.append(f"automations '{chosen[field][0]}' and '{d['name']}' of model '{settings.model_name}' "
                                f"share the function {automation_function_external_id(settings.model_name, d['env'])} "
                                f"but set training.{field} differently ({chosen[field][1]!r} vs {value!r}): make "
                                "them the same, or leave it unset in one")
            chosen.setdefault(field, (d["name"], value))
    if problems:
        raise UsageError("\n".join(problems))
    update: dict[str, Any] = {"env_vars": {**settings.env_vars, **(chosen["env_vars"][1] if "env_vars" in chosen
                                                                   else {})}}
    for field in ("cpu", "memory"):
        if field in chosen:
            update[field] = float(chosen[field][1])
    return update


def desired(settings: ModelSettings, env: str, definitions: Sequence[AutomationDefinition | Mapping[str, Any]],
            secrets: Mapping[str, str]) -> DesiredFunction:
    """Build and hash the automation function of `settings`' model in `env` for `definitions` (its automations
    registered there). `secrets`: values by name (the model's and the notifications'); a missing one is a
    UsageError naming MLOPS_SECRET_<NAME>."""
    from akerbp.mlops.deployment import secrets as secret_values

    found = [_as_dict(d) for d in definitions]
    strangers = [d["name"] for d in found if d.get("model") != settings.model_name or d.get("env") != env]
    if strangers:
        raise UsageError(f"automation(s) {', '.join(strangers)} are not of model '{settings.model_name}' registered "
                         f"in {env}: each model and environment has its own automation function")
    names = sorted(set(settings.secrets).union(*(secret_names(d) for d in found)))
    values = secret_values.resolve(names, lambda missing: (
        f"the automation function of model '{settings.model_name}' in {env} needs the secret(s): set "
        f"{', '.join(missing)} when registering"), given=secrets)
    update = {**function_options(settings, found), "secrets": names}
    needs_duckdb = any(uses_sql(d) or (d.get("action") or {}).get("type") == "batch" for d in found)
    built = build.build_folder(settings, AUTOMATION, env, artifact=None, model_id=None, secrets=values,
                               options_update=update, extra_requirements=(DUCKDB_REQUIREMENT,) if needs_duckdb else ())
    return DesiredFunction(built.options.external_id, built.content_hash, built.path, built.options, values,
                           settings.model_name, env, settings.dataset,
                           provenance.git_commit(settings.root, mark_dirty=True), built)


def is_live(client: CogniteClient, desired: DesiredFunction) -> bool:
    """Whether exactly this content is live and Ready (then put_live changes nothing)."""
    live = functions.retrieve(client, desired.external_id)
    return live is not None and live.status == "Ready" and (live.metadata or {}).get("mlops_hash") == \
        desired.content_hash


def put_live(client: CogniteClient, desired: DesiredFunction, *, deadline: float, say: Progress) -> str:
    """Make `desired` the live automation function: "created", "updated" or "unchanged" (nothing written).
    Raises MlopsError (BuildFailed, SmokeFailed with the previous function put back, DeployTimeout)."""
    xid = desired.external_id
    if is_live(client, desired):
        return "unchanged"
    data_set = functions.data_set_id(client, desired.dataset)
    by = provenance.who()
    with DeployLock(client, xid, deadline, say):
        before = functions.retrieve(client, xid)
        if before is not None and before.status == "Ready" and \
                (before.metadata or {}).get("mlops_hash") == desired.content_hash:
            return "unchanged"  # another register put it live while this one waited
        mlops_md = records.mlops_metadata(model=desired.model, service=AUTOMATION, env=desired.env, version=None,
                                          model_id=None, content_hash=desired.content_hash, commit=desired.commit,
                                          deployed_at=records.now_iso(), by=by)
        ctx = release.ReleaseContext(client, xid, deadline, by, say)
        new = release.NewCode(desired.content_hash, build.zip_folder(desired.folder), desired.options,
                              desired.secrets, mlops_md, data_set)
        out = release.put_live(ctx, new)
        t = time.monotonic()
        verdict = _ping(client, xid, deadline)
        out.phases["ping"] = time.monotonic() - t
        if verdict:
            release.roll_back(ctx, out, verdict)  # raises SmokeFailed
        release.confirm(ctx, out)
    say(f"{xid} {'updated' if before is not None else 'created'} (hash {desired.content_hash[:10]})")
    return "created" if before is None else "updated"


def _ping(client: CogniteClient, xid: str, deadline: float) -> str:
    """"" when the function answers the ping as an automation function does, else what went wrong."""
    try:
        call = functions.call(client, xid, PING, deadline)
    except MlopsError as e:
        return f"the ping call of {xid} could not be completed: {e}"
    answer = call.response if isinstance(call.response, dict) else {}
    if call.status != "Completed" or answer.get("ok") is not True:
        logs = f"\nthe end of its logs:\n{call.logs}" if call.logs else ""
        return f"the ping call of {xid} ended {call.status}: {call.error or answer}{logs}"
    return ""
