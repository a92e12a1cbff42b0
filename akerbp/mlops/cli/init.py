"""`mlops init`: scaffold a model repo that deploys as it stands, so a data scientist starts from something working.

Argument parsing and printing only: what a model repo contains and the writing of it are akerbp.mlops.model_repo.
"""
from __future__ import annotations

from pathlib import Path

import click

from akerbp.mlops.cli import output
from akerbp.mlops.model_repo import CI_CHOICES, DEFAULT_CI, DEFAULT_MODEL_NAME, scaffold


def _shown(folder: Path) -> str:
    try:
        relative = folder.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return str(folder)
    return str(relative) if str(relative) != "." else "."


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True,
              help="Name of the model: lowercase letters, digits and '_', starting with a letter.")
@click.option("--ci", type=click.Choice(CI_CHOICES), default=DEFAULT_CI, show_default=True,
              help="The CI file: bitbucket-pipelines.yml, .github/workflows/mlops.yml (github), or both.")
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def init(directory: Path, model_name: str, ci: str, force: bool) -> None:
    """Scaffold a new model repo in DIRECTORY (default: here).

    Writes mlops_settings.py, the template model (model_code/, model_artifact/), the deploy scripts, the Bitbucket
    pipeline or the GitHub Actions workflow (--ci), .gitignore and README.md. Existing files are left alone unless
    --force is given.
    """
    where = _shown(directory)
    files, existing = scaffold(directory, model_name, force, shown=where, ci=ci)
    output.echo(f"Created a model repo for '{model_name}' in {where}"
               + (f" (overwrote {', '.join(existing)})" if existing else "") + ":")
    for name in files:
        output.echo(f"  {name}")
    cd = [] if where == "." else [f"cd {where}"]
    steps = cd + [
        "python -m pytest model_code",
        "bash deploy_prediction_service.sh",
        f"mlops call {model_name} --data '{{\"data\": [{{\"GR\": 85.0, \"NPHI\": 0.25, \"DEPTH\": 2400.0}}]}}'",
    ]
    output.echo("\nNext steps (against the local CDF unless COGNITE_* variables are set):")
    for step in steps:
        output.echo(f"  {step}")
    setup = {"bitbucket": "Bitbucket", "github": "GitHub", "both": "Bitbucket and GitHub"}[ci]
    output.echo(f"Then replace model_code/ with your model and push; README.md lists the {setup} setup.")
