"""What runs now: a service's functions, the one answering its calls, its calls and their logs, every deployed service.

Queries below the CLI, so `mlops call/status/logs/history` only parse and print, and code without click (a notebook,
an automation inside a CDF Function) asks the same questions. They take a CogniteClient and return typed results
(`as_dict()` is the --json form). The live function of a service is `{model}-{service}-{env}`; during a replacement
a standby copy `{model}-{service}-{env}-{hash[:10]}` answers instead (vocabulary.py). Deploys tag functions with
mlops_* metadata, which is what the queries read. Waiting for a call uses the poll loop of functions.py.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable

from akerbp.mlops.deployment import functions
from akerbp.mlops.errors import MlopsError
from akerbp.mlops.vocabulary import ENVIRONMENTS, VERSION_XID, function_external_id, is_standby

if TYPE_CHECKING:
    from cognite.client import CogniteClient
    from cognite.client.data_classes import Function, FunctionCall

DAY_MS = 24 * 3600 * 1000
PROJECT_FUNCTIONS = 100  # CDF's limit of functions per project
_ENV_ORDER = {e: i for i, e in enumerate(ENVIRONMENTS)}


class ServiceNotDeployed(MlopsError):
    """No live function and no standby of a service: nothing to call or read logs of."""

    def __init__(self, model: str, service: str, env: str, where: str):
        self.model, self.service, self.env = model, service, env
        super().__init__(f"no {service} service deployed for {model} in {env}: run "
                         f"`ENV={env} bash deploy_{service}_service.sh` (looked in the {where})")


# --- time stamps -----------------------------------------------------------------------------------------------------

def format_ms(ms: int | None) -> str:
    """A CDF time stamp (ms since the epoch) as 'YYYY-MM-DD HH:MM:SS' UTC, '-' when there is none."""
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def parse_iso(text: str | None) -> float:
    """Seconds since the epoch of an ISO time (UTC when it names no zone); 0.0 when it is not one."""
    try:
        parsed = datetime.fromisoformat((text or "").replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


def short_iso(text: str | None) -> str:
    """An ISO time as 'YYYY-MM-DD HH:MM' UTC; the text itself (or '-') when it is not one."""
    stamp = parse_iso(text)
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%d %H:%M") if stamp else (text or "-")


def _meta(fn: Function) -> dict[str, str]:
    return dict(fn.metadata or {})


def _deployed_at(fn: Function) -> float:
    return parse_iso(_meta(fn).get("mlops_deployed_at")) or (fn.created_time or 0) / 1000


# --- one service ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServiceFunctions:
    """A service's live function (None when missing) and its standbys, newest deployment first."""
    live: Function | None
    standbys: list[Function]

    @property
    def all(self) -> list[Function]:
        return [f for f in (self.live, *self.standbys) if f is not None]


@dataclass(frozen=True)
class Answering:
    """The function answering a service's calls now, and why a standby answers (None: the live one does)."""
    function: Function
    fallback: str | None = None


def service_functions(client: CogniteClient, model: str, service: str, env: str) -> ServiceFunctions:
    base = function_external_id(model, service, env)
    found = client.functions.list(external_id_prefix=base, limit=functions.FUNCTIONS_LIMIT)
    live = next((f for f in found if f.external_id == base), None)
    standbys = sorted((f for f in found if is_standby(base, f.external_id)), key=_deployed_at, reverse=True)
    return ServiceFunctions(live, standbys)


def not_deployed(model: str, service: str, env: str) -> ServiceNotDeployed:
    from akerbp.mlops.cdf.client import describe_env_target

    return ServiceNotDeployed(model, service, env, describe_env_target(env))


def _function_error(fn: Function) -> str:
    error = getattr(fn, "error", None) or {}
    return f": {error.get('message')}" if isinstance(error, dict) and error.get("message") else ""


