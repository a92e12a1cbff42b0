"""The registry's rules: valid model names, environments and version numbers, the metadata a version may carry (keys
the registry reserves, CDF's limits), and how to get a version that is missing.

Part of the registry package bundled into deployed CDF Functions: stdlib, errors and vocabulary only.
"""
from __future__ import annotations

import json
from typing import Any

from akerbp.mlops.vocabulary import ENVIRONMENTS as ENVS
from akerbp.mlops.vocabulary import MODEL_NAME_MAX, MODEL_NAME_PATTERN, MODEL_NAME_RULE  # noqa: F401 -- re-exported
from akerbp.mlops.vocabulary import VERSION_XID as XID_RE  # noqa: F401 -- re-exported
from akerbp.mlops.vocabulary import is_model_name
from akerbp.mlops.errors import UsageError

DIRECTORY = "/mlops"
# CDF Files metadata limits (API spec, FilesMetadataField): checked before anything is created.
MAX_KEYS, MAX_KEY_BYTES, MAX_VALUE_BYTES, MAX_TOTAL_BYTES = 256, 128, 10240, 10240
# Every metadata key the registry stamps on a version, its tombstone or its promoted copy: never the user's.
RESERVED_KEYS = ("version", "model_name", "env", "sha256", "size", "created_by", "git_commit", "framework_version",
                 "deleted", "deleted_by", "deleted_at", "deleted_sha256", "deleted_reason",
                 "promoted_from", "promoted_by", "promoted_at")


# -- names and checks ---------------------------------------------------------------------------------------
def check_model_env(model_name: str, env: str | None) -> None:
    if not is_model_name(model_name):
        raise UsageError(f"model name {model_name!r} is invalid: use {MODEL_NAME_RULE}")
    if env is not None and env not in ENVS:
        raise UsageError(f"environment {env!r} of model {model_name} is invalid: use one of {', '.join(ENVS)}")


def check_version(version: Any, model_name: str) -> int:
    try:
        number = int(version)
    except (TypeError, ValueError):
        number = 0
    if isinstance(version, bool) or number < 1 or str(number) != str(version).strip():
        raise UsageError(f"version {version!r} of model {model_name} is invalid: versions are integers from 1")
    return number


def user_metadata(metadata: dict | None, model_name: str) -> dict[str, str]:
    """User metadata as CDF strings: strings stay, anything else becomes JSON."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise UsageError(f"metadata of model {model_name} must be a dict, got {type(metadata).__name__}")
    result = {}
    for key, value in metadata.items():
        key = str(key)
        if key in RESERVED_KEYS:
            raise UsageError(
                f"metadata key {key!r} of model {model_name} is reserved by the registry (it stamps "
                f"{', '.join(RESERVED_KEYS)}): rename it"
            )
        result[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return result


def decoded_metadata(metadata: dict[str, str]) -> dict[str, Any]:
    """user_metadata read back: the values it JSON-encoded (numbers, dicts, lists) decoded, other strings as they are."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        try:
            out[key] = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            out[key] = value
    return out


def check_metadata_limits(metadata: dict[str, str], what: str) -> None:
    """CDF's Files metadata limits, with the offending key named, before any request is made."""
    if len(metadata) > MAX_KEYS:
        raise UsageError(f"{what}: {len(metadata)} metadata keys, CDF Files allows at most {MAX_KEYS}")
    total = 0
    for key, value in metadata.items():
        key_bytes, value_bytes = len(key.encode()), len(value.encode())
        if key_bytes == 0:
            raise UsageError(f"{what}: a metadata key is empty")
        if key_bytes > MAX_KEY_BYTES:
            raise UsageError(f"{what}: metadata key {key[:40]!r}... is {key_bytes} bytes, CDF allows {MAX_KEY_BYTES}")
        if value_bytes > MAX_VALUE_BYTES:
            raise UsageError(
                f"{what}: the value of metadata key {key!r} is {value_bytes} bytes, CDF allows {MAX_VALUE_BYTES}"
            )
        total += key_bytes + value_bytes
    if total > MAX_TOTAL_BYTES:
        largest = max(metadata, key=lambda k: len(k.encode()) + len(metadata[k].encode()))
        raise UsageError(
            f"{what}: metadata keys and values total {total} bytes, CDF allows {MAX_TOTAL_BYTES} "
            f"(largest: {largest!r}); shorten it or store it in the artifact folder"
        )


def how_to_get(model_name: str, env: str) -> str:
    upload = f"upload one: mlops models upload {model_name} --env {env} --folder PATH"
    if env == "dev":
        return upload
    previous = ENVS[ENVS.index(env) - 1]
    promote = f"promote one: mlops models promote {model_name} --version N --to {env} (from {previous})"
    return promote if env == "prod" else f"{upload}, or {promote}"
