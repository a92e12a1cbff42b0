"""`mlops pipeline show|run`: what the Bitbucket pipeline does for a branch, and rehearsing it here.

`run` executes the steps in this checkout against the local CDF (MLOPS_LOCAL_CDF=1), so a deploy pipeline can be
tried before pushing. Progress and step output go to stderr; the summary (or --json) goes to stdout.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable

import click

from akerbp.mlops import pipeline as pl
from akerbp.mlops.cli import options
from akerbp.mlops.cli.output import echo, note, print_json, print_table
from akerbp.mlops.errors import MlopsError


def _file_option(help_text: str) -> Callable[[Callable], Callable]:
    return click.option("--file", "file_", default=pl.PIPELINE_FILE, show_default=True,
                        type=click.Path(path_type=Path), help=help_text)


_show_file_option = _file_option("The pipeline file to read.")
_run_file_option = _file_option("The pipeline file; its steps run in the file's folder.")
_branch_option = click.option("--branch", required=True, help="Branch name, e.g. master or deploy/new-model.")
_pr_option = click.option("--pull-request", is_flag=True,
                          help="Select as for a pull request from BRANCH (pipelines.pull-requests).")


def _select(file_: Path, branch: str, pull_request: bool) -> pl.Selection:
    config = pl.load_pipeline_file(file_)
    return pl.select_pipeline(config, branch, pull_request=pull_request, source=str(file_))


def _describe(sel: pl.Selection) -> str:
    event = f"a pull request from '{sel.branch}'" if sel.pull_request else f"a push to '{sel.branch}'"
    if sel.section is None:
        why = "no pull-requests pattern matches" if sel.pull_request else \
            "no branches pattern matches and there is no default pipeline"
        return f"No pipeline runs for {event}: {why}."
    return f"For {event}: {sel.where}"


def _no_pipeline_hint(sel: pl.Selection, file_: Path) -> str:
    if sel.pull_request or sel.section is not None:
        return ""
    config = pl.load_pipeline_file(file_)
    pr = pl.select_pipeline(config, sel.branch, pull_request=True, source=str(file_))
    if pr.section is None:
        return ""
    return (f"A pull request from it runs {pr.where} "
            f"(mlops pipeline show --branch {sel.branch} --pull-request).")


def _step_json(step: pl.Step) -> dict:
    return {"name": step.name, "deployment": step.deployment, "env": step.effective_env, "manual": step.manual,
            "final": step.final, "script": step.script}


def _selection_json(sel: pl.Selection, file_: Path) -> dict:
    return {"file": str(file_), "branch": sel.branch, "event": "pull-request" if sel.pull_request else "push",
            "section": sel.section, "pattern": sel.pattern, "steps": [_step_json(s) for s in sel.steps]}


@click.group()
def pipeline() -> None:
    """Which Bitbucket pipeline steps run for a branch; run them here.

    Branch patterns follow Bitbucket: an exact name beats any glob, then the most specific glob wins; `*` does
    not match `/` (deploy/* matches deploy/x, not deploy/x/y), `**` does; a push matching nothing runs `default`.
    """


@pipeline.command()
@_branch_option
@_pr_option
@_show_file_option
@options.json_output(help="Print JSON.")
def show(branch: str, pull_request: bool, file_: Path, as_json: bool) -> None:
    """Print the steps that run for BRANCH: name, deployment, ENV, trigger, and the pattern that matched."""
    sel = _select(file_, branch, pull_request)
    if as_json:
        print_json(_selection_json(sel, file_))
        return
    echo(_describe(sel))
    if not sel.steps:
        hint = _no_pipeline_hint(sel, file_)
        if hint:
            echo(hint)
        return
    rows = [[str(i), s.name, s.deployment or "-", s.effective_env or "(inherited)",
             "manual" if s.manual else ("final" if s.final else "automatic")] for i, s in enumerate(sel.steps, 1)]
    print_table(rows, ["#", "step", "deployment", "ENV", "trigger"])
    for i, s in enumerate(sel.steps, 1):
        echo(f"\n{i}. {s.name}")
        for line in s.script:
            echo(f"   $ {line}")


@pipeline.command()
@_branch_option
@_pr_option
@_run_file_option
@click.option("--include-manual", is_flag=True, help="Also run manual steps (e.g. the prod deploys).")
@click.option("--install/--skip-install", default=False, show_default=True,
              help="Run the `pip install` lines too; by default they are skipped (this environment is set up).")
@click.option("--dry-run", is_flag=True, help="Print what would run, run nothing.")
@options.json_output(help="Print the results as JSON.")
def run(branch: str, pull_request: bool, file_: Path, include_manual: bool, install: bool, dry_run: bool,
        as_json: bool) -> None:
    """Run the steps for BRANCH in this checkout against the local CDF (MLOPS_LOCAL_CDF=1; COGNITE_* are not
    passed to the steps, so a project configured in this shell is never touched).

    Stops at the first failing step (exit 1) and before the first manual step unless --include-manual.
    """
    sel = _select(file_, branch, pull_request)
    repo = file_.resolve().parent
    if dry_run:
        _print_plan(sel, file_, include_manual, install, as_json)
        return
    if not sel.steps:
        note(_describe(sel))
        hint = _no_pipeline_hint(sel, file_)
        if hint:
            note(hint)
        if as_json:
            print_json({**_selection_json(sel, file_), "results": []})
        return
    note(_describe(sel) + f" (running in {repo}, MLOPS_LOCAL_CDF=1)")
    if not install and any(pl.is_install_line(line) for s in sel.steps for line in s.script):
        note("Skipping `pip install` lines: this environment is already set up (use --install to run them).")
    results = pl.run_steps(sel.steps, repo, include_manual=include_manual, install=install,
                           on_output=lambda text: note(text, nl=False))
    if as_json:
        print_json({**_selection_json(sel, file_), "results": [asdict(r) for r in results]})
    else:
        rows = [[r.name, r.status, "-" if r.exit_code is None else str(r.exit_code),
                 f"{r.seconds:.1f}" if r.exit_code is not None else "-", r.reason] for r in results]
        print_table(rows, ["step", "status", "exit", "seconds", "note"])
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise MlopsError(f"pipeline step '{failed[0].name}' failed with exit code {failed[0].exit_code}")


def _print_plan(sel: pl.Selection, file_: Path, include_manual: bool, install: bool, as_json: bool) -> None:
    plan, paused = [], False
    for s in sel.steps:
        paused = paused or (s.manual and not include_manual)
        lines = [{"command": line, "run": install or not pl.is_install_line(line)} for line in s.script]
        plan.append({**_step_json(s), "will_run": not paused, "lines": lines})
    if as_json:
        out = _selection_json(sel, file_)
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
