"""What each task of an automation's workflow does: the body of the automation function's handler
(services/runtime.py dispatches an automation folder's calls here).

    train   the training service's own code path (services/training.py: train into a folder, upload a version in
            the first environment, metrics in its metadata), called; the version is tagged with the automation and
            the execution id
    gate    every deployment condition (conditions.check): BuildMetric on the new version's metadata,
            DeployedModelMetric against the version live in each listed environment (the live prediction
            function's mlops_version, its metadata from the registry)
    deploy  only if the gate passed: the deploy path of `mlops deploy` (deployment.deploy.deploy_in_function:
            build, service test, standby, replace, smoke, automatic rollback, audit) to each environment in order;
            a later one (prod) first gets the version by promotion from the one before; a failure stops the rest
    batch   a BatchExecution: akerbp.mlops.batch.run over the input files with the live prediction service
    notify  on_success (the run succeeded, deployed or not) or on_error (it failed), the audit event, and then,
            when the run failed, an exception naming the failed step, so the task and the execution end FAILED

A metric-based automation first runs `check` (metric_check.py), whose output chooses the tasks of the `run` task.

train, gate and deploy never raise for a model or deploy failure: they answer {"ok": false, "error": ...} and the
next step passes that on without acting. A task that crashed or timed out answers nothing (the workflow runs them
with onFailure skipTask, so its output is null): the next step treats null as a failure of that step.
Every output is small (numbers, ids, verdicts; never train()'s whole metadata, never a secret value) and records
its duration per phase ("phases").
"""
from __future__ import annotations

import datetime
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from akerbp.mlops.services import masking, responses
from akerbp.mlops.vocabulary import (
    AUTOMATION,
    AUTOMATION_WORKFLOW_VERSION,
    automation_function_external_id,
    automation_workflow_external_id,
    function_external_id,
)

if TYPE_CHECKING:
    from cognite.client import CogniteClient

    from akerbp.mlops.settings_schema import ModelSettings

STEPS = ("check", "train", "gate", "deploy", "batch", "notify")
SKIP_TESTS = "the automation runs the code registered; the pipeline tested it"
DEFAULT_DEPLOY_TIMEOUT_S = 540.0  # a CDF Function call ends after 10 minutes: the deploy must end before
MAX_METRICS = 50  # numbers of train()'s metadata carried to the gate


class AutomationFailed(Exception):
    """The run failed: raised by the notify step (after notifying and auditing), so the execution ends FAILED."""


def handle(data: Any, client: CogniteClient | None, secrets: Mapping[str, str] | None,
           root: Path | None = None) -> dict[str, Any]:
    """One task of an automation: data = {"step", "automation": the definition's dict, "upstream": {step: its
    output or null}}. `root`: the function folder (default: the one this bundled module is in)."""
    secrets = dict(secrets or {})
    folder = Path(root) if root is not None else Path(__file__).resolve().parents[3]
    if not isinstance(data, dict) or data.get("step") == "ping" or not data:
        return {"ok": True, "step": "ping"}  # put_live's proof that the bundle imports and answers
    step = data.get("step")
    definition = data.get("automation")
    if step not in STEPS or not isinstance(definition, dict):
        return {"ok": False, "step": step, "error": f"an automation task needs 'step' (one of {', '.join(STEPS)}) "
                                                    "and 'automation' (the definition): re-register the automation"}
    if client is None:
        return {"ok": False, "step": step, "error": "no CDF client: an automation step runs in a CDF Function"}
    given = data.get("upstream")
    upstream: dict[str, Any] = given if isinstance(given, dict) else {}
    started = time.monotonic()
    if step == "notify":
        return notify(definition, upstream, client, secrets, started)
    from akerbp.mlops.automations.metric_check import check

    body: Callable[..., dict[str, Any]] = {"check": check, "train": train, "gate": gate, "deploy": deploy,
                                           "batch": batch}[step]
    try:
        out = body(definition, upstream, client, secrets, folder)
    except Exception as e:  # noqa: BLE001 - a bug or an SDK error: this step failed, notify says so
        responses.get_log().exception("the %s step failed", step)
        out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    out = {"step": step, **out}
    out.setdefault("phases", {})[step] = round(time.monotonic() - started, 3)
    return masking.mask_value(out, secrets)