def callable_function(client: CogniteClient, model: str, service: str, env: str) -> Answering:
    """The live function if Ready, else the newest Ready standby; MlopsError saying what to do when neither is."""
    found = service_functions(client, model, service, env)
    live, standbys = found.live, found.standbys
    if live is not None and live.status == "Ready":
        return Answering(live)
    ready = [s for s in standbys if s.status == "Ready"]
    base = function_external_id(model, service, env)
    if ready:
        state = "missing" if live is None else live.status
        return Answering(ready[0], f"{base} is {state}; calling its standby {ready[0].external_id} "
                                   f"(deployed {short_iso(_meta(ready[0]).get('mlops_deployed_at'))})")
    if live is None and not standbys:
        raise not_deployed(model, service, env)
    if live is None:
        raise MlopsError(f"{base} is missing and its standby {standbys[0].external_id} is {standbys[0].status}: "
                         f"wait for the deploy in progress, or redeploy with `ENV={env} bash deploy_{service}_service.sh`")
    raise MlopsError(f"{base} is {live.status}, not Ready{_function_error(live)}: "
                     + ("redeploy with " if live.status == "Failed" else "wait for the deploy to finish, or redeploy with ")
                     + f"`ENV={env} bash deploy_{service}_service.sh`")


def last_call(client: CogniteClient, function_id: int) -> FunctionCall | None:
    """The newest call of a function: looks back a day, then a month, then forever, so busy functions stay cheap."""
    now = int(time.time() * 1000)
    for window in (DAY_MS, 30 * DAY_MS, None):
        start = {"min": now - window} if window else None
        calls = client.functions.calls.list(function_id=function_id, start_time=start, limit=None)
        if calls:
            return max(calls, key=lambda c: (c.start_time or 0, c.id))
    return None


# --- calling -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StartedCall:
    answering: Answering
    call: FunctionCall


def start_call(client: CogniteClient, model: str, service: str, env: str, data: dict) -> StartedCall:
    """Call the answering function; if it vanished in between (a deploy swapped it), look again once."""
    from cognite.client.exceptions import CogniteAPIError

    answering = callable_function(client, model, service, env)
    try:
        return StartedCall(answering, client.functions.call(id=answering.function.id, data=data, wait=False))
    except CogniteAPIError as first:
        again = callable_function(client, model, service, env)
        if again.function.id == answering.function.id:
            raise MlopsError(f"calling {answering.function.external_id} failed: {first.message}") from None
        return StartedCall(again, client.functions.call(id=again.function.id, data=data, wait=False))


def wait_call(client: CogniteClient, call: FunctionCall, timeout: float) -> FunctionCall:
    """The call once it ended, or as it is after `timeout` seconds (still Running)."""
    return functions.wait_call(client, call, time.monotonic() + timeout)


def log_lines(call: FunctionCall) -> list[str]:
    """A call's log lines, each prefixed with its time (HH:MM:SS.mmm UTC) when CDF gives one. Not masked."""
    lines = []
    for entry in call.get_logs():
        message = (entry.message or "").rstrip("\n")
        stamp = datetime.fromtimestamp(entry.timestamp / 1000, timezone.utc).strftime("%H:%M:%S.%f")[:-3] \
            if entry.timestamp else ""
        lines.append(f"{stamp}  {message}" if stamp else message)
    return lines


@dataclass(frozen=True)
class CallLogs:
    """One call of a service (of its live function or a standby) with its logs."""
    function: Function
    call: FunctionCall
    lines: list[str]

    @property
    def error(self) -> str:
        error = self.call.error or {}
        return error.get("message", "") if isinstance(error, dict) else str(error)

    @property
    def seconds(self) -> float | None:
        call = self.call
        return (call.end_time - call.start_time) / 1000 if call.end_time and call.start_time else None

    def as_dict(self) -> dict:
        return {"function": self.function.external_id, "call_id": self.call.id, "status": self.call.status,
                "start_time": format_ms(self.call.start_time), "end_time": format_ms(self.call.end_time),
                "error": self.error if self.call.error else None, "logs": self.lines}


