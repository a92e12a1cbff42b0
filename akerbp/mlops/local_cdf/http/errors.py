"""The CDF error envelope: every failure the server reports goes through CDFError."""
from __future__ import annotations

from typing import Any


class CDFError(Exception):
    """Rendered as `{"error": {"code", "message", "missing"?, "duplicated"?}}` with the given HTTP status."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        missing: list[dict] | None = None,
        duplicated: list[dict] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.missing = missing
        self.duplicated = duplicated
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.missing:
            error["missing"] = self.missing
        if self.duplicated:
            error["duplicated"] = self.duplicated
        return {"error": error}


def bad_request(message: str) -> CDFError:
    return CDFError(400, message)


def not_found(missing: list[dict], what: str = "Resources") -> CDFError:
    return CDFError(400, f"{what} not found", missing=missing)


def duplicated(items: list[dict], what: str = "Resources") -> CDFError:
    return CDFError(409, f"{what} with these identifiers already exist", duplicated=items)
