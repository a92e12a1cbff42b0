"""`mlops deploy prediction|training`: test, build and ship every model of the settings, one after another.

Per model (a failure stops that model; the others go on):
  1. model tests (pytest subprocess, started first, before even cognite-sdk is imported; 2-5 run meanwhile)
  2. artifacts (artifacts.py)           3. function folder + content hash (build.py)
  5. change detection: same hash as the live, Ready, *verified* function -> "unchanged", nothing else runs
     (--force overrides); the same hash unverified (a deploy of it was stopped or killed before its smoke check)
     -> its smoke check now, rollback on failure ("verified" / "rolled_back")
  4. service test: the built handler called as CDF would, ServiceTest's check asserted (while the tests run)
  6-7. release (release.py): upload, standby, replace, smoke call, rollback on failure, cleanup; under the
     function's deploy lock (lock.py), after reading the live function again (another deploy may have finished)
  8. audit event
A Ctrl-C/SIGTERM stops at the next safe point (interrupts.py): the model in progress finishes or undoes its step,
the rest are not started ("interrupted"), and the CLI exits 130/143.
--dry-run runs 1-5 and prints the plan (functions and code files created and removed) without changing CDF.
The CDF is cdf.client.client_for_env's, the one `mlops call/status/logs/history` read: ENV=dev deploys to the local
CDF even when a project is configured, unless LOCAL_DEPLOYMENT=True (the original framework's switch); in CI that is
refused before anything runs, unless MLOPS_LOCAL_CDF=1 or --dry-run.
A model's failure, whatever it is, is recorded in its result (message masked) and the next model goes on.
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from typing import Callable

from akerbp.mlops.vocabulary import ENVIRONMENTS, SERVICES
from akerbp.mlops.deployment import artifacts, build, interrupts, plan, service_check
from akerbp.mlops.deployment.model_tests import ModelTests
from akerbp.mlops.errors import MlopsError, UsageError
from akerbp.mlops.utils import provenance
from akerbp.mlops.utils.logger import get_logger, mask

DEFAULT_TIMEOUT = 900.0
OUTCOMES = {"deployed": "success", "verified": "success", "unchanged": "unchanged", "rolled_back": "rolled_back",
            "failed": "failed", "interrupted": "interrupted"}

Progress = Callable[[str], None]


class Target:
    """Where the services of `env` live (cdf.client.client_for_env), connected on first use (a dry run in dev may
    never need it)."""

    def __init__(self, env: str, dry_run: bool = False):
        from akerbp.mlops.cdf.client import env_uses_local_cdf

        self.env, self.dry_run = env, dry_run
        self.local = env_uses_local_cdf(env)
        self._client = None

    def client(self):
        if self._client is None:
            from akerbp.mlops.cdf.client import client_for_env

            self._client = client_for_env(self.env, dry_run=self.dry_run)
        return self._client

    def check(self) -> None:
        """Refusals (CI guard, settings of the project) now, without connecting: that overlaps the model tests."""
        from akerbp.mlops.cdf.client import check_env_target

        check_env_target(self.env, dry_run=self.dry_run)

    def describe(self) -> str:
        from akerbp.mlops.cdf.client import describe_env_target

        return describe_env_target(self.env)

    def readable(self) -> bool:
        """False when reading would mean creating an empty local CDF (a dry run on a fresh checkout)."""
        if self._client is not None or not self.local:
            return True
        from akerbp.mlops.cdf.client import local_cdf_dir

        return local_cdf_dir().is_dir()


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
    phases: dict = field(default_factory=dict)
    plan: dict | None = None
    exit_code: int = 1

    @property
    def ok(self) -> bool:
        return self.result in ("deployed", "verified", "unchanged", "would deploy")

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("exit_code")
        out["seconds"] = round(self.seconds, 3)
        out["phases"] = {k: round(v, 3) for k, v in self.phases.items()}
        if self.gap_seconds is not None:
            out["gap_seconds"] = round(self.gap_seconds, 3)
        return out


def select_models(all_models: list, names: tuple[str, ...] | list[str] | None) -> list:
    if not names:
        return list(all_models)
    known = {m.model_name: m for m in all_models}
    unknown = [n for n in names if n not in known]
    if unknown:
        from akerbp.mlops.settings import unknown_model_error

        raise unknown_model_error(unknown, known, "the settings")
    return [known[n] for n in dict.fromkeys(names)]


def deploy(service: str, *, env: str | None = None, models: tuple[str, ...] | None = None, dry_run: bool = False,
           force: bool = False, timeout: float = DEFAULT_TIMEOUT, settings_path=None,
           progress: Progress | None = None) -> list[ModelResult]:
    """Deploy `service` of the selected models (default: all); one result per model, failures included."""
    from akerbp.mlops.cdf.client import get_environment
    from akerbp.mlops.settings import load_settings

    if service not in SERVICES:
        raise UsageError(f"service {service!r} is unknown: use prediction or training")
    env = env or get_environment()
    if env not in ENVIRONMENTS:
        raise UsageError(f"environment {env!r} is unknown: use one of {', '.join(ENVIRONMENTS)}")
    selected = select_models(load_settings(settings_path), models)
    target = Target(env, dry_run=dry_run)
    target.check()  # a refused target (CI guard, partial COGNITE_* settings) fails now, not after the tests
    say = progress or (lambda message: None)
    say(f"{'dry run: ' if dry_run else ''}{service} service of {', '.join(m.model_name for m in selected)} "
        f"to {env} in the {target.describe()}")
    results = []
    for model in selected:
        if interrupts.requested() is not None:  # asked to stop: the models not started stay as they are
            skipped = ModelResult(model.model_name, service, env, model.function_external_id(service, env),
                                  result="interrupted", message="not started: the deploy was interrupted")
            skipped.exit_code = interrupts.EXIT_CODES.get(interrupts.requested(), 130)
            results.append(skipped)
            continue
        results.append(deploy_model(model, service, env, target, dry_run=dry_run, force=force, timeout=timeout,
                                    progress=say))
    return results


def deploy_model(settings, service: str, env: str, target: Target, *, dry_run: bool, force: bool, timeout: float,
                 progress: Progress) -> ModelResult:
    xid = settings.function_external_id(service, env)
    result = ModelResult(settings.model_name, service, env, xid)
    started_wall, started = time.time(), time.monotonic()
    deadline = started + timeout

    def say(message: str) -> None:
        progress(f"[{xid}] {message}")

    tests = ModelTests(settings.root, settings.test_path, timeout=timeout, allow_no_tests=settings.allow_no_tests)
    tester = service_check.ServiceTest(settings.root, settings.test_path, f"model '{settings.model_name}'",
                                       timeout=timeout)

    try:
        _run(settings, service, env, target, result, tests, tester, say, dry_run, force, deadline)
    except MlopsError as e:
        from akerbp.mlops.deployment.release import SmokeFailed

        result.result = "rolled_back" if isinstance(e, SmokeFailed) and e.rolled_back_to else "failed"
        if isinstance(e, interrupts.Interrupted):
            result.result = "interrupted"
        result.message, result.exit_code = mask(str(e)), e.exit_code
        if isinstance(e, SmokeFailed):
            result.gap_seconds = e.gap
    except OSError as e:  # a file of the model that cannot be read or copied
        result.result = "failed"
        result.message = _failure(e) if _is_network(e) else mask(f"{type(e).__name__}: {e}")
    except Exception as e:  # noqa: BLE001 - CDF unreachable, an SDK error, a bug: this model failed, the next goes on
        result.result = "failed"
        result.message = _failure(e)
    finally:
        tests.stop()
        tester.close()
        result.seconds = time.monotonic() - started
    if result.ok:
        say(f"{result.result} in {result.seconds:.1f} s")
    elif len(result.message.splitlines()) > 1:
        say(f"FAILED after {result.seconds:.1f} s: {result.message}")  # the summary shows its first line only
    else:
        say(f"FAILED after {result.seconds:.1f} s (the reason: in the summary)")
    if not dry_run:
        _audit(target, settings, result, started_wall, say)
    return result


def _is_network(e: BaseException) -> bool:
    from akerbp.mlops.cdf.client import network_failure

    return network_failure(e) is not None


def _failure(e: BaseException) -> str:
    from akerbp.mlops.cdf.client import describe_failure

    get_logger(__name__).debug("the traceback of a failed deploy", exc_info=e)  # shown with MLOPS_LOG_LEVEL=DEBUG
    return describe_failure(e)


def _timed(result: ModelResult, phase: str, started: float) -> float:
    now = time.monotonic()
    result.phases[phase] = result.phases.get(phase, 0.0) + now - started
    return now


@dataclass
class _Prepared:
    """Steps 2-5 of one model, done while its tests run."""

    secrets: dict = field(default_factory=dict)
    built: build.BuiltFolder | None = None
    live: object = None
    unchanged: bool = False  # the live function runs this content (verified or not)
    verified: bool = False  # ... and passed its smoke check
    zip_bytes: bytes | None = None
    service_test: Future | None = None
    failure: MlopsError | None = None
    finished: float = 0.0  # when preparing ended: from then on the deploy only waits for the tests


def _run(settings, service, env, target, result, tests, tester, say, dry_run, force, deadline) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        prepared = _prepare(settings, service, env, target, result, tester, say, dry_run, force, deadline, pool)
        outcome = tests.wait(stop=lambda: interrupts.check("while the model tests ran: nothing was changed in CDF"))
        result.phases["model tests (run)"] = outcome.seconds
        _timed(result, "model tests (wait)", prepared.finished)
        if not outcome.passed:
            say(f"model tests failed ({outcome.summary}); the end of pytest's output:\n{outcome.tail()}")
            also = f"; also: {prepared.failure}" if prepared.failure else ""
            raise MlopsError(f"model tests failed: {outcome.summary} (pytest's output: in the deploy's progress on "
                             f"stderr){also}")
        say(f"model tests passed ({outcome.summary}, {outcome.seconds:.1f} s)")
        if prepared.failure is not None:
            raise prepared.failure
        if prepared.service_test is None:
            result.result = "unchanged"
            say(f"unchanged: {result.function} already runs hash {result.hash[:10]}, verified by its smoke check "
                "(use --force to redeploy)")
            return
        t = time.monotonic()
        check = _wait_for(prepared.service_test, "while the service test ran: nothing was changed in CDF")
        _timed(result, "service test (wait)", t)
    if not check.passed:
        raise MlopsError(f"service test failed: {check.detail}")
    say("service test passed")
    if dry_run:
        unchanged = prepared.unchanged and prepared.verified and not force
        result.plan = plan.plan(target, result, prepared.live, unchanged, settings.models_to_keep,
                            verify=prepared.unchanged and not prepared.verified and not force)
        result.result = "unchanged" if unchanged else "would deploy"
        return
    interrupts.check("before anything was changed in CDF")
    _ship(settings, service, env, target, result, tester, prepared, say, deadline, force)


def _wait_for(future: Future, where: str):
    """A future's result, noticing a stop request while waiting."""
    while True:
        try:
            return future.result(timeout=0.2)
        except FutureTimeout:
            interrupts.check(where)


