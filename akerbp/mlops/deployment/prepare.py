"""One model's deploy up to its plan, and the run of it: the model tests (started first, in a subprocess), the
artifact, the function folder and its content hash, the live function, the plan (plan.py); then the tests' verdict,
the service test, and the apply (apply.py) unless this is a dry run.

The tests start before anything else so they overlap the rest; when the plan says `unchanged` (the live function
passed its checks with exactly this content) they are stopped and not waited for (--retest waits for them).
When the local hint (verified_hint.py) says the last deploy verified these very inputs, they are deferred instead
(job.deferred): started as soon as the build's hash differs from the hint's or the plan needs them, never when the
plan says `unchanged`.
A deploy from inside a CDF Function (job.inside: an automation's deploy step) runs the same steps with the function's
client, without the model tests (the reason is recorded: the code registered is what the pipeline tested), with the
secret values it was given, and builds under a folder of its own (a function's folder may not be writable).
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, TypeVar

from akerbp.mlops.deployment import artifacts, build, interrupts, plan as plans, records, service_check, verified_hint
from akerbp.mlops.deployment.functions import Progress
from akerbp.mlops.deployment.model_tests import ModelTests
from akerbp.mlops.deployment.plan import ModelPlan
from akerbp.mlops.deployment.result import ModelResult
from akerbp.mlops.deployment.target import Target
from akerbp.mlops.errors import MlopsError

if TYPE_CHECKING:
    from cognite.client.data_classes.functions import Function

    from akerbp.mlops.settings import ModelSettings

T = TypeVar("T")
# Files at the repo root that pytest reads (configuration, fixtures): outside the bundled code folder, so the content
# hash does not cover them.
PYTEST_INPUTS = ("conftest.py", "pytest.ini", "pyproject.toml", "setup.cfg", "tox.ini")


@dataclass(frozen=True)
class InFunction:
    """What a deploy run inside a CDF Function does differently: the model tests are not run (`skip_tests` says
    why), secrets are these values (not MLOPS_SECRET_*), build folders and the artifact cache go under `work_dir`,
    and the commit recorded is `commit` (there is no git checkout)."""

    skip_tests: str
    secrets: Mapping[str, str]
    work_dir: Path
    commit: str = ""


@dataclass
class ModelJob:
    """Everything one model's deploy needs, passed as one value."""

    settings: ModelSettings
    service: str
    env: str
    target: Target
    result: ModelResult
    tests: ModelTests
    tester: service_check.ServiceTest
    say: Progress
    deadline: float
    dry_run: bool = False
    force: bool = False
    retest: bool = False
    hint: verified_hint.Hint | None = None  # the local hint matching these inputs: the tests were deferred
    inside: InFunction | None = None  # a deploy from inside a CDF Function

    @property
    def deferred(self) -> bool:
        """The model tests and the ServiceTest process wait for the plan (or a hash that differs from the hint's)."""
        return self.hint is not None and not self.tests.started

    def start_tests(self, why: str) -> None:
        """Start the deferred model tests and ServiceTest process, saying why."""
        if not self.deferred:
            return
        self.say(f"starting the model tests: {why}")
        self.tests.start(deadline=self.deadline)
        self.tester.start()

    def timed(self, phase: str, started: float) -> float:
        now = time.monotonic()
        self.result.phases[phase] = self.result.phases.get(phase, 0.0) + now - started
        return now


@dataclass
class Prepared:
    """What preparing found, while the tests ran."""

    secrets: dict[str, str] = field(default_factory=dict)
    built: build.BuiltFolder | None = None
    live: Function | None = None
    plan: ModelPlan | None = None
    zip_bytes: bytes | None = None
    service_test: Future[service_check.CheckResult] | None = None
    failure: MlopsError | None = None
    finished: float = 0.0  # when preparing ended: from then on the deploy only waits for the tests


def untested_inputs(settings: ModelSettings) -> list[str]:
    """Files the model tests depend on that the content hash (the bundled code folder) does not cover."""
    root, code = Path(settings.root), Path(settings.root) / settings.code_folder
    found = [] if Path(settings.test_path).resolve().is_relative_to(code.resolve()) else [str(settings.test_file)]
    for name in PYTEST_INPUTS:
        path = root / name
        if path.is_file() and (name != "pyproject.toml" or "[tool.pytest" in path.read_text(errors="replace")):
            found.append(name)
    return found


