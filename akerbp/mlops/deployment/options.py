"""FunctionOptions: what CDF needs of a function besides its code, as one typed value from build to release.

build.function_options makes them from the settings, and the build writes them into the function folder
(mlops_function.json, as_dict(): the zip is read back by rollback, also of deployments made before this class
existed); the build's BuiltFolder, the deploy, release and rollback pass this class, and functions.create turns it
into cognite-sdk's arguments.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from akerbp.mlops.function_folder import HANDLER_FILE

DEFAULT_FUNCTION_PATH = HANDLER_FILE


@dataclass(frozen=True)
class FunctionOptions:
    external_id: str = ""
    name: str = ""
    description: str | None = None
    owner: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # the user's (info.<service>.metadata); never mlops_*
    env_vars: dict[str, str] = field(default_factory=dict)
    cpu: float | None = None
    memory: float | None = None
    runtime: str | None = None
    function_path: str = DEFAULT_FUNCTION_PATH
    secrets: list[str] = field(default_factory=list)  # secret NAMES; values come from secrets.resolve

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FunctionOptions:
        """From mlops_function.json (a code zip's, for rollback): unknown keys are ignored, missing ones default."""
        def number(key: str) -> float | None:
            value = values.get(key)
            return None if value is None else float(value)

        return cls(
            external_id=str(values.get("external_id") or ""), name=str(values.get("name") or ""),
            description=values.get("description"), owner=values.get("owner"),
            metadata={str(k): str(v) for k, v in (values.get("metadata") or {}).items()},
            env_vars={str(k): str(v) for k, v in (values.get("env_vars") or {}).items()},
            cpu=number("cpu"), memory=number("memory"), runtime=values.get("runtime"),
            function_path=str(values.get("function_path") or DEFAULT_FUNCTION_PATH),
            secrets=[str(s) for s in values.get("secrets") or []],
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
