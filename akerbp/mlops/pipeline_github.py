"""The GitHub Actions workflow read the way GitHub reads it: whether a push or pull request triggers it, which jobs
run and in which order; running them here reuses pipeline.run_steps (the Bitbucket runner), one step per job.

Branch filters follow GitHub's "Filter pattern cheat sheet" (docs.github.com, workflow syntax): `*` matches any
characters but `/`, `**` any characters (`**/` also nothing), `?` makes the preceding character optional, `+`
repeats it, `[...]` is one character of a set (only a-z, A-Z, 0-9 and their ranges), `\\` escapes, and a leading
`!` negates: patterns are read in order and the last one that matches decides, so a negation alone never matches.
`branches` and `branches-ignore` for one event is an error, as on GitHub; a push filtered by tags only never runs
for a branch. A pull request's filters match its base branch (`--base`), not the branch it comes from; `paths`
filters are not evaluated (a rehearsal assumes the change touches them).

Jobs run in `needs` order; a job's `if:` is evaluated with the expression subset a selection needs (`github.*`,
`needs.<job>.result`, `==`/`!=`/`!`/`&&`/`||`, startsWith/endsWith/contains/..., success()/failure()/always()/
cancelled(); strings compare case-insensitively). An `if:` without a status function means `success() && (...)`:
a job whose need was skipped is skipped. A job whose `if:` holds after a failed need runs after a failure too (like
Bitbucket's `final`). Whether an environment has required reviewers is repository configuration, not in the file:
production-*/prod-* environments (the template's protected ones) count as manual steps; an environment sets no ENV
(on GitHub it does not). Locally, `uses:` actions do not run, each `run:` with its own env or working-directory runs
in a subshell (as its own process on GitHub), and values from `secrets`/`vars` are not set (every COGNITE_* is
withheld anyway, see pipeline.py).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

from akerbp.mlops.errors import UsageError
from akerbp.mlops.model_repo import GITHUB_WORKFLOW_FILE
from akerbp.mlops.pipeline import Selection, Step, env_for_deployment, load_ci_file

WORKFLOW_FILE = GITHUB_WORKFLOW_FILE
EVENTS = ("push", "pull_request")
# Contexts a rehearsal cannot know: an expression reading them is not evaluated here.
_NOT_LOCAL = ("secrets", "vars", "env", "inputs", "matrix", "steps", "strategy", "runner", "job", "jobs")
_STATUS = ("success", "failure", "always", "cancelled")
_SHELLS = (None, "bash", "sh")


# --------------------------------------------------------------------------------------------------- loading


def load_workflow_file(path: Path | str) -> dict:
    """Parse a workflow file, with errors that name the file and what is wrong in it."""
    config = load_ci_file(path, "workflow")
    _check_config(config, str(path))
    return config


def _on(config: dict) -> Any:
    # YAML 1.1 (PyYAML) reads the key `on` as the boolean True.
    return config["on"] if "on" in config else config.get(True)


def _check_config(config, source: str) -> None:
    if not isinstance(config, dict) or _on(config) is None:
        raise UsageError(f"{source}: no 'on' section (a GitHub workflow names the events that trigger it)")
    jobs = config.get("jobs")
    if not isinstance(jobs, dict) or not jobs:
        raise UsageError(f"{source}: 'jobs' must map job ids to jobs")
    for job_id, job in jobs.items():
        if not isinstance(job, dict):
            raise UsageError(f"{source}: jobs.{job_id} must be a mapping")
        if "uses" not in job and (not isinstance(job.get("steps"), list) or not job["steps"]):
            raise UsageError(f"{source}: jobs.{job_id}: 'steps' must be a non-empty list")


def events(config: dict) -> dict[str, dict]:
    """Event name -> its filters ({} when it has none), from any of the forms `on` takes."""
    on = _on(config)
    if isinstance(on, str):
        return {on: {}}
    if isinstance(on, list):
        return {str(e): {} for e in on}
    if isinstance(on, dict):
        return {str(e): (f if isinstance(f, dict) else {}) for e, f in on.items()}
    return {}


# --------------------------------------------------------------------------------------------------- filters


def _class(pattern: str, i: int) -> tuple[str, int]:
    """`[...]` from pattern[i] == '[': (regex class, index after it). Only letters, digits and their ranges."""
    end = pattern.find("]", i + 1)
    body = pattern[i + 1:end] if end != -1 else ""
    if end == -1 or not body:
        raise ValueError("'[' needs a closing ']' and at least one character")
    out, j = [], 0
    while j < len(body):
        if j + 2 < len(body) and body[j + 1] == "-":
            a, b = body[j], body[j + 2]
            if not (a <= b and any(lo <= a and b <= hi for lo, hi in (("a", "z"), ("A", "Z"), ("0", "9")))):
                raise ValueError(f"range '{a}-{b}': ranges can only include a-z, A-Z and 0-9")
            out.append(f"{a}-{b}")
            j += 3
        elif body[j].isascii() and body[j].isalnum():
            out.append(body[j])
            j += 1
        else:
            raise ValueError(f"'{body[j]}' in brackets: they can only include a-z, A-Z and 0-9")
    return "[" + "".join(out) + "]", end + 1


def compile_pattern(pattern: str) -> re.Pattern:
    """One filter pattern (without its leading `!`) as a regex matching a whole name."""
    out: list[str] = []
    repeatable = False  # a quantifier needs a preceding character or class
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i, repeatable = i + 3, False
        elif pattern.startswith("**", i):
            out.append(".*")
            i, repeatable = i + 2, False
        elif c == "*":
            out.append("[^/]*")
            i, repeatable = i + 1, False
        elif c in "?+":
            if i == 0:
                out.append(re.escape(c))  # nothing precedes it: a literal, as GitHub's runner clone (act) reads it
            elif not repeatable:
                raise ValueError(f"'{c}' at {i} follows a wildcard or another '?'/'+': nothing to repeat")
            else:
                out.append(c)
            i, repeatable = i + 1, False
        elif c == "[":
            text, i = _class(pattern, i)
            out.append(text)
            repeatable = True
        elif c == "\\":
            if i + 1 >= len(pattern):
                raise ValueError("a trailing '\\' escapes nothing")
            out.append(re.escape(pattern[i + 1]))
            i, repeatable = i + 2, True
        else:
            out.append(re.escape(c))
            i, repeatable = i + 1, True
    return re.compile("".join(out) + r"\Z")


def _compiled(pattern, where: str) -> tuple[bool, re.Pattern]:
    text = str(pattern)
    negative = text.startswith("!")
    try:
        return negative, compile_pattern(text[1:] if negative else text)
    except ValueError as e:
        raise UsageError(f"{where}: pattern '{text}': {e}") from None


def deciding_pattern(patterns, name: str, where: str = "filter") -> str | None:
    """The pattern that decides for `name`: the last one matching it, if that one is positive; else None."""
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list):
        raise UsageError(f"{where}: expected a list of patterns")
    decided: str | None = None
    for pattern in patterns:
        negative, regex = _compiled(pattern, where)
        if regex.match(name):
            decided = None if negative else str(pattern)
    return decided


def filter_matches(patterns, name: str) -> bool:
    """Whether a `branches` (or `tags`, `paths`) list selects `name`."""
    return deciding_pattern(patterns, name) is not None


def triggered(filters: dict, event: str, branch: str | None, source: str) -> tuple[bool, str | None, str]:
    """(runs, deciding pattern, why) for one event's filters and the branch they match (a pull request's base)."""
    where = f"{source}: on.{event}"
    if "branches" in filters and "branches-ignore" in filters:
        raise UsageError(f"{where}: 'branches' and 'branches-ignore' cannot both filter one event (GitHub refuses "
                         "the workflow); use '!pattern' in 'branches' to exclude")
    has_tags = any(k in filters for k in ("tags", "tags-ignore"))
    if "branches" not in filters and "branches-ignore" not in filters:
        if event == "push" and has_tags:
            return False, None, f"on.{event} filters tags only: no branch push triggers it"
        return True, None, f"on.{event}"
    if branch is None:
        raise UsageError(f"{where} filters pull requests by their base branch: pass --base BRANCH "
                         "(the branch the pull request would merge into)")
    if "branches" in filters:
        pattern = deciding_pattern(filters["branches"], branch, f"{where}.branches")
        if pattern is None:
            return False, None, f"no on.{event}.branches pattern matches '{branch}'"
        return True, pattern, f"on.{event}.branches['{pattern}']"
    pattern = deciding_pattern(filters["branches-ignore"], branch, f"{where}.branches-ignore")
    if pattern is not None:
        return False, pattern, f"on.{event}.branches-ignore['{pattern}'] excludes '{branch}'"
    return True, None, f"on.{event} (no branches-ignore pattern matches)"


# --------------------------------------------------------------------------------------------------- expressions


class ExpressionError(ValueError):
    """An expression that does not parse, or that reads something a rehearsal cannot know."""


class NotLocal(ExpressionError):
    """The expression reads secrets, vars or another context only a GitHub run has."""


_TOKEN = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<str>'(?:[^']|'')*')|(?P<op>&&|\|\||==|!=|<=|>=|[<>!().,\[\]])"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*))")


def _tokens(text: str) -> list[tuple[str, Any]]:
    out, i = [], 0
    text = text.rstrip()
    while i < len(text):
        m = _TOKEN.match(text, i)
        if not m or m.end() == i:
            raise ExpressionError(f"unexpected '{text[i:].strip()[:20]}'")
        kind = m.lastgroup or ""
        value: Any = m.group(kind)
        if kind == "num":
            value = float(value)
        elif kind == "str":
            value = value[1:-1].replace("''", "'")
        out.append((kind, value))
        i = m.end()
    return out


class _Parser:
    """Recursive descent over GitHub's precedence: ! > comparisons > == != > && > ||. Builds a small tree."""

    def __init__(self, text: str):
        self.tokens = _tokens(text)
        self.i = 0

    def peek(self, *ops: str) -> bool:
        return self.i < len(self.tokens) and self.tokens[self.i][0] == "op" and self.tokens[self.i][1] in ops

    def take(self) -> tuple[str, Any]:
        if self.i >= len(self.tokens):
            raise ExpressionError("the expression ends too early")
        self.i += 1
        return self.tokens[self.i - 1]

    def expect(self, op: str) -> None:
        kind, value = self.take()
        if (kind, value) != ("op", op):
            raise ExpressionError(f"expected '{op}', got '{value}'")

    def parse(self) -> tuple:
        node = self.binary(0)
        if self.i != len(self.tokens):
            raise ExpressionError(f"unexpected '{self.tokens[self.i][1]}'")
        return node

    _LEVELS = (("||",), ("&&",), ("==", "!="), ("<", "<=", ">", ">="))

    def binary(self, level: int) -> tuple:
        if level == len(self._LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while self.peek(*self._LEVELS[level]):
            op = self.take()[1]
            node = ("bin", op, node, self.binary(level + 1))
        return node

    def unary(self) -> tuple:
        if self.peek("!"):
            self.take()
            return ("not", self.unary())
        return self.postfix(self.primary())

    def postfix(self, node: tuple) -> tuple:
        while self.peek(".", "["):
            if self.take()[1] == ".":
                kind, name = self.take()
                if kind != "name":
                    raise ExpressionError(f"expected a property name after '.', got '{name}'")
                node = ("get", node, ("lit", name))
            else:
                node = ("get", node, self.binary(0))
                self.expect("]")
        return node

    def primary(self) -> tuple:
        kind, value = self.take()
        if kind in ("num", "str"):
            return ("lit", value)
        if kind == "op" and value == "(":
            node = self.binary(0)
            self.expect(")")
            return node
        if kind != "name":
            raise ExpressionError(f"unexpected '{value}'")
        if value in ("true", "false", "null"):
            return ("lit", {"true": True, "false": False, "null": None}[value])
        if self.peek("("):
            self.take()
            args = []
            while not self.peek(")"):
                args.append(self.binary(0))
                if not self.peek(")"):
                    self.expect(",")
            self.take()
            return ("call", value, args)
        return ("ctx", value)


def parse_expression(text: str) -> tuple:
    return _Parser(text).parse()


def _children(node: tuple) -> list[tuple]:
    return list(node[2]) if node[0] == "call" else [c for c in node[1:] if isinstance(c, tuple)]


def uses_status_function(node: tuple) -> bool:
    return (node[0] == "call" and node[1].lower() in _STATUS) or any(map(uses_status_function, _children(node)))


def _number(v: Any) -> float:
    if v is None:
        return 0.0
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip()) if v.strip() else 0.0
        except ValueError:
            return float("nan")
    return float("nan")


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    if type(a) is type(b) or (isinstance(a, (dict, list)) or isinstance(b, (dict, list))):
        return a == b
    return _number(a) == _number(b)


