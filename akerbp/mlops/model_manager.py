"""Compatibility module: the registry's API under the name the original akerbp.mlops gave it.

`import akerbp.mlops.model_manager as mm` keeps working for notebooks and scripts; the registry itself is the package
akerbp.mlops.registry (import from there in new code). Nothing here but re-exports. Bundled into CDF Functions too,
so model code written for the seed that imports it there keeps working.
"""
from __future__ import annotations

from akerbp.mlops.registry import (  # noqa: F401 -- re-exported
    ModelVersion,
    Progress,
    check_metadata_limits,
    delete_model_version,
    download_model_version,
    get_model_version,
    list_model_versions,
    promote_model,
    upload_new_model_version,
)
from akerbp.mlops.registry.index import BLOCK, DENSE_MARKERS, INDEX_DIRECTORY, MAX_PROBE, marker_xid  # noqa: F401
from akerbp.mlops.registry.promotion import PROMOTION_STALE_AFTER  # noqa: F401 -- re-exported
from akerbp.mlops.registry.rules import (  # noqa: F401 -- re-exported
    DIRECTORY,
    ENVS,
    MAX_KEY_BYTES,
    MAX_KEYS,
    MAX_TOTAL_BYTES,
    MAX_VALUE_BYTES,
    MODEL_NAME_MAX,
    MODEL_NAME_PATTERN,
    MODEL_NAME_RULE,
    RESERVED_KEYS,
    XID_RE,
)
from akerbp.mlops.registry.versions import FRAMEWORK_VERSION, MAX_CLAIM_ATTEMPTS, PROD_UPLOAD_REFUSED  # noqa: F401

__all__ = [
    "upload_new_model_version", "list_model_versions", "get_model_version", "download_model_version",
    "promote_model", "delete_model_version", "check_metadata_limits",
]