# -- train ---------------------------------------------------------------------------------------------------------
def train(definition: dict[str, Any], upstream: Mapping[str, Any], client: CogniteClient, secrets: dict[str, str],
          root: Path) -> dict[str, Any]:
    from akerbp.mlops.services import runtime, training

    env = environments(definition)[0]
    began, t = time.time(), time.monotonic()
    execution = _running_execution(client, definition)
    fn = client.functions.retrieve(external_id=automation_function_external_id(definition["model"], definition["env"]))
    out: dict[str, Any] = {"ok": False, "env": env, "execution_id": execution[0], "trigger": execution[1],
                           "started_at": round(began, 3),
                           "commit": ((fn.metadata or {}) if fn is not None else {}).get("mlops_git_commit", ""),
                           "phases": {"look-up": round(time.monotonic() - t, 3)}}
    settings = {**runtime.load_settings(root), "service": "training", "env": env}
    t = time.monotonic()
    answer = training.serve((definition["action"].get("training") or {}).get("data") or {}, client, settings, root,
                            secrets)
    out["phases"]["train + upload"] = round(time.monotonic() - t, 3)
    trained = answer.get("training") or {}
    if answer.get("status") != "ok":
        out["error"] = f"training failed: {answer.get('message') or answer}"
        return out
    if not trained.get("uploaded"):
        out["error"] = "training did not upload a version"
        return out
    t = time.monotonic()
    _tag_version(client, trained.get("file_id"), definition["name"], execution[0])
    out["phases"]["tag version"] = round(time.monotonic() - t, 3)
    out.update(ok=True, version=trained["version"], model_id=trained["model_id"],
               metrics=_numbers(trained.get("metadata")))
    return out


def environments(definition: Mapping[str, Any]) -> list[str]:
    return list(((definition.get("action") or {}).get("deployment") or {}).get("environments") or ["test"])


def _running_execution(client: CogniteClient, definition: Mapping[str, Any]) -> tuple[str | None, str]:
    """(the id of the RUNNING execution of this automation's workflow, what started it): at most one runs
    (maxConcurrentExecutions=1). The trigger is the execution metadata's mlops_trigger, else "schedule" when it
    carries the trigger's metadata, else "manual"."""
    workflow = automation_workflow_external_id(definition["name"], definition["env"])
    found = client.workflows.executions.list(workflow_version_ids=(workflow, AUTOMATION_WORKFLOW_VERSION),
                                             statuses=["running"], limit=10)
    if not found:
        return None, "unknown"
    execution = found[0]
    metadata = execution.metadata or {}
    trigger = metadata.get("mlops_trigger") or ("schedule" if "mlops_automation" in metadata else "manual")
    return execution.id, str(trigger)


def _tag_version(client: CogniteClient, file_id: int | None, automation: str, execution_id: str | None) -> None:
    """The automation and the execution that trained a version, in its metadata (user keys: promotion copies
    them)."""
    if file_id is None:
        return
    from cognite.client.data_classes import FileMetadataUpdate

    tags = {"automation": automation, "automation_execution_id": execution_id or ""}
    client.files.update(FileMetadataUpdate(id=file_id).metadata.add({k: v for k, v in tags.items() if v}))