def _compare(op: str, left: Any, right: Any) -> bool:
    a: Any
    b: Any
    if isinstance(left, str) and isinstance(right, str):
        a, b = left.lower(), right.lower()
    else:
        a, b = _number(left), _number(right)
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def _truthy(v: Any) -> bool:
    return v not in (None, False, "", 0) and not (isinstance(v, float) and v != v)


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else str(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def _contains(haystack: Any, needle: Any) -> bool:
    if isinstance(haystack, list):
        return any(_equal(item, needle) for item in haystack)
    return _text(needle).lower() in _text(haystack).lower()


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "contains": _contains,
    "startswith": lambda s, p: _text(s).lower().startswith(_text(p).lower()),
    "endswith": lambda s, p: _text(s).lower().endswith(_text(p).lower()),
    "format": lambda f, *a: re.sub(r"\{(\d+)\}", lambda m: _text(a[int(m.group(1))]), _text(f)),
    "join": lambda a, sep=",": _text(sep).join(_text(x) for x in a) if isinstance(a, list) else _text(a),
    "tojson": lambda v: json.dumps(v, indent=2),
    "fromjson": lambda s: json.loads(_text(s)),
}


def _get(obj: Any, key: Any) -> Any:
    if isinstance(obj, dict):
        key = _text(key).lower()
        return next((v for k, v in obj.items() if k.lower() == key), None)
    if isinstance(obj, list) and isinstance(key, float) and key.is_integer() and 0 <= key < len(obj):
        return obj[int(key)]
    return None


