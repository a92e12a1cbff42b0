"""The GitHub Actions workflow read the way GitHub reads it: whether a push or pull request triggers it, which jobs
run and in which order; running them here reuses pipeline.run_steps (the Bitbucket runner), one step per job.
Branch filters are github_filters.py's, `if:` conditions and `${{ }}` values github_expressions.py's.

Jobs run in `needs` order. An `if:` without a status function means `success() && (...)`: a job whose need was
skipped is skipped. A job whose `if:` holds after a failed need runs after a failure too (like Bitbucket's `final`).
Whether an environment has required reviewers is repository configuration, not in the file: production-*/prod-*
environments (the template's protected ones) count as manual steps; an environment sets no ENV (on GitHub it does
not). Locally, `uses:` actions do not run, each `run:` with its own env or working-directory runs in a subshell (as
its own process on GitHub), and values from `secrets`/`vars` are not set (every COGNITE_* is withheld anyway, see
pipeline.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from akerbp.mlops.errors import UsageError
from akerbp.mlops.github_expressions import (
    ExpressionError,
    NotLocal,
    evaluate,
    interpolate,
    parse_expression,
    strip_braces,
    to_text,
    truthy,
    uses_status_function,
)
from akerbp.mlops.github_filters import triggered
from akerbp.mlops.model_repo import GITHUB_WORKFLOW_FILE
from akerbp.mlops.pipeline import Selection, Step, env_for_deployment, load_ci_file

WORKFLOW_FILE = GITHUB_WORKFLOW_FILE
EVENTS = ("push", "pull_request")
_SHELLS = (None, "bash", "sh")


# --------------------------------------------------------------------------------------------------- loading


def load_workflow_file(path: Path | str) -> dict:
    """Parse a workflow file, with errors that name the file and what is wrong in it."""
    config = load_ci_file(path, "workflow")
    _check_config(config, str(path))
    return config


def _on(config: dict) -> Any:
    # YAML 1.1 (PyYAML) reads the key `on` as the boolean True.
    return config["on"] if "on" in config else config.get(True)


def _check_config(config, source: str) -> None:
    if not isinstance(config, dict) or _on(config) is None:
        raise UsageError(f"{source}: no 'on' section (a GitHub workflow names the events that trigger it)")
    jobs = config.get("jobs")
    if not isinstance(jobs, dict) or not jobs:
        raise UsageError(f"{source}: 'jobs' must map job ids to jobs")
    for job_id, job in jobs.items():
        if not isinstance(job, dict):
            raise UsageError(f"{source}: jobs.{job_id} must be a mapping")
        if "uses" not in job and (not isinstance(job.get("steps"), list) or not job["steps"]):
            raise UsageError(f"{source}: jobs.{job_id}: 'steps' must be a non-empty list")


def events(config: dict) -> dict[str, dict]:
    """Event name -> its filters ({} when it has none), from any of the forms `on` takes."""
    on = _on(config)
    if isinstance(on, str):
        return {on: {}}
    if isinstance(on, list):
        return {str(e): {} for e in on}
    if isinstance(on, dict):
        return {str(e): (f if isinstance(f, dict) else {}) for e, f in on.items()}
    return {}


# --------------------------------------------------------------------------------------------------- jobs


def github_context(branch: str, pull_request: bool, base: str | None) -> dict:
    """The `github` context of a push to `branch`, or of a pull request from it into `base`."""
    if pull_request:
        github = {"event_name": "pull_request", "ref": "refs/pull/1/merge", "ref_name": "1/merge",
                  "head_ref": branch, "base_ref": base or "", "ref_type": "branch"}
    else:
        github = {"event_name": "push", "ref": f"refs/heads/{branch}", "ref_name": branch, "head_ref": "",
                  "base_ref": "", "ref_type": "branch"}
    return {"github": github}


def job_order(jobs: dict, source: str) -> list[str]:
    """Job ids so that each comes after its `needs`; otherwise in file order."""
    needs = {job_id: _needs(job, job_id, jobs, source) for job_id, job in jobs.items()}
    order: list[str] = []
    while len(order) < len(jobs):
        ready = [j for j in jobs if j not in order and all(n in order for n in needs[j])]
        if not ready:
            cycle = [j for j in jobs if j not in order]
            raise UsageError(f"{source}: jobs {', '.join(cycle)} need each other (a cycle)")
        order.append(ready[0])
    return order


def _needs(job: dict, job_id: str, jobs: dict, source: str) -> list[str]:
    value = job.get("needs") or []
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list):
        raise UsageError(f"{source}: jobs.{job_id}.needs must be a job id or a list of them")
    unknown = [str(n) for n in value if n not in jobs]
    if unknown:
        raise UsageError(f"{source}: jobs.{job_id}.needs names unknown job {', '.join(unknown)}")
    return [str(n) for n in value]


def _condition(value: Any, where: str) -> tuple:
    """The parsed `if:` of a job or step, with GitHub's implicit success() when it names no status function."""
    if value is None:
        return ("call", "success", [])
    if isinstance(value, bool):
        value = "true" if value else "false"
    try:
        node = parse_expression(strip_braces(str(value)))
    except ExpressionError as e:
        raise UsageError(f"{where}: if: {value!r}: {e}") from None
    return node if uses_status_function(node) else ("bin", "&&", ("call", "success", []), node)


