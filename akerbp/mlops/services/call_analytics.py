"""One prediction call's analytics row (the schema of issue 12: database analytics_database(env), table
analytics_calls_table(model)), handed to the folder's Recorder, which writes it to RAW in the background.

What a call pays: the summary of its input and prediction and an append. Settings {"analytics": {"enabled",
"sample_inputs"}} in the folder's service settings; a folder built before analytics existed, or a call without a
client (a prediction handler that names none), records nothing. Never raises: analytics never fails a prediction.
While the buffer is backed up (SAMPLED_BACKLOG rows waiting: RAW slow or down) no input is sampled, so samples cannot
fill a worker's memory.
"""
from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from akerbp.mlops.analytics import summary
from akerbp.mlops.analytics.recorder import recorder_for
from akerbp.mlops.services import responses
from akerbp.mlops.vocabulary import VERSION_XID, analytics_calls_table, analytics_database

SAMPLE_LIMIT_BYTES = 64_000
# A backed-up buffer (RAW slow or down) takes no more samples: 10,000 rows of 64 kB would be 640 MB of a worker.
SAMPLED_BACKLOG = 500


@dataclass
class Outcome:
    """What the prediction service saw of one call."""

    time_ms: int  # epoch ms when the call started
    latency_total_s: float
    latency_predict_s: float | None = None
    error_type: str | None = None  # None: the call answered ok
    prediction: Any = None


def enabled(settings: dict) -> bool:
    analytics = settings.get("analytics")
    return isinstance(analytics, dict) and analytics.get("enabled") is True


def record(root: Path, settings: dict, client, call_info, data, outcome: Outcome) -> None:
    """Queue the call's row; any problem is logged, never raised."""
    if client is None or not enabled(settings):
        return
    try:
        model = settings["model_name"]
        recorder = recorder_for(str(root), analytics_database(settings["env"]), analytics_calls_table(model),
                                log=responses.get_log())
        key, row = call_row(settings, call_info, data, outcome, sample=recorder.buffered < SAMPLED_BACKLOG)
        recorder.record(key, row, client)
    except Exception as e:  # noqa: BLE001 - the call has its answer already
        responses.get_log().warning("analytics: the call's row was not recorded: %s: %s", type(e).__name__, e)


def call_row(settings: dict, call_info, data, outcome: Outcome, sample: bool = True) -> tuple[str, dict]:
    """(RAW key, columns) of one call; sample: whether it may carry an input sample (when sampled)."""
    call_id = (call_info or {}).get("call_id") if isinstance(call_info, dict) else None
    model_id = settings.get("model_id")
    match = VERSION_XID.match(model_id) if isinstance(model_id, str) else None
    ok = outcome.error_type is None
    stats = summary.summarize(data, outcome.prediction if ok else None)
    row = {
        "time": outcome.time_ms,
        "call_id": call_id,
        "model_id": model_id,
        "version": int(match.group(3)) if match else None,
        "env": settings.get("env"),
        "latency_predict_ms": None if outcome.latency_predict_s is None else outcome.latency_predict_s * 1000,
        "latency_total_ms": outcome.latency_total_s * 1000,
        "status": "ok" if ok else "error",
        "error_type": outcome.error_type,
        **stats,
    }
    share = (settings.get("analytics") or {}).get("sample_inputs") or 0
    if sample and share and random.random() < share:
        row["sample"], truncated = sample_of(data)
        if truncated:
            row["sample_truncated"] = True
    return f"{outcome.time_ms:013d}-{call_id if call_id is not None else uuid.uuid4().hex}", row


def sample_of(data, limit: int = SAMPLE_LIMIT_BYTES) -> tuple[Any, bool]:
    """(the input, or as much of it as fits in `limit` bytes of JSON, cut) and whether it was cut: records are kept
    whole (the first ones), columns cut alike; anything else becomes the first `limit` characters of its JSON."""
    encoded = json.dumps(data, default=str)
    if len(encoded) <= limit:
        return data, False
    records = data.get("data") if isinstance(data, dict) else data
    if isinstance(records, list) and records:
        n = _fitting(lambda k: _with(data, records[:k]), limit, len(records))
        if n:
            return _with(data, records[:n]), True
    if isinstance(records, dict) and records:
        longest = max((len(v) for v in records.values() if isinstance(v, list)), default=0)
        cut = lambda k: _with(data, {c: v[:k] if isinstance(v, list) else v for c, v in records.items()})  # noqa: E731
        n = _fitting(cut, limit, longest)
        if n:
            return cut(n), True
    return encoded[:limit], True


def _with(data, records):
    return {**data, "data": records} if isinstance(data, dict) else records


def _fitting(make, limit: int, most: int) -> int:
    """The largest k <= most whose make(k) fits in `limit` bytes of JSON (0 when none does): a binary search."""
    low, high = 0, most
    while low < high:
        middle = (low + high + 1) // 2
        if len(json.dumps(make(middle), default=str)) <= limit:
            low = middle
        else:
            high = middle - 1
    return low
