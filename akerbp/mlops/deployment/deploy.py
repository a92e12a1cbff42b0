"""`mlops deploy prediction|training`: test, build and ship every model of the settings, up to `jobs` at a time.

Per model (prepare.py, then apply.py; a failure stops that model, the others go on):
  1. model tests (pytest subprocess, started first, before even cognite-sdk is imported; 2-4 run meanwhile; when
     the local hint .mlops/verified/{function}.json says the last deploy verified these inputs, started only once
     the plan needs them: verified_hint.py)
  2. artifacts (artifacts.py)           3. function folder + content hash (build.py)
  4. the plan (plan.py), from the live function: create, replace, verify (the same content live but never
     smoke-checked: a deploy of it was stopped or killed), or unchanged (the same content live and verified:
     nothing runs, the model tests are stopped unless --retest; --force replaces it anyway)
  5. service test: the built handler called as CDF would, ServiceTest's check asserted (while the tests run)
  6. apply (apply.py), under the function's deploy lock: switch live, smoke, confirm or roll back
  7. audit event
--dry-run runs 1-5 and prints the plan of step 4 (the plan the apply would execute) without changing CDF.
Models run concurrently (threads, at most `jobs`): each progress line is prefixed with its function, and the
caller prints one summary at the end. A Ctrl-C/SIGTERM stops at the next safe point (interrupts.py): the models in
progress finish or undo their step, the rest are not started ("interrupted"), and the CLI exits 130/143.
The CDF is cdf.client.client_for_env's, the one `mlops call/status/logs/history` read: ENV=dev deploys to the local
CDF even when a project is configured, unless LOCAL_DEPLOYMENT=True (the original framework's switch); in CI that is
refused before anything runs, unless MLOPS_LOCAL_CDF=1 or --dry-run.
A model's failure, whatever it is, is recorded in its result (message masked) and the next model goes on.
deploy_in_function is the same path for one model's prediction service, run by code inside a CDF Function (an
automation's deploy step): the function's client, no model tests (prepare.InFunction says why), given secrets.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from akerbp.mlops.deployment import interrupts, prepare, service_check, verified_hint
from akerbp.mlops.deployment.functions import Progress
from akerbp.mlops.deployment.model_tests import ModelTests
from akerbp.mlops.deployment.prepare import InFunction
from akerbp.mlops.deployment.result import OUTCOMES, ModelResult
from akerbp.mlops.deployment.target import Target
from akerbp.mlops.errors import MlopsError, UsageError
from akerbp.mlops.utils.logger import get_logger, mask
from akerbp.mlops.vocabulary import ENVIRONMENTS, SERVICES

if TYPE_CHECKING:
    from cognite.client import CogniteClient

    from akerbp.mlops.settings import ModelSettings

__all__ = ["DEFAULT_TIMEOUT", "DEFAULT_JOBS", "Progress", "Target", "ModelResult", "InFunction", "deploy",
           "deploy_in_function", "exit_code"]

DEFAULT_TIMEOUT = 900.0
DEFAULT_JOBS = 4  # models deployed at once: CDF builds functions in parallel; the tests share this machine's cores
WAIT_POLL_S = 0.2  # the main thread waits in steps this long, so Ctrl-C/SIGTERM handlers run promptly


def select_models(all_models: Sequence[ModelSettings], names: Sequence[str] | None) -> list[ModelSettings]:
    if not names:
        return list(all_models)
    known = {m.model_name: m for m in all_models}
    unknown = [n for n in names if n not in known]
    if unknown:
        from akerbp.mlops.settings import unknown_model_error

        raise unknown_model_error(unknown, known, "the settings")
    return [known[n] for n in dict.fromkeys(names)]


def prefixed(progress: Progress, prefix: str, lock: threading.Lock) -> Progress:
    """Progress whose every line starts with `prefix`, a message's lines written together (models run at once)."""
    def say(message: str) -> None:
        with lock:
            progress("\n".join(f"{prefix} {line}" if prefix else line for line in message.splitlines() or [""]))

    return say


