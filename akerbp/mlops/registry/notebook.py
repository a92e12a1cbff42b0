"""The notebook API of the original akerbp.mlops, kept so existing notebooks run unchanged:

    from akerbp.mlops.cdf.helpers import set_up_cdf_client, upload_new_model_version
    set_up_cdf_client()
    folder_info = upload_new_model_version(model_name, env, folder_path, metadata)

The registry's operations with a remembered default client (cdf/helpers.py re-exports these names).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from akerbp.mlops.registry import promotion, versions
from akerbp.mlops.registry.model_version import ModelVersion

if TYPE_CHECKING:
    from os import PathLike

    from cognite.client import CogniteClient

_default_client: CogniteClient | None = None


def set_up_cdf_client(context: str = "run") -> CogniteClient:
    """Connect to the configured CDF project (or the local CDF) and use it for the functions below.

    `context` selected one of three API keys in the original; OIDC credentials serve every context now, so it is
    accepted and ignored.
    """
    global _default_client
    from akerbp.mlops.cdf.client import get_client

    _default_client = get_client()
    return _default_client


def _client(client: CogniteClient | None) -> CogniteClient | None:
    return client if client is not None else _default_client  # None: the registry asks get_client()


def upload_new_model_version(model_name: str, env: str, folder_path: str | PathLike[str],
                             metadata: dict | None = None, *, client: CogniteClient | None = None,
                             dataset: str = "mlops") -> ModelVersion:
    """Upload folder_path as the next version of model_name in env (dev or test)."""
    return versions.upload_new_model_version(model_name, env, folder_path, metadata, client=_client(client),
                                             dataset=dataset)


def list_model_versions(model_name: str | None = None, env: str | None = None, *,
                        client: CogniteClient | None = None) -> list[ModelVersion]:
    """Every usable version, sorted by model, environment and number."""
    return versions.list_model_versions(model_name, env, client=_client(client))


def get_model_version(model_name: str, env: str, version: int | None = None, *,
                      client: CogniteClient | None = None) -> ModelVersion:
    """One version (None: the latest)."""
    return versions.get_model_version(model_name, env, version, client=_client(client))


def download_model_version(model_name: str, env: str, target_folder: str | PathLike[str],
                           version: int | None = None, *, client: CogniteClient | None = None) -> ModelVersion:
    """Download, verify and extract a version (None: the latest) into a new or empty folder."""
    return versions.download_model_version(model_name, env, target_folder, version, client=_client(client))


def promote_model(model_name: str, version: int, to_env: str = "prod", *, client: CogniteClient | None = None,
                  from_env: str | None = None) -> ModelVersion:
    """Copy version N to the next environment (test -> prod by default)."""
    return promotion.promote_model(model_name, version, to_env, client=_client(client), from_env=from_env)


__all__ = ["set_up_cdf_client", "upload_new_model_version", "list_model_versions", "get_model_version",
           "download_model_version", "promote_model"]
