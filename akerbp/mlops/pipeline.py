"""The Bitbucket pipeline read the way Bitbucket reads it: which steps run for a branch, and running them here.

Branch selection follows Bitbucket's documented rules (support.atlassian.com/bitbucket-cloud/docs/
use-glob-patterns-on-the-pipelines-yaml-file): `*` and `?` never match `/`, `**` does, `{a,b}` gives alternatives;
an exact branch name overrides every glob, and among globs the most specific one wins (`feature/bb-123-*` over
`feature/bb-*`; Atlassian's answer "Duplicate globbing pattern match" adds `my-*` over `'*'`). "Most specific" is
not defined further; we rank by literal characters, then fewer `**`, then fewer wildcards, then order in the file.
A push that matches no `branches` pattern runs `default`, if any; a pull request matches `pull-requests` patterns
against its source branch and has no fallback. (Bitbucket has a reported bug where a multi-pattern `{a,b}` glob
beats an exact name; we implement the documented rule.)

Running locally is for rehearsing a pipeline against the local CDF: the steps do not inherit COGNITE_* (so a project
configured in the shell is never touched), MLOPS_LOCAL_CDF=1 is set so that a CI-looking environment (CI=true) still
talks to the local CDF, and `pip install` lines are skipped by default because the environment is already set up.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from akerbp.mlops.errors import UsageError
from akerbp.mlops.model_repo import PIPELINE_FILE
from akerbp.mlops.utils.logger import mask

# Every variable naming a CDF project or its credentials (COGNITE_PROJECT, COGNITE_CLIENT_SECRET, COGNITE_API_KEY_*):
# steps run here do not inherit them.
PROJECT_VAR_PREFIX = "COGNITE_"

# Bitbucket deployment environments are typed Test, Staging or Production; the name's first word tells which.
# Staging deploys to our test environment: there is no separate staging CDF environment.
_DEPLOYMENT_ENV = {"test": "test", "testing": "test", "staging": "test", "stage": "test",
                   "production": "prod", "prod": "prod", "dev": "dev", "development": "dev"}

_INSTALL_LINE = re.compile(r"\bpip3?\s+install\b")
_INLINE_ENV = re.compile(r"(?:^|[;&|]\s*|\bexport\s+)ENV=([\"']?)([A-Za-z0-9_-]+)\1", re.M)


@dataclass(frozen=True)
class Step:
    name: str
    script: list[str]
    deployment: str | None = None
    manual: bool = False
    env: dict[str, str] = field(default_factory=dict)  # from the deployment: {"ENV": "test"}
    final: bool = False  # Bitbucket's `final` step: runs even after a failure
    unset_locally: tuple[str, ...] = ()  # variables only the CI sets (GitHub: from secrets or vars)

    @property
    def effective_env(self) -> str | None:
        """The ENV the step's commands see: an inline `ENV=x` beats the deployment's, None means inherited."""
        for line in self.script:
            m = _INLINE_ENV.search(line)
            if m:
                return m.group(2)
        return self.env.get("ENV")


@dataclass(frozen=True)
class Selection:
    """The pipeline Bitbucket would run: section is "branches", "default", "pull-requests" or None (nothing).

    A GitHub workflow's selection (pipeline_github.py) has section "push" or "pull_request", a label saying which
    filter decided (why nothing runs, when section is None), and the jobs it skipped with why."""

    branch: str
    pull_request: bool
    section: str | None
    pattern: str | None
    steps: list[Step]
    label: str | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def where(self) -> str:
        if self.label is not None:
            return self.label
        if self.section is None:
            return "no pipeline"
        if self.pattern is None:
            return f"pipelines.{self.section}"
        return f"pipelines.{self.section}['{self.pattern}']"


@dataclass(frozen=True)
class StepResult:
    name: str
    status: str  # passed | failed | skipped
    exit_code: int | None
    seconds: float
    reason: str = ""  # why skipped
    skipped_lines: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------- loading


def load_pipeline_file(path: Path | str) -> dict:
    """Parse a bitbucket-pipelines.yml, with errors that name the file and what is wrong in it."""
    config = load_ci_file(path, "pipeline")
    _check_config(config, str(path))
    return config


def load_ci_file(path: Path | str, what: str) -> Any:
    """Parse a CI file's YAML (Bitbucket's pipeline, a GitHub workflow), with errors that name the file and where."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: {what} file not found (run from the repo root or pass --file)")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    return config


def _check_config(config, source: str) -> None:
    if not isinstance(config, dict) or not isinstance(config.get("pipelines"), dict):
        raise UsageError(f"{source}: no 'pipelines' section (expected a mapping with default/branches/...)")
    for section in ("branches", "pull-requests"):
        value = config["pipelines"].get(section)
        if value is not None and not isinstance(value, dict):
            raise UsageError(f"{source}: pipelines.{section} must map branch patterns to lists of steps")


# --------------------------------------------------------------------------------------------------- matching