def evaluate(node: tuple, context: dict, status: dict[str, bool] | None = None) -> Any:
    """Evaluate a parsed expression; `status` gives success/failure/always/cancelled (all of them when given)."""
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "ctx":
        name = node[1].lower()
        if name in context:
            return context[name]
        if name in _NOT_LOCAL:
            raise NotLocal(f"reads '{node[1]}', which only a GitHub run has")
        raise ExpressionError(f"unknown name '{node[1]}'")
    if kind == "get":
        return _get(evaluate(node[1], context, status), evaluate(node[2], context, status))
    if kind == "not":
        return not _truthy(evaluate(node[1], context, status))
    if kind == "bin":
        op, left = node[1], evaluate(node[2], context, status)
        if op == "&&":
            return evaluate(node[3], context, status) if _truthy(left) else left
        if op == "||":
            return left if _truthy(left) else evaluate(node[3], context, status)
        right = evaluate(node[3], context, status)
        if op == "==":
            return _equal(left, right)
        if op == "!=":
            return not _equal(left, right)
        return _compare(op, left, right)
    name = node[1].lower()
    if name in _STATUS:
        if status is None:
            raise ExpressionError(f"{node[1]}() is for 'if:' conditions")
        return status[name]
    if name not in _FUNCTIONS:
        raise NotLocal(f"calls {node[1]}(), which is not evaluated here")
    args = [evaluate(arg, context, status) for arg in node[2]]
    try:
        return _FUNCTIONS[name](*args)
    except (TypeError, IndexError, ValueError) as e:
        raise ExpressionError(f"{node[1]}(): {e}") from None


