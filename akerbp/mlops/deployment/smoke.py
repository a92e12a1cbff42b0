"""The smoke step of a deploy: call the live function with ServiceTest's input and check its answer.

A verdict, never an exception from CDF or the check: the new code is live but unproven, and whatever prevents the
proof (a failed call, an SDK error, a timeout) counts as a failed check, so the caller rolls back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cognite.client.exceptions import CogniteException

from akerbp.mlops.deployment import functions, service_check
from akerbp.mlops.deployment.functions import Progress
from akerbp.mlops.errors import MlopsError

if TYPE_CHECKING:
    from cognite.client import CogniteClient


@dataclass(frozen=True)
class SmokeCheck:
    """What to call and what to expect of its answer."""

    service: str
    payload: Any  # ServiceTest's <service>_input, read before anything changed
    tester: service_check.ServiceTest
    model_id: str | None
    secrets: dict[str, str]


@dataclass(frozen=True)
class Verdict:
    passed: bool
    detail: str = ""


def run(client: CogniteClient, live: str, check: SmokeCheck, deadline: float, say: Progress) -> Verdict:
    say("smoke call" + (" (trains and uploads a new version)" if check.service == "training" else ""))
    try:
        call = functions.call(client, live, check.payload, deadline, say)
        if call.status != "Completed":
            logs = f"\nthe end of its logs:\n{call.logs}" if call.logs else ""
            return Verdict(False, f"the smoke call of {live} ended {call.status}: {call.error}{logs}")
        verdict = service_check.verify(check.tester, check.service, call.response, check.model_id)
    except (MlopsError, CogniteException) as e:
        return Verdict(False, f"the smoke call of {live} could not be completed: {e}")
    if not verdict.passed:
        return Verdict(False, f"the smoke call of {live} failed the {check.service} check: {verdict.detail}; "
                              f"the response was {service_check.show(call.response, check.secrets)}")
    return Verdict(True)
