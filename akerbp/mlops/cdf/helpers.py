"""The notebook API of the original akerbp.mlops, kept so existing notebooks run unchanged:

    from akerbp.mlops.cdf.helpers import set_up_cdf_client, upload_new_model_version
    set_up_cdf_client()
    folder_info = upload_new_model_version(model_name, env, folder_path, metadata)

A thin layer over akerbp.mlops.model_manager with a remembered default client.
"""
from __future__ import annotations

from akerbp.mlops import model_manager

_default_client = None


def set_up_cdf_client(context: str = "run"):
    """Connect to the configured CDF project (or the local CDF) and use it for the helpers below.

    `context` selected one of three API keys in the original; OIDC credentials serve every context now, so it is
    accepted and ignored.
    """
    global _default_client
    from akerbp.mlops.cdf.client import get_client

    _default_client = get_client()
    return _default_client


def _client(client):
    return client if client is not None else _default_client  # None: model_manager asks get_client()


def upload_new_model_version(model_name: str, env: str, folder_path, metadata: dict | None = None, *,
                             client=None, dataset: str = "mlops") -> dict:
    """Upload folder_path as the next version of model_name in env (dev or test); returns its info."""
    return model_manager.upload_new_model_version(model_name, env, folder_path, metadata,
                                                  client=_client(client), dataset=dataset)


def list_model_versions(model_name: str | None = None, env: str | None = None, *, client=None) -> list[dict]:
    return model_manager.list_model_versions(model_name, env, client=_client(client))


def get_model_version(model_name: str, env: str, version: int | None = None, *, client=None) -> dict:
    return model_manager.get_model_version(model_name, env, version, client=_client(client))


def download_model_version(model_name: str, env: str, target_folder, version: int | None = None, *,
                           client=None) -> dict:
    return model_manager.download_model_version(model_name, env, target_folder, version, client=_client(client))


def promote_model(model_name: str, version: int, to_env: str = "prod", *, client=None,
                  from_env: str | None = None) -> dict:
    return model_manager.promote_model(model_name, version, to_env, client=_client(client), from_env=from_env)
