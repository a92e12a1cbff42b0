"""`mlops models`: the versioned model registry from the shell (upload, list, promote, download, delete).

Tables go to stdout, --json gives the same data for scripts, progress goes to stderr. Errors are MlopsError
(exit 1) or UsageError (exit 2), mapped by the root command.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from akerbp.mlops.vocabulary import ENVIRONMENTS as ENVS
from akerbp.mlops.cli import options
from akerbp.mlops.cli.output import TransferProgress, echo, print_json, print_table, size as _size
from akerbp.mlops.errors import UsageError

if TYPE_CHECKING:
    from akerbp.mlops.registry import ModelVersion
    from cognite.client import CogniteClient


@click.group()
def models() -> None:
    """The versioned model registry: upload, list, promote, download, delete."""


def _client() -> CogniteClient:
    from akerbp.mlops.cdf.client import get_client

    return get_client()


_progress = TransferProgress()


def _emit(info: ModelVersion, as_json: bool, summary: str) -> None:
    if as_json:
        print_json(info.as_dict())
    else:
        echo(summary)


def _parse_metadata(pairs: tuple[str, ...], metadata_file: Path | None) -> dict:
    metadata: dict = {}
    if metadata_file is not None:
        try:
            loaded = json.loads(metadata_file.read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"--metadata-file {metadata_file}: cannot read it as JSON: {e}") from e
        if not isinstance(loaded, dict):
            raise UsageError(f"--metadata-file {metadata_file}: must hold a JSON object, not {type(loaded).__name__}")
        metadata.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--metadata {pair!r}: write it as KEY=VALUE")
        metadata[key.strip()] = value
    return metadata


json_option = options.json_output()


@models.command()
@click.argument("model")
@options.env(help="Target environment (default: $ENV, else dev).")
@click.option("--folder", required=True, type=click.Path(path_type=Path), help="The artifact folder to upload.")
@click.option("--metadata", "pairs", multiple=True, metavar="KEY=VALUE", help="Metadata to attach (repeatable).")
@click.option("--metadata-file", type=click.Path(dir_okay=False, path_type=Path), help="A JSON object of metadata.")
@click.option("--dataset", default="mlops", show_default=True, help="External id of the data set of the files.")
@json_option
def upload(model: str, env: str | None, folder: Path, pairs: tuple[str, ...], metadata_file: Path | None, dataset: str,
           as_json: bool) -> None:
    """Upload the artifact folder given by --folder as the next version of MODEL.

    dev and test take uploads; prod takes versions only by promotion (`mlops models promote`).
    """
    from akerbp.mlops.registry import upload_new_model_version

    env = options.env_or_default(env)
    metadata = _parse_metadata(pairs, metadata_file)
    info = upload_new_model_version(model, env, folder, metadata, client=_client(), dataset=dataset,
                                    progress=_progress)
    _emit(info, as_json, f"uploaded {info['model_id']}: {info.get('files', '?')} files, {_size(info['size'])}, "
                         f"sha256 {info['sha256'][:12]}")


@models.command(name="list")
@click.argument("model", required=False)
@options.env(help="Only this environment.")
@json_option
def list_(model: str | None, env: str | None, as_json: bool) -> None:
    """List the versions of MODEL (default: every model), deleted ones excluded."""
    from akerbp.mlops.registry import list_model_versions

    versions = list_model_versions(model, env, client=_client())
    if model and not versions:
        from akerbp.mlops.cli.known_models import check_known

        check_known(model, [_client()])
    if as_json:
        print_json([v.as_dict() for v in versions])
        return
    if not versions:
        echo("no model versions" + (f" of {model}" if model else "") + (f" in {env}" if env else ""))
        return
    rows = [["MODEL", "ENV", "VERSION", "SIZE", "SHA256", "CREATED", "BY", "PROMOTED FROM"]]
    for v in versions:
        rows.append([v["model_name"], v["env"], str(v["version"]), _size(v["size"]), v["sha256"][:12],
                     v["created_time"], v["created_by"], v["promoted_from"] or "-"])
    print_table(rows)


@models.command()
@click.argument("model")
@click.option("--version", required=True, type=int, help="The version number to promote (kept in the target).")
@click.option("--to", "to_env", type=click.Choice(ENVS[1:]), default="prod", show_default=True)
@click.option("--from", "from_env", type=click.Choice(ENVS[:-1]), help="Source env (default: the one before --to).")
@json_option
def promote(model: str, version: int, to_env: str, from_env: str | None, as_json: bool) -> None:
    """Copy version N of MODEL to the next environment (test -> prod by default), verified by sha256."""
    from akerbp.mlops.registry import promote_model

    info = promote_model(model, version, to_env, client=_client(), from_env=from_env, progress=_progress)
    if info.get("unchanged"):
        by = ", by a promotion that ran at the same time" if info.get("concurrent") else ""
        summary = f"{info['model_id']} is already promoted (sha256 {info['sha256'][:12]}{by}): nothing to do"
    else:
        summary = f"promoted {info['promoted_from']} to {info['model_id']} (sha256 {info['sha256'][:12]})"
    _emit(info, as_json, summary)


@models.command()
@click.argument("model")
@options.env(help="Environment (default: $ENV, else dev).")
@click.option("--version", type=int, help="Version number (default: the latest).")
@click.option("--to", "target", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A new or empty folder to extract into.")
@json_option
def download(model: str, env: str | None, version: int | None, target: Path, as_json: bool) -> None:
    """Download, verify (sha256) and extract a version of MODEL into a new or empty folder."""
    from akerbp.mlops.registry import download_model_version

    env = options.env_or_default(env)
    info = download_model_version(model, env, target, version, client=_client(), progress=_progress)
    _emit(info, as_json, f"extracted {info['model_id']} into {info['path']} (sha256 {info['sha256'][:12]} verified)")


@models.command()
@click.argument("model")
@options.env(help=None, required=True)
@click.option("--version", required=True, type=int)
@click.option("--yes", is_flag=True, help="Confirm: the version is gone for good (its number is never reused).")
@click.option("--force", is_flag=True, help="Required as well to delete a prod version.")
@json_option
def delete(model: str, env: str, version: int, yes: bool, force: bool, as_json: bool) -> None:
    """Delete a version of MODEL: a tombstone keeps its number taken forever."""
    from akerbp.mlops.registry import delete_model_version

    if not yes:
        raise UsageError(f"deleting {model}/{env}/{version} cannot be undone: add --yes to confirm")
    info = delete_model_version(model, env, version, client=_client(), confirm=True, force=force)
    _emit(info, as_json, f"deleted {info['model_id']} (its number stays taken)")
