"""`mlops automations register|list|run|executions|pause|resume|delete`: scheduled retraining as CDF Data Workflows.

Parsing and printing only: the plan is automations/prepare.py, its apply automations/register.py, the
history automations/executions.py.
Results go to stdout (tables, or one JSON document with --json), progress to stderr. Exit codes: 0 ok, 1 a run or a
write failed, 2 a bad automations file, a missing secret or an automation name that is not registered.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from akerbp.mlops.cli import options
from akerbp.mlops.cli.output import echo, note, print_json, print_table
from akerbp.mlops.errors import MlopsError, UsageError
from akerbp.mlops.vocabulary import AUTOMATION_WORKFLOW_VERSION, ENVIRONMENTS

if TYPE_CHECKING:
    from cognite.client import CogniteClient

    from akerbp.mlops.automations.executions import RegisteredAutomation

WAIT_POLL_S = 0.5
NAME_ENV_HELP = ("Environment the automation is registered in (default: ENV if set, else the one environment "
                 "holding an automation of that name).")


def _client(env: str, dry_run: bool = False) -> CogniteClient:
    from akerbp.mlops.cdf.client import client_for_env

    return client_for_env(env, dry_run=dry_run)


@click.group("automations")
def automations() -> None:
    """Scheduled retraining: train, gate on metrics, redeploy and notify, run by CDF Data Workflows.

    \b
    The automations are defined in mlops_automations.py (or .yaml) at the repo root. Each registers, in the
    highest environment it deploys to, as a workflow `mlops-automation-{env}-{name}` with a schedule trigger
    (cron + timezone) whose tasks call the function `{model}-automation-{env}`: train -> gate -> deploy -> notify.
    `register` applies the file (created / updated / unchanged / removed with --prune); the other commands look at
    and steer what is registered.
    """


# --- register ----------------------------------------------------------------------------------------------------

@automations.command()
@click.option("-p", "--path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The automations file (default: mlops_automations.py or .yaml at the repo root; none there: "
                   "nothing to register, exit 0).")
@options.env(help="Register the automations whose last deployment environment is this one (default: ENV, else "
                  "dev).")
@click.option("--dry-run", is_flag=True, help="Print the plan; write nothing to CDF.")
@click.option("--prune", is_flag=True,
              help="Also remove automations registered in ENV that the file no longer has (their workflow, trigger "
                   "and, when none of its model is left, the automation function).")
@options.timeout(1800, "Seconds the automation functions' builds may take.", minimum=1)
@options.json_output(help="Print the plan (and what was applied) as JSON.")
def register(path: Path | None, env: str | None, dry_run: bool, prune: bool, timeout: float, as_json: bool) -> None:
    """Validate the automations file, then print and apply the plan for ENV.

    \b
    Per automation: created (new), updated (its definition or its model's code changed: a changed cron rewrites
    the trigger in place, keeping its run history), unchanged (nothing written), removed (--prune). The plan is
    read from a content hash in each trigger's metadata, so an unchanged register writes nothing. Secrets of the
    notifications and of the model come from MLOPS_SECRET_<NAME>; a missing one fails before anything is written.
    An automation reaching prod (environments=["test", "prod"]) registers with --env prod only: the pipeline's
    manual prod step.
    """
    from akerbp.mlops.automations import register as reg
    from akerbp.mlops.automations.plan import describe
    from akerbp.mlops.automations.prepare import prepare
    from akerbp.mlops.cdf.client import repo_root

    env = options.env_or_default(env)
    root = repo_root()
    found = reg.load(root, path, env)
    if found is None:
        from akerbp.mlops.automations.loader import AUTOMATIONS_FILES

        message = f"no {' or '.join(AUTOMATIONS_FILES)} in {root}: nothing to register"
        if as_json:
            print_json({"env": env, "file": None, "automations": [], "functions": [], "message": message})
        else:
            echo(message)
        return
    loaded, definitions, settings = found
    client = _client(env, dry_run=dry_run)
    shown = _shown(Path(loaded.path))
    prepared = prepare(client, definitions, settings, env, file=shown, prune=prune, commit=_commit(root))
    plan = prepared.plan
    if dry_run or not plan.changes:
        if as_json:
            print_json({**plan.as_dict(), "applied": False, "dry_run": dry_run})
            return
        for line in describe(plan):
            echo(line)
        echo("Dry run: nothing in CDF was changed." if dry_run else "Nothing to change.")
        return
    if not as_json:
        for line in describe(plan):
            echo(line)
    reg.apply(client, prepared, say=note, timeout_s=timeout)
    if as_json:
        print_json({**plan.as_dict(), "applied": True, "dry_run": False})
    else:
        counts = plan.counts()
        echo(f"Registered in {env}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))


def _commit(root: Path) -> str:
    """The commit the registered code comes from (recorded on each trigger)."""
    from akerbp.mlops.utils.provenance import git_commit

    return git_commit(root, mark_dirty=True)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# --- finding a registered automation -------------------------------------------------------------------------------

def _envs(env: str | None) -> list[str]:
    """--env, else $ENV when set, else every environment."""
    if env:
        return [env]
    if os.environ.get("ENV", "") != "":
        return [options.env_or_default(None)]
    return list(ENVIRONMENTS)


def _find(name: str, env: str | None) -> tuple[CogniteClient, RegisteredAutomation]:
    """The registered automation NAME (its client); UsageError (exit 2) naming the registered ones otherwise."""
    from akerbp.mlops.automations.executions import registered
    from akerbp.mlops.cdf.client import clients_for_envs

    envs = _envs(env)
    hits: list[tuple[CogniteClient, RegisteredAutomation]] = []
    known: list[str] = []
    for client, group in clients_for_envs(envs):
        for one_env in group:
            for automation in registered(client, one_env, with_last_run=False):
                known.append(f"{automation.name} ({one_env})")
                if automation.name == name:
                    hits.append((client, automation))
    if len(hits) == 1:
        return hits[0]
    where = envs[0] if len(envs) == 1 else "any environment"
    if hits:
        raise UsageError(f"automation {name!r} is registered in {', '.join(a.env for _, a in hits)}: say which "
                         "with --env")
    registered_text = ", ".join(sorted(known)) if known else "none"
    raise UsageError(f"automation {name!r} is not registered in {where}; registered: {registered_text} "
                     "(register them with `mlops automations register --env ENV`)")


# --- list ----------------------------------------------------------------------------------------------------------

@automations.command("list")
@options.env(help=options.ENV_FILTER_HELP)
@options.json_output(help="Print the automations as JSON (a list).")
def list_(env: str | None, as_json: bool) -> None:
    """The registered automations: name, model, trigger (cron, timezone, next run), enabled or paused, last run."""
    from akerbp.mlops.automations.executions import registered
    from akerbp.mlops.cdf.client import clients_for_envs

    found = [a for client, group in clients_for_envs([env] if env else list(ENVIRONMENTS)) for one in group
             for a in registered(client, one)]
    if as_json:
        print_json([a.as_dict() for a in found])
        return
    if not found:
        echo(f"no automations registered{f' in {env}' if env else ''}")
        return
    rows = []
    for a in found:
        last = a.last_run
        rows.append([a.name, a.model, a.env, f"{a.cron} ({a.timezone})", _short(a.next_run) if a.next_run else "-",
                     "paused" if a.paused else "enabled",
                     f"{_short(last.started)} {last.status}" if last else "-"])
    print_table(rows, ["NAME", "MODEL", "ENV", "TRIGGER", "NEXT RUN", "STATE", "LAST RUN (UTC)"])


def _short(iso: str | None) -> str:
    return (iso or "-").replace("T", " ")[:16]


# --- run -----------------------------------------------------------------------------------------------------------

@automations.command()
@click.argument("name")
@options.env(help=NAME_ENV_HELP)
@click.option("--wait", is_flag=True, help="Wait for the run to end, printing each task's progress; exit 0 when "
                                           "it completed, 1 otherwise.")
@options.timeout(3600, "With --wait: seconds to wait for the run to end.")
def run(name: str, env: str | None, wait: bool, timeout: float) -> None:
    """Start one execution of automation NAME now (CDF runs one at a time: refused while one runs)."""
    from cognite.client.exceptions import CogniteAPIError

    client, automation = _find(name, env)
    try:
        execution = client.workflows.executions.run(automation.workflow, AUTOMATION_WORKFLOW_VERSION,
                                                    metadata={"mlops_trigger": "manual"})
    except CogniteAPIError as e:
        raise MlopsError(f"CDF refused to start {automation.workflow}: {e.message}") from None
    echo(f"execution {execution.id} of {automation.workflow} started")
    if wait:
        _wait(client, execution.id, automation, timeout)


def _wait(client: CogniteClient, execution_id: str, automation: RegisteredAutomation, timeout: float) -> None:
    """Poll the execution until it ends, a line per task state change, then what the run did; MlopsError when it did
    not complete."""
    from akerbp.mlops.automations.executions import ENDED, one, summary, task_states

    name, env = automation.name, automation.env
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    status = "running"
    while True:
        status, tasks = task_states(client, execution_id)
        for task in tasks:
            if seen.get(task.name) != task.status:
                seen[task.name] = task.status
                note(f"[{name}] {task.name}: {task.status}" + (f" ({task.reason})" if task.reason and
                                                                task.status != "completed" else ""))
        if status in ENDED or time.monotonic() >= deadline:
            break
        time.sleep(WAIT_POLL_S)
    if status in ENDED:
        entry = one(client, name, automation.model, env, execution_id)
        for line in summary(entry) if entry is not None else []:
            echo(f"  {line}")
    if status == "completed":
        echo(f"execution {execution_id}: completed")
        return
    hint = f"`mlops automations executions {name} --env {env}`"
    if status not in ENDED:
        raise MlopsError(f"execution {execution_id} is still {status} after {timeout:g} s; follow it with {hint}")
    raise MlopsError(f"execution {execution_id}: {status}; see {hint}")


# --- executions ----------------------------------------------------------------------------------------------------

@automations.command()
@click.argument("name")
@options.env(help=NAME_ENV_HELP)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Newest runs shown.")
@options.json_output(help="Print the runs as JSON: a list, newest first, each with its status.")
def executions(name: str, env: str | None, limit: int, as_json: bool) -> None:
    """The runs of automation NAME, newest first: status, times, tasks, version, verdicts, what was deployed; a
    trigger fire refused while a run was going on shows as "skipped". A metric-based automation's checks show their
    value and verdict (METRIC); those that did not trigger are folded into one line (--json lists each, outcome
    "not_triggered", with its check)."""
    from akerbp.mlops.automations.executions import NOT_TRIGGERED, history, not_triggered_summary

    client, automation = _find(name, env)
    entries = history(client, name, automation.model, automation.env, limit)
    if as_json:
        print_json([e.as_dict() for e in entries])
        return
    if not entries:
        echo(f"{name} has not run yet in {automation.env}")
        return
    folded = not_triggered_summary(entries)
    rows = []
    for e in entries:
        if e.outcome == NOT_TRIGGERED:
            continue
        tasks = " ".join(f"{t.name}:{t.status}" for t in e.tasks) or "-"
        deployed = ", ".join(f"{d.get('env')}:{d.get('result')}" for d in e.deployed if isinstance(d, dict)) or "-"
        metric = str(e.check.get("detail") or "-")[:60] if e.check else "-"
        rows.append([_short(e.started), e.status, e.trigger or "-", e.id or "-", metric,
                     e.model_id or e.version or "-", e.outcome or "-", deployed,
                     f"{e.duration_s} s" if e.duration_s is not None else "-",
                     tasks if e.status != "skipped" else (e.reason or "")[:60]])
    if rows:
        print_table(rows, ["STARTED (UTC)", "STATUS", "TRIGGER", "EXECUTION", "METRIC", "VERSION", "OUTCOME",
                           "DEPLOYED", "TOOK", "TASKS"])
    if folded:
        echo(folded)


# --- pause, resume, delete -----------------------------------------------------------------------------------------

@automations.command()
@click.argument("name")
@options.env(help=NAME_ENV_HELP)
def pause(name: str, env: str | None) -> None:
    """Pause automation NAME's trigger: no run starts at its due times until `resume` (a run going on ends)."""
    client, automation = _find(name, env)
    client.workflows.triggers.pause(automation.workflow)
    echo(f"{name} ({automation.env}) paused")


@automations.command()
@click.argument("name")
@options.env(help=NAME_ENV_HELP)
def resume(name: str, env: str | None) -> None:
    """Resume automation NAME's trigger. No backfill: due times missed while paused are not run; the next one is."""
    from akerbp.mlops.automations.executions import next_run

    client, automation = _find(name, env)
    client.workflows.triggers.resume(automation.workflow)
    nxt = next_run(automation.cron, automation.timezone)
    echo(f"{name} ({automation.env}) resumed; next run {nxt.isoformat() if nxt else '-'}")


@automations.command()
@click.argument("name")
@options.env(help=NAME_ENV_HELP)
def delete(name: str, env: str | None) -> None:
    """Delete automation NAME from CDF: its trigger (and run history), its workflow, and the automation function
    when no other automation of its model is registered in that environment. Past executions stay readable in CDF;
    the file still defines it until you remove it there (else the next register creates it again)."""
    from akerbp.mlops.automations import register as reg

    client, automation = _find(name, env)
    deleted = reg.delete(client, name, automation.env)
    echo(f"deleted {', '.join(deleted)}")
