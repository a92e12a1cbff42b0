"""GitHub's branch filter patterns (github_filters): the cheat sheet's examples, invalid patterns, and whether an
event's filters trigger it for a branch. The workflow around them (`on`, a pull request's --base) is test_github.py's."""
from __future__ import annotations

import pytest

from akerbp.mlops.errors import UsageError
from akerbp.mlops.github_filters import deciding_pattern, filter_matches, triggered


# ------------------------------------------------------------------------------------------ filter patterns
# The examples of GitHub's "Filter pattern cheat sheet" and "patterns to match branches and tags", then the rules
# around them: `*` stops at `/`, `?`/`+` repeat the character before, `[]` is one character, the last match decides.

FILTERS = [
    (["feature/*"], "feature/my-branch", True),
    (["feature/*"], "feature/your/branch", False),
    (["feature/**"], "feature/beta-a/my-branch", True),
    (["feature/**"], "feature/mona/the/octocat", True),
    (["feature/**"], "feature", False),
    (["main", "releases/mona-the-octocat"], "releases/mona-the-octocat", True),
    (["main", "releases/mona-the-octocat"], "releases/other", False),
    (["*"], "main", True),
    (["*"], "releases/x", False),
    (["**"], "all/the/branches", True),
    (["*feature"], "mona-feature", True),
    (["*feature"], "feature", True),
    (["*feature"], "ver-10-feature", True),
    (["*feature"], "feature-x", False),
    (["v2*"], "v2", True),
    (["v2*"], "v2.9", True),
    (["v[12].[0-9]+.[0-9]+"], "v1.10.1", True),
    (["v[12].[0-9]+.[0-9]+"], "v2.0.0", True),
    (["v[12].[0-9]+.[0-9]+"], "v3.0.0", False),
    (["v[12].[0-9]+.[0-9]+"], "v1.x.1", False),
    (["*.jsx?"], "page.js", True),
    (["*.jsx?"], "page.jsx", True),
    (["*.jsx?"], "page.jsxx", False),
    (["[CB]at"], "Cat", True),
    (["[CB]at"], "Hat", False),
    (["[1-2]00"], "200", True),
    (["[1-2]00"], "300", False),
    (["**/docs"], "docs", True),
    (["**/docs"], "a/b/docs", True),
    (["deploy/**"], "deploy/a/b", True),
    (["release\\+1"], "release+1", True),
    (["release\\+1"], "releasee1", False),
    (["deploy.x"], "deployax", False),  # `.` is a literal, not a regex dot
    # negations: the docs' releases example, order, and a negation alone
    (["releases/**", "!releases/**-alpha"], "releases/10", True),
    (["releases/**", "!releases/**-alpha"], "releases/beta/mona", True),
    (["releases/**", "!releases/**-alpha"], "releases/10-alpha", False),
    (["releases/**", "!releases/**-alpha"], "releases/beta/3-alpha", False),
    (["*", "!main"], "main", False),
    (["!main", "*"], "main", True),
    (["*.md", "!README.md", "README*"], "README.md", True),
    (["!releases/**"], "releases/x", False),
    (["!releases/**"], "main", False),
    (["a!b"], "a!b", True),  # `!` is special only first
]


@pytest.mark.parametrize("patterns, name, expected", FILTERS)
def test_filter_patterns_follow_githubs_cheat_sheet(patterns, name, expected):
    assert filter_matches(patterns, name) is expected


@pytest.mark.parametrize("pattern, problem", [
    ("[]", "closing"), ("feature/[a-", "closing"), ("[!a]", "in brackets"), ("[a-Z]", "ranges"),
    ("x*+", "nothing to repeat"), ("x??", "nothing to repeat"), ("x\\", "escapes nothing"),
])
def test_an_invalid_pattern_is_a_usage_error_naming_it(pattern, problem):
    with pytest.raises(UsageError, match=problem) as e:
        deciding_pattern(["main", pattern], "main", "wf.yml: on.push.branches")
    assert pattern in str(e.value) and "on.push.branches" in str(e.value)


# ------------------------------------------------------------------------------------------ triggers

TRIGGERS = [
    ({"branches-ignore": ["mona/octocat", "releases/**-alpha"]}, "mona/octocat", False),
    ({"branches-ignore": ["mona/octocat", "releases/**-alpha"]}, "releases/beta/3-alpha", False),
    ({"branches-ignore": ["mona/octocat", "releases/**-alpha"]}, "main", True),
    ({"branches-ignore": ["x/**", "!x/keep"]}, "x/keep", True),
    ({"tags": ["v*"]}, "main", False),  # filtered by tags only: no branch push runs it
    ({"branches": ["main"], "tags": ["v*"]}, "main", True),
    ({"paths": ["src/**"]}, "anything", True),  # paths are not evaluated: assumed to match
    ({}, "anything", True),
]


@pytest.mark.parametrize("filters, branch, runs", TRIGGERS)
def test_push_triggers(filters, branch, runs):
    assert triggered(filters, "push", branch, "wf.yml")[0] is runs


def test_branches_and_branches_ignore_together_are_refused_as_github_does():
    with pytest.raises(UsageError, match="cannot both filter one event"):
        triggered({"branches": ["a"], "branches-ignore": ["b"]}, "push", "a", "wf.yml")