def _job_runs(node: tuple, context: dict, results: list[str], where: str, value: Any) -> bool:
    status = {"success": all(r == "success" for r in results), "failure": any(r == "failure" for r in results),
              "always": True, "cancelled": False}
    try:
        return truthy(evaluate(node, context, status))
    except ExpressionError as e:
        raise UsageError(f"{where}: if: {value!r} cannot be evaluated here: {e}") from None


def _environment_name(job: dict) -> str | None:
    env = job.get("environment")
    if isinstance(env, dict):
        env = env.get("name")
    return str(env) if env else None


def _env_values(env: Any, context: dict, where: str) -> tuple[dict[str, str], list[str]]:
    """(variables set here, variables only a GitHub run sets: from secrets, vars...)."""
    if env is None:
        return {}, []
    if not isinstance(env, dict):
        raise UsageError(f"{where}.env must map variable names to values")
    values, unset = {}, []
    for name, value in env.items():
        try:
            values[str(name)] = interpolate(to_text(value), context)
        except NotLocal:
            unset.append(str(name))
        except ExpressionError as e:
            raise UsageError(f"{where}.env.{name}: {e}") from None
    return values, unset


def _script_entry(step: Any, where: str, context: dict, unset: list[str]) -> str:
    if not isinstance(step, dict):
        raise UsageError(f"{where}: a step must be a mapping with 'run' or 'uses'")
    label = step.get("name") or step.get("uses") or "step"
    if "uses" in step:
        return f"# uses: {step['uses']} (a GitHub action: not run locally)"
    if "run" not in step:
        raise UsageError(f"{where}: a step needs 'run' or 'uses'")
    if step.get("shell") not in _SHELLS:
        raise UsageError(f"{where}: shell '{step['shell']}' is not run here (bash or sh only)")
    if "if" in step:
        node = _condition(step["if"], where)
        status = {"success": True, "failure": False, "always": True, "cancelled": False}
        try:
            runs = truthy(evaluate(node, context, status))
        except ExpressionError as e:
            raise UsageError(f"{where}: if: {step['if']!r} cannot be evaluated here: {e}") from None
        if not runs:
            return f"# skipped ({label}): if: {step['if']}"
    try:
        run = interpolate(str(step["run"]).rstrip("\n"), context)
    except NotLocal as e:
        raise UsageError(f"{where}.run {e}: pass the value through the step's env instead") from None
    except ExpressionError as e:
        raise UsageError(f"{where}.run: {e}") from None
    values, step_unset = _env_values(step.get("env"), context, where)
    unset.extend(n for n in step_unset if n not in unset)
    directory = step.get("working-directory")
    if not values and not directory:
        return run
    # Like GitHub, the step's variables and folder are its own: a subshell keeps them from the job's later steps.
    prefix = [f"cd {json.dumps(str(directory))}"] if directory else []
    prefix += [f"export {name}={json.dumps(value)}" for name, value in values.items()]
    return "(\n" + "\n".join(prefix + [run]) + "\n)"


