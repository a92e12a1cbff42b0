"""`mlops deploy prediction|training` and `mlops rollback MODEL`.

Progress and test output go to stderr as they happen; the summary table (or, with --json, one JSON document) goes
to stdout at the end, secrets masked in all of it. Exit code 0 only when every model was deployed, verified or
unchanged; 1 when one failed; 2 for usage and settings errors; 130/143 when stopped by Ctrl-C/SIGTERM (the model in
progress finished or undid its step first: see deployment/interrupts.py).
"""
from __future__ import annotations

import sys

import click

from akerbp.mlops.cli import options
from akerbp.mlops.cli.output import deploy_plan_text, deploy_summary_table, echo, note, print_json
from akerbp.mlops.vocabulary import SERVICES


def _progress(message: str) -> None:
    note(message)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("service", type=click.Choice(SERVICES))
@options.model(help="Deploy only this model (repeatable; default: every model in the settings).", multiple=True,
               dest="models")
@options.env(help="Target environment (default: ENV, else dev).")
@click.option("--dry-run", is_flag=True,
              help="Run the model and service tests and print the plan; change nothing in CDF.")
@click.option("--force", is_flag=True, help="Deploy even when the live function already runs the same content.")
@click.option("--retest", is_flag=True,
              help="Run the model and service tests even when the live function passed its checks with this content.")
@click.option("--jobs", type=click.IntRange(min=1), default=4, show_default=True,
              help="Models deployed at once (each progress line names its function).")
@options.timeout(900, help="Seconds a model's deploy may take, waiting for CDF included.", minimum=1)
@options.json_output(help="Print the results as JSON on stdout.")
def deploy(service: str, models: tuple[str, ...], env: str | None, dry_run: bool, force: bool, retest: bool,
           jobs: int, timeout: float, as_json: bool) -> None:
    """Test, build and deploy the SERVICE (prediction or training) of the models in mlops_settings.

    \b
    Per model: model tests, artifacts (dev: the local artifact folder; test/prod: the pinned or latest registry
    version), function folder, service test, the plan (unchanged content verified live is not redeployed and its
    tests are not rerun unless --retest), then a replacement that removes the live function only once its
    successor has built, a smoke call (failure rolls back), and an audit event. --dry-run prints the plan.
    ENV=dev goes to the local CDF unless LOCAL_DEPLOYMENT=True (in CI only with MLOPS_LOCAL_CDF=1 or --dry-run);
    `mlops call/status/logs/history` read the same CDF.
    """
    from akerbp.mlops.deployment import deploy as deployment
    from akerbp.mlops.deployment import interrupts

    try:
        with interrupts.handled(_progress):
            results = deployment.deploy(service, env=env, models=models, dry_run=dry_run, force=force,
                                        retest=retest, jobs=jobs, timeout=timeout, progress=_progress)
            stopped = interrupts.requested()
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once; the next deploy verifies or rolls back
        note("stopped at once: run the deploy again; it verifies or rolls back what is live")
        sys.exit(130)
    code = deployment.exit_code(results)
    if stopped is not None:
        code = interrupts.EXIT_CODES[stopped]
    if as_json:
        print_json({"service": service, "env": results[0].env if results else env, "dry_run": dry_run,
                    "ok": code == 0, "results": [r.as_dict() for r in results]})
    else:
        if dry_run:
            echo(deploy_plan_text(results))
            echo()
        echo(deploy_summary_table(results))
    sys.exit(code)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@options.env()
@options.service()
@click.option("--to-version", type=click.IntRange(min=1), metavar="N",
              help="Roll back to the most recent kept deployment of artifact version N (default: the previous "
                   "deployment).")
@click.option("--list", "list_only", is_flag=True, help="List the kept deployments and change nothing.")
@options.timeout(900, help="Seconds the rollback may take: CDF building the restored function and its warm-up call "
                 "included.", minimum=1)
@options.json_output(help="Print the result as JSON on stdout.")
def rollback(model: str, env: str | None, service: str, to_version: int | None, list_only: bool, timeout: float,
             as_json: bool) -> None:
    """Put a previous deployment of MODEL's service back live, from its kept code file (no tests, no rebuild).

    The current deployment and the 2 before it are kept; rolling back twice returns to where you started.
    """
    from akerbp.mlops.vocabulary import function_external_id
    from akerbp.mlops.deployment import rollback as rollbacks

    if list_only:
        env = options.env_or_default(env)
        live, kept = rollbacks.deployments(model, env=env, service=service)
        current = (live.metadata or {}).get("mlops_code_file") if live is not None else None
        rows = [{**d.as_dict(), "live": str(d.file_id) == current} for d in kept]
        if as_json:
            print_json(rows)
        elif not rows:
            echo(f"no kept deployments of {function_external_id(model, service, env)}")
        else:
            for row in rows:
                echo(f"{'*' if row['live'] else ' '} version {row['version'] or '-':<4} hash {row['hash'][:10]}  "
                     f"deployed {row['deployed_at']} by {row['deployed_by'] or '?'}  "
                     f"commit {row['git_commit'][:12] or '-'}")
        return
    result = rollbacks.rollback(model, env=env, service=service, to_version=to_version, timeout=timeout,
                                progress=_progress)
    if as_json:
        print_json(result.as_dict())
    else:
        to = result.to_deployment or {}
        gap = f"; {result.function} could not be called for {result.gap_seconds:.2f} s" \
            if result.gap_seconds is not None else ""
        echo(f"{result.function} rolled back to version {to.get('version') or '-'} (hash "
             f"{to.get('hash', '')[:10]}, deployed by {to.get('deployed_by') or '?'}) in "
             f"{result.seconds:.1f} s{gap}")