def call_logs(client: CogniteClient, model: str, service: str, env: str, call_id: int | None = None) -> CallLogs:
    """Call `call_id` of the service (default: its newest call, of the live function or any standby)."""
    found = service_functions(client, model, service, env).all
    if not found:
        raise not_deployed(model, service, env)
    if call_id is not None:
        for fn in found:
            one = client.functions.calls.retrieve(call_id=call_id, function_id=fn.id)
            if one is not None:
                return CallLogs(fn, one, log_lines(one))
        raise MlopsError(f"no call {call_id} of {function_external_id(model, service, env)} or its standbys")
    newest: tuple[Function, FunctionCall] | None = None
    for fn in found:
        candidate = last_call(client, fn.id)
        if candidate is not None and (newest is None or (candidate.start_time or 0) > (newest[1].start_time or 0)):
            newest = (fn, candidate)
    if newest is None:
        raise MlopsError(f"{found[0].external_id} has not been called yet: "
                         f"`mlops call {model} --service {service} --env {env} --data ...`")
    return CallLogs(newest[0], newest[1], log_lines(newest[1]))


# --- every service -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LastCall:
    id: int
    time: str  # 'YYYY-MM-DD HH:MM:SS' UTC
    status: str

    def as_dict(self) -> dict:
        return {"id": self.id, "time": self.time, "status": self.status}


@dataclass(frozen=True)
class DeployedService:
    """A deployed service: its live function, or the newest standby when the live one is missing."""
    model: str
    service: str
    env: str
    function: str
    function_id: int
    standby: bool  # the live function is missing: this is a standby
    standbys: int
    status: str
    version: str = ""
    model_id: str = ""
    hash: str = ""
    git_commit: str = ""
    deployed_at: str = ""
    deployed_by: str = ""
    last_call: LastCall | None = None

    def as_dict(self) -> dict:
        return {"model": self.model, "service": self.service, "env": self.env, "function": self.function,
                "function_id": self.function_id, "standby": self.standby, "standbys": self.standbys,
                "status": self.status, "version": self.version, "model_id": self.model_id, "hash": self.hash,
                "git_commit": self.git_commit, "deployed_at": self.deployed_at, "deployed_by": self.deployed_by,
                "last_call": None if self.last_call is None else self.last_call.as_dict()}

    def sort_key(self) -> tuple[str, str, int]:
        return self.model, self.service, _ENV_ORDER.get(self.env, 9)


@dataclass
class _Group:
    live: Function | None = None
    standbys: list[Function] = field(default_factory=list)


def deployed_services(client: CogniteClient, envs: Iterable[str] | None = None, *,
                      last_calls: bool = True) -> list[DeployedService]:
    """The deployed services of `envs` (default: all) in this CDF, by model, service and environment; with
    last_calls, each one's newest call (a request per service: the dashboard leaves it out)."""
    rows = services_of(client.functions.list(limit=functions.FUNCTIONS_LIMIT), envs)
    if not last_calls:
        return rows
    out = []
    for row in rows:
        newest = last_call(client, row.function_id)
        out.append(row if newest is None else dataclasses.replace(
            row, last_call=LastCall(newest.id, format_ms(newest.start_time), newest.status)))
    return out


