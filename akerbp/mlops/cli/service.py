"""`mlops call`, `status`, `logs`, `history`: use and inspect the services deployed as CDF Functions.

The live function of a service is `{model}-{service}-{env}`; during a replacement a standby copy
`{model}-{service}-{env}-{hash[:10]}` answers instead, so `mlops call` falls back to it rather than failing while a
deploy runs (vocabulary.py). Deploys tag functions with mlops_* metadata, which is what `status` reads. Every command
reads the CDF the deploy of that environment wrote to (cdf.client.client_for_env: ENV=dev is the local CDF unless
LOCAL_DEPLOYMENT=True). Results go to stdout (JSON or tables), notes to stderr; errors are MlopsError (exit 1) or
UsageError (exit 2), mapped by the root command.
"""
from __future__ import annotations

import json
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import click

from akerbp.mlops.vocabulary import ENVIRONMENTS as ENVS, SERVICES, function_external_id, is_model_name, is_standby
from akerbp.mlops.cli.output import note, print_json, print_table
from akerbp.mlops.errors import MlopsError, UsageError

LOG_TAIL = 20
DAY_MS = 24 * 3600 * 1000
# functions/list has no cursor: one page holds them all. CDF allows far fewer functions per project than this.
FUNCTIONS_LIMIT = 1000


# --- shared helpers --------------------------------------------------------------------------------------------------

def _client(env: str):
    """Where the services of env live: where `mlops deploy` put them."""
    from akerbp.mlops.cdf.client import client_for_env

    return client_for_env(env)


def _clients(env: str | None):
    """(client, envs) for one environment, or for all of them (dev may live elsewhere than test and prod)."""
    from akerbp.mlops.cdf.client import clients_for_envs

    return clients_for_envs([env] if env else list(ENVS))


def _env(env: str | None) -> str:
    if env:
        return env
    from akerbp.mlops.cdf.client import get_environment

    return get_environment()


def _model(model: str) -> str:
    if not is_model_name(model):
        raise UsageError(f"{model!r} is not a model name: lowercase letters, digits and '_', starting with a letter")
    return model


def _mask(text: str) -> str:
    from akerbp.mlops.utils.logger import mask

    return mask(text)


