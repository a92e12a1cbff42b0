"""What the dashboard's pages show, read from CDF and kept in memory: the Snapshot the server renders.

load() reads everything once; each page method then refreshes only what it shows and only when that is older than
min_refresh_s, incrementally: the registry's files and the audit events by lastUpdatedTime (versions_index.py,
audit_index.py), the functions in one list (CDF holds at most 100 per project), the automations with their newest
executions (automations_view.py), a model's analytics from the DuckDB cache on demand (analytics_view.py). So a
page costs a handful of requests whatever the number of models and versions, and builds its dict from memory.

Thread-safe: werkzeug serves threaded. One lock guards the CDF state (one refresh at a time, pages read a
consistent state); analytics has its own, so a slow first sync of a model's calls does not hold the other pages.
Read-only: nothing here creates, updates or deletes anything in CDF. Every dict is JSON-serialisable, times ISO 8601
UTC with a trailing Z.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator
from contextlib import contextmanager

from akerbp.mlops.deployment.live import DeployedService, parse_iso, services_of
from akerbp.mlops.deployment.records import VERIFIED_KEY, code_file_of
from akerbp.mlops.errors import MlopsError, UsageError
from akerbp.mlops.ui.audit_index import AuditIndex
from akerbp.mlops.ui.automations_view import AutomationsView
from akerbp.mlops.ui.versions_index import RegistryIndex, VersionRecord, iso_ms
from akerbp.mlops.vocabulary import ENVIRONMENTS, SERVICES

if TYPE_CHECKING:
    from cognite.client import CogniteClient
    from cognite.client.data_classes import Function

MAX_VERSIONS = 200  # versions listed per environment on a model's page (the chart has every one)
PREFERRED_METRIC = "r2"


class UnknownModel(UsageError):
    """A page asked for a model no CDF read holds (no version, service or audit record): the server's 404."""

    def __init__(self, name: str, known: list[str]):
        self.name, self.known = name, known
        shown = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
        super().__init__(f"model {name!r} is unknown here: " + (f"known models are {shown}" if known else
                                                               "this CDF holds no model yet"))


class CdfReadFailed(MlopsError):
    """Reading a CDF failed (unreachable, refused, an error answer): the server's 502. `cdf` names which one."""

    def __init__(self, cdf: dict[str, Any], what: str, error: BaseException):
        from akerbp.mlops.cdf.failures import describe_failure

        self.cdf = cdf
        super().__init__(f"could not read {what} from CDF project {cdf['project']} at {cdf['base_url']} "
                         f"({', '.join(cdf['envs'])}): {describe_failure(error)}; check that it is reachable and "
                         f"the credentials are valid, then reload the page")


def _iso_text(text: str | None) -> str | None:
    """An ISO time from metadata as UTC with a trailing Z; the text itself when it is not one."""
    stamp = parse_iso(text)
    return iso_ms(int(stamp * 1000)) if stamp else (text or None)


def _describe(client: CogniteClient, envs: list[str]) -> dict[str, Any]:
    from urllib.parse import urlparse

    base_url = str(client.config.base_url)
    host = urlparse(base_url).hostname or ""
    return {"envs": list(envs), "project": client.config.project, "base_url": base_url,
            "local": host in ("127.0.0.1", "localhost", "::1")}


@dataclass
class _Target:
    """One CDF and what the snapshot holds of it."""

    client: CogniteClient
    envs: list[str]
    registry: RegistryIndex
    audit: AuditIndex
    automations: AutomationsView
    functions: dict[int, Function] = field(default_factory=dict)  # by id
    services: list[DeployedService] = field(default_factory=list)
    raw_tables: dict[str, set[str]] = field(default_factory=dict)  # env -> RAW tables of its analytics database

    @property
    def cdf(self) -> dict[str, Any]:
        return _describe(self.client, self.envs)