def _numbers(metadata: object) -> dict[str, Any]:
    """What the gate reads of train()'s metadata: its metrics and top-level numbers (at most MAX_METRICS each)."""
    if not isinstance(metadata, dict):
        return {}

    def numeric(values: Mapping[str, Any]) -> dict[str, float]:
        kept = {str(k): v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return dict(list(kept.items())[:MAX_METRICS])

    metrics = metadata.get("metrics")
    out: dict[str, Any] = numeric(metadata)
    if isinstance(metrics, dict):
        out["metrics"] = numeric(metrics)
    return out


# -- gate ----------------------------------------------------------------------------------------------------------
def gate(definition: dict[str, Any], upstream: Mapping[str, Any], client: CogniteClient, secrets: dict[str, str],
         root: Path) -> dict[str, Any]:
    from akerbp.mlops import conditions

    failed = _upstream_failure(upstream, ("train",))
    if failed:
        return {"ok": False, "error": failed, "passed_on": True}
    metadata = upstream["train"].get("metrics") or {}
    envs = environments(definition)
    verdicts: list[dict[str, Any]] = []
    lives: dict[str, tuple[dict[str, Any] | None, str | None]] = {}
    for condition in (definition["action"].get("deployment_condition") or []):
        if conditions.is_sql(condition.get("threshold")):
            try:
                bound = dynamic_threshold(client, definition["model"], envs[0], str(condition["threshold"]))
            except Exception as e:  # noqa: BLE001 - a query that fails at run time fails the gate, saying which
                return {"ok": False, "verdicts": verdicts, "error": f"the dynamic threshold of "
                        f"{condition['metric_name']} could not be evaluated: {type(e).__name__}: {e}"[:4000]}
            verdicts.append(conditions.check(condition, metadata, env=envs[0], threshold_value=bound).as_dict())
        elif condition.get("type") == "deployed_model_metric":
            for env in envs:
                if env not in lives:
                    lives[env] = live_version(client, definition["model"], env)
                live_md, live_id = lives[env]
                verdicts.append(conditions.check(condition, metadata, env=env, live_metadata=live_md,
                                                 live_model_id=live_id).as_dict())
        else:
            verdicts.append(conditions.check(condition, metadata, env=envs[0]).as_dict())
    passed = all(v["met"] for v in verdicts)
    reason = None if passed else "deployment condition not met: " + "; ".join(
        f"{v['detail']}" + (f" (in {v['env']})" if v.get("kind") == "deployed_model_metric" else "")
        for v in verdicts if not v["met"])
    return {"ok": True, "passed": passed, "verdicts": verdicts, "reason": reason,
            "note": None if verdicts else "no deployment condition: every successful training deploys"}


def dynamic_threshold(client: CogniteClient, model: str, env: str, sql: str) -> float:
    """A BuildMetric's SQL threshold, evaluated now over the model's analytics tables in the training environment
    (`versions` holds the new version too: a query for the best so far excludes it, e.g. WHERE version < (SELECT
    max(version) FROM versions))."""
    from akerbp.mlops.analytics.query import metric_value

    return metric_value(client, model, env, sql)


def live_version(client: CogniteClient, model: str, env: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the metadata, the model id) of the version the live prediction service of `model` in `env` serves; (None,
    None) when none is live, (None, its id) when it serves no registry version (a dev folder)."""
    from akerbp.mlops import registry
    from akerbp.mlops.registry.rules import decoded_metadata

    fn = client.functions.retrieve(external_id=function_external_id(model, "prediction", env))
    if fn is None:
        return None, None
    md = fn.metadata or {}
    version, model_id = md.get("mlops_version"), md.get("mlops_model_id") or None
    if not version or not version.isdigit():
        return None, model_id
    try:
        found = registry.get_model_version(model, env, int(version), client=client)
    except registry.VersionUnavailable:
        return None, model_id
    return decoded_metadata(found.metadata), found.model_id


# -- deploy --------------------------------------------------------------------------------------------------------
def deploy(definition: dict[str, Any], upstream: Mapping[str, Any], client: CogniteClient, secrets: dict[str, str],
           root: Path) -> dict[str, Any]:
    failed = _upstream_failure(upstream, ("train", "gate"))
    if failed:
        return {"ok": False, "error": failed, "passed_on": True}
    if not upstream["gate"].get("passed"):
        return {"ok": True, "deployed": [], "not_deployed_reason": upstream["gate"].get("reason")}
    from akerbp.mlops.deployment.deploy import InFunction, deploy_in_function
    from akerbp.mlops.registry import promotion

    spec = definition["action"].get("deployment") or {}
    trained = upstream["train"]
    version = trained["version"]
    settings = pinned_settings(root, version, spec)
    log = responses.get_log()
    envs = environments(definition)
    deployed: list[dict[str, Any]] = []
    phases: dict[str, float] = {}
    error = None
    work = Path(tempfile.mkdtemp(prefix="mlops-automation-"))
    try:
        inside = InFunction(SKIP_TESTS, secrets, work, trained.get("commit") or "")
        for i, env in enumerate(envs):
            if i > 0:
                t = time.monotonic()
                try:
                    promotion.promote_model(settings.model_name, version, to_env=env, from_env=envs[i - 1],
                                            client=client)
                except Exception as e:  # noqa: BLE001 - the registry's refusal or CDF's failure stops the rest
                    error = f"promoting version {version} from {envs[i - 1]} to {env} failed: {e}"
                    break
                finally:
                    phases[f"promote {env}"] = round(time.monotonic() - t, 3)
            t = time.monotonic()
            result = deploy_in_function(client, settings, env, inside,
                                        timeout=float(spec.get("timeout") or DEFAULT_DEPLOY_TIMEOUT_S),
                                        progress=lambda message: log.info("%s", message))
            phases[f"deploy {env}"] = round(time.monotonic() - t, 3)
            phases.update({f"deploy {env}: {k}": round(v, 3) for k, v in result.phases.items()})
            deployed.append({"env": env, "model_id": result.model_id, "result": result.result,
                             "function": result.function, "seconds": round(result.seconds, 3),
                             "message": result.message[:1000]})
            if not result.ok:
                error = f"deploying to {env} {'rolled back' if result.result == 'rolled_back' else 'failed'}: " \
                        f"{result.message}"
                break
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out: dict[str, Any] = {"ok": error is None, "deployed": deployed, "phases": phases}
    if error:
        out["error"] = error[:4000]
    return out


def pinned_settings(root: Path, version: int, spec: Mapping[str, Any]) -> ModelSettings:
    """The model's settings (the folder's JSON, rooted at the folder) pinned to `version`, with the automation's
    DeploymentSpecifications (cpu, memory, env_vars on top of the model's) as the prediction function's options."""
    from akerbp.mlops.function_folder import AUTOMATION_SETTINGS_KEY
    from akerbp.mlops.services import runtime
    from akerbp.mlops.settings_schema import ModelSettings

    settings = ModelSettings.model_validate(runtime.load_settings(root)[AUTOMATION_SETTINGS_KEY])
    settings._root = Path(root)
    update: dict[str, Any] = {"artifact_version": version,
                              "env_vars": {**settings.env_vars, **(spec.get("env_vars") or {})}}
    for field in ("cpu", "memory"):
        if spec.get(field) is not None:
            update[field] = float(spec[field])
    pinned = settings.model_copy(update=update)
    pinned._root = Path(root)
    return pinned


def _upstream_failure(upstream: Mapping[str, Any], names: tuple[str, ...]) -> str | None:
    """Why the run already failed before this step (the first failed step's error), or None."""
    return _failed_step(upstream, names)[1]


# -- batch ---------------------------------------------------------------------------------------------------------
def batch(definition: dict[str, Any], upstream: Mapping[str, Any], client: CogniteClient, secrets: dict[str, str],
          root: Path) -> dict[str, Any]:
    """Score the action's input with the live prediction service of the automation's environment."""
    from akerbp.mlops.batch import run

    began, t = time.time(), time.monotonic()
    execution_id, trigger = _running_execution(client, definition)
    action = definition["action"]
    out: dict[str, Any] = {"ok": False, "execution_id": execution_id, "trigger": trigger,
                           "started_at": round(began, 3), "phases": {"look-up": round(time.monotonic() - t, 3)}}
    t = time.monotonic()
    log = responses.get_log()
    result = run(client, definition["model"], definition["env"], action["input"], action.get("output"),
                 int(action.get("batch_size") or 1000), execution=execution_id,
                 say=lambda message: log.info("%s", message), secrets=secrets)
    out["phases"]["batch"] = round(time.monotonic() - t, 3)
    out.update(ok=result.ok, result=result.as_dict())
    if not result.ok:
        failed = [f for f in out["result"].get("files") or [] if isinstance(f, dict) and f.get("error")]
        out["error"] = "batch failed: " + "; ".join(f"{f.get('source')}: {f.get('error')}" for f in failed[:5])[:4000]
    return out


# -- notify --------------------------------------------------------------------------------------------------------
def notify(definition: dict[str, Any], upstream: Mapping[str, Any], client: CogniteClient, secrets: dict[str, str],
           started: float) -> dict[str, Any]:
    """Notify, audit, and raise AutomationFailed when the run failed."""
    from akerbp.mlops import audit
    from akerbp.mlops.automations import notify as notifications

    trained, gated, deployed = (_output(upstream, name) for name in ("train", "gate", "deploy"))
    checked, batched = _output(upstream, "check"), _output(upstream, "batch")
    first = checked or trained or batched  # the first step that ran knows the execution and when it began
    failed_step, error = _failed_step(upstream, run_steps(definition))  # a failed check: the first in order
    execution_id = first.get("execution_id")
    trigger = first.get("trigger") or "unknown"
    if execution_id is None:
        execution_id, trigger = _running_execution(client, definition)
    if failed_step and not isinstance(upstream.get(failed_step), dict) and execution_id:
        error = _task_reason(client, execution_id, failed_step) or error
    went = [d for d in deployed.get("deployed") or [] if d.get("result") in ("deployed", "verified", "unchanged")]
    reason = deployed.get("not_deployed_reason") or (gated.get("reason") if gated.get("ok") else None)
    status = "failed" if failed_step else "success"
    is_batch = (definition.get("action") or {}).get("type") == "batch"
    outcome = "failed" if failed_step else ("success" if went or is_batch else "not_deployed")
    check_verdict = checked.get("verdict") if isinstance(checked.get("verdict"), dict) else None
    batch_result = batched.get("result") if isinstance(batched.get("result"), dict) else None
    report = notifications.RunReport(
        execution_id=str(execution_id or ""), execution_time=_iso(time.time()), automation=definition["name"],
        model=definition["model"], env=definition["env"], status=status, version=trained.get("version"),
        model_id=trained.get("model_id"), verdicts=list(gated.get("verdicts") or []),
        deployed=[{"env": d["env"], "model_id": d.get("model_id"), "result": d.get("result")}
                  for d in deployed.get("deployed") or []],
        not_deployed_reason=reason if not failed_step and not is_batch else None,
        error=f"{failed_step}: {error}" if failed_step else None, commit=trained.get("commit") or None,
        check=check_verdict, batch=_batch_summary(batch_result) if batch_result else None)
    t = time.monotonic()
    target = definition.get("on_error") if failed_step else definition.get("on_success")
    sent = notifications.send(target, report, secrets)
    phases: dict[str, float] = {"send": round(time.monotonic() - t, 3)}
    notified = [sent] if sent is not None else []
    t = time.monotonic()
    all_phases = {name: (upstream.get(name) or {}).get("phases") for name in STEPS[:-1]
                  if isinstance(upstream.get(name), dict)}
    extra: dict[str, Any] = {}
    if check_verdict is not None:
        extra["check"] = check_verdict  # metric_check.last_triggered_ms reads `fired` back: the cooldown
    if report.batch is not None:
        extra["batch"] = report.batch
    audit.write(client, audit.AuditEntry(
        AUTOMATION, definition["model"], definition["env"], outcome,
        float(first.get("started_at") or time.time() - (time.monotonic() - started)),
        service=None, version=trained.get("version"), model_id=trained.get("model_id"),
        message=report.error or reason or "", dataset=None,
        extra={"automation": definition["name"], "execution_id": execution_id or "", "trigger": trigger,
               "metrics": (trained.get("metrics") or {}).get("metrics") or {}, "verdicts": report.verdicts,
               "deployed": report.deployed, "notifications": notified, "phases": all_phases,
               "commit": trained.get("commit") or "", **extra}))
    phases["audit"] = round(time.monotonic() - t, 3)
    phases["notify"] = round(time.monotonic() - started, 3)
    out = masking.mask_value({"ok": not failed_step, "step": "notify", "status": status, "outcome": outcome,
                              "execution_id": execution_id, "notifications": notified, "phases": phases}, secrets)
    if failed_step:
        raise AutomationFailed(masking.mask_value(f"automation '{definition['name']}' failed in its {failed_step} "
                                                  f"step: {error}", secrets))
    return out


def run_steps(definition: Mapping[str, Any]) -> tuple[str, ...]:
    """The steps before notify of a run, in order (a metric-based automation's check first)."""
    from akerbp.mlops.automations.tasks import action_steps, is_metric_triggered

    return (("check",) if is_metric_triggered(definition) else ()) + action_steps(definition)[:-1]


def _batch_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """What a notification and the audit event keep of a BatchResult: counts, output files (at most 20), the first
    bad rows (at most 5)."""
    outputs = list(result.get("outputs") or [])
    return {"files": len(result.get("files") or []), "rows_in": result.get("rows_in"),
            "rows_out": result.get("rows_out"), "bad_rows": result.get("bad_row_count", len(result.get("bad_rows") or [])),
            "first_bad_rows": list(result.get("bad_rows") or [])[:5], "outputs": outputs[:20],
            "seconds": result.get("seconds")}


def _output(upstream: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A step's output, {} when it answered nothing."""
    found = upstream.get(name)
    return found if isinstance(found, dict) else {}


def _failed_step(upstream: Mapping[str, Any], names: tuple[str, ...] = ("train", "gate", "deploy")
                 ) -> tuple[str | None, str | None]:
    """The step where the run failed (an upstream failure passed on names its origin), and its error."""
    for name in names:
        out = upstream.get(name)
        if not isinstance(out, dict):
            return name, f"the {name} task did not answer (it crashed or timed out)"
        if not out.get("ok"):  # the first failure in order is where the run failed (later ones pass it on)
            return name, str(out.get("error") or f"the {name} step failed")
    return None, None


def _task_reason(client: CogniteClient, execution_id: str, task: str) -> str | None:
    """Why a task that answered nothing ended (the execution's record of it)."""
    try:
        detailed = client.workflows.executions.retrieve_detailed(execution_id)
    except Exception:  # noqa: BLE001 - the reason is a nicety; the failure is reported anyway
        return None
    for executed in (detailed.executed_tasks if detailed is not None else []):
        if executed.external_id == task and executed.reason_for_incompletion:
            return f"the {task} task ended {executed.status}: {executed.reason_for_incompletion}"
    return None


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")
