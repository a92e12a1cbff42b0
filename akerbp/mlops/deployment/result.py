"""ModelResult: what one model's deploy did (its plan, what the apply did, timings, the outcome), as the summary
table, --json and the audit event report it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from akerbp.mlops.deployment.plan import ModelPlan

# result -> the audit record's outcome
OUTCOMES = {"deployed": "success", "verified": "success", "unchanged": "unchanged", "rolled_back": "rolled_back",
            "failed": "failed", "interrupted": "interrupted"}


@dataclass
class Applied:
    """What the apply did in CDF, in the plan's terms (compare with ModelPlan: create, remove, upload, ...)."""

    upload: str | None = None
    create: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    delete_code_files: list[str] = field(default_factory=list)
    schedules_kept: list[str] = field(default_factory=list)
    smoke: str | None = None  # passed | failed (None: no smoke call)


@dataclass
class ModelResult:
    model: str
    service: str
    env: str
    function: str
    result: str = "failed"  # deployed | verified | unchanged | failed | rolled_back | interrupted | would deploy
    version: int | None = None
    model_id: str | None = None
    hash: str | None = None
    code_file: int | None = None
    seconds: float = 0.0
    gap_seconds: float | None = None
    message: str = ""
    phases: dict[str, float] = field(default_factory=dict)
    plan: ModelPlan | None = None
    applied: Applied | None = None
    tests: str = ""  # the model tests' summary, or why they did not run
    exit_code: int = 1

    @property
    def ok(self) -> bool:
        return self.result in ("deployed", "verified", "unchanged", "would deploy")

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("exit_code")
        out["plan"] = self.plan.as_dict() if self.plan is not None else None
        out["seconds"] = round(self.seconds, 3)
        out["phases"] = {k: round(v, 3) for k, v in self.phases.items()}
        if self.gap_seconds is not None:
            out["gap_seconds"] = round(self.gap_seconds, 3)
        return out