def deploy(service: str, *, env: str | None = None, models: Sequence[str] | None = None, dry_run: bool = False,
           force: bool = False, retest: bool = False, jobs: int = DEFAULT_JOBS, timeout: float = DEFAULT_TIMEOUT,
           settings_path: Path | str | None = None, progress: Progress | None = None) -> list[ModelResult]:
    """Deploy `service` of the selected models (default: all), up to `jobs` at once; one result per model, in the
    settings' order, failures included."""
    from akerbp.mlops.cdf.client import get_environment
    from akerbp.mlops.settings import load_settings

    if service not in SERVICES:
        raise UsageError(f"service {service!r} is unknown: use prediction or training")
    env = env or get_environment()
    if env not in ENVIRONMENTS:
        raise UsageError(f"environment {env!r} is unknown: use one of {', '.join(ENVIRONMENTS)}")
    if jobs < 1:
        raise UsageError(f"--jobs {jobs}: deploy at least one model at a time")
    selected = select_models(load_settings(settings_path), models)
    target = Target(env, dry_run=dry_run)
    target.check()  # a refused target (CI guard, partial COGNITE_* settings) fails now, not after the tests
    lock = threading.Lock()
    say = prefixed(progress, "", lock) if progress is not None else (lambda message: None)
    say(f"{'dry run: ' if dry_run else ''}{service} service of {', '.join(m.model_name for m in selected)} "
        f"to {env} in the {target.describe()}" + (f", {min(jobs, len(selected))} at a time" if len(selected) > 1
                                                  else ""))
    results: list[ModelResult | None] = [None] * len(selected)

    def one(i: int) -> None:
        model = selected[i]
        xid = model.function_external_id(service, env)
        if interrupts.requested() is not None:  # asked to stop: the models not started stay as they are
            skipped = ModelResult(model.model_name, service, env, xid, result="interrupted",
                                  message="not started: the deploy was interrupted")
            skipped.exit_code = interrupts.EXIT_CODES.get(interrupts.requested() or 0, 130)
            results[i] = skipped
            return
        model_say = prefixed(progress, f"[{xid}]", lock) if progress is not None else (lambda message: None)
        results[i] = deploy_model(model, service, env, target, dry_run=dry_run, force=force, retest=retest,
                                  timeout=timeout, progress=model_say)

    if jobs == 1 or len(selected) == 1:
        for i in range(len(selected)):
            one(i)
    else:
        _concurrently(one, len(selected), jobs)
    return [r for r in results if r is not None]


def _concurrently(work: Callable[[int], None], count: int, jobs: int) -> None:
    """work(0..count-1) on `jobs` threads. Daemon threads, waited for in short steps: the main thread keeps handling
    signals, and a second Ctrl-C (which stops at once) does not wait for them."""
    pending = list(range(count))
    taken = threading.Lock()

    def worker() -> None:
        while True:
            with taken:
                if not pending:
                    return
                i = pending.pop(0)
            work(i)

    threads = [threading.Thread(target=worker, name=f"deploy {n + 1}", daemon=True) for n in range(min(jobs, count))]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(timeout=WAIT_POLL_S)


def deploy_in_function(client: CogniteClient, settings: ModelSettings, env: str, inside: InFunction, *,
                       timeout: float = DEFAULT_TIMEOUT, progress: Progress | None = None) -> ModelResult:
    """Deploy `settings`' prediction service to `env` through `client` (a CDF Function's own), as `mlops deploy`
    does (build, service test, standby, replace, smoke, automatic rollback, audit) but without the model tests."""
    return deploy_model(settings, "prediction", env, Target(env, client=client), dry_run=False, force=False,
                        timeout=timeout, progress=progress or (lambda message: None), inside=inside)