def _strip_braces(text: str) -> str:
    text = text.strip()
    if text.startswith("${{") and text.endswith("}}") and text.count("${{") == 1:
        return text[3:-2].strip()
    return text


_TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def interpolate(text: str, context: dict) -> str:
    """`${{ expr }}` parts of a value replaced by their values; NotLocal when one reads secrets, vars..."""
    return _TEMPLATE.sub(lambda m: _text(evaluate(parse_expression(m.group(1)), context)), text)


# --------------------------------------------------------------------------------------------------- jobs


def github_context(branch: str, pull_request: bool, base: str | None) -> dict:
    """The `github` context of a push to `branch`, or of a pull request from it into `base`."""
    if pull_request:
        github = {"event_name": "pull_request", "ref": "refs/pull/1/merge", "ref_name": "1/merge",
                  "head_ref": branch, "base_ref": base or "", "ref_type": "branch"}
    else:
        github = {"event_name": "push", "ref": f"refs/heads/{branch}", "ref_name": branch, "head_ref": "",
                  "base_ref": "", "ref_type": "branch"}
    return {"github": github}


def job_order(jobs: dict, source: str) -> list[str]:
    """Job ids so that each comes after its `needs`; otherwise in file order."""
    needs = {job_id: _needs(job, job_id, jobs, source) for job_id, job in jobs.items()}
    order: list[str] = []
    while len(order) < len(jobs):
        ready = [j for j in jobs if j not in order and all(n in order for n in needs[j])]
        if not ready:
            cycle = [j for j in jobs if j not in order]
            raise UsageError(f"{source}: jobs {', '.join(cycle)} need each other (a cycle)")
        order.append(ready[0])
    return order


