"""The plan of `mlops automations register`: per automation created / updated / unchanged / removed, per automation
function the same, as the CLI prints it (describe) and --json gives it (as_dict). prepare.py makes it,
register.py applies it.
"""
from __future__ import annotations

from dataclasses import dataclass

CREATED, UPDATED, UNCHANGED, REMOVED = "created", "updated", "unchanged", "removed"


@dataclass(frozen=True)
class PlannedAutomation:
    """One automation's line of the plan."""

    name: str
    model: str
    env: str
    action: str  # created | updated | unchanged | removed
    workflow: str
    function: str
    cron: str | None = None
    timezone: str | None = None
    enabled: bool | None = None
    changes: tuple[str, ...] = ()  # for updated: what differs from what is registered

    def as_dict(self) -> dict:
        return {"name": self.name, "model": self.model, "env": self.env, "action": self.action,
                "workflow": self.workflow, "trigger": self.workflow, "function": self.function, "cron": self.cron,
                "timezone": self.timezone, "enabled": self.enabled, "changes": list(self.changes)}


@dataclass(frozen=True)
class PlannedFunction:
    """An automation function: built and put live when its code changed, removed with its last automation."""

    external_id: str
    model: str
    action: str  # created | updated | unchanged | removed

    def as_dict(self) -> dict:
        return {"external_id": self.external_id, "model": self.model, "action": self.action}


@dataclass(frozen=True)
class RegisterPlan:
    """The whole plan for one environment; `not_in_file` names registered automations the file no longer has, which
    only --prune removes."""

    env: str
    file: str
    commit: str
    prune: bool
    automations: tuple[PlannedAutomation, ...] = ()
    functions: tuple[PlannedFunction, ...] = ()
    not_in_file: tuple[str, ...] = ()

    @property
    def changes(self) -> bool:
        """Whether applying it writes anything."""
        return any(a.action != UNCHANGED for a in self.automations) or any(
            f.action != UNCHANGED for f in self.functions)

    def counts(self) -> dict[str, int]:
        counts = {CREATED: 0, UPDATED: 0, UNCHANGED: 0, REMOVED: 0}
        for item in self.automations:
            counts[item.action] += 1
        return counts

    def as_dict(self) -> dict:
        return {"env": self.env, "file": self.file, "commit": self.commit, "prune": self.prune,
                "counts": self.counts(), "automations": [a.as_dict() for a in self.automations],
                "functions": [f.as_dict() for f in self.functions], "not_in_file": list(self.not_in_file)}


def describe(plan: RegisterPlan) -> list[str]:
    """The plan as text lines (the CLI prints them)."""
    counts = plan.counts()
    lines = [f"Automations in {plan.env} from {plan.file}: " + ", ".join(f"{n} {k}" for k, n in counts.items())]
    for item in plan.automations:
        when = f"{item.cron} {item.timezone}" if item.cron else ""
        paused = "" if item.enabled in (None, True) else ", paused"
        lines.append(f"  {item.action:9}  {item.name} ({item.model}{', ' + when if when else ''}{paused}) "
                     f"-> workflow {item.workflow}")
        lines += [f"               {change}" for change in item.changes]
    for fn in plan.functions:
        lines.append(f"  function {fn.external_id}: {fn.action}")
    if plan.not_in_file:
        lines.append(f"  registered in {plan.env} but not in the file (kept; --prune removes them): "
                     + ", ".join(plan.not_in_file))
    return lines
