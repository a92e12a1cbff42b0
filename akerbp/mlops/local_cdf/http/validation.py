"""Request body checks that answer as CDF does: a 400 naming the offending field."""
from __future__ import annotations

from typing import Any

from .errors import bad_request

NUMBER = (int, float)
MAX_ID = 2**53 - 1  # CDF's ids are 1..2**53-1 (exact in a JavaScript number)
MAX_LONG = 2**63 - 1  # no integer field of CDF's is wider than a signed 64-bit long
TYPE_NAMES = {str: "string", int: "integer", bool: "boolean", dict: "object", list: "array", NUMBER: "number"}


def check(obj: Any, spec: dict[str, Any], path: str, required: tuple[str, ...] = ()) -> dict:
    """`spec` maps field -> type (or tuple of types); unknown fields, wrong types and missing fields are 400s."""
    if not isinstance(obj, dict):
        raise bad_request(f"Expected an object at {path or 'the request body'}, got {_kind(obj)}")
    for key, value in obj.items():
        where = f"{path}.{key}" if path else key
        if key not in spec:
            raise bad_request(f"Unrecognized field '{where}'")
        expected = spec[key]
        if value is None:
            continue
        if not _is(value, expected):
            raise bad_request(f"Field '{where}' must be {_type_name(expected)}, got {_kind(value)}")
        if isinstance(value, int) and not isinstance(value, bool) and not -MAX_LONG - 1 <= value <= MAX_LONG:
            raise bad_request(f"Field '{where}' is out of range: integers are at most 64-bit")
    for key in required:
        if obj.get(key) is None:
            where = f"{path}.{key}" if path else key
            raise bad_request(f"Missing field '{where}'")
    return obj


def items(body: dict, path: str = "items", max_items: int = 1000, min_items: int = 1) -> list:
    value = body.get("items")
    if not isinstance(value, list):
        raise bad_request(f"Field '{path}' must be an array")
    if not min_items <= len(value) <= max_items:
        raise bad_request(f"Field '{path}' must have between {min_items} and {max_items} items, got {len(value)}")
    return value


def identifiers(body: dict, max_items: int = 1000, snake_case: bool = False) -> list[dict]:
    """`[{"id": 1} | {"externalId": "x"}]`, each with exactly one of the two."""
    xid_key = "external_id" if snake_case else "externalId"
    result: list[dict] = []
    for i, ident in enumerate(items(body, max_items=max_items)):
        where = f"items[{i}]"
        if not isinstance(ident, dict):
            raise bad_request(f"Expected an object at {where}")
        keys = set(ident) & {"id", "externalId", "external_id"}
        if len(keys) != 1 or set(ident) - keys:
            raise bad_request(f"{where} must have exactly one of 'id' or '{xid_key}'")
        key = keys.pop()
        value = ident[key]
        if key == "id":
            result.append({"id": resource_id(value, f"{where}.id")})
        else:
            if not isinstance(value, str) or not value:
                raise bad_request(f"Field '{where}.{key}' must be a non-empty string")
            result.append({"externalId": value})
    return result


def resource_id(value: Any, where: str) -> int:
    """A CDF id (1..2**53-1), else a 400 naming the field."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_ID:
        raise bad_request(f"Field '{where}' must be an integer from 1 to {MAX_ID}, got {str(value)[:40]}")
    return value


def limit(body: dict, default: int = 100, maximum: int = 1000) -> int:
    value = body.get("limit", default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        raise bad_request(f"Field 'limit' must be an integer between 1 and {maximum}, got {value!r}")
    return value


def partition(body: dict) -> tuple[int, int] | None:
    value = body.get("partition")
    if value is None:
        return None
    try:
        index, count = (int(x) for x in str(value).split("/"))
    except ValueError:
        raise bad_request(f"Field 'partition' must look like 'i/N', got {value!r}") from None
    if not 1 <= index <= count <= 10:
        raise bad_request(f"Field 'partition' must be i/N with 1 <= i <= N <= 10, got {value!r}")
    return index - 1, count


def text_limit(value: Any, where: str, maximum: int) -> None:
    if isinstance(value, str) and len(value) > maximum:
        raise bad_request(f"Field '{where}' is {len(value)} characters long; the limit is {maximum}")


def text_limits(body: dict, where: str, maxima: dict[str, int]) -> None:
    """text_limit for each field of `maxima` (field -> most characters), in that order."""
    for name, maximum in maxima.items():
        text_limit(body.get(name), f"{where}.{name}", maximum)


def metadata_limits(meta: Any, where: str, max_pairs: int, max_key: int, max_value: int, total: int | None = None):
    if meta is None:
        return
    if not isinstance(meta, dict):
        raise bad_request(f"Field '{where}' must be an object of strings")
    if len(meta) > max_pairs:
        raise bad_request(f"Field '{where}' has {len(meta)} keys; the limit is {max_pairs}")
    size = 0
    for key, value in meta.items():
        if not isinstance(value, str):
            raise bad_request(f"Field '{where}.{key}' must be a string, got {_kind(value)}")
        if len(key) > max_key:
            raise bad_request(f"Key '{key[:40]}' in '{where}' is {len(key)} characters; the limit is {max_key}")
        if len(value) > max_value:
            raise bad_request(f"Value of '{where}.{key}' is {len(value)} characters; the limit is {max_value}")
        size += len(key.encode()) + len(value.encode())
    if total is not None and size > total:
        raise bad_request(f"Field '{where}' is {size} bytes in total; the limit is {total}")


def _is(value: Any, expected: Any) -> bool:
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def _type_name(expected: Any) -> str:
    if expected in TYPE_NAMES:
        return TYPE_NAMES[expected]
    if isinstance(expected, tuple):
        return " or ".join(TYPE_NAMES.get(t, t.__name__) for t in expected)
    return expected.__name__


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}.get(
        type(value), type(value).__name__ if value is not None else "null"
    )