def deploy_model(settings: ModelSettings, service: str, env: str, target: Target, *, dry_run: bool, force: bool,
                 timeout: float, progress: Progress, retest: bool = False,
                 inside: InFunction | None = None) -> ModelResult:
    xid = settings.function_external_id(service, env)
    result = ModelResult(settings.model_name, service, env, xid)
    started_wall, started = time.time(), time.monotonic()
    hint_file = verified_hint.path(settings, xid)
    inputs = _inputs(settings, service, env) if inside is None else None  # inside a function: no local hint
    hint = verified_hint.read(hint_file) if inputs is not None and not (force or retest) else None
    if hint is not None and (hint.inputs != inputs or prepare.untested_inputs(settings)):
        hint = None  # stale, or tests the plan reruns anyway: start them first, as they overlap the rest
    if hint is not None:
        progress("the last deploy verified these inputs: the model tests wait for the plan")
    tests = ModelTests(settings.root, settings.test_path, timeout=timeout, allow_no_tests=settings.allow_no_tests,
                       start=hint is None and inside is None)
    tester = service_check.ServiceTest(settings.root, settings.test_path, f"model '{settings.model_name}'",
                                       timeout=timeout, start=hint is None)
    job = prepare.ModelJob(settings, service, env, target, result, tests, tester, progress, started + timeout,
                           dry_run=dry_run, force=force, retest=retest, hint=hint, inside=inside)
    try:
        prepare.run(job)
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
    if result.result == "failed" and interrupts.requested() is not None:
        result.result = "interrupted"  # a step the signal cut short failed with it: the stop is what happened
    if inside is None:
        _keep_hint(hint_file, inputs, result)
    if result.ok:
        progress(f"{result.result} in {result.seconds:.1f} s")
    elif len(result.message.splitlines()) > 1:
        progress(f"FAILED after {result.seconds:.1f} s: {result.message}")  # the summary shows its first line only
    else:
        progress(f"FAILED after {result.seconds:.1f} s (the reason: in the summary)")
    if not dry_run:
        _audit(target, settings, result, started_wall, progress)
    return result


def _inputs(settings: ModelSettings, service: str, env: str) -> str | None:
    try:
        return verified_hint.inputs_digest(settings, service, env)
    except OSError:  # a file that cannot be read: no hint; the deploy says what it cannot read
        return None


def _keep_hint(file: Path, inputs: str | None, result: ModelResult) -> None:
    """The hint for the next deploy: written when the live function is verified with this content, removed when a
    deploy failed or would deploy (it no longer predicts `unchanged`)."""
    try:
        if result.result in ("deployed", "verified", "unchanged") and result.hash and inputs is not None:
            verified_hint.write(file, verified_hint.Hint(result.hash, inputs))
        else:
            verified_hint.remove(file)
    except OSError:  # e.g. a read-only checkout: the hint only saves time
        pass


def _is_network(e: BaseException) -> bool:
    from akerbp.mlops.cdf.client import network_failure

    return network_failure(e) is not None


def _failure(e: BaseException) -> str:
    from akerbp.mlops.cdf.client import describe_failure

    get_logger(__name__).debug("the traceback of a failed deploy", exc_info=e)  # shown with MLOPS_LOG_LEVEL=DEBUG
    return describe_failure(e)


def _audit(target: Target, settings: ModelSettings, result: ModelResult, started: float, say: Progress) -> None:
    try:
        client = target.client()
    except MlopsError:
        return  # no CDF to record in (e.g. credentials missing): the error is in the result already
    try:
        _record(client, settings, result, started)
    except Exception as e:  # noqa: BLE001 - the deploy's outcome stands; the other models still go on
        say(f"the audit event could not be recorded: {e if isinstance(e, MlopsError) else _failure(e)}")


def _record(client: CogniteClient, settings: ModelSettings, result: ModelResult, started: float) -> None:
    from akerbp.mlops import audit

    extra: dict[str, object] = {"function": result.function, "result": result.result,
                                "seconds": f"{result.seconds:.1f}"}
    if result.gap_seconds is not None:
        extra["gap_s"] = f"{result.gap_seconds:.3f}"
    if result.code_file:
        extra["code_file"] = result.code_file
    audit.write(client, audit.AuditEntry(
        "deploy", model=settings.model_name, env=result.env, outcome=OUTCOMES[result.result], started=started,
        service=result.service, version=result.version, model_id=result.model_id, code_hash=result.hash,
        message=result.message, dataset=settings.dataset, extra=extra))


def exit_code(results: Sequence[ModelResult]) -> int:
    failed = [r.exit_code for r in results if not r.ok]
    return max(failed) if failed else 0
