"""Model analytics of a batch call: each batch's predict() is recorded as one row of the model's calls table, as a
prediction service call is, so a model used only in batch has analytics and its triggers see its inputs.

The row is the service's (services/call_analytics.call_row: status, latencies, rows, the feature and prediction
summaries, a sampled input) plus `source` "batch" and `execution`; its key adds the batch's first row to the call's,
so the rows of one call stay apart. A batch with a bad row is an error row (error_type: predict()'s exception type,
ResponseInvalid for an answer that is not one prediction per record, BadRows for rows the format cannot read), whose
prediction is not summarised, as the service's error rows. The live function's settings decide (analytics.enabled);
its bundled framework does the summary and the writing, so a live function built before analytics records nothing.
Like the service, recording never fails a batch: a problem is printed once and the batch goes on.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

FLUSH_S = 10.0  # at the end of a call, for the rows still buffered (the worker may be retired after it)


class Recording:
    """The rows of one batch call, handed to the function folder's Recorder (written in the background)."""

    def __init__(self, settings: dict, call_analytics: Any, recorder: Any, client: Any, call_info: dict | None,
                 execution: str):
        self.settings, self.call_analytics, self.recorder, self.client = settings, call_analytics, recorder, client
        call_id = call_info.get("call_id") if isinstance(call_info, dict) else None
        self.call_info = {"call_id": call_id}
        self.prefix = str(call_id) if call_id is not None else uuid.uuid4().hex
        self.extra = {"source": "batch", "execution": execution}
        self.failed = False

    def record(self, start: int, records: list, time_ms: int, outcome_args: tuple) -> None:
        """One batch's row: records from row `start`; outcome_args: call_analytics.Outcome's after time_ms."""
        if self.failed:
            return
        try:
            outcome = self.call_analytics.Outcome(time_ms, *outcome_args)
            sample = self.recorder.buffered < self.call_analytics.SAMPLED_BACKLOG
            _, row = self.call_analytics.call_row(self.settings, self.call_info, {"data": records}, outcome, sample)
            row.update(self.extra)
            self.recorder.record(f"{time_ms:013d}-{self.prefix}-{start}", row, self.client)
        except Exception as e:  # noqa: BLE001 - analytics never fails a batch
            self.failed = True
            print(f"analytics: the batch's rows are not recorded: {type(e).__name__}: {e}", flush=True)

    def flush(self) -> None:
        if not self.recorder.flush(FLUSH_S):
            print(f"analytics: {self.recorder.buffered} row(s) not yet written to RAW after {FLUSH_S:.0f} s; "
                  "the worker writes them in the background", flush=True)


def recording(root: Path, settings: dict, client: Any, call_info: dict | None, execution: str) -> Recording | None:
    """The call's Recording, or None: analytics disabled in the live settings, no client, or a live bundle that has
    no analytics (built before it)."""
    try:
        from akerbp.mlops.analytics.recorder import recorder_for
        from akerbp.mlops.services import call_analytics
        from akerbp.mlops.vocabulary import analytics_calls_table, analytics_database
    except ImportError:
        return None
    if client is None or not call_analytics.enabled(settings):
        return None
    recorder = recorder_for(str(root), analytics_database(settings["env"]),
                            analytics_calls_table(settings["model_name"]))
    return Recording(settings, call_analytics, recorder, client, call_info, execution)


def now_ms() -> int:
    return int(time.time() * 1000)