def _note(text: str) -> None:
    note(text)


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def _parse_iso(text: str | None) -> float:
    try:
        parsed = datetime.fromisoformat((text or "").replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


def _short_iso(text: str | None) -> str:
    stamp = _parse_iso(text)
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%d %H:%M") if stamp else (text or "-")


def _meta(fn) -> dict:
    return dict(fn.metadata or {})


def _deployed_at(fn) -> float:
    return _parse_iso(_meta(fn).get("mlops_deployed_at")) or (fn.created_time or 0) / 1000


def service_functions(client, model: str, service: str, env: str):
    """(live function or None, standby functions newest first) of one service."""
    base = function_external_id(model, service, env)
    found = client.functions.list(external_id_prefix=base, limit=FUNCTIONS_LIMIT)
    live = next((f for f in found if f.external_id == base), None)
    standbys = sorted((f for f in found if is_standby(base, f.external_id)), key=_deployed_at, reverse=True)
    return live, standbys


def _not_deployed(client, model: str, service: str, env: str) -> MlopsError:
    """Exit 1 for a known model that has no such service; the one unknown-model error (exit 2) for a typo."""
    from akerbp.mlops.cdf.client import describe_env_target
    from akerbp.mlops.cli.known_models import check_known

    check_known(model, [client])
    return MlopsError(f"no {service} service deployed for {model} in {env}: run "
                      f"`ENV={env} bash deploy_{service}_service.sh` (looked in the {describe_env_target(env)})")


def _function_error(fn) -> str:
    error = getattr(fn, "error", None) or {}
    return f": {error.get('message')}" if isinstance(error, dict) and error.get("message") else ""


def callable_function(client, model: str, service: str, env: str):
    """The function that answers calls now: the live one if Ready, else the newest Ready standby."""
    live, standbys = service_functions(client, model, service, env)
    if live is not None and live.status == "Ready":
        return live
    ready = [s for s in standbys if s.status == "Ready"]
    base = function_external_id(model, service, env)
    if ready:
        state = "missing" if live is None else live.status
        _note(f"{base} is {state}; calling its standby {ready[0].external_id} "
              f"(deployed {_short_iso(_meta(ready[0]).get('mlops_deployed_at'))})")
        return ready[0]
    if live is None and not standbys:
        raise _not_deployed(client, model, service, env)
    if live is None:
        raise MlopsError(f"{base} is missing and its standby {standbys[0].external_id} is {standbys[0].status}: "
                         f"wait for the deploy in progress, or redeploy with `ENV={env} bash deploy_{service}_service.sh`")
    raise MlopsError(f"{base} is {live.status}, not Ready{_function_error(live)}: "
                     + ("redeploy with " if live.status == "Failed" else "wait for the deploy to finish, or redeploy with ")
                     + f"`ENV={env} bash deploy_{service}_service.sh`")


def last_call(client, function_id: int):
    """The newest call of a function: looks back a day, then a month, then forever, so busy functions stay cheap."""
    now = int(time.time() * 1000)
    for window in (DAY_MS, 30 * DAY_MS, None):
        start = {"min": now - window} if window else None
        calls = client.functions.calls.list(function_id=function_id, start_time=start, limit=None)
        if calls:
            return max(calls, key=lambda c: (c.start_time or 0, c.id))
    return None


def _log_lines(call) -> list[str]:
    lines = []
    for entry in call.get_logs():
        message = (entry.message or "").rstrip("\n")
        stamp = datetime.fromtimestamp(entry.timestamp / 1000, timezone.utc).strftime("%H:%M:%S.%f")[:-3] \
            if entry.timestamp else ""
        lines.append(_mask(f"{stamp}  {message}" if stamp else message))
    return lines


# --- mlops call ------------------------------------------------------------------------------------------------------

# Deepest --data nesting sent: cognite-sdk's JSON encoder (and the Python json of the server and of the function's
# runtime) stop near 1,000 levels, less the call stack's own depth; 900 went through the local CDF here.
MAX_DATA_DEPTH = 500


def parse_data(value: str | None) -> dict:
    """--data: inline JSON, @file or @- (stdin); a JSON object, as CDF passes it to the function.

    What JSON allows reaches the model; what it does not, or what cognite-sdk and CDF cannot carry, is a usage error
    naming it: NaN and Infinity (not JSON, though Python's json reads them), a number beyond a 64-bit float (cognite-sdk
    sends floats), an integer longer than Python's json reads, nesting deeper than MAX_DATA_DEPTH.
    """
    if value is None:
        return {}
    source = "--data"
    text = value
    if value.startswith("@"):
        name = value[1:]
        source = f"--data {value}"
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"option --data: cannot read {name}: {getattr(e, 'strerror', None) or e}") from None
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_readable_int)
    except json.JSONDecodeError as e:
        raise UsageError(f"option {source}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno} "
                         f"(char {e.pos})") from None
    except _NotCarried as e:
        raise UsageError(f"option {source}: {e.token[:40]}{'...' if len(e.token) > 40 else ''}"
                         f"{_where(text, e.token)}: {e.problem}") from None
    except RecursionError:
        raise UsageError(f"option {source}: nested deeper than Python's json reads (about 1,000 levels); cognite-sdk "
                         f"and CDF's Python functions read JSON the same way, so mlops call sends at most "
                         f"{MAX_DATA_DEPTH} levels: flatten the data") from None
    if not isinstance(data, dict):
        raise UsageError(f"option {source}: must be a JSON object ({{...}}), got {type(data).__name__}")
    depth = _depth(data)
    if depth > MAX_DATA_DEPTH:
        raise UsageError(f"option {source}: nested {depth} levels deep; cognite-sdk's JSON encoder (and the Python "
                         f"that runs the function) stop near 1,000, so mlops call sends at most {MAX_DATA_DEPTH}: "
                         "flatten the data")
    return data


class _NotCarried(ValueError):
    def __init__(self, token: str, problem: str):
        super().__init__(token)
        self.token, self.problem = token, problem