def run(job: ModelJob) -> None:
    result, say = job.result, job.say
    with ThreadPoolExecutor(max_workers=1) as pool:
        prepared = prepare(job, pool)
        plan = prepared.plan if prepared.failure is None else None
        if job.inside is not None:
            result.tests = f"model tests not run: {job.inside.skip_tests}"
            say(result.tests)
        elif plan is not None and not plan.run_tests:
            job.tests.stop()
            result.tests = f"model tests {plan.tests}"
            say(f"{result.tests} (--retest reruns them)")
        else:
            outcome = job.tests.wait(stop=lambda: interrupts.check("while the model tests ran: nothing was changed "
                                                                    "in CDF"))
            result.phases["model tests (run)"] = outcome.seconds
            job.timed("model tests (wait)", prepared.finished)
            if not outcome.passed:
                say(f"model tests failed ({outcome.summary}); the end of pytest's output:\n{outcome.tail()}")
                also = f"; also: {prepared.failure}" if prepared.failure else ""
                raise MlopsError(f"model tests failed: {outcome.summary} (pytest's output: in the deploy's progress "
                                 f"on stderr){also}")
            result.tests = f"model tests passed ({outcome.summary})"
            say(f"model tests passed ({outcome.summary}, {outcome.seconds:.1f} s)")
        if prepared.failure is not None:
            raise prepared.failure
        assert plan is not None
        if prepared.service_test is not None:
            t = time.monotonic()
            check = _wait_for(prepared.service_test, "while the service test ran: nothing was changed in CDF")
            job.timed("service test (wait)", t)
            if not check.passed:
                raise MlopsError(f"service test failed: {check.detail}")
            say("service test passed")
    if plan.action == "unchanged":
        result.result = "unchanged"
        say(f"unchanged: {result.function} already runs hash {plan.hash[:10]}, verified by its smoke check "
            "(use --force to redeploy)")
        return
    if job.dry_run:
        result.result = "would deploy"
        return
    interrupts.check("before anything was changed in CDF")
    from akerbp.mlops.deployment import apply

    apply.apply(job, prepared)


def _wait_for(future: Future[T], where: str) -> T:
    """A future's result, noticing a stop request while waiting."""
    while True:
        try:
            return future.result(timeout=0.2)
        except FutureTimeout:
            interrupts.check(where)


def prepare(job: ModelJob, pool: ThreadPoolExecutor) -> Prepared:
    """Artifacts, folder, hash, live lookup, the plan; then the service test starts in `pool` if the tests run.
    Errors are kept in .failure, to be reported after the model tests (step 1's verdict comes first)."""
    from akerbp.mlops.deployment import functions

    settings, result, target = job.settings, job.result, job.target
    out = Prepared()
    t = time.monotonic()
    work = job.inside.work_dir if job.inside is not None else settings.root / ".mlops"
    try:
        out.secrets = _secrets(job)
        artifact = None
        if job.service == "prediction":
            artifact = artifacts.resolve(settings, job.env, target.client, work / "cache" / "artifacts")
            result.version, result.model_id = artifact.version, artifact.model_id
            job.say(f"artifact {artifact.model_id} from {artifact.source}")
        t = job.timed("artifacts", t)
        out.built = build.build_folder(settings, job.service, job.env, artifact=artifact.path if artifact else None,
                                       model_id=result.model_id, secrets=out.secrets, build_root=work / "build")
        result.hash = out.built.content_hash
        t = job.timed("build + hash", t)
        if job.hint is not None and job.hint.content_hash != result.hash:
            job.start_tests(f"the content hash is {result.hash[:10]}, not the verified {job.hint.content_hash[:10]}")
        client = target.client() if target.readable() else None
        out.live = functions.retrieve(client, result.function) if client is not None else None
        live = out.live
        same = (live is not None and live.status == "Ready"
                and (live.metadata or {}).get("mlops_hash") == result.hash)
        verified = same and client is not None and live is not None and records.is_verified(client, live)
        out.plan = result.plan = plans.make(
            client, result.function, result.hash, live, verified=verified, artifact=result.model_id,
            version=result.version, force=job.force, retest=job.retest, keep=settings.models_to_keep,
            untested_inputs=untested_inputs(settings) if verified else ())
        t = job.timed("change detection", t)
        if out.plan.run_tests:
            job.start_tests(f"the plan is {out.plan.action}" + (f" ({out.plan.tests})" if out.plan.tests else ""))
            if out.plan.changed and not job.dry_run:
                out.zip_bytes = build.zip_folder(out.built.path)  # before the service test runs
                t = job.timed("zip", t)
            out.service_test = pool.submit(service_check.run_service_test, out.built.path, job.service, job.tester,
                                           out.secrets, result.model_id, max(1.0, job.deadline - time.monotonic()),
                                           out.built.options.env_vars)
    except MlopsError as e:
        out.failure = e
    out.finished = time.monotonic()
    return out


def _secrets(job: ModelJob) -> dict[str, str]:
    """The model's secret values: MLOPS_SECRET_*, or inside a function the values it was given."""
    settings = job.settings
    if job.inside is None:
        return settings.secret_values()
    from akerbp.mlops.deployment import secrets

    return secrets.resolve(settings.secrets, lambda missing: (
        f"model '{settings.model_name}': field 'secrets': the function deploying it holds no value for "
        f"{', '.join(missing)}: register its automations again with these variables set"), given=job.inside.secrets)
