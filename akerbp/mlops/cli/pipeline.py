"""`mlops pipeline show|run`: what the Bitbucket pipeline or the GitHub Actions workflow does for a branch, and
rehearsing it here.

Which file: --file, else whichever of bitbucket-pipelines.yml and .github/workflows/mlops.yml the working directory
has (--ci picks one when it has both). `run` executes the steps (GitHub: the jobs) in this checkout against the
local CDF (MLOPS_LOCAL_CDF=1), so a deploy pipeline can be tried before pushing. Progress and step output go to
stderr; the summary (or --json) goes to stdout.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import click
import yaml

from akerbp.mlops import pipeline as pl
from akerbp.mlops import pipeline_github as gh
from akerbp.mlops.cli import options
from akerbp.mlops.cli.output import echo, note, print_json, print_table
from akerbp.mlops.errors import MlopsError, UsageError

FILES = {"bitbucket": pl.PIPELINE_FILE, "github": gh.WORKFLOW_FILE}


def _file_option(help_text: str) -> Callable[[Callable], Callable]:
    return click.option("--file", "file_", default=None, type=click.Path(path_type=Path), help=help_text)


_show_file_option = _file_option(f"The pipeline file to read [default: {pl.PIPELINE_FILE} or {gh.WORKFLOW_FILE}, "
                                 "whichever exists].")
_run_file_option = _file_option("The pipeline file; its steps run in the repo it belongs to (a workflow's: two "
                                "folders above .github/workflows) [default: as for show].")
_ci_option = click.option("--ci", type=click.Choice(list(FILES)), default=None,
                          help="Which CI file to read: needed when the repo has both; with --file, how to read it "
                               "(default: from its name or contents).")
_branch_option = click.option("--branch", required=True, help="Branch name, e.g. master or deploy/new-model.")
_pr_option = click.option("--pull-request", is_flag=True,
                          help="Select as for a pull request from BRANCH (Bitbucket: pipelines.pull-requests; "
                               "GitHub: on.pull_request).")
_base_option = click.option("--base", default=None,
                            help="GitHub: the branch the pull request merges into, which on.pull_request.branches "
                                 "filters match.")


@dataclass(frozen=True)
class Source:
    """The CI file read: ci is "bitbucket" or "github"."""

    ci: str
    path: Path

    @property
    def repo(self) -> Path:
        path = self.path.resolve()
        if self.ci == "github" and path.parent.name == "workflows" and path.parent.parent.name == ".github":
            return path.parents[2]
        return path.parent


def _guess(path: Path) -> str:
    """How to read a file given with --file: by its name, else by its top-level keys."""
    if path.name == pl.PIPELINE_FILE:
        return "bitbucket"
    if path.parent.name == "workflows" and path.parent.parent.name == ".github":
        return "github"
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return "bitbucket"  # the loader reports what is wrong
    return "github" if isinstance(config, dict) and "jobs" in config and "pipelines" not in config else "bitbucket"


def resolve_source(ci: str | None, file_: Path | None, root: Path | None = None) -> Source:
    """--ci and --file -> the file to read: --file as given; else the one CI file that exists in root (the cwd)."""
    if file_ is not None:
        return Source(ci or _guess(file_), file_)
    root = root or Path(".")
    if ci is not None:
        return Source(ci, root / FILES[ci])
    present = [name for name, path in FILES.items() if (root / path).is_file()]
    if len(present) == 1:
        return Source(present[0], root / FILES[present[0]])
    if present:
        raise UsageError(f"both {pl.PIPELINE_FILE} and {gh.WORKFLOW_FILE} exist: pass --ci bitbucket or --ci github")
    raise UsageError(f"neither {pl.PIPELINE_FILE} nor {gh.WORKFLOW_FILE} found in {root.resolve()} "
                     "(run from the repo root, or pass --file)")


def _select(src: Source, branch: str, pull_request: bool, base: str | None = None) -> pl.Selection:
    if src.ci == "github":
        config = gh.load_workflow_file(src.path)
        return gh.select_jobs(config, branch, pull_request=pull_request, base=base, source=str(src.path))
    if base is not None:
        raise UsageError("--base is for GitHub workflows (Bitbucket matches a pull request's source branch)")
    config = pl.load_pipeline_file(src.path)
    return pl.select_pipeline(config, branch, pull_request=pull_request, source=str(src.path))


def _describe(sel: pl.Selection) -> str:
    event = f"a pull request from '{sel.branch}'" if sel.pull_request else f"a push to '{sel.branch}'"
    if sel.section is None:
        if sel.label is not None:
            return f"No pipeline runs for {event}: {sel.label}."
        why = "no pull-requests pattern matches" if sel.pull_request else \
            "no branches pattern matches and there is no default pipeline"
        return f"No pipeline runs for {event}: {why}."
    return f"For {event}: {sel.where}"


def _no_pipeline_hint(sel: pl.Selection, src: Source) -> str:
    if sel.pull_request or sel.section is not None:
        return ""
    try:
        pr = _select(src, sel.branch, True)
    except UsageError:  # a GitHub workflow filtering pull requests by base branch: nothing to say without one
        return ""
    if pr.section is None:
        return ""
    ci = f" --ci {src.ci}" if src.ci == "github" else ""
    return (f"A pull request from it runs {pr.where} "
            f"(mlops pipeline show{ci} --branch {sel.branch} --pull-request).")


def _step_json(step: pl.Step) -> dict:
    return {"name": step.name, "deployment": step.deployment, "env": step.effective_env, "manual": step.manual,
            "final": step.final, "script": step.script, "unset_locally": list(step.unset_locally)}


def _selection_json(sel: pl.Selection, src: Source) -> dict:
    return {"file": str(src.path), "ci": src.ci, "branch": sel.branch,
            "event": "pull-request" if sel.pull_request else "push", "section": sel.section, "pattern": sel.pattern,
            "where": sel.where if sel.section is not None or sel.label else None,
            "steps": [_step_json(s) for s in sel.steps],
            "skipped": [{"name": name, "reason": reason} for name, reason in sel.skipped]}


@click.group()
def pipeline() -> None:
    """Which Bitbucket pipeline steps (or GitHub Actions jobs) run for a branch; run them here.

    Bitbucket: an exact name beats any glob, then the most specific glob wins; `*` does not match `/` (deploy/*
    matches deploy/x, not deploy/x/y), `**` does; a push matching nothing runs `default`. GitHub: `*` does not
    match `/`, `**` does, `!pattern` excludes and the last matching pattern decides; jobs follow `needs` and `if:`.
    """


@pipeline.command()
@_branch_option
@_pr_option
@_base_option
@_ci_option
@_show_file_option
@options.json_output(help="Print JSON.")
def show(branch: str, pull_request: bool, base: str | None, ci: str | None, file_: Path | None,
         as_json: bool) -> None:
    """Print the steps that run for BRANCH: name, deployment, ENV, trigger, and the pattern that matched."""
    src = resolve_source(ci, file_)
    sel = _select(src, branch, pull_request, base)
    if as_json:
        print_json(_selection_json(sel, src))
        return
    echo(_describe(sel))
    if not sel.steps:
        hint = _no_pipeline_hint(sel, src)
        if hint:
            echo(hint)
        return
    rows = [[str(i), s.name, s.deployment or "-", s.effective_env or "(inherited)",
             "manual" if s.manual else ("final" if s.final else "automatic")] for i, s in enumerate(sel.steps, 1)]
    print_table(rows, ["#", "step", "deployment", "ENV", "trigger"])
    for i, s in enumerate(sel.steps, 1):
        echo(f"\n{i}. {s.name}")
        for line in s.script:
            echo("   $ " + line.replace("\n", "\n     "))  # a multi-line GitHub `run:` block, indented
        if s.unset_locally:
            echo(f"   (set by the CI, not by a local run: {', '.join(s.unset_locally)})")
    if sel.skipped:
        echo("\nSkipped: " + "; ".join(f"{name} ({reason})" for name, reason in sel.skipped))


@pipeline.command()
@_branch_option
@_pr_option
@_base_option
@_ci_option
@_run_file_option
@click.option("--include-manual", is_flag=True,
              help="Also run manual steps (e.g. the prod deploys; GitHub: jobs in production-* environments).")
@click.option("--install/--skip-install", default=False, show_default=True,
              help="Run the `pip install` lines too; by default they are skipped (this environment is set up).")
@click.option("--dry-run", is_flag=True, help="Print what would run, run nothing.")
@options.json_output(help="Print the results as JSON.")
def run(branch: str, pull_request: bool, base: str | None, ci: str | None, file_: Path | None, include_manual: bool,
        install: bool, dry_run: bool, as_json: bool) -> None:
    """Run the steps (GitHub: the jobs' `run:` scripts) for BRANCH in this checkout against the local CDF
    (MLOPS_LOCAL_CDF=1; COGNITE_* are not passed to the steps, so a project configured in this shell is never
    touched; GitHub `uses:` actions and values from secrets are left out).

    Stops at the first failing step (exit 1) and before the first manual step unless --include-manual.
    """
    src = resolve_source(ci, file_)
    sel = _select(src, branch, pull_request, base)
    repo = src.repo
    if dry_run:
        _print_plan(sel, src, include_manual, install, as_json)
        return
    if not sel.steps:
        note(_describe(sel))
        hint = _no_pipeline_hint(sel, src)
        if hint:
            note(hint)
        if as_json:
            print_json({**_selection_json(sel, src), "results": []})
        return
    note(_describe(sel) + f" (running in {repo}, MLOPS_LOCAL_CDF=1)")
    if not install and any(pl.is_install_line(line) for s in sel.steps for line in s.script):
        note("Skipping `pip install` lines: this environment is already set up (use --install to run them).")
    results = pl.run_steps(sel.steps, repo, include_manual=include_manual, install=install,
                           on_output=lambda text: note(text, nl=False))
    if as_json:
        print_json({**_selection_json(sel, src), "results": [asdict(r) for r in results]})
    else:
        rows = [[r.name, r.status, "-" if r.exit_code is None else str(r.exit_code),
                 f"{r.seconds:.1f}" if r.exit_code is not None else "-", r.reason] for r in results]
        print_table(rows, ["step", "status", "exit", "seconds", "note"])
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise MlopsError(f"pipeline step '{failed[0].name}' failed with exit code {failed[0].exit_code}")


def _print_plan(sel: pl.Selection, src: Source, include_manual: bool, install: bool, as_json: bool) -> None:
    plan, paused = [], False
    for s in sel.steps:
        paused = paused or (s.manual and not include_manual)
        lines = [{"command": line, "run": install or not pl.is_install_line(line)} for line in s.script]
        plan.append({**_step_json(s), "will_run": not paused, "lines": lines})
    if as_json:
        out = _selection_json(sel, src)
        out["steps"] = plan
        print_json(out)
        return
    echo(_describe(sel))
    for i, step in enumerate(plan, 1):
        env = f"ENV={step['env']}" if step["env"] else "ENV inherited"
        state = "would run" if step["will_run"] else "skipped (manual)" if step["manual"] else "skipped (after manual)"
        echo(f"{i}. {step['name']} [{state}; {env}; MLOPS_LOCAL_CDF=1]")
        for line in step["lines"]:
            echo(f"   {'$' if line['run'] else '# skipped:'} {line['command']}")