def _needs(job: dict, job_id: str, jobs: dict, source: str) -> list[str]:
    value = job.get("needs") or []
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list):
        raise UsageError(f"{source}: jobs.{job_id}.needs must be a job id or a list of them")
    unknown = [str(n) for n in value if n not in jobs]
    if unknown:
        raise UsageError(f"{source}: jobs.{job_id}.needs names unknown job {', '.join(unknown)}")
    return [str(n) for n in value]


def _condition(value: Any, where: str) -> tuple:
    """The parsed `if:` of a job or step, with GitHub's implicit success() when it names no status function."""
    if value is None:
        return ("call", "success", [])
    if isinstance(value, bool):
        value = "true" if value else "false"
    try:
        node = parse_expression(_strip_braces(str(value)))
    except ExpressionError as e:
        raise UsageError(f"{where}: if: {value!r}: {e}") from None
    return node if uses_status_function(node) else ("bin", "&&", ("call", "success", []), node)


def _job_runs(node: tuple, context: dict, results: list[str], where: str, value: Any) -> bool:
    status = {"success": all(r == "success" for r in results), "failure": any(r == "failure" for r in results),
              "always": True, "cancelled": False}
    try:
        return _truthy(evaluate(node, context, status))
    except ExpressionError as e:
        raise UsageError(f"{where}: if: {value!r} cannot be evaluated here: {e}") from None


def _environment_name(job: dict) -> str | None:
    env = job.get("environment")
    if isinstance(env, dict):
        env = env.get("name")
    return str(env) if env else None


def _env_values(env: Any, context: dict, where: str) -> tuple[dict[str, str], list[str]]:
    """(variables set here, variables only a GitHub run sets: from secrets, vars...)."""
    if env is None:
        return {}, []
    if not isinstance(env, dict):
        raise UsageError(f"{where}.env must map variable names to values")
    values, unset = {}, []
    for name, value in env.items():
        try:
            values[str(name)] = interpolate(_text(value), context)
        except NotLocal:
            unset.append(str(name))
        except ExpressionError as e:
            raise UsageError(f"{where}.env.{name}: {e}") from None
    return values, unset


def _script_entry(step: Any, where: str, context: dict, unset: list[str]) -> str:
    if not isinstance(step, dict):
        raise UsageError(f"{where}: a step must be a mapping with 'run' or 'uses'")
    label = step.get("name") or step.get("uses") or "step"
    if "uses" in step:
        return f"# uses: {step['uses']} (a GitHub action: not run locally)"
    if "run" not in step:
        raise UsageError(f"{where}: a step needs 'run' or 'uses'")
    if step.get("shell") not in _SHELLS:
        raise UsageError(f"{where}: shell '{step['shell']}' is not run here (bash or sh only)")
    if "if" in step:
        node = _condition(step["if"], where)
        status = {"success": True, "failure": False, "always": True, "cancelled": False}
        try:
            runs = _truthy(evaluate(node, context, status))
        except ExpressionError as e:
            raise UsageError(f"{where}: if: {step['if']!r} cannot be evaluated here: {e}") from None
        if not runs:
            return f"# skipped ({label}): if: {step['if']}"
    try:
        run = interpolate(str(step["run"]).rstrip("\n"), context)
    except NotLocal as e:
        raise UsageError(f"{where}.run {e}: pass the value through the step's env instead") from None
    except ExpressionError as e:
        raise UsageError(f"{where}.run: {e}") from None
    values, step_unset = _env_values(step.get("env"), context, where)
    unset.extend(n for n in step_unset if n not in unset)
    directory = step.get("working-directory")
    if not values and not directory:
        return run
    # Like GitHub, the step's variables and folder are its own: a subshell keeps them from the job's later steps.
    prefix = [f"cd {json.dumps(str(directory))}"] if directory else []
    prefix += [f"export {name}={json.dumps(value)}" for name, value in values.items()]
    return "(\n" + "\n".join(prefix + [run]) + "\n)"