def _skip_reason(job: dict, node: tuple, context: dict, not_run: list[str], where: str) -> str:
    """Why a job is skipped: its own `if:` is false, or (GitHub's implicit success()) a job it needs did not run."""
    implicit = node[:3] == ("bin", "&&", ("call", "success", []))
    if not_run and ("if" not in job or (implicit and _job_runs(node[3], context, [], where, job["if"]))):
        return f"needs {', '.join(not_run)}, which did not run"
    return f"if: {job['if']}"


def job_step(job_id: str, job: dict, context: dict, workflow_env: tuple[dict, list], source: str,
             final: bool) -> Step:
    """A job as one runnable Step: its `run:` scripts in order, its environment as the deployment."""
    where = f"{source}: jobs.{job_id}"
    environment = _environment_name(job)
    env, unset = dict(workflow_env[0]), list(workflow_env[1])
    job_env, job_unset = _env_values(job.get("env"), context, where)
    env.update(job_env)
    unset.extend(job_unset)
    if "uses" in job:
        script = [f"# uses: {job['uses']} (a reusable workflow: not run locally)"]
    else:
        script = [_script_entry(step, f"{where}.steps[{i}]", context, unset) for i, step in enumerate(job["steps"])]
    # Unlike a Bitbucket deployment here, an environment sets no ENV: on GitHub only the workflow's own env or an
    # inline `ENV=...` does, and a rehearsal that supplied one would hide a workflow deploying to dev.
    manual = env_for_deployment(environment).get("ENV") == "prod"
    return Step(name=str(job.get("name") or job_id), script=script, deployment=environment, manual=manual, env=env,
                final=final, unset_locally=tuple(dict.fromkeys(unset)))


def select_jobs(config: dict, branch: str, *, pull_request: bool = False, base: str | None = None,
                source: str = WORKFLOW_FILE) -> Selection:
    """The jobs GitHub runs for a push to `branch`, or for a pull request from it into `base`."""
    _check_config(config, source)
    event = "pull_request" if pull_request else "push"
    found = events(config)
    if event not in found:
        return Selection(branch, pull_request, None, None, [], label=f"the workflow has no 'on.{event}'")
    runs, pattern, why = triggered(found[event], event, base if pull_request else branch, source)
    if not runs:
        return Selection(branch, pull_request, None, pattern, [], label=why)
    context = github_context(branch, pull_request, base)
    jobs = config["jobs"]
    workflow_env = _env_values(config.get("env"), context, source)
    results: dict[str, str] = {}
    steps: list[Step] = []
    skipped: list[tuple[str, str]] = []
    for job_id in job_order(jobs, source):
        job, where = jobs[job_id], f"{source}: jobs.{job_id}"
        needs = _needs(job, job_id, jobs, source)
        node = _condition(job.get("if"), where)
        context["needs"] = {n: {"result": results[n], "outputs": {}} for n in needs}
        if not _job_runs(node, context, [results[n] for n in needs], where, job.get("if")):
            results[job_id] = "skipped"
            reason = _skip_reason(job, node, context, [n for n in needs if results[n] != "success"], where)
            skipped.append((str(job.get("name") or job_id), reason))
            continue
        results[job_id] = "success"
        # Runs after a failure too when its condition holds with the jobs it needs failed (always(), failure()).
        failed = {n: {"result": "failure", "outputs": {}} for n in needs}
        final = bool(needs) and _job_runs(node, {**context, "needs": failed}, ["failure"] * len(needs), where,
                                          job.get("if"))
        steps.append(job_step(job_id, job, context, workflow_env, source, final))
    return Selection(branch, pull_request, event, pattern, steps, label=why, skipped=skipped)

