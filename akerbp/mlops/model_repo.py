"""What a model repo contains, listed once: `mlops init` writes it, the pipeline code and the tests read it.

The template lives once, in akerbp/mlops/templates/: model_repo/ holds the files copied as they are (the template
model, its artifact, the deploy scripts, the Bitbucket pipeline, the GitHub workflow), generated/ the texts written
with the model's name (settings, README, .gitignore). An installed package has no repo root, so the package is the
source; the framework repo's root is a working example repo whose template entries are relative symbolic links into
model_repo/ (its own mlops_settings.py, README.md and .gitignore are the framework's). Standard library only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from akerbp.mlops.errors import UsageError
from akerbp.mlops.vocabulary import is_model_name

TEMPLATES = Path(__file__).resolve().parent / "templates"
MODEL_REPO = TEMPLATES / "model_repo"  # copied as it is
GENERATED = TEMPLATES / "generated"  # str.format()-ed with name=the model name

SETTINGS_FILE = "mlops_settings.py"
AUTOMATIONS_FILE = "mlops_automations.py"
MODEL_CODE = "model_code"
MODEL_ARTIFACT = "model_artifact"
PIPELINE_FILE = "bitbucket-pipelines.yml"
GITHUB_WORKFLOW_FILE = ".github/workflows/mlops.yml"
CI_CHOICES = ("bitbucket", "github", "both")  # which CI files `mlops init --ci` writes; bitbucket by default
DEFAULT_CI = "bitbucket"
DEPLOY_SCRIPTS = {"prediction": "deploy_prediction_service.sh", "training": "deploy_training_service.sh"}
DEFAULT_MODEL_NAME = "well_density"  # the template model's name, as in the framework repo's own settings
# Would make the settings ambiguous next to a new mlops_settings.py, so they count as files in the way.
CONFLICTING = ("mlops_settings.yaml",)
_SKIPPED = ("__pycache__", ".pytest_cache")


@dataclass(frozen=True)
class Entry:
    """One file or folder of a model repo: `path` in the repo, and where `mlops init` takes it from."""

    path: str
    purpose: str
    generated: bool = False  # True: GENERATED/<name>.in formatted with the model name; False: MODEL_REPO/path

    @property
    def source(self) -> Path:
        return GENERATED / f"{self.path.lstrip('.')}.in" if self.generated else MODEL_REPO / self.path


ENTRIES = (
    Entry(SETTINGS_FILE, "the models: names, code, requirements, tests, artifact folder, options", generated=True),
    Entry(MODEL_CODE, "the template model: model.py (initialization, predict, train, ModelException), well_logs.py, "
          "test_model.py (pytest tests and ServiceTest, which the deploy's service and smoke checks use), "
          "requirements.model; the whole folder ships in the function"),
    Entry(MODEL_ARTIFACT, "the trained artifact an ENV=dev prediction deploy serves as {model}/dev/local-<digest>"),
    Entry(PIPELINE_FILE, "branches -> deployments: pull requests dry-run, master/main/deploy/* to test then prod"),
    *(Entry(script, f"test, build and deploy the {service} service to $ENV (`mlops deploy {service}`)")
      for service, script in DEPLOY_SCRIPTS.items()),
    Entry(AUTOMATIONS_FILE, "scheduled retraining (mlops automations): empty, with a commented example",
          generated=True),
    Entry(".gitignore", "keeps the local CDF and built function folders out of git", generated=True),
    Entry("README.md", "how to run, deploy and set up Bitbucket", generated=True),
)
TEMPLATE_ENTRIES = tuple(entry for entry in ENTRIES if not entry.generated)
# The GitHub Actions workflow, in place of (--ci github) or beside (--ci both) the Bitbucket pipeline. Not in
# ENTRIES: the framework repo's root, an example of the default, has no workflow GitHub would run.
GITHUB_ENTRY = Entry(GITHUB_WORKFLOW_FILE, "the same mapping for GitHub Actions: pull requests dry-run, pushes to "
                     "master/main/deploy/** to test, prod behind the production-* environments' reviewers")


def entries(ci: str = DEFAULT_CI) -> tuple[Entry, ...]:
    """What a model repo contains with the CI files of `ci` (one of CI_CHOICES)."""
    if ci not in CI_CHOICES:
        raise UsageError(f"--ci {ci!r}: expected one of {', '.join(CI_CHOICES)}")
    if ci == "bitbucket":
        return ENTRIES
    out = []
    for entry in ENTRIES:
        if entry.path == PIPELINE_FILE:
            out += [entry, GITHUB_ENTRY] if ci == "both" else [GITHUB_ENTRY]
        else:
            out.append(entry)
    return tuple(out)


def _tree(path: Path, relative: str) -> dict[str, Path]:
    if path.is_file():
        return {relative: path}
    found: dict[str, Path] = {}
    for child in sorted(path.iterdir()):
        if child.name not in _SKIPPED and child.suffix not in (".pyc", ".pyo"):
            found.update(_tree(child, f"{relative}/{child.name}"))
    return found


def template_files() -> dict[str, Path]:
    """Every file copied as it is: path in the repo -> its one source in MODEL_REPO."""
    files: dict[str, Path] = {}
    for entry in TEMPLATE_ENTRIES:
        files.update(_tree(entry.source, entry.path))
    return files


def scaffold_files(model_name: str, ci: str = DEFAULT_CI) -> dict[str, bytes]:
    """Path in the new repo -> content, in the order of entries(ci)."""
    files: dict[str, bytes] = {}
    for entry in entries(ci):
        if entry.generated:
            files[entry.path] = entry.source.read_text(encoding="utf-8").format(name=model_name).encode()
        else:
            files.update({path: source.read_bytes() for path, source in _tree(entry.source, entry.path).items()})
    return files


def copy_template(root: Path) -> Path:
    """The template files (no settings, README or .gitignore) copied into root, scripts executable."""
    for relative, source in template_files().items():
        _write(root / relative, source.read_bytes())
    return root


def _write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    if path.suffix == ".sh":
        path.chmod(0o755)


def scaffold(directory: Path, model_name: str, force: bool = False,
             shown: str | None = None, ci: str = DEFAULT_CI) -> tuple[list[str], list[str]]:
    """Write a model repo for model_name into directory: (the files written, those of them it overwrote).

    Refuses, writing nothing, when files exist (unless force) or are in the way even of force (a folder where a file
    goes, a settings file of the other kind); `shown` names the directory in that message."""
    if not is_model_name(model_name):
        raise UsageError(f"--model-name {model_name!r} is not a model name: use lowercase letters, digits and '_', "
                         "starting with a letter, at most 40 characters")
    files = scaffold_files(model_name, ci)
    existing = [name for name in (*files, *CONFLICTING) if (directory / name).exists()]
    in_the_way = [name for name in existing if name in CONFLICTING or (directory / name).is_dir()]
    if in_the_way or (existing and not force):
        blocked = in_the_way if in_the_way else existing
        advice = "move them away" if in_the_way else "move them away, or add --force to overwrite them"
        raise UsageError(f"{shown or directory} already has {', '.join(blocked)}: {advice}")
    for name, content in files.items():
        _write(directory / name, content)
    return list(files), existing
