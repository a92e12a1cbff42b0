"""The notebook API of the original akerbp.mlops, at the import path existing notebooks use:

    from akerbp.mlops.cdf.helpers import set_up_cdf_client, upload_new_model_version

A compatibility module: the functions live in akerbp.mlops.registry.notebook (with the remembered default client).
"""
from __future__ import annotations

from akerbp.mlops.registry.notebook import (  # noqa: F401 -- re-exported
    download_model_version,
    get_model_version,
    list_model_versions,
    promote_model,
    set_up_cdf_client,
    upload_new_model_version,
)

__all__ = ["set_up_cdf_client", "upload_new_model_version", "list_model_versions", "get_model_version",
           "download_model_version", "promote_model"]
