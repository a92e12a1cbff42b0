"""`mlops init`: scaffold a model repo that deploys as it stands, so a data scientist starts from something working.

The model template (model_code/, model_artifact/) is a copy of the framework repo's own template model kept in
akerbp/mlops/templates/model_repo/, because an installed package has no repo root; a test keeps the two equal.
The pipeline and deploy scripts come from akerbp/mlops/templates/.
"""
from __future__ import annotations

from pathlib import Path

import click

from akerbp.mlops.vocabulary import is_model_name
from akerbp.mlops.errors import UsageError

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
MODEL_REPO = TEMPLATES / "model_repo"
DEFAULT_MODEL_NAME = "well_density"
TEMPLATE_FILES = (  # copied: (source relative to templates/, target relative to the new repo)
    ("model_repo/model_code/__init__.py", "model_code/__init__.py"),
    ("model_repo/model_code/model.py", "model_code/model.py"),
    ("model_repo/model_code/well_logs.py", "model_code/well_logs.py"),
    ("model_repo/model_code/test_model.py", "model_code/test_model.py"),
    ("model_repo/model_code/requirements.model", "model_code/requirements.model"),
    ("model_repo/model_artifact/model.json", "model_artifact/model.json"),
    ("bitbucket-pipelines.yml", "bitbucket-pipelines.yml"),
    ("deploy_prediction_service.sh", "deploy_prediction_service.sh"),
    ("deploy_training_service.sh", "deploy_training_service.sh"),
)
# Would make the settings ambiguous next to the new mlops_settings.py, so they count as files in the way.
CONFLICTING = ("mlops_settings.yaml",)

SETTINGS = '''"""Settings of the models in this repo, read by `mlops` and the deploy scripts.

Check them with `mlops settings validate`; `mlops settings schema` describes every field. More models: add one
ModelSettings per model, each with its own model_file, req_file and test_file.
"""
from akerbp.mlops import ModelSettings

models = [
    ModelSettings(
        model_name="{name}",  # forms the function ids {name}-prediction-ENV and artifact ids {name}/ENV/N
        model_file="model_code/model.py",  # its top folder (model_code/) is deployed whole
        req_file="model_code/requirements.model",
        test_file="model_code/test_model.py",
        artifact_folder="model_artifact",  # deployed as-is with ENV=dev; test and prod use versions in CDF
        python_version="py311",
        info={{
            "prediction": {{"description": "Bulk density (RHOB) from gamma ray, neutron porosity and depth"}},
            "training": {{"description": "Trains the RHOB ridge regression on synthetic or given well logs"}},
        }},
        # A training run in prod uploads its version only when it meets this: held-out r2 of at least 0.7.
        deployment_condition={{"metric": "r2", "direction": "above", "threshold": 0.7}},
        # owner, metadata, secrets, env_vars, cpu, memory, input_schema, models_to_keep, allow_no_tests:
        # see `mlops settings schema`.
    ),
]
'''

GITIGNORE = """# akerbp.mlops: the local CDF, and the function folders deploys build
.mlops/
mlops_*/
# Python
__pycache__/
*.pyc
.pytest_cache/
.venv/
"""

