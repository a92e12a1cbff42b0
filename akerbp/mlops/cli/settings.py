"""`mlops settings`: check mlops_settings.py/.yaml before CI does, and publish its JSON Schema for editors."""
from __future__ import annotations

import json
from pathlib import Path

import click

from akerbp.mlops.cli.output import note, print_table
from akerbp.mlops.settings import ENVIRONMENTS, SERVICES, SettingsError, load_settings, settings_json_schema


@click.group()
def settings():
    """Validate mlops_settings.py/.yaml and print its JSON Schema."""


@settings.command()
@click.option("--file", "path", type=click.Path(dir_okay=False, path_type=Path),
              help="Settings file (default: mlops_settings.py or mlops_settings.yaml in the working directory).")
@click.option("--env", type=click.Choice(ENVIRONMENTS),
              help="Also fail on what a deploy to this environment would refuse (dev prediction: the local artifact "
                   "folder; prod training: a deployment_condition).")
@click.option("--service", "services", type=click.Choice(SERVICES), multiple=True,
              help="With --env: only the deploys of this service (repeatable; default: both).")
@click.option("--json", "as_json", is_flag=True, help="Print the validated models as JSON.")
def validate(path: Path | None, env: str | None, services: tuple[str, ...], as_json: bool):
    """Check the settings: every problem at once, or a summary.

    Exits 2 with one line per problem (file, model, field, line) on stderr when the settings are invalid. Without
    --env, what a deploy to some environment would refuse is noted on stderr, without failing.
    """
    services = services or SERVICES
    try:
        models = load_settings(path, env=env, services=services)
    except SettingsError as e:
        if as_json:
            click.echo(json.dumps({"valid": False, "file": e.file, "errors": e.errors}, indent=2))
        raise
    refusals = [] if env else [(e, line) for e in ENVIRONMENTS for m in models for line in m.deploy_problems(e, services)]
    for where, line in refusals:
        note(f"note: ENV={where} deploys would refuse {line}")
    if as_json:
        click.echo(json.dumps(
            {"valid": True, "models": [
                {**m.model_dump(mode="json"), "root": str(m.root), "code_folder": m.code_folder, "module": m.module}
                for m in models
            ], "refused_deploys": [{"env": where, "problem": line} for where, line in refusals]},
            indent=2,
        ))
        return
    rows = [["MODEL", "PYTHON", "CODE FOLDER", "MODEL FILE", "ARTIFACTS", "DATA SET", "SECRETS"]]
    for m in models:
        if m.artifact_version is not None:
            artifacts = f"pinned v{m.artifact_version}"
        else:
            artifacts = f"latest; local {m.artifact_folder}{'' if m.has_local_artifacts else ' (absent)'}"
        rows.append([m.model_name, m.python_version, m.code_folder + "/", m.model_file, artifacts, m.dataset,
                     ",".join(m.secrets) or "-"])
    print_table(rows)
    click.echo(f"\n{len(models)} model{'s' if len(models) != 1 else ''}: settings are valid.")


@settings.command()
def schema():
    """Print the JSON Schema of mlops_settings.yaml.

    For editors (yaml-language-server) and check-jsonschema.
    """
    click.echo(json.dumps(settings_json_schema(), indent=2))