def services_of(found: Iterable[Function], envs: Iterable[str] | None = None) -> list[DeployedService]:
    """The deployed services that a functions listing shows (no request), last_call None."""
    wanted = set(envs) if envs else None
    groups: dict[tuple[str, str, str], _Group] = {}
    for fn in found:
        meta = _meta(fn)
        model, service, env = meta.get("mlops_model"), meta.get("mlops_service"), meta.get("mlops_env")
        if not (model and service and env) or (wanted and env not in wanted):
            continue
        group = groups.setdefault((model, service, env), _Group())
        base = function_external_id(model, service, env)
        if fn.external_id == base:
            group.live = fn
        elif is_standby(base, fn.external_id):
            group.standbys.append(fn)
    rows = []
    for (model, service, env), group in groups.items():
        standbys = sorted(group.standbys, key=_deployed_at, reverse=True)
        shown = group.live or (standbys[0] if standbys else None)
        if shown is None:
            continue
        fn = shown
        meta = _meta(fn)
        rows.append(DeployedService(
            model=model, service=service, env=env, function=fn.external_id or "", function_id=fn.id,
            standby=group.live is None, standbys=len(standbys), status=fn.status or "",
            version=meta.get("mlops_version", ""), model_id=meta.get("mlops_model_id", ""),
            hash=meta.get("mlops_hash", ""), git_commit=meta.get("mlops_git_commit", ""),
            deployed_at=meta.get("mlops_deployed_at", ""), deployed_by=meta.get("mlops_deployed_by", ""),
        ))
    return sorted(rows, key=DeployedService.sort_key)


@dataclass(frozen=True)
class FunctionCount:
    """Functions in a project (CDF allows PROJECT_FUNCTIONS), and how many are mlops services or their standbys."""
    total: int
    ours: int


def function_count(client: CogniteClient) -> FunctionCount:
    found = client.functions.list(limit=functions.FUNCTIONS_LIMIT)
    return FunctionCount(len(found), sum(1 for fn in found if _meta(fn).get("mlops_model")))


@dataclass(frozen=True)
class Status:
    """The deployed services of several CDFs (dev may live elsewhere than test and prod), and each CDF's count."""
    services: list[DeployedService]
    counts: list[tuple[list[str], FunctionCount]]


def status(targets: Iterable[tuple[CogniteClient, list[str]]]) -> Status:
    """`targets`: (client, the environments it holds), as cdf.client.clients_for_envs gives them."""
    services: list[DeployedService] = []
    counts = []
    for client, envs in targets:
        services += deployed_services(client, envs)
        counts.append((envs, function_count(client)))
    return Status(sorted(services, key=DeployedService.sort_key), counts)


def history(targets: Iterable[tuple[CogniteClient, list[str]]], model: str, limit: int) -> list[dict]:
    """The newest `limit` audit records of `model` over several CDFs, newest first (audit.history's records)."""
    from akerbp.mlops import audit

    records: list[dict] = []
    for client, envs in targets:
        one = envs[0] if len(envs) == 1 else None
        found = audit.history(client, model, env=one, limit=limit if one else None)
        records += [r for r in found if r["env"] in envs]
    records.sort(key=lambda r: r["time"], reverse=True)  # ISO times: one CDF's order kept on ties (stable sort)
    return records[:limit]


# --- which models a CDF knows --------------------------------------------------------------------------------------

def holds_model(client: CogniteClient, model: str) -> bool:
    """Whether this CDF has any registry file, function or audit record of `model` (three requests at most)."""
    from akerbp.mlops.audit import EVENT_TYPE

    # Model names have no '-' or '/', so these prefixes select this model only.
    if client.files.list(external_id_prefix=f"{model}/", limit=1):
        return True
    if client.functions.list(external_id_prefix=f"{model}-", limit=1):
        return True
    return bool(client.events.list(type=EVENT_TYPE, metadata={"model": model}, limit=1))


def models_in(client: CogniteClient) -> set[str]:
    """Every model this CDF holds registry versions or services of."""
    from akerbp.mlops.registry.rules import DIRECTORY

    names = {(fn.metadata or {}).get("mlops_model") for fn in client.functions.list(limit=functions.FUNCTIONS_LIMIT)}
    for f in client.files.list(directory_prefix=DIRECTORY, limit=None):
        match = VERSION_XID.match(f.external_id or "")
        if match:
            names.add(match.group(1))
    return {n for n in names if n}
