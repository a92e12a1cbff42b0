"""The plan of one model's deploy: computed once, read-only, from what is live; `--dry-run` prints it and the
apply (apply.py) executes it. describe() is its text (cli/output.py prints it and the summary table).

Actions: `create` (nothing live), `replace` (a standby built first when the live function answers, then the live
function replaced; its schedules kept), `verify` (the live function runs this content but never passed its smoke
check: check it now, roll back if it fails), `unchanged` (the live function runs this content, verified: nothing
to do, and the model tests are not rerun unless --retest, since the content hash covers code, tests, artifact,
requirements and options; tests outside the bundled code folder are rerun: the hash does not cover them).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from akerbp.mlops.deployment import functions, records

if TYPE_CHECKING:
    from cognite.client import CogniteClient
    from cognite.client.data_classes.functions import Function


ACTIONS = ("create", "replace", "verify", "unchanged")


@dataclass
class ModelPlan:
    function: str
    action: str  # one of ACTIONS
    hash: str
    artifact: str | None = None  # the model id served (None: training)
    version: int | None = None
    live_hash: str | None = None
    run_tests: bool = True
    tests: str = ""  # why the model tests run or not
    upload: str | None = None  # the code file's external id
    create: list[str] = field(default_factory=list)  # functions created, in order
    remove: list[str] = field(default_factory=list)  # functions removed (the live one replaced, standbys)
    delete_code_files: list[str] = field(default_factory=list)
    schedules_kept: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.action in ("create", "replace")

    @property
    def verify(self) -> bool:
        return self.action == "verify"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "changed": self.changed, "verify": self.verify}


def make(client: CogniteClient | None, xid: str, content_hash: str, live: Function | None, *, verified: bool,
         artifact: str | None, version: int | None, force: bool, retest: bool, keep: int,
         untested_inputs: Sequence[str] = ()) -> ModelPlan:
    """The plan (read-only). client None: nothing can be read (a dry run on a fresh checkout): nothing is live.
    untested_inputs: files the model tests read that the content hash does not cover (they force a rerun)."""
    live_hash = (live.metadata or {}).get("mlops_hash") if live is not None else None
    ready = live is not None and live.status == "Ready"
    same = ready and live_hash == content_hash
    if live is None:
        action = "create"
    elif same and verified and not force:
        action = "unchanged"
    elif same and not force and records.code_file_of(live) is not None:
        action = "verify"
    else:
        action = "replace"
    plan = ModelPlan(xid, action, content_hash, artifact, version, live_hash)
    if action == "unchanged" and not retest and not untested_inputs:
        plan.run_tests, plan.tests = False, "not rerun: the live function passed its checks with this content"
    elif action == "unchanged":
        plan.tests = "rerun: --retest" if retest else f"rerun: the content hash does not cover {', '.join(untested_inputs)}"
    if not plan.changed:
        return plan
    standby = functions.standby_xid(xid, content_hash)
    plan.upload = functions.code_xid(xid, content_hash)
    if ready:
        plan.create.append(standby)
    plan.create.append(xid)
    if live is not None:
        plan.remove.append(xid)
    if ready:
        plan.remove.append(standby)
    if client is not None and live is not None:
        plan.remove += [f.external_id for f in functions.standbys(client, xid) if f.external_id != standby]
        plan.schedules_kept = [s.name for s in client.functions.schedules.list(function_id=live.id, limit=functions.FUNCTIONS_LIMIT)]
        kept = {d.file_id for d in records.history(client, xid)[: keep - 1]}
        plan.delete_code_files = [f.external_id for f in functions.code_files(client, xid)
                                  if f.id not in kept and f.external_id != plan.upload]
    return plan


def describe(p: ModelPlan) -> list[str]:
    """The plan of one model, as text lines."""
    what = f"artifact {p.artifact}" if p.artifact else "no artifact (training)"
    tests = f"; model tests {p.tests}" if p.tests else ""
    if p.action == "verify":
        return [f"  {p.function}: {what}; hash {p.hash[:10]} is live but was never verified (a deploy of it was "
                "stopped): smoke-check it, roll back if it fails"]
    if p.action == "unchanged":
        return [f"  {p.function}: {what}; unchanged (hash {p.hash[:10]} is live): nothing to do{tests}"]
    was = f", live has {p.live_hash[:10]}" if p.live_hash else ", nothing live"
    lines = [f"  {p.function}: {what}; changed (hash {p.hash[:10]}{was})",
             f"    upload code file {p.upload}", f"    create: {', '.join(p.create)}"]
    if p.remove:
        notes = {p.function: " (replaced)", functions.standby_xid(p.function, p.hash): " (once replaced and verified)"}
        lines.append(f"    remove: {', '.join(x + notes.get(x, '') for x in p.remove)}")
    if p.schedules_kept:
        lines.append(f"    keep schedules: {', '.join(p.schedules_kept)}")
    if p.delete_code_files:
        lines.append(f"    delete code files: {', '.join(p.delete_code_files)}")
    return lines
