"""The gate step: every deployment condition of the automation (conditions.check), judged on the trained version.

BuildMetric reads the new version's metrics (a SQL threshold is evaluated now over the model's analytics tables);
DeployedModelMetric compares them with the version live in each listed environment (the live prediction function's
mlops_version, its metadata from the registry). The gate answers passed or not with every verdict: the deploy step
acts on it, notify reports it.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from akerbp.mlops.automations.upstream import environments, upstream_failure
from akerbp.mlops.vocabulary import function_external_id

if TYPE_CHECKING:
    from cognite.client import CogniteClient


def gate(definition: dict[str, Any], upstream: Mapping[str, Any], client: CogniteClient, secrets: dict[str, str],
         root: Path) -> dict[str, Any]:
    from akerbp.mlops import conditions

    failed = upstream_failure(upstream, ("train",))
    if failed:
        return {"ok": False, "error": failed, "passed_on": True}
    metadata = upstream["train"].get("metrics") or {}
    envs = environments(definition)
    verdicts: list[dict[str, Any]] = []
    lives: dict[str, tuple[dict[str, Any] | None, str | None]] = {}
    for condition in (definition["action"].get("deployment_condition") or []):
        if conditions.is_sql(condition.get("threshold")):
            try:
                bound = dynamic_threshold(client, definition["model"], envs[0], str(condition["threshold"]))
            except Exception as e:  # noqa: BLE001 - a query that fails at run time fails the gate, saying which
                return {"ok": False, "verdicts": verdicts, "error": f"the dynamic threshold of "
                        f"{condition['metric_name']} could not be evaluated: {type(e).__name__}: {e}"[:4000]}
            verdicts.append(conditions.check(condition, metadata, env=envs[0], threshold_value=bound).as_dict())
        elif condition.get("type") == "deployed_model_metric":
            for env in envs:
                if env not in lives:
                    lives[env] = live_version(client, definition["model"], env)
                live_md, live_id = lives[env]
                verdicts.append(conditions.check(condition, metadata, env=env, live_metadata=live_md,
                                                 live_model_id=live_id).as_dict())
        else:
            verdicts.append(conditions.check(condition, metadata, env=envs[0]).as_dict())
    passed = all(v["met"] for v in verdicts)
    reason = None if passed else "deployment condition not met: " + "; ".join(
        f"{v['detail']}" + (f" (in {v['env']})" if v.get("kind") == "deployed_model_metric" else "")
        for v in verdicts if not v["met"])
    return {"ok": True, "passed": passed, "verdicts": verdicts, "reason": reason,
            "note": None if verdicts else "no deployment condition: every successful training deploys"}


def dynamic_threshold(client: CogniteClient, model: str, env: str, sql: str) -> float:
    """A BuildMetric's SQL threshold, evaluated now over the model's analytics tables in the training environment
    (`versions` holds the new version too: a query for the best so far excludes it, e.g. WHERE version < (SELECT
    max(version) FROM versions))."""
    from akerbp.mlops.analytics.query import metric_value

    return metric_value(client, model, env, sql)


def live_version(client: CogniteClient, model: str, env: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the metadata, the model id) of the version the live prediction service of `model` in `env` serves; (None,
    None) when none is live, (None, its id) when it serves no registry version (a dev folder)."""
    from akerbp.mlops import registry
    from akerbp.mlops.registry.rules import decoded_metadata

    fn = client.functions.retrieve(external_id=function_external_id(model, "prediction", env))
    if fn is None:
        return None, None
    md = fn.metadata or {}
    version, model_id = md.get("mlops_version"), md.get("mlops_model_id") or None
    if not version or not version.isdigit():
        return None, model_id
    try:
        found = registry.get_model_version(model, env, int(version), client=client)
    except registry.VersionUnavailable:
        return None, model_id
    return decoded_metadata(found.metadata), found.model_id