def _expand_braces(pattern: str) -> list[str]:
    """`{a,b}` alternatives (nested allowed) -> plain globs; an unbalanced brace is a literal character."""
    start = pattern.find("{")
    while start != -1:
        depth, parts, last = 0, [], start + 1
        for i in range(start, len(pattern)):
            c = pattern[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    parts.append(pattern[last:i])
                    head, tail = pattern[:start], pattern[i + 1:]
                    return [x for part in parts for x in _expand_braces(head + part + tail)]
            elif c == "," and depth == 1:
                parts.append(pattern[last:i])
                last = i + 1
        start = pattern.find("{", start + 1)
    return [pattern]


def _glob_regex(glob: str) -> re.Pattern:
    parts = re.split(r"(\*\*|\*|\?)", glob)
    wild = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wild.get(p, re.escape(p)) for p in parts) + r"\Z")


def _specificity(glob: str) -> tuple:
    """Exact names first, then more literal characters, fewer `**`, fewer wildcards."""
    wild = glob.count("*") + glob.count("?")
    return (wild == 0, len(glob) - wild, -glob.count("**"), -wild)


def glob_match(pattern: str, name: str) -> tuple | None:
    """How specifically `pattern` matches `name` (comparable; higher wins), or None if it does not match."""
    scores = [_specificity(g) for g in _expand_braces(pattern.strip()) if _glob_regex(g).match(name)]
    return max(scores) if scores else None


def _best_pattern(patterns, name: str) -> str | None:
    best, best_score = None, None
    for pattern in patterns:
        score = glob_match(str(pattern), name)
        if score is not None and (best_score is None or score > best_score):
            best, best_score = pattern, score
    return best


# --------------------------------------------------------------------------------------------------- steps


def env_for_deployment(deployment: str | None) -> dict[str, str]:
    """test-* and staging -> ENV=test, production-*/prod-* -> ENV=prod; other names set nothing."""
    if not deployment:
        return {}
    first = re.split(r"[-_ /.]", deployment.strip().lower(), maxsplit=1)[0]
    env = _DEPLOYMENT_ENV.get(first)
    return {"ENV": env} if env else {}


def _script(lines, where: str, source: str) -> list[str]:
    if not isinstance(lines, list) or not lines:
        raise UsageError(f"{source}: {where}: 'script' must be a non-empty list of commands")
    out = []
    for line in lines:
        if isinstance(line, dict) and "pipe" in line:
            out.append(f"# pipe: {line['pipe']} (a Bitbucket pipe: not run locally)")
        elif isinstance(line, (str, int, float)):
            out.append(str(line))
        else:
            raise UsageError(f"{source}: {where}: script entries must be commands (strings), got {line!r}")
    return out


def _step(body, where: str, source: str, number: int, *, deployment=None, manual=False, prefix="",
          final=False) -> Step:
    if not isinstance(body, dict):
        raise UsageError(f"{source}: {where}: a step must be a mapping with a 'script'")
    deployment = body.get("deployment", deployment)
    name = str(body.get("name") or f"Step {number}")
    return Step(
        name=f"{prefix}{name}",
        script=_script(body.get("script"), where, source),
        deployment=deployment,
        manual=manual or body.get("trigger") == "manual",
        env=env_for_deployment(deployment),
        final=final,
    )


def parse_steps(items, where: str = "pipeline", source: str = PIPELINE_FILE) -> list[Step]:
    """Flatten a pipeline's items (step, parallel, stage, final) into steps in the order they would run."""
    if not isinstance(items, list) or not items:
        raise UsageError(f"{source}: {where}: a pipeline must be a non-empty list of steps")
    steps: list[Step] = []
    for i, item in enumerate(items):
        here = f"{where}[{i}]"
        if not isinstance(item, dict) or len(item) != 1:
            raise UsageError(f"{source}: {here}: expected one of 'step', 'parallel', 'stage', 'final'")
        kind, body = next(iter(item.items()))
        if kind == "step":
            steps.append(_step(body, f"{here}.step", source, len(steps) + 1))
        elif kind == "final":
            steps.append(_step(body, f"{here}.final", source, len(steps) + 1, final=True))
        elif kind == "parallel":
            group = body.get("steps") if isinstance(body, dict) else body
            if not isinstance(group, list) or not group:
                raise UsageError(f"{source}: {here}.parallel: expected a list of steps")
            for j, sub in enumerate(group):
                if not isinstance(sub, dict) or "step" not in sub:
                    raise UsageError(f"{source}: {here}.parallel[{j}]: expected a 'step'")
                steps.append(_step(sub["step"], f"{here}.parallel[{j}].step", source, len(steps) + 1))
        elif kind == "stage":
            if not isinstance(body, dict) or not isinstance(body.get("steps"), list) or not body["steps"]:
                raise UsageError(f"{source}: {here}.stage: expected 'steps', a non-empty list")
            prefix = f"{body['name']}: " if body.get("name") else ""
            for j, sub in enumerate(body["steps"]):
                if not isinstance(sub, dict) or "step" not in sub:
                    raise UsageError(f"{source}: {here}.stage.steps[{j}]: expected a 'step'")
                manual = j == 0 and body.get("trigger") == "manual"  # a manual stage waits before its first step
                steps.append(_step(sub["step"], f"{here}.stage.steps[{j}].step", source, len(steps) + 1,
                                   deployment=body.get("deployment"), manual=manual, prefix=prefix))
        else:
            raise UsageError(f"{source}: {here}: unsupported item '{kind}' (expected step, parallel, stage, final)")
    return steps


