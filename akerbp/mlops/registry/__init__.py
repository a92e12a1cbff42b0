"""The versioned model registry on CDF Files.

A version is one deterministic tar.gz of an artifact folder, stored as the file `{model}/{env}/{N}` in directory
/mlops, with its sha256, size, who and which commit made it, and the user's metadata. Numbers are never shared,
skipped-and-lost or reused (a deleted version leaves a tombstone); "latest" is the highest fully uploaded one, found
in 2 requests up to 25,600 versions. prod takes versions only by promotion (or a training service whose deployment
condition is met).

    versions.py       upload, list, get, download, delete
    promotion.py      test N -> prod N, verified, idempotent, safe when concurrent
    index.py          version ids, block markers and the latest-version lookup, the data set
    rules.py          names, environments, numbers, metadata limits and reserved keys
    archive.py        deterministic archives and their all-or-nothing safe extraction
    transfer.py       moving archives to and from CDF Files with progress
    model_version.py  ModelVersion, the typed result (as_dict() for --json)
    errors.py         one error class per cause (VersionNotFound, ChecksumMismatch, ...)
    notebook.py       the original notebook API with a remembered client (cdf/helpers.py)

Bundled whole into every CDF Function (the training service uploads from there): it imports the stdlib,
cognite-sdk, akerbp.mlops.errors, vocabulary, audit, utils.provenance and itself only.
"""
from __future__ import annotations

from akerbp.mlops.registry.errors import (
    ChecksumMismatch,
    ProdUploadRefused,
    PromotionConflict,
    RegistryRequestFailed,
    UnsafeArchive,
    UploadFailed,
    VersionDeleted,
    VersionIncomplete,
    VersionNotFound,
    VersionUnavailable,
)
from akerbp.mlops.registry.model_version import ModelVersion
from akerbp.mlops.registry.promotion import promote_model
from akerbp.mlops.registry.rules import RESERVED_KEYS, check_metadata_limits
from akerbp.mlops.registry.transfer import Progress
from akerbp.mlops.registry.versions import (
    delete_model_version,
    download_model_version,
    get_model_version,
    list_model_versions,
    upload_new_model_version,
)

__all__ = [
    "ModelVersion", "Progress", "RESERVED_KEYS",
    "upload_new_model_version", "list_model_versions", "get_model_version", "download_model_version",
    "promote_model", "delete_model_version", "check_metadata_limits",
    "RegistryRequestFailed", "VersionUnavailable", "VersionNotFound", "VersionDeleted", "VersionIncomplete",
    "ChecksumMismatch", "UnsafeArchive", "UploadFailed", "PromotionConflict", "ProdUploadRefused",
]
