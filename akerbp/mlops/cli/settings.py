"""`mlops settings`: check mlops_settings.py/.yaml before CI does, and publish its JSON Schema for editors."""
from __future__ import annotations

from pathlib import Path

import click

from akerbp.mlops.cli import options
from akerbp.mlops.cli.output import echo, note, print_json, print_table
from akerbp.mlops.settings import SettingsError, load_settings, settings_json_schema
from akerbp.mlops.vocabulary import ENVIRONMENTS, SERVICES


@click.group()
def settings() -> None:
    """Validate mlops_settings.py/.yaml and print its JSON Schema."""


@settings.command()
@click.option("--file", "path", type=click.Path(dir_okay=False, path_type=Path),
              help="Settings file (default: mlops_settings.py or mlops_settings.yaml in the working directory).")
@options.env(help="Also fail on what a deploy to this environment would refuse (dev prediction: the local artifact "
                   "folder; prod training: a deployment_condition).")
@options.service(multiple=True, dest="services",
                 help="With --env: only the deploys of this service (repeatable; default: both).")
@options.json_output(help="Print the validated models as JSON.")
def validate(path: Path | None, env: str | None, services: tuple[str, ...], as_json: bool) -> None:
    """Check the settings: every problem at once, or a summary.

    Exits 2 with one line per problem (file, model, field, line) on stderr when the settings are invalid. Without
    --env, what a deploy to some environment would refuse is noted on stderr, without failing.
    """
    services = services or SERVICES
    try:
        models = load_settings(path, env=env, services=services)
    except SettingsError as e:
        if as_json:
            print_json({"valid": False, "file": e.file, "errors": e.errors})
        raise
    refusals = [] if env else [(e, line) for e in ENVIRONMENTS for m in models for line in m.deploy_problems(e, services)]
    for where, line in refusals:
        note(f"note: ENV={where} deploys would refuse {line}")
    if as_json:
        print_json({"valid": True, "models": [
            {**m.model_dump(mode="json"), "root": str(m.root), "code_folder": m.code_folder, "module": m.module}
            for m in models
        ], "refused_deploys": [{"env": where, "problem": line} for where, line in refusals]})
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
    echo(f"\n{len(models)} model{'s' if len(models) != 1 else ''}: settings are valid.")


@settings.command()
def schema() -> None:
    """Print the JSON Schema of mlops_settings.yaml.

    For editors (yaml-language-server) and check-jsonschema.
    """
    print_json(settings_json_schema())