README = """# {name}

A model deployed to Cognite Data Fusion (CDF) with [akerbp.mlops](https://pypi.org/project/akerbp.mlops/), scaffolded
by `mlops init`. It starts as the framework's template model, which predicts bulk density (RHOB) from gamma ray,
neutron porosity and depth: replace it with your own, keeping the interface.

## Files

- `mlops_settings.py`: the models of this repo (`mlops settings validate` checks it).
- `model_code/model.py`: `initialization(folder, secrets)`, `predict(data, state, secrets)`,
  `train(data, folder, secrets) -> metadata` and `ModelException`. Import other files of the folder from the repo
  root: `from model_code import well_logs`.
- `model_code/test_model.py`: pytest tests, and `ServiceTest` with the payloads and checks the deploy uses to test
  the service before and after deploying it.
- `model_code/requirements.model`: the model's libraries, pinned (not `requirements.txt`).
- `model_artifact/`: the template's trained artifact, deployed as-is when `ENV=dev` (as
  `{name}/dev/local-<digest>`). Test and prod deploy the newest version in CDF: upload with
  `mlops models upload {name} --folder model_artifact --env test`, then `mlops models promote {name} --version N` to
  prod, or let the training service make one (in prod only when `deployment_condition` holds).
- `deploy_prediction_service.sh`, `deploy_training_service.sh`: test, build and deploy the services to `ENV`.
- `bitbucket-pipelines.yml`: pull requests run the tests; master/main and `deploy/*` deploy to test, with a manual
  step to prod; `trainpred/*` also deploys the training service.

## Run it

```
python -m pytest model_code                  # the model's tests
bash deploy_prediction_service.sh            # test, build and deploy to ENV (default dev)
mlops call {name} --data '{{"data": [{{"GR": 85.0, "NPHI": 0.25, "DEPTH": 2400.0}}]}}'
mlops status                                 # what is deployed, and its last call
mlops logs {name}                            # logs of the newest call
mlops history {name}                         # deploys, rollbacks and promotions
```

With no `COGNITE_*` variables set, everything runs against a local CDF kept in `.mlops/local-cdf` (git-ignored).
To use a CDF project, set `COGNITE_PROJECT`, `COGNITE_BASE_URL` (or `COGNITE_CLUSTER`), `COGNITE_CLIENT_ID`,
`COGNITE_CLIENT_SECRET` and `COGNITE_TOKEN_URL` (or `COGNITE_TENANT_ID`).

## Bitbucket

Repository settings: deployments `test-prediction`, `test-training`, `production-prediction` and
`production-training`; the `COGNITE_*` variables above as secured repository variables; Pipelines enabled.
"""


def scaffold_files(model_name: str) -> dict[str, bytes]:
    """Target path (relative to the new repo) -> content."""
    files = {"mlops_settings.py": SETTINGS.format(name=model_name).encode()}
    for source, target in TEMPLATE_FILES:
        files[target] = (TEMPLATES / source).read_bytes()
    files[".gitignore"] = GITIGNORE.encode()
    files["README.md"] = README.format(name=model_name).encode()
    return files


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
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def init(directory: Path, model_name: str, force: bool):
    """Scaffold a new model repo in DIRECTORY (default: here).

    Writes mlops_settings.py, the template model (model_code/, model_artifact/), the deploy scripts, the Bitbucket
    pipeline, .gitignore and README.md. Existing files are left alone unless --force is given.
    """
    if not is_model_name(model_name):
        raise UsageError(f"--model-name {model_name!r} is not a model name: use lowercase letters, digits and '_', "
                         "starting with a letter, at most 40 characters")
    files = scaffold_files(model_name)
    existing = [name for name in (*files, *CONFLICTING) if (directory / name).exists()]
    in_the_way = [name for name in existing if name in CONFLICTING or (directory / name).is_dir()]
    if in_the_way or (existing and not force):
        blocked = in_the_way if in_the_way else existing
        advice = "move them away" if in_the_way else "move them away, or add --force to overwrite them"
        raise UsageError(f"{_shown(directory)} already has {', '.join(blocked)}: {advice}")
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        if name.endswith(".sh"):
            path.chmod(0o755)
    where = _shown(directory)
    click.echo(f"Created a model repo for '{model_name}' in {where}"
               + (f" (overwrote {', '.join(existing)})" if existing else "") + ":")
    for name in files:
        click.echo(f"  {name}")
    cd = [] if where == "." else [f"cd {where}"]
    steps = cd + [
        "python -m pytest model_code",
        "bash deploy_prediction_service.sh",
        f"mlops call {model_name} --data '{{\"data\": [{{\"GR\": 85.0, \"NPHI\": 0.25, \"DEPTH\": 2400.0}}]}}'",
    ]
    click.echo("\nNext steps (against the local CDF unless COGNITE_* variables are set):")
    for step in steps:
        click.echo(f"  {step}")
    click.echo("Then replace model_code/ with your model and push; README.md lists the Bitbucket setup.")