def _prepare(settings, service, env, target, result, tester, say, dry_run, force, deadline, pool) -> _Prepared:
    """Artifacts, folder, hash, live lookup; then the service test starts in `pool`. Errors are kept in
    .failure, to be reported after the model tests (step 1's verdict comes first)."""
    from akerbp.mlops.deployment import functions

    out = _Prepared()
    t = time.monotonic()
    try:
        out.secrets = settings.secret_values()
        artifact = None
        if service == "prediction":
            artifact = artifacts.resolve(settings, env, target.client, settings.root / ".mlops" / "cache" / "artifacts")
            result.version, result.model_id = artifact.version, artifact.model_id
            say(f"artifact {artifact.model_id} from {artifact.source}")
        t = _timed(result, "artifacts", t)
        out.built = build.build_folder(settings, service, env, artifact=artifact.path if artifact else None,
                                       model_id=result.model_id, secrets=out.secrets)
        result.hash = out.built.content_hash
        t = _timed(result, "build + hash", t)
        if target.readable():
            out.live = functions.retrieve(target.client(), result.function)
        t = _timed(result, "change detection", t)
        live_hash = (out.live.metadata or {}).get("mlops_hash") if out.live is not None else None
        out.unchanged = out.live is not None and out.live.status == "Ready" and live_hash == result.hash
        if out.unchanged:
            from akerbp.mlops.deployment.release import is_verified

            out.verified = is_verified(target.client(), out.live)
        if not (out.unchanged and out.verified) or force or dry_run:
            out.zip_bytes = None if dry_run else build.zip_folder(out.built.path)  # before the service test runs
            t = _timed(result, "zip", t)
            out.service_test = pool.submit(service_check.run_service_test, out.built.path, service, tester,
                                           out.secrets, result.model_id, max(1.0, deadline - time.monotonic()),
                                           out.built.options.get("env_vars"))
    except MlopsError as e:
        out.failure = e
    out.finished = time.monotonic()
    return out


