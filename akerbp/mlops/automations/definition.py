"""An automation validated into the one form every part uses (AutomationDefinition: register, the workflow's tasks,
the steps in CDF). validation.py makes it from what the loader read; as_dict() is the JSON the workflow's tasks carry.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class AutomationDefinition:
    """One validated automation; the parts are the JSON of the contract (as_dict())."""

    name: str
    model: str
    description: str
    enabled: bool
    execute_immediately: bool
    env: str  # where it is registered: the last of its deployment environments (a BatchExecution's environment)
    trigger: dict[str, Any]
    action: dict[str, Any]
    on_success: dict[str, Any] | None = None
    on_error: dict[str, Any] | None = None
    line: int | None = field(default=None, compare=False)  # where the file defines it, for messages only

    @property
    def environments(self) -> list[str]:
        if self.action.get("type") == "batch":
            return [str(self.action.get("environment") or self.env)]
        return list(self.action["deployment"]["environments"])

    def uses_sql(self) -> bool:
        """Whether it evaluates SQL in CDF (a metric-based trigger, a dynamic threshold): its function needs duckdb."""
        return uses_sql(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps({
            "name": self.name, "model": self.model, "description": self.description, "enabled": self.enabled,
            "execute_immediately": self.execute_immediately, "env": self.env, "trigger": self.trigger,
            "action": self.action, "on_success": self.on_success, "on_error": self.on_error}))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AutomationDefinition:
        """From as_dict()'s JSON (a workflow's task data): trusted, not re-validated."""
        return cls(name=values["name"], model=values["model"], description=values.get("description") or "",
                   enabled=bool(values.get("enabled", True)),
                   execute_immediately=bool(values.get("execute_immediately", False)), env=values["env"],
                   trigger=dict(values["trigger"]), action=dict(values["action"]),
                   on_success=values.get("on_success"), on_error=values.get("on_error"))

    def hash(self) -> str:
        """sha256 of the canonical JSON: equal definitions, equal hashes."""
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def secret_names(self) -> list[str]:
        """The secrets its notifications read (names only), sorted."""
        return secret_names(self.as_dict())


def secret_names(definition: Mapping[str, Any]) -> list[str]:
    """The notification secret names of an as_dict() definition, sorted."""
    names: set[str] = set()
    for target in (definition.get("on_success"), definition.get("on_error")):
        if not target:
            continue
        names.update(n for n in (target.get("webhook_secret"), target.get("url_secret")) if n)
        names.update((target.get("header_secrets") or {}).values())
    return sorted(names)


def uses_sql(definition: Mapping[str, Any]) -> bool:
    """Whether an as_dict() definition has a metric-based trigger or a dynamic (SQL) threshold."""
    from akerbp.mlops.conditions import is_sql

    trigger = definition.get("trigger") or {}
    conditions = (definition.get("action") or {}).get("deployment_condition") or []
    return trigger.get("type") == "metric" or any(is_sql(c.get("threshold")) for c in conditions if c)