def _skip_reason(job: dict, node: tuple, context: dict, not_run: list[str], where: str) -> str:
    """Why a job is skipped: its own `if:` is false, or (GitHub's implicit success()) a job it needs did not run."""
    implicit = node[:3] == ("bin", "&&", ("call", "success", []))
    if not_run and ("if" not in job or (implicit and _job_runs(node[3], context, [], where, job["if"]))):
        return f"needs {', '.join(not_run)}, which did not run"
    return f"if: {job['if']}"


def job_step(job_id: str, job: dict, context: dict, workflow_env: tuple[dict, list], source: str,
             final: bool) -> Step:
    """A job as one runnable Step: its `run:` scripts in order, its environment as the deployment."""
    where = f"{source}: jobs.{job_id}"
    environment = _environment_name(job)
    env, unset = dict(workflow_env[0]), list(workflow_env[1])
    job_env, job_unset = _env_values(job.get("env"), context, where)
    env.update(job_env)
    unset.extend(job_unset)
    if "uses" in job:
        script = [f"# uses: {job['uses']} (a reusable workflow: not run locally)"]
    else:
        script = [_script_entry(step, f"{where}.steps[{i}]", context, unset) for i, step in enumerate(job["steps"])]
    # Unlike a Bitbucket deployment here, an environment sets no ENV: on GitHub only the workflow's own env or an
    # inline `ENV=...` does, and a rehearsal that supplied one would hide a workflow deploying to dev.
    manual = env_for_deployment(environment).get("ENV") == "prod"
    return Step(name=str(job.get("name") or job_id), script=script, deployment=environment, manual=manual, env=env,
                final=final, unset_locally=tuple(dict.fromkeys(unset)))


def select_jobs(config: dict, branch: str, *, pull_request: bool = False, base: str | None = None,
                source: str = WORKFLOW_FILE) -> Selection:
    """The jobs GitHub runs for a push to `branch`, or for a pull request from it into `base`."""
    _check_config(config, source)
    event = "pull_request" if pull_request else "push"
    found = events(config)
    if event not in found:
        return Selection(branch, pull_request, None, None, [], label=f"the workflow has no 'on.{event}'")
    runs, pattern, why = triggered(found[event], event, base if pull_request else branch, source)
    if not runs:
        return Selection(branch, pull_request, None, pattern, [], label=why)
    context = github_context(branch, pull_request, base)
    jobs = config["jobs"]
    workflow_env = _env_values(config.get("env"), context, source)
    results: dict[str, str] = {}
    steps: list[Step] = []
    skipped: list[tuple[str, str]] = []
    for job_id in job_order(jobs, source):
        job, where = jobs[job_id], f"{source}: jobs.{job_id}"
        needs = _needs(job, job_id, jobs, source)
        node = _condition(job.get("if"), where)
        context["needs"] = {n: {"result": results[n], "outputs": {}} for n in needs}
        if not _job_runs(node, context, [results[n] for n in needs], where, job.get("if")):
            results[job_id] = "skipped"
            reason = _skip_reason(job, node, context, [n for n in needs if results[n] != "success"], where)
            skipped.append((str(job.get("name") or job_id), reason))
            continue
        results[job_id] = "success"
        # Runs after a failure too when its condition holds with the jobs it needs failed (always(), failure()).
        failed = {n: {"result": "failure", "outputs": {}} for n in needs}
        final = bool(needs) and _job_runs(node, {**context, "needs": failed}, ["failure"] * len(needs), where,
                                          job.get("if"))
        steps.append(job_step(job_id, job, context, workflow_env, source, final))
    return Selection(branch, pull_request, event, pattern, steps, label=why, skipped=skipped)