def select_pipeline(config: dict, branch: str, *, pull_request: bool = False,
                    source: str = PIPELINE_FILE) -> Selection:
    """The pipeline Bitbucket runs for a push to `branch`, or for a pull request from it (pull_request=True)."""
    _check_config(config, source)
    pipelines = config["pipelines"]
    section = "pull-requests" if pull_request else "branches"
    patterns = pipelines.get(section) or {}
    pattern = _best_pattern(patterns, branch)
    if pattern is not None:
        steps = parse_steps(patterns[pattern], f"pipelines.{section}['{pattern}']", source)
        return Selection(branch, pull_request, section, str(pattern), steps)
    if not pull_request and pipelines.get("default") is not None:
        return Selection(branch, False, "default", None, parse_steps(pipelines["default"], "pipelines.default", source))
    return Selection(branch, pull_request, None, None, [])


def steps_for_branch(config: dict, branch: str, *, pull_request: bool = False) -> list[Step]:
    """The steps of select_pipeline(); empty when no pipeline runs."""
    return select_pipeline(config, branch, pull_request=pull_request).steps


# --------------------------------------------------------------------------------------------------- running


def is_install_line(line: str) -> bool:
    return bool(_INSTALL_LINE.search(line))


def _bash_script(step: Step, install: bool) -> tuple[str, list[str]]:
    """One bash script per step, like Bitbucket: exports and `cd` carry to later lines, the first failure stops."""
    out, skipped = ["set -e"], []
    for line in step.script:
        if not install and is_install_line(line):
            skipped.append(line)
            out.append(f"printf '%s\\n' {shlex.quote('+ (skipped: installs packages; use --install) ' + line)}")
            continue
        out.append(f"printf '%s\\n' {shlex.quote('+ ' + line)}")
        out.append(line)
    return "\n".join(out) + "\n", skipped


def step_environment(step: Step, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ less COGNITE_* (a rehearsal must never reach the project, maybe prod, configured in this shell),
    then MLOPS_LOCAL_CDF=1, then the deployment's ENV, then the caller's `env` (which wins)."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith(PROJECT_VAR_PREFIX)}
    return {**inherited, "MLOPS_LOCAL_CDF": "1", **step.env, **(env or {})}


def run_steps(steps: list[Step], repo: Path | str, include_manual: bool = False,
              env: Mapping[str, str] | None = None, *, install: bool = False,
              on_output: Callable[[str], None] | None = None) -> list[StepResult]:
    """Run steps in order in `repo`; stop at the first failure, and at a manual step unless include_manual.

    Output (secrets masked) goes to on_output, stderr by default. Parallel steps run one after another.
    """
    sink = on_output or (lambda text: (sys.stderr.write(text), sys.stderr.flush()))

    def emit(text: str) -> None:
        sink(mask(text))

    results: list[StepResult] = []
    failed: str | None = None  # name of the failed step: only `final` steps run after it
    paused = False  # reached a manual step without include_manual: nothing after it runs
    for number, step in enumerate(steps, 1):
        if failed and not step.final:
            results.append(StepResult(step.name, "skipped", None, 0.0, f"step '{failed}' failed"))
            continue
        if not failed and (paused or (step.manual and not include_manual)):
            reason = "after a manual step" if paused else "manual trigger (use --include-manual)"
            paused = True
            results.append(StepResult(step.name, "skipped", None, 0.0, reason))
            continue
        script, skipped = _bash_script(step, install)
        notes = [f"deployment {step.deployment}"] if step.deployment else []
        notes += [f"ENV={step.effective_env}"] if step.effective_env else []
        emit(f"==> [{number}/{len(steps)}] {step.name}" + (f" ({', '.join(notes)})" if notes else "") + "\n")
        started = time.monotonic()
        proc = subprocess.Popen(["bash", "-c", script], cwd=repo, env=step_environment(step, env),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for text in proc.stdout:
            emit(text)
        code = proc.wait()
        seconds = time.monotonic() - started
        status = "passed" if code == 0 else "failed"
        emit(f"<== {step.name}: {status} (exit {code}, {seconds:.1f} s)\n")
        results.append(StepResult(step.name, status, code, seconds, "", skipped))
        if code != 0 and not failed:
            failed = step.name
    return results
