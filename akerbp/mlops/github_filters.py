"""GitHub's branch filters (`on.<event>.branches`, `branches-ignore`) read as GitHub reads them, apart from the
workflow that holds them: whether a push to a branch, or a pull request into one, triggers the event.

Patterns follow GitHub's "Filter pattern cheat sheet" (docs.github.com, workflow syntax): `*` matches any characters
but `/`, `**` any characters (`**/` also nothing), `?` makes the preceding character optional, `+` repeats it,
`[...]` is one character of a set (only a-z, A-Z, 0-9 and their ranges), `\\` escapes, and a leading `!` negates:
patterns are read in order and the last one that matches decides, so a negation alone never matches. `branches` and
`branches-ignore` for one event is an error, as on GitHub; a push filtered by tags only never runs for a branch. A
pull request's filters match its base branch (`--base`), not the branch it comes from; `paths` filters are not
evaluated (a rehearsal assumes the change touches them).
"""
from __future__ import annotations

import re

from akerbp.mlops.errors import UsageError


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