def _refuse_constant(token: str):
    raise _NotCarried(token, "not JSON (JSON has no NaN or Infinity, although Python's json reads them; cognite-sdk "
                             "refuses to send them): use null, or a string")


def _finite_float(token: str) -> float:
    number = float(token)
    if number in (float("inf"), float("-inf")):
        raise _NotCarried(token, "beyond a 64-bit float (about 1.8e308): cognite-sdk sends JSON numbers as floats; "
                                 "send it as a string")
    return number


def _readable_int(token: str) -> int:
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
    digits = len(token.lstrip("-"))
    if limit and digits > limit:
        raise _NotCarried(token, f"an integer of {digits:,} digits; Python's json (cognite-sdk's, and that of CDF's "
                                 f"Python functions) reads at most {limit:,}: send it as a string")
    return int(token)


def _where(text: str, token: str) -> str:
    """' at line L column C' of the first `token` outside a string, or ''."""

    for found in re.finditer(r'"(?:[^"\\]|\\.)*"|NaN|-?Infinity|[-+0-9.eE]+', text):
        if found.group() == token:
            line = text.count("\n", 0, found.start()) + 1
            column = found.start() - (text.rfind("\n", 0, found.start()) + 1) + 1
            return f" at line {line} column {column}"
    return ""


def _depth(data) -> int:
    """Nesting depth of parsed JSON, without recursion (a dict or list is one level)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _wait(call, timeout: float):
    deadline = time.monotonic() + timeout
    pause = 0.2
    while call.status == "Running" and time.monotonic() < deadline:
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))  # polling CDF: no completion push exists
        pause = min(pause * 1.5, 3.0)
        call.update()
    return call


def _start_call(client, model, service, env, data):
    """Call the answering function; if it vanished in between (a deploy swapped it), look again once."""
    from cognite.client.exceptions import CogniteAPIError

    fn = callable_function(client, model, service, env)
    try:
        return fn, client.functions.call(id=fn.id, data=data, wait=False)
    except CogniteAPIError as first:
        again = callable_function(client, model, service, env)
        if again.id == fn.id:
            raise MlopsError(f"calling {fn.external_id} failed: {first.message}") from None
        return again, client.functions.call(id=again.id, data=data, wait=False)


@click.command()
@click.argument("model")
@click.option("--service", type=click.Choice(SERVICES), default="prediction", show_default=True)
@click.option("--env", type=click.Choice(ENVS), help="Environment (default: ENV, else dev).")
@click.option("--data", "data_text", metavar="JSON|@FILE",
              help="Call data: a JSON object, @file.json or @- for stdin (default: {}).")
@click.option("--timeout", type=click.FloatRange(min=0), default=600, show_default=True,
              help="Seconds to wait for the call to finish.")
@click.option("--compact", is_flag=True, help="Print the response on one line.")
def call(model: str, service: str, env: str | None, data_text: str | None, timeout: float, compact: bool):
    """Call a deployed service of MODEL and print its JSON response.

    Exits 1 if the call fails or the service answers status "error" (the answer is still printed), 2 for bad
    input such as --data that is not JSON.
    """
    model, env = _model(model), _env(env)
    data = parse_data(data_text)
    client = _client(env)
    fn, started = _start_call(client, model, service, env, data)
    done = _wait(started, timeout)
    hint = f"mlops logs {model} --service {service} --env {env} --call {done.id}"
    if done.status == "Running":
        raise MlopsError(f"call {done.id} of {fn.external_id} is still running after {timeout:g} s; "
                         f"see it later with `{hint}`")
    if done.status != "Completed":
        error = done.error or {}
        tail = _log_lines(done)[-LOG_TAIL:]
        reason = error.get("message") or ("the function ran out of time" if done.status == "Timeout" else "")
        raise MlopsError(
            f"call {done.id} of {fn.external_id} {done.status}" + (f": {_mask(reason)}" if reason else "")
            + (f"\nlast {len(tail)} log lines:\n" + "\n".join(f"  {line}" for line in tail) if tail else "")
            + f"\nall logs: `{hint}`"
        )
    response = done.get_response()
    text = json.dumps(response, separators=(",", ":")) if compact else json.dumps(response, indent=2)
    click.echo(_mask(text))
    if isinstance(response, dict) and response.get("status") == "error":
        raise MlopsError(f"{model} {service} in {env} answered status \"error\": {response.get('message', '')}")


# --- mlops status ----------------------------------------------------------------------------------------------------

def deployed_services(client, envs: list[str] | None = None) -> list[dict]:
    """One row per deployed service of `envs` (default: all): the live function, or the newest standby when the
    live one is missing."""
    groups: dict[tuple, dict] = {}
    for fn in client.functions.list(limit=FUNCTIONS_LIMIT):
        meta = _meta(fn)
        key = (meta.get("mlops_model"), meta.get("mlops_service"), meta.get("mlops_env"))
        if not all(key) or (envs and key[2] not in envs):
            continue
        group = groups.setdefault(key, {"live": None, "standbys": []})
        base = function_external_id(*key)
        if fn.external_id == base:
            group["live"] = fn
        elif is_standby(base, fn.external_id):
            group["standbys"].append(fn)
    rows = []
    order = {e: i for i, e in enumerate(ENVS)}
    for (model, service, env_), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], order.get(kv[0][2], 9))):
        standbys = sorted(group["standbys"], key=_deployed_at, reverse=True)
        fn = group["live"] or (standbys[0] if standbys else None)
        if fn is None:
            continue
        meta = _meta(fn)
        newest = last_call(client, fn.id)
        rows.append({
            "model": model, "service": service, "env": env_, "function": fn.external_id, "function_id": fn.id,
            "standby": group["live"] is None, "standbys": len(standbys), "status": fn.status,
            "version": meta.get("mlops_version", ""), "model_id": meta.get("mlops_model_id", ""),
            "hash": meta.get("mlops_hash", ""), "git_commit": meta.get("mlops_git_commit", ""),
            "deployed_at": meta.get("mlops_deployed_at", ""), "deployed_by": meta.get("mlops_deployed_by", ""),
            "last_call": None if newest is None else {
                "id": newest.id, "time": _when(newest.start_time), "status": newest.status},
        })
    return rows


@click.command()
@click.option("--env", type=click.Choice(ENVS), help="Only this environment (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the services as JSON.")
def status(env: str | None, as_json: bool):
    """Deployed services: version, code hash, when and by whom deployed, function status and last call."""
    order = {e: i for i, e in enumerate(ENVS)}
    rows, counts = [], []
    for client, envs in _clients(env):
        rows += deployed_services(client, envs)
        counts.append((envs, function_count(client)))
    rows.sort(key=lambda r: (r["model"], r["service"], order.get(r["env"], 9)))
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo(f"no mlops services deployed{f' in {env}' if env else ''}")
        return
    table = [["MODEL", "SERVICE", "ENV", "VERSION", "HASH", "DEPLOYED (UTC)", "BY", "STATUS", "LAST CALL (UTC)"]]
    for r in rows:
        last = r["last_call"]
        table.append([
            r["model"], r["service"], r["env"], r["model_id"] or r["version"] or "-", r["hash"][:10] or "-",
            _short_iso(r["deployed_at"]), r["deployed_by"] or "-",
            r["status"] + (" (standby)" if r["standby"] else ""),
            f"{last['time']} {last['status']}" if last else "-",
        ])
    print_table(table)
    for envs, (total, ours) in counts:  # CDF allows 100 functions per project
        where = "/".join(envs) if envs else "all environments"
        click.echo(f"functions in the CDF of {where}: {total} of {PROJECT_FUNCTIONS} ({ours} of them mlops services: "
                   "one per model, service and environment, plus a standby while a deploy replaces one)")


PROJECT_FUNCTIONS = 100  # CDF's limit of functions per project


def function_count(client) -> tuple[int, int]:
    """(functions in the project, those that are mlops services or their standbys)."""
    found = client.functions.list(limit=FUNCTIONS_LIMIT)
    return len(found), sum(1 for fn in found if _meta(fn).get("mlops_model"))


# --- mlops logs ------------------------------------------------------------------------------------------------------

@click.command()
@click.argument("model")
@click.option("--service", type=click.Choice(SERVICES), default="prediction", show_default=True)
@click.option("--env", type=click.Choice(ENVS), help="Environment (default: ENV, else dev).")
@click.option("--call", "call_id", type=int, help="Call id (default: the newest call).")
@click.option("--json", "as_json", is_flag=True, help="Print the call and its logs as JSON.")
def logs(model: str, service: str, env: str | None, call_id: int | None, as_json: bool):
    """Logs of a call of a deployed service: what the model printed, and the error of a failed call."""
    model, env = _model(model), _env(env)
    client = _client(env)
    live, standbys = service_functions(client, model, service, env)
    functions = [f for f in (live, *standbys) if f is not None]
    if not functions:
        raise _not_deployed(client, model, service, env)
    found, owner = None, None
    if call_id is not None:
        for fn in functions:
            found = client.functions.calls.retrieve(call_id=call_id, function_id=fn.id)
            if found is not None:
                owner = fn
                break
        if found is None:
            raise MlopsError(f"no call {call_id} of {function_external_id(model, service, env)} or its standbys")
    else:
        for fn in functions:
            newest = last_call(client, fn.id)
            if newest is not None and (found is None or (newest.start_time or 0) > (found.start_time or 0)):
                found, owner = newest, fn
        if found is None:
            raise MlopsError(f"{functions[0].external_id} has not been called yet: "
                             f"`mlops call {model} --service {service} --env {env} --data ...`")
    lines = _log_lines(found)
    error = found.error or {}
    if as_json:
        print_json({
            "function": owner.external_id, "call_id": found.id, "status": found.status,
            "start_time": _when(found.start_time), "end_time": _when(found.end_time),
            "error": error.get("message", "") if error else None, "logs": lines,
        })
        return
    took = f", {(found.end_time - found.start_time) / 1000:.1f} s" if found.end_time and found.start_time else ""
    _note(f"call {found.id} of {owner.external_id}: {found.status}, started {_when(found.start_time)} UTC{took}")
    for line in lines:
        click.echo(line)
    if error.get("message"):
        _note(f"error: {error['message']}")
    if not lines:
        _note("(no log lines)")


# --- mlops history ---------------------------------------------------------------------------------------------------

@click.command()
@click.argument("model")
@click.option("--env", type=click.Choice(ENVS), help="Only this environment (default: all).")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Newest records shown.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
def history(model: str, env: str | None, limit: int, as_json: bool):
    """The audit trail of MODEL, newest first: deploys, rollbacks, promotions and training runs."""
    from akerbp.mlops import audit

    model = _model(model)
    records, targets = [], _clients(env)
    for client, envs in targets:
        one = envs[0] if len(envs) == 1 else None
        found = audit.history(client, model, env=one, limit=limit if one else None)
        records += [r for r in found if r["env"] in envs]
    records.sort(key=lambda r: r["time"], reverse=True)  # ISO times: one CDF's order kept on ties (stable sort)
    records = records[:limit]
    if not records:
        from akerbp.mlops.cli.known_models import check_known

        check_known(model, [client for client, _ in targets])
    if as_json:
        print_json(records)
        return
    if not records:
        click.echo(f"no audit records for {model}{f' in {env}' if env else ''}")
        return
    table = [["TIME (UTC)", "ACTION", "SERVICE", "ENV", "VERSION", "HASH", "OUTCOME", "WHO", "TOOK", "MESSAGE"]]
    for r in records:
        message = " ".join(r["message"].split())
        table.append([
            r["time"].replace("T", " ").rstrip("Z"), r["action"], r["service"] or "-", r["env"],
            r["model_id"] or r["version"] or "-", r["hash"][:10] or "-", r["outcome"], r["who"] or "-",
            f"{r['duration_s']} s" if r["duration_s"] else "-",
            message if len(message) <= 60 else message[:57] + "...",
        ])
    print_table(table)
