"""`mlops call`, `status`, `logs`, `history`: parse the arguments, ask deployment/live.py, print the answer.

Every command reads the CDF the deploy of that environment wrote to (cdf.client.client_for_env: ENV=dev is the local
CDF unless LOCAL_DEPLOYMENT=True). Results go to stdout (JSON or tables), notes to stderr (cli/output.py); errors are
MlopsError (exit 1) or UsageError (exit 2), mapped by the root command.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from akerbp.mlops.cli import options
from akerbp.mlops.cli.output import echo, note, print_compact_json, print_json, print_table
from akerbp.mlops.errors import MlopsError, UsageError
from akerbp.mlops.vocabulary import ENVIRONMENTS as ENVS, is_model_name

if TYPE_CHECKING:
    from cognite.client import CogniteClient

LOG_TAIL = 20


def _client(env: str) -> CogniteClient:
    """Where the services of env live: where `mlops deploy` put them."""
    from akerbp.mlops.cdf.client import client_for_env

    return client_for_env(env)


def _clients(env: str | None) -> list[tuple[CogniteClient, list[str]]]:
    """(client, envs) for one environment, or for all of them (dev may live elsewhere than test and prod)."""
    from akerbp.mlops.cdf.client import clients_for_envs

    return clients_for_envs([env] if env else list(ENVS))


def _model(model: str) -> str:
    if not is_model_name(model):
        raise UsageError(f"{model!r} is not a model name: lowercase letters, digits and '_', starting with a letter")
    return model


def _known_or_not_deployed(error: Exception, model: str, clients: list[CogniteClient]) -> None:
    """A service not deployed is exit 1 for a known model; for a typo, the one unknown-model error (exit 2)."""
    from akerbp.mlops.cli.known_models import check_known
    from akerbp.mlops.deployment.live import ServiceNotDeployed

    if isinstance(error, ServiceNotDeployed):
        check_known(model, clients)


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


def _refuse_constant(token: str) -> NoReturn:
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


def _depth(data: object) -> int:
    """Nesting depth of parsed JSON, without recursion (a dict or list is one level)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


@click.command()
@click.argument("model")
@options.service()
@options.env()
@click.option("--data", "data_text", metavar="JSON|@FILE",
              help="Call data: a JSON object, @file.json or @- for stdin (default: {}).")
@options.timeout(600, "Seconds to wait for the call to finish.")
@click.option("--compact", is_flag=True, help="Print the response on one line.")
def call(model: str, service: str, env: str | None, data_text: str | None, timeout: float, compact: bool) -> None:
    """Call a deployed service of MODEL and print its JSON response.

    Exits 1 if the call fails or the service answers status "error" (the answer is still printed), 2 for bad
    input such as --data that is not JSON.
    """
    from akerbp.mlops.deployment import live

    model, env = _model(model), options.env_or_default(env)
    data = parse_data(data_text)
    client = _client(env)
    try:
        started = live.start_call(client, model, service, env, data)
    except MlopsError as e:
        _known_or_not_deployed(e, model, [client])
        raise
    fn = started.answering.function
    if started.answering.fallback:
        note(started.answering.fallback)
    done = live.wait_call(client, started.call, timeout)
    hint = f"mlops logs {model} --service {service} --env {env} --call {done.id}"
    if done.status == "Running":
        raise MlopsError(f"call {done.id} of {fn.external_id} is still running after {timeout:g} s; "
                         f"see it later with `{hint}`")
    if done.status != "Completed":
        error = done.error or {}
        tail = live.log_lines(done)[-LOG_TAIL:]
        reason = error.get("message") or ("the function ran out of time" if done.status == "Timeout" else "")
        raise MlopsError(
            f"call {done.id} of {fn.external_id} {done.status}" + (f": {reason}" if reason else "")
            + (f"\nlast {len(tail)} log lines:\n" + "\n".join(f"  {line}" for line in tail) if tail else "")
            + f"\nall logs: `{hint}`"
        )
    response = done.get_response()
    if compact:
        print_compact_json(response)
    else:
        print_json(response)
    if isinstance(response, dict) and response.get("status") == "error":
        raise MlopsError(f"{model} {service} in {env} answered status \"error\": {response.get('message', '')}")


# --- mlops status ----------------------------------------------------------------------------------------------------

@click.command()
@options.env(help=options.ENV_FILTER_HELP)
@options.json_output(help="Print the services as JSON.")
def status(env: str | None, as_json: bool) -> None:
    """Deployed services: version, code hash, when and by whom deployed, function status and last call."""
    from akerbp.mlops.deployment import live

    found = live.status(_clients(env))
    if as_json:
        print_json([s.as_dict() for s in found.services])
        return
    if not found.services:
        echo(f"no mlops services deployed{f' in {env}' if env else ''}")
        return
    table = [["MODEL", "SERVICE", "ENV", "VERSION", "HASH", "DEPLOYED (UTC)", "BY", "STATUS", "LAST CALL (UTC)"]]
    for s in found.services:
        last = s.last_call
        table.append([
            s.model, s.service, s.env, s.model_id or s.version or "-", s.hash[:10] or "-",
            live.short_iso(s.deployed_at), s.deployed_by or "-", s.status + (" (standby)" if s.standby else ""),
            f"{last.time} {last.status}" if last else "-",
        ])
    print_table(table)
    for envs, count in found.counts:  # CDF allows 100 functions per project
        where = "/".join(envs) if envs else "all environments"
        echo(f"functions in the CDF of {where}: {count.total} of {live.PROJECT_FUNCTIONS} ({count.ours} of them mlops "
             "services: one per model, service and environment, plus a standby while a deploy replaces one)")


# --- mlops logs ------------------------------------------------------------------------------------------------------

@click.command()
@click.argument("model")
@options.service()
@options.env()
@click.option("--call", "call_id", type=int, help="Call id (default: the newest call).")
@options.json_output(help="Print the call and its logs as JSON.")
def logs(model: str, service: str, env: str | None, call_id: int | None, as_json: bool) -> None:
    """Logs of a call of a deployed service: what the model printed, and the error of a failed call."""
    from akerbp.mlops.deployment import live

    model, env = _model(model), options.env_or_default(env)
    client = _client(env)
    try:
        found = live.call_logs(client, model, service, env, call_id)
    except MlopsError as e:
        _known_or_not_deployed(e, model, [client])
        raise
    if as_json:
        print_json(found.as_dict())
        return
    one = found.call
    took = f", {found.seconds:.1f} s" if found.seconds is not None else ""
    note(f"call {one.id} of {found.function.external_id}: {one.status}, started {live.format_ms(one.start_time)} "
         f"UTC{took}")
    for line in found.lines:
        echo(line)
    if found.error:
        note(f"error: {found.error}")
    if not found.lines:
        note("(no log lines)")


# --- mlops history ---------------------------------------------------------------------------------------------------

@click.command()
@click.argument("model")
@options.env(help=options.ENV_FILTER_HELP)
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Newest records shown.")
@options.json_output(help="Print the records as JSON.")
def history(model: str, env: str | None, limit: int, as_json: bool) -> None:
    """The audit trail of MODEL, newest first: deploys, rollbacks, promotions and training runs."""
    from akerbp.mlops.deployment import live

    model = _model(model)
    targets = _clients(env)
    records = live.history(targets, model, limit)
    if not records:
        from akerbp.mlops.cli.known_models import check_known

        check_known(model, [client for client, _ in targets])
    if as_json:
        print_json(records)
        return
    if not records:
        echo(f"no audit records for {model}{f' in {env}' if env else ''}")
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
