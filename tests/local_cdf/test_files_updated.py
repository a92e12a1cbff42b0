"""Files listed by lastUpdatedTime (the dashboard's incremental sync of the registry) through the real cognite-sdk:
the window's files and only them, with other filters and partitions, and by the store's index, not a scan."""
from __future__ import annotations

import time

from cognite.client.data_classes import FileMetadataUpdate

from akerbp.mlops.local_cdf.store import FILES_UPDATED


def after(t_ms: int, timeout_s: float = 1.0) -> None:
    """Return once the wall clock passed t_ms (a wait of a millisecond or two, with a deadline)."""
    deadline = time.monotonic() + timeout_s
    while time.time() * 1000 <= t_ms + 1:
        if time.monotonic() > deadline:
            raise AssertionError("the clock did not move on")


def test_a_lastupdatedtime_window_lists_what_changed_in_it(local_cdf, client):
    made = [client.files.upload_bytes(b"x", name=f"f{i}", external_id=f"m/dev/{i}", directory="/mlops")
            for i in range(5)]
    client.files.upload_bytes(b"x", name="other", external_id="other", directory="/elsewhere")
    newest = max(f.last_updated_time for f in client.files.list(limit=None))
    after(newest)
    client.files.update(FileMetadataUpdate(external_id="m/dev/3").metadata.add({"deleted": "true"}))
    changed = client.files.retrieve(external_id="m/dev/3")
    assert changed.last_updated_time > newest
    window = {"min": newest + 1}
    assert [f.external_id for f in client.files.list(last_updated_time=window, limit=None)] == ["m/dev/3"]
    assert [f.external_id for f in client.files.list(last_updated_time=window, directory_prefix="/mlops",
                                                     limit=None)] == ["m/dev/3"]
    assert client.files.list(last_updated_time=window, directory_prefix="/elsewhere", limit=None) == []
    assert client.files.list(last_updated_time={"max": newest}, limit=None, partitions=3).as_external_ids() \
        and "m/dev/3" not in client.files.list(last_updated_time={"max": newest}, limit=None).as_external_ids()
    everything = client.files.list(last_updated_time={"min": 0}, directory_prefix="/mlops", limit=None, partitions=2)
    assert sorted(everything.as_external_ids()) == sorted(f.external_id for f in made)
    one_ms = {"min": changed.last_updated_time, "max": changed.last_updated_time}
    assert client.files.list(last_updated_time=one_ms, limit=None).as_external_ids() == ["m/dev/3"]


def test_the_window_is_read_through_the_index(local_cdf, client):
    client.files.upload_bytes(b"x", name="f", external_id="f", directory="/mlops")
    plan = local_cdf.store.conn().execute(
        f"EXPLAIN QUERY PLAN SELECT id FROM resources WHERE project=? AND kind='files' AND {FILES_UPDATED} >= ?",
        ("test", 0)).fetchall()
    assert any("resources_files_updated" in str(row) for row in plan), plan