class Snapshot:
    """What the pages show, read from CDF and kept in memory; refreshed incrementally, thread-safe."""

    def __init__(self, envs: list[str] | None = None, *,
                 targets: list[tuple[CogniteClient, list[str]]] | None = None,
                 min_refresh_s: float = 2.0, progress: Callable[[str], None] | None = None):
        if targets is None:
            from akerbp.mlops.cdf.client import clients_for_envs

            targets = clients_for_envs(list(envs or ENVIRONMENTS))
        self._targets = [_Target(client, list(t_envs), RegistryIndex(client), AuditIndex(client),
                                 AutomationsView(client, list(t_envs))) for client, t_envs in targets]
        held = {env for _, t_envs in targets for env in t_envs}
        self.envs = [env for env in ENVIRONMENTS if env in held]
        self.min_refresh_s = min_refresh_s
        self.progress = progress or (lambda line: None)
        self._lock = threading.RLock()
        self._analytics_lock = threading.Lock()
        self._fresh: dict[str, float] = {}  # part -> time.monotonic() of its last refresh
        self._analytics: dict[tuple[str, str, str], tuple[float, dict]] = {}
        self.loaded = False

    # -- reading CDF ------------------------------------------------------------------------------------------------
    @contextmanager
    def _reading(self, target: _Target, what: str) -> Iterator[None]:
        from cognite.client.exceptions import CogniteException

        try:
            yield
        except (CogniteException, OSError) as e:
            raise CdfReadFailed(target.cdf, what, e) from e
        except Exception as e:  # httpx transport errors and the like: not CogniteException
            if type(e).__name__ in ("TransportError", "ConnectError", "ReadTimeout", "ConnectTimeout"):
                raise CdfReadFailed(target.cdf, what, e) from e
            raise

    def _refresh(self, *parts: str, force: bool = False) -> None:
        """Bring `parts` up to date unless refreshed within min_refresh_s; call with the lock held."""
        now = time.monotonic()
        for part in parts:
            if not force and now - self._fresh.get(part, -1e18) < self.min_refresh_s:
                continue
            for target in self._targets:
                getattr(self, f"_refresh_{part}")(target)
            self._fresh[part] = time.monotonic()

    def _refresh_registry(self, target: _Target) -> None:
        with self._reading(target, "the registry's files"):
            target.registry.refresh()

    def _refresh_audit(self, target: _Target) -> None:
        with self._reading(target, "the audit events"):
            target.audit.refresh()

    def _refresh_functions(self, target: _Target) -> None:
        from akerbp.mlops.deployment.functions import FUNCTIONS_LIMIT

        with self._reading(target, "the functions"):
            found = target.client.functions.list(limit=FUNCTIONS_LIMIT)
        target.functions = {fn.id: fn for fn in found}
        target.services = [s for s in services_of(found, target.envs) if s.service in SERVICES]

    def _refresh_automations(self, target: _Target) -> None:
        with self._reading(target, "the automations"):
            target.automations.refresh(target.audit.newest)

    def _refresh_raw(self, target: _Target) -> None:
        from cognite.client.exceptions import CogniteAPIError

        from akerbp.mlops.vocabulary import analytics_database

        for env in target.envs:
            with self._reading(target, "the analytics tables"):
                try:
                    names = {t.name for t in target.client.raw.tables.list(analytics_database(env), limit=None)
                             if t.name}
                except CogniteAPIError as e:
                    if e.code not in (400, 404):  # no such database: no calls recorded in env
                        raise
                    names = set()
            target.raw_tables[env] = names

    def load(self) -> None:
        """The first full read of every CDF (the CLI calls it before serving), with a progress line per part."""
        with self._lock:
            for part, what in (("registry", "registry files"), ("audit", "audit events"),
                               ("functions", "functions"), ("automations", "automations")):
                start = time.perf_counter()
                self._refresh(part, force=True)
                counts = {"registry": lambda t: t.registry.listing.last_count,
                          "audit": lambda t: t.audit.listing.last_count,
                          "functions": lambda t: len(t.functions),
                          "automations": lambda t: len(t.automations.rows)}[part]
                self.progress(f"read {sum(counts(t) for t in self._targets):,} {what} in "
                              f"{time.perf_counter() - start:.1f} s")
            self.loaded = True

    def close(self) -> None:
        """Drop what is held (the clients are the caller's)."""
        with self._lock:
            self._analytics.clear()

    # -- what the pages share -----------------------------------------------------------------------------------------
    def _target_of(self, env: str) -> _Target:
        return next(t for t in self._targets if env in t.envs)

    def _known(self) -> list[str]:
        names: set[str] = set()
        for target in self._targets:
            names |= {model for (model, env), found in target.registry.versions.items()
                      if found and env in target.envs}
            names |= {s.model for s in target.services}
            names |= {r["model"] for r in target.audit.records.values() if r["model"] and r["env"] in target.envs}
        return sorted(names)

    def _check_model(self, name: str) -> None:
        known = self._known()
        if name not in known:
            raise UnknownModel(name, known)

    def _header(self) -> dict[str, Any]:
        """What every page starts with: when its data was read and from which CDFs."""
        return {"generated_at": iso_ms(int(time.time() * 1000)), "cdf": [t.cdf for t in self._targets]}

    def _services(self) -> dict[tuple[str, str, str], DeployedService]:
        return {(s.model, s.env, s.service): s for t in self._targets for s in t.services}

    def _service_dict(self, target: _Target, service: DeployedService) -> dict[str, Any]:
        out = service.as_dict()
        out["deployed_at"] = _iso_text(service.deployed_at)
        code_file = code_file_of(target.functions.get(service.function_id))
        verified = code_file is not None and \
            target.registry.code_files.get(code_file, {}).get(VERIFIED_KEY) == str(service.function_id)
        out["verified"] = verified
        return out

    # -- pages ------------------------------------------------------------------------------------------------------
    def models(self) -> dict:
        """/models: per model and environment, the live services and the registry's versions."""
        with self._lock:
            self._refresh("registry", "functions", "audit")
            services = {(t_s.model, t_s.env, t_s.service): (target, t_s)
                        for target in self._targets for t_s in target.services}
            rows = []
            for name in self._known():
                envs: dict[str, Any] = {}
                for env in self.envs:
                    target = self._target_of(env)
                    versions = target.registry.of(name, env)
                    cell: dict[str, Any] = {}
                    for service in SERVICES:
                        found = services.get((name, env, service))
                        cell[service] = self._service_dict(*found) if found else None
                    cell["versions"] = len(versions)
                    cell["latest"] = versions[-1].brief() if versions else None
                    envs[env] = cell
                rows.append({"name": name, "envs": envs})
            return {**self._header(), "envs": list(self.envs), "models": rows}

    def model(self, name: str, metric: str | None = None) -> dict:
        """/models/<name>: its versions per environment, a metric across them, what is live, the promotions."""
        with self._lock:
            self._refresh("registry", "functions", "audit")
            self._check_model(name)
            services = self._services()
            per_env: dict[str, list[VersionRecord]] = {
                env: self._target_of(env).registry.of(name, env) for env in self.envs}
            metrics = sorted({m for found in per_env.values() for v in found for m in v.metrics})
            chosen = metric if metric else (PREFERRED_METRIC if PREFERRED_METRIC in metrics else
                                            (metrics[0] if metrics else None))
            live = {env: {service: (services[(name, env, service)].model_id or None)
                          if (name, env, service) in services else None for service in SERVICES}
                    for env in self.envs}
            versions, series, promotions = {}, {}, []
            for env, found in per_env.items():
                serving: dict[str, list[str]] = {}
                for service, model_id in live[env].items():
                    if model_id:
                        serving.setdefault(model_id, []).append(service)
                versions[env] = [v.as_dict(serving.get(v.model_id, [])) for v in reversed(found[-MAX_VERSIONS:])]
                series[env] = {"version": [v.number for v in found],
                               "value": [v.metrics.get(chosen) if chosen else None for v in found],
                               "model_id": [v.model_id for v in found]}
                promotions += [{"from": v.raw["promoted_from"], "to": v.model_id,
                                "time": _iso_text(v.raw.get("promoted_at")) or iso_ms(v.created_ms)}
                               for v in found if v.raw.get("promoted_from")]
            promotions.sort(key=lambda p: p["time"] or "")
            return {**self._header(), "name": name, "envs": list(self.envs), "metrics": metrics, "metric": chosen,
                    "versions": versions, "totals": {env: len(found) for env, found in per_env.items()},
                    "series": series, "live": live, "promotions": promotions}

    def history(self, model: str | None = None, limit: int = 200) -> dict:
        """/history: the audit trail (deploys, rollbacks, promotions, training and automation runs), newest first."""
        with self._lock:
            self._refresh("audit", "registry", "functions")
            if model is not None:
                self._check_model(model)
            records = []
            for target in self._targets:
                records += [r for r in target.audit.newest()
                            if r["env"] in target.envs and (model is None or r["model"] == model)]
            if len(self._targets) > 1:
                records.sort(key=lambda r: r["_sort"], reverse=True)
            events = [_event(r) for r in records[:max(0, limit)]]
            return {**self._header(), "model": model, "models": self._known(), "events": events, "total": len(records)}

    def automations(self) -> dict:
        """/automations: each automation's trigger, next run and newest executions."""
        with self._lock:
            self._refresh("audit", "automations")
            rows = [row for target in self._targets for row in target.automations.rows]
            return {**self._header(), "automations": sorted(rows, key=lambda r: (r["name"], ENVIRONMENTS.index(r["env"])))}

    def analytics(self, model: str, env: str | None = None, since: str = "7d") -> dict:
        """/analytics/<model>: calls, errors, latency and feature drift in env (default: the first environment with
        calls recorded, else the first with a prediction service of the model); cached for min_refresh_s."""
        from akerbp.mlops.analytics.query import by_period, since_ms

        start = since_ms(since)
        by = by_period(start)
        with self._lock:
            self._refresh("registry", "raw")  # the baseline's version, the tables with calls
            self._check_model(model)
            if env is not None and env not in self.envs:
                raise UsageError(f"environment {env!r} is not one this dashboard reads: use one of "
                                 f"{', '.join(self.envs)}")
            from akerbp.mlops.vocabulary import analytics_calls_table

            table = analytics_calls_table(model)
            with_calls = [e for e in self.envs if table in self._target_of(e).raw_tables.get(e, set())]
            services = self._services()
            chosen = env or next((e for e in with_calls), None) or next(
                (e for e in self.envs if (model, e, "prediction") in services), self.envs[0])
            target = self._target_of(chosen)
            registry = target.registry
        base = {**self._header(), "model": model, "env": chosen, "envs": with_calls, "since": since,
                "since_time": iso_ms(start) if start else None, "by": by}
        if chosen not in with_calls:
            return {**base, "series": {"time": [], "calls": [], "errors": [], "p50_ms": [], "p95_ms": []},
                    "features": {}, "served_model_id": None,
                    "note": f"no calls of {model} recorded in {chosen}: analytics is disabled in its settings, or "
                            f"its prediction service was not called yet"}
        key = (model, chosen, since)
        with self._analytics_lock:
            kept = self._analytics.get(key)
            if kept is not None and time.monotonic() - kept[0] < self.min_refresh_s:
                return kept[1]
            from akerbp.mlops.ui import analytics_view

            def version_of(model_id: str) -> VersionRecord | None:
                with self._lock:
                    return registry.by_model_id(model_id)

            with self._reading(target, f"the analytics of {model} in {chosen}"):
                found = analytics_view.read(target.client, model, chosen, start, by, version_of)
            calls = found.pop("calls")
            note = None if calls else f"no calls of {model} in {chosen} since {base['since_time'] or 'ever'}"
            page = {**base, **found, "note": note}
            self._analytics[key] = (time.monotonic(), page)
            return page


def _event(row: dict[str, Any]) -> dict[str, Any]:
    try:
        duration = float(row.get("duration_s") or "") if row.get("duration_s") not in (None, "") else None
    except ValueError:
        duration = None
    version = row.get("version")
    return {"time": row["time"], "action": row["action"], "model": row["model"], "service": row["service"] or None,
            "env": row["env"], "model_id": row["model_id"] or None,
            "version": int(version) if isinstance(version, str) and version.isdigit() else (version or None),
            "hash": row["hash"] or None, "outcome": row["outcome"], "who": row["who"], "duration_s": duration,
            "message": row["message"], "git_commit": row.get("git_commit") or None, "id": row["id"],
            "automation": (row.get("extra") or {}).get("automation")}
