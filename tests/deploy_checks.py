"""What the deploy tests check about a live function after a deploy (shared by the interrupt and concurrency tests)."""
from __future__ import annotations

from akerbp.mlops.deployment import functions, release
from akerbp.mlops.deployment.lock import lock_xid


def change_code(root, tag: str) -> None:
    """A change of the template model's code (a new content hash) without changing what it does."""
    model = root / "model_code" / "model.py"
    model.write_text(model.read_text() + f"\n# change {tag}\n")


def live_state(client, live: str) -> tuple[str, bool]:
    """(the live function's content hash, whether it passed its smoke check)."""
    fn = client.functions.retrieve(external_id=live)
    return fn.metadata["mlops_hash"], release.is_verified(client, fn)


def assert_clean(client, live: str) -> None:
    """Nothing half-done: no standby, no unproven code file, no deploy lock."""
    assert functions.standbys(client, live) == []
    statuses = {f.metadata.get("mlops_status") for f in functions.code_files(client, live)}
    assert statuses <= {"deployed", "failed"}, statuses
    assert client.events.retrieve(external_id=lock_xid(live)) is None