def _ship(settings, service, env, target, result, tester, prepared: _Prepared, say, deadline, force) -> None:
    """Steps 6-7 under the function's deploy lock: release the folder (or verify the live function that already
    runs it), with a smoke call that checks the live function's answer."""
    from akerbp.mlops.deployment import functions, release
    from akerbp.mlops.deployment.lock import DeployLock

    client = target.client()
    by = provenance.who()
    mlops_md = release.mlops_metadata(
        model=settings.model_name, service=service, env=env, version=result.version, model_id=result.model_id,
        content_hash=result.hash, commit=provenance.git_commit(settings.root, mark_dirty=True),
        deployed_at=release.now_iso(), by=by)
    t = time.monotonic()
    data_set = functions.data_set_id(client, settings.dataset)
    _timed(result, "data set", t)
    smoke_input = tester.input(service)

    def smoke() -> tuple[bool, str]:
        say("smoke call" + (" (trains and uploads a new version)" if service == "training" else ""))
        call = functions.call(client, result.function, smoke_input, deadline, say)
        if call.status != "Completed":
            logs = f"\nthe end of its logs:\n{call.logs}" if call.logs else ""
            return False, f"the smoke call of {result.function} ended {call.status}: {call.error}{logs}"
        verdict = service_check.verify(tester, service, call.response, result.model_id)
        if not verdict.passed:
            return False, (f"the smoke call of {result.function} failed the {service} check: {verdict.detail}; "
                           f"the response was {service_check.show(call.response, prepared.secrets)}")
        return True, ""

    t = time.monotonic()
    with DeployLock(client, result.function, deadline, say) as lock:
        _timed(result, "lock", t)
        live = functions.retrieve(client, result.function)  # again: another deploy may have finished meanwhile
        same = (live is not None and live.status == "Ready"
                and (live.metadata or {}).get("mlops_hash") == result.hash)
        verified = same and release.is_verified(client, live)
        if verified and (lock.waited or not force):
            result.result = "unchanged"
            say(f"unchanged: another deploy put hash {result.hash[:10]} live and verified it while this one "
                "waited for it" if lock.waited else f"unchanged: {result.function} already runs {result.hash[:10]}")
            return
        lock.check()
        if same and not verified and not force and release.code_file_of(live) is not None:
            say(f"{result.function} runs hash {result.hash[:10]}, but that deployment never passed its smoke check "
                "(a deploy of it was stopped or killed): checking it now, rolling back if it fails")
            done = release.verify_live(client, result.function, live, smoke, by, deadline, say,
                                       keep=settings.models_to_keep)
            result.code_file, result.result = done.code_file, "verified"
            result.phases.update(done.phases)
            return
        done = release.release(client, live=result.function, content_hash=result.hash,
                               zip_bytes=prepared.zip_bytes, options=prepared.built.options,
                               secrets=prepared.secrets, mlops_md=mlops_md, data_set=data_set, deadline=deadline,
                               progress=say, smoke=smoke, keep=settings.models_to_keep)
    result.code_file, result.gap_seconds = done.code_file, done.switch.gap
    result.phases.update(done.phases)
    result.result = "deployed"
    if done.switch.gap is not None:
        say(f"live again after a gap of {done.switch.gap:.2f} s (its standby {done.switch.standby} answered "
            "meanwhile, and is removed now)")


def _audit(target: Target, settings, result: ModelResult, started: float, say: Progress) -> None:
    try:
        client = target.client()
    except MlopsError:
        return  # no CDF to record in (e.g. credentials missing): the error is in the result already
    try:
        _record(client, settings, result, started)
    except Exception as e:  # noqa: BLE001 - the deploy's outcome stands; the other models still go on
        say(f"the audit event could not be recorded: {e if isinstance(e, MlopsError) else _failure(e)}")


def _record(client, settings, result: ModelResult, started: float) -> None:
    from akerbp.mlops import audit

    extra = {"function": result.function, "result": result.result, "seconds": f"{result.seconds:.1f}"}
    if result.gap_seconds is not None:
        extra["gap_s"] = f"{result.gap_seconds:.3f}"
    if result.code_file:
        extra["code_file"] = result.code_file
    audit.record(client, "deploy", model=settings.model_name, env=result.env, outcome=OUTCOMES[result.result],
                 started=started, service=result.service, version=result.version, model_id=result.model_id,
                 code_hash=result.hash, message=result.message, dataset=settings.dataset, extra=extra)


def exit_code(results: list[ModelResult]) -> int:
    failed = [r.exit_code for r in results if not r.ok]
    return max(failed) if failed else 0
