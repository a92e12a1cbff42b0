"""Optional JSON Schema check of a prediction call's input, so bad payloads fail with every violation listed."""
from __future__ import annotations

import json
import threading
from pathlib import Path

from akerbp.mlops.services.responses import ServiceError, get_log

MAX_LISTED = 20

_validators: dict[str, object] = {}
_lock = threading.Lock()
_warned_missing = False


class InputSchemaError(ServiceError):
    """The schema file itself is missing or invalid (a deployment problem, not the caller's)."""


def violations(data, root: Path, schema_file: str | None) -> list[str]:
    """'path: message' for every way `data` breaks the schema; [] if it conforms or there is no schema."""
    if not schema_file:
        return []
    validator = _validator(Path(root), schema_file)
    if validator is None:
        return []
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    listed = [f"{e.json_path}: {e.message}" for e in errors[:MAX_LISTED]]
    if len(errors) > MAX_LISTED:
        listed.append(f"... and {len(errors) - MAX_LISTED} more")
    return listed


def _validator(root: Path, schema_file: str):
    global _warned_missing
    key = str((root / schema_file).resolve())
    with _lock:
        if key in _validators:
            return _validators[key]
        try:
            import jsonschema
        except ImportError:
            if not _warned_missing:
                get_log().warning("jsonschema is not installed: the input schema %s is not checked", schema_file)
                _warned_missing = True
            return None
        try:
            schema = json.loads(Path(key).read_text())
        except FileNotFoundError:
            raise InputSchemaError(f"input schema {schema_file} is missing from the function folder") from None
        except json.JSONDecodeError as e:
            raise InputSchemaError(f"input schema {schema_file} is not valid JSON: {e}") from None
        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as e:
            raise InputSchemaError(f"input schema {schema_file} is not a valid JSON Schema: {e.message}") from None
        _validators[key] = cls(schema)
        return _validators[key]
