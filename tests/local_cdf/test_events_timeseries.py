"""The local CDF's Events, Time series and datapoints, through the real cognite-sdk over HTTP."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import requests
from cognite.client.data_classes import (
    DataSetWrite,
    EventUpdate,
    EventWrite,
    TimeSeriesUpdate,
    TimeSeriesWrite,
)
from cognite.client.exceptions import CogniteAPIError, CogniteDuplicatedError, CogniteNotFoundError

HOUR = 3_600_000


def post(cdf, path, body):
    return requests.post(f"{cdf.base_url}/api/v1/projects/test{path}", json=body,
                         headers={"Authorization": "Bearer t"})


# -- events ---------------------------------------------------------------------------------------------------
@pytest.fixture
def audit(client):
    """Ten deploy/rollback events for two models, startTime 1000 * i."""
    client.events.create([
        EventWrite(external_id=f"audit-{i}", type="deploy" if i % 3 else "rollback", subtype=f"model-{i % 2}",
                   start_time=1000 * i, end_time=1000 * i + 500 if i < 8 else None, source="mlops",
                   metadata={"env": "prod" if i % 2 else "test", "version": str(i)}, asset_ids=[i + 1])
        for i in range(10)
    ])
    return client


def xids(events) -> list[str]:
    return [e.external_id for e in events]


def test_event_fields_round_trip(client):
    ds = client.data_sets.create(DataSetWrite(external_id="ds"))
    created = client.events.create(EventWrite(
        external_id="e", type="deploy", subtype="prod", description="d", source="mlops", start_time=5, end_time=7,
        metadata={"model": "m"}, asset_ids=[1, 2], data_set_id=ds.id))
    got = client.events.retrieve(external_id="e")
    assert got.id == created.id and got.created_time and got.last_updated_time
    assert (got.type, got.subtype, got.description, got.source, got.start_time, got.end_time) == (
        "deploy", "prod", "d", "mlops", 5, 7)
    assert got.metadata == {"model": "m"} and got.asset_ids == [1, 2] and got.data_set_id == ds.id
    assert client.events.retrieve(external_id="missing") is None


def test_event_list_filters(audit):
    assert xids(audit.events.list(type="rollback", limit=None)) == ["audit-0", "audit-3", "audit-6", "audit-9"]
    assert xids(audit.events.list(type="deploy", subtype="model-1", limit=None)) == ["audit-1", "audit-5", "audit-7"]
    assert xids(audit.events.list(metadata={"env": "prod", "version": "3"})) == ["audit-3"]
    assert xids(audit.events.list(start_time={"min": 2000, "max": 4000})) == ["audit-2", "audit-3", "audit-4"]
    assert xids(audit.events.list(end_time={"isNull": True})) == ["audit-8", "audit-9"]
    assert xids(audit.events.list(active_at_time={"min": 8600, "max": 8700})) == ["audit-8"]
    assert xids(audit.events.list(asset_ids=[3, 4])) == ["audit-2", "audit-3"]
    assert xids(audit.events.list(external_id_prefix="audit-1")) == ["audit-1"]
    assert len(audit.events.list(source="mlops", limit=None)) == 10
    assert audit.events.list(source="other") == []
    assert audit.events.aggregate_count(filter={"type": "rollback"}) == 4


def test_event_list_sorted_newest_first_with_cursor(local_cdf, audit):
    newest = audit.events.list(type="deploy", sort=("start_time", "desc"), limit=3)
    assert xids(newest) == ["audit-8", "audit-7", "audit-5"]
    assert xids(audit.events.list(sort=[("type", "asc"), ("start_time", "desc")], limit=5)) == [
        "audit-8", "audit-7", "audit-5", "audit-4", "audit-2"]
    assert xids(audit.events.list(sort=("end_time", "desc"), limit=3)) == ["audit-8", "audit-9", "audit-7"]
    pages, cursor = [], None
    while True:  # page by page, over HTTP, as the SDK does for lists over 1000
        body = {"limit": 4, "sort": [{"property": ["startTime"], "order": "desc"}], "cursor": cursor}
        page = post(local_cdf, "/events/list", body).json()
        pages.append([e["externalId"] for e in page["items"]])
        if not (cursor := page["nextCursor"]):
            break
    assert pages == [[f"audit-{i}" for i in r] for r in (range(9, 5, -1), range(5, 1, -1), range(1, -1, -1))]
    bad = post(local_cdf, "/events/list", {"sort": [{"property": ["color"]}]})
    assert bad.status_code == 400 and "color" in bad.json()["error"]["message"]


def test_event_update_and_delete(audit):
    audit.events.update(EventUpdate(external_id="audit-1").type.set("promotion").metadata.add({"by": "ci"})
                        .metadata.remove(["version"]))
    got = audit.events.retrieve(external_id="audit-1")
    assert got.type == "promotion" and got.metadata == {"env": "prod", "by": "ci"}
    audit.events.delete(external_id=["audit-1", "audit-2"])
    assert len(audit.events.list(limit=None)) == 8
    with pytest.raises(CogniteNotFoundError) as err:
        audit.events.delete(external_id="audit-1")
    assert err.value.not_found == [{"externalId": "audit-1"}]
    audit.events.delete(external_id="audit-1", ignore_unknown_ids=True)


def test_event_errors_name_the_field(local_cdf, client):
    client.events.create(EventWrite(external_id="dup"))
    with pytest.raises(CogniteDuplicatedError) as err:
        client.events.create([EventWrite(external_id="new"), EventWrite(external_id="dup")])
    assert err.value.duplicated == [{"externalId": "dup"}]
    assert client.events.retrieve(external_id="new") is None  # all or nothing
    too_long_or_invalid = [
        (EventWrite(type="t" * 65), "type"), (EventWrite(subtype="s" * 65), "subtype"),
        (EventWrite(description="d" * 501), "description"), (EventWrite(source="s" * 129), "source"),
        (EventWrite(start_time=10, end_time=5), "endTime"), (EventWrite(metadata={"k" * 129: "v"}), "metadata"),
        (EventWrite(data_set_id=999), "dataSetId"),
    ]
    for event, field in too_long_or_invalid:
        with pytest.raises(CogniteAPIError) as err:
            client.events.create(event)
        assert err.value.code == 400 and field in err.value.message
    unknown = post(local_cdf, "/events", {"items": [{"externalId": "x", "colour": "red"}]})
    assert unknown.status_code == 400 and "items[0].colour" in unknown.json()["error"]["message"]
    with pytest.raises(CogniteAPIError, match="filter.assetSubtreeIds"):
        client.events.list(asset_subtree_ids=[1])


# -- time series ----------------------------------------------------------------------------------------------
def test_time_series_create_list_update_delete(local_cdf, client):
    client.time_series.create([
        TimeSeriesWrite(external_id="pred:a", name="A", unit="bar", metadata={"model": "m1"}, description="d"),
        TimeSeriesWrite(external_id="pred:b", name="B", is_string=True, metadata={"model": "m2"}),
        TimeSeriesWrite(external_id="other", name="C", is_step=True, security_categories=[1]),
    ])
    a = client.time_series.retrieve(external_id="pred:a")
    assert (a.name, a.unit, a.is_string, a.is_step, a.description) == ("A", "bar", False, False, "d")
    assert xids(client.time_series.list(external_id_prefix="pred:")) == ["pred:a", "pred:b"]
    assert xids(client.time_series.list(is_string=True)) == ["pred:b"]
    assert xids(client.time_series.list(is_step=True)) == ["other"]
    assert xids(client.time_series.list(metadata={"model": "m1"}, unit="bar")) == ["pred:a"]
    assert client.time_series.aggregate_count() == 3
    client.time_series.update(TimeSeriesUpdate(external_id="pred:a").metadata.add({"v": "2"}).unit.set("psi"))
    a = client.time_series.retrieve(external_id="pred:a")
    assert a.metadata == {"model": "m1", "v": "2"} and a.unit == "psi"
    with pytest.raises(CogniteDuplicatedError):
        client.time_series.create(TimeSeriesWrite(external_id="pred:a"))
    client.time_series.data.insert([(1000, 1.0), (2000, 2.0)], external_id="pred:a")
    client.time_series.delete(external_id="pred:a")
    assert client.time_series.retrieve(external_id="pred:a") is None
    left = local_cdf.store.conn().execute("SELECT COUNT(*) FROM datapoints WHERE ts_id=?", (a.id,)).fetchone()[0]
    assert left == 0
    with pytest.raises(CogniteNotFoundError) as err:
        client.time_series.retrieve_multiple(external_ids=["pred:a"])
    assert err.value.not_found == [{"externalId": "pred:a"}]
    bad = post(local_cdf, "/timeseries", {"items": [{"externalId": "x", "isString": "yes"}]})
    assert bad.status_code == 400 and "items[0].isString" in bad.json()["error"]["message"]


# -- datapoints -----------------------------------------------------------------------------------------------
def test_raw_round_trip_over_100k_points_is_paginated(client):
    client.time_series.create(TimeSeriesWrite(external_id="big"))
    n = 120_000  # more than one 100k request each way: the SDK chunks the insert and pages the retrieve
    timestamps = [1_600_000_000_000 + 1000 * i for i in range(n)]
    values = [math.sin(i / 100) for i in range(n)]
    client.time_series.data.insert(list(zip(timestamps, values)), external_id="big")
    got = client.time_series.data.retrieve(external_id="big", start=timestamps[0], end=timestamps[-1] + 1)
    assert got.timestamp == timestamps and got.value == values
    first = client.time_series.data.retrieve(external_id="big", start=timestamps[0], end="now", limit=10)
    assert first.timestamp == timestamps[:10]
    limited = client.time_series.data.retrieve(external_id="big", start=0, end="now", limit=110_000)
    assert limited.timestamp == timestamps[:110_000]  # serial: a 100k page, then one more by nextCursor
    window = client.time_series.data.retrieve(external_id="big", start=timestamps[5], end=timestamps[8])
    assert window.timestamp == timestamps[5:8]
    outside = client.time_series.data.retrieve(external_id="big", start=timestamps[5] + 1, end=timestamps[7],
                                               include_outside_points=True)
    assert outside.timestamp == timestamps[5:8]
    per_second = client.time_series.data.retrieve(external_id="big", start=timestamps[0], end=timestamps[-1] + 1,
                                                  aggregates=["count", "max"], granularity="1s")
    assert per_second.timestamp == timestamps and per_second.max == values  # 120k buckets: 12+ pages of 10k


def test_upsert_latest_delete_range_and_insert_multiple(client):
    client.time_series.create([TimeSeriesWrite(external_id="n"), TimeSeriesWrite(external_id="s", is_string=True)])
    client.time_series.data.insert_multiple([
        {"external_id": "n", "datapoints": [(1000, 1.0), (2000, 2.0), (3000, 3.0)]},
        {"external_id": "s", "datapoints": [{"timestamp": 1000, "value": "on"}, {"timestamp": 2000, "value": "off"}]},
    ])
    client.time_series.data.insert([(2000, 20.0)], external_id="n")  # same timestamp: overwritten
    assert client.time_series.data.retrieve(external_id="n", start=0, end=10_000).value == [1.0, 20.0, 3.0]
    strings = client.time_series.data.retrieve(external_id="s", start=0, end=10_000)
    assert strings.value == ["on", "off"] and strings.is_string
    latest = client.time_series.data.retrieve_latest(external_id=["n", "s"])
    assert [(d.timestamp_ms, d.value, d.type) for d in latest] == [(3000, 3.0, "numeric"), (2000, "off", "string")]
    before = client.time_series.data.retrieve_latest(external_id="n", before=3000)  # exclusive
    assert (before.timestamp_ms, before.value) == (2000, 20.0)
    assert not client.time_series.data.retrieve_latest(external_id="n", before=1000).has_datapoint
    assert client.time_series.data.retrieve_latest(external_id="n", before="1d-ago").value == 3.0
    client.time_series.data.delete_range(start=1500, end=3000, external_id="n")
    assert client.time_series.data.retrieve(external_id="n", start=0, end=10_000).timestamp == [1000, 3000]
    client.time_series.data.insert([(4000, math.nan), (5000, math.inf)], external_id="n")
    special = client.time_series.data.retrieve(external_id="n", start=4000, end=6000).value
    assert math.isnan(special[0]) and special[1] == math.inf


def test_datapoint_errors(local_cdf, client):
    client.time_series.create([TimeSeriesWrite(external_id="n"), TimeSeriesWrite(external_id="s", is_string=True)])
    with pytest.raises(CogniteAPIError) as err:
        client.time_series.data.insert([(1000, "text")], external_id="n")
    assert err.value.code == 400 and "items[0].datapoints[0].value" in err.value.message and "'n'" in err.value.message
    with pytest.raises(CogniteAPIError, match="string time series"):
        client.time_series.data.insert([(1000, 1.5)], external_id="s")
    with pytest.raises(CogniteNotFoundError) as err:
        client.time_series.data.insert([(1000, 1.5)], external_id="ghost")
    assert err.value.not_found == [{"externalId": "ghost"}]
    with pytest.raises(CogniteNotFoundError):
        client.time_series.data.retrieve(external_id="ghost", start=0, end=1000)
    assert client.time_series.data.retrieve(external_id="ghost", start=0, end=1000, ignore_unknown_ids=True) is None
    with pytest.raises(CogniteNotFoundError):
        client.time_series.data.retrieve_latest(external_id="ghost")
    with pytest.raises(CogniteAPIError, match="string time series"):
        client.time_series.data.retrieve(external_id="s", start=0, end=1000, aggregates="count", granularity="1s")
    unknown = post(local_cdf, "/timeseries/data", {"items": [{"externalId": "n", "datapoints": [
        {"timestamp": 1, "value": 1, "quality": "good"}]}]})
    assert unknown.status_code == 400 and "items[0].datapoints[0].quality" in unknown.json()["error"]["message"]
    assert client.time_series.data.retrieve(external_id="n", start=0, end=10_000).value == []  # nothing half-written


def _expected_buckets(ts, vs, start, end, g, step):
    """Independent reference: CDF's aggregates computed with numpy over the interpolated curve."""
    ts, vs = np.asarray(ts, dtype=float), np.asarray(vs, dtype=float)
    rows = []
    for b0 in range(start, end, g):
        inside = (ts >= b0) & (ts < b0 + g)
        if not inside.any():
            continue
        lo, hi = max(b0, ts[0]), min(b0 + g, ts[-1])
        grid = np.concatenate(([lo], ts[(ts > lo) & (ts < hi)], [hi]))
        if step:
            held = vs[np.searchsorted(ts, grid[:-1], side="right") - 1]
            area = float(np.sum(held * np.diff(grid)))
        else:
            area = float(np.trapezoid(np.interp(grid, ts, vs), grid))
        rows.append({"timestamp": b0, "count": int(inside.sum()), "sum": float(vs[inside].sum()),
                     "min": float(vs[inside].min()), "max": float(vs[inside].max()),
                     "average": area / (hi - lo) if hi > lo else float(vs[inside].mean()),
                     "interpolation": float(np.interp(b0, ts, vs))})
    return rows


@pytest.mark.parametrize("step", [False, True])
def test_aggregates_match_reference(client, step):
    rng = random.Random(7)
    base = 1_700_000_000_000 - 1_700_000_000_000 % HOUR
    ts = sorted(rng.sample(range(base + 1234, base + 30 * HOUR), 3000))  # irregular, starts mid-hour
    vs = [round(rng.uniform(-50, 50), 3) for _ in ts]
    client.time_series.create(TimeSeriesWrite(external_id="agg", is_step=step))
    client.time_series.data.insert(list(zip(ts, vs)), external_id="agg")
    got = client.time_series.data.retrieve(
        external_id="agg", start=base + 1234, end=base + 30 * HOUR,  # start is rounded down to the hour
        aggregates=["count", "sum", "min", "max", "average", "interpolation"], granularity="2h")
    expected = _expected_buckets(ts, vs, base, base + 30 * HOUR, 2 * HOUR, step)
    assert got.timestamp == [r["timestamp"] for r in expected] and len(expected) == 15
    assert got.count == [r["count"] for r in expected]
    for name in ("sum", "min", "max", "average"):
        assert getattr(got, name) == pytest.approx([r[name] for r in expected], rel=1e-9, abs=1e-9), name
    if not step:
        assert got.interpolation[1:] == pytest.approx([r["interpolation"] for r in expected][1:])


def test_interpolation_fills_empty_buckets_between_points(client):
    client.time_series.create(TimeSeriesWrite(external_id="sparse"))
    client.time_series.data.insert([(0, 0.0), (10_000, 10.0)], external_id="sparse")
    got = client.time_series.data.retrieve(external_id="sparse", start=0, end=12_000,
                                           aggregates=["interpolation", "count"], granularity="2s")
    assert got.timestamp == [0, 2000, 4000, 6000, 8000, 10_000]
    assert got.interpolation == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0] and got.count == [1, 0, 0, 0, 0, 1]
