"""The `${{ }}` / `if:` expression subset (github_expressions): values, operators and functions a rehearsal
evaluates, and what it cannot (secrets, vars, hashFiles) or will not parse."""
from __future__ import annotations

import pytest

from akerbp.mlops import pipeline_github as gh
from akerbp.mlops.github_expressions import ExpressionError, NotLocal, evaluate, parse_expression

# ------------------------------------------------------------------------------------------ expressions

CONTEXT = {**gh.github_context("trainpred/x", False, None), "needs": {"a": {"result": "skipped"}}}
EXPRESSIONS = [
    ("github.event_name == 'push'", True),
    ("github.event_name == 'PUSH'", True),  # strings compare case-insensitively
    ("github.ref", "refs/heads/trainpred/x"),
    ("startsWith(github.ref, 'refs/heads/trainpred/')", True),
    ("endsWith(github.ref_name, '/X')", True),
    ("contains(fromJSON('[\"main\", \"master\"]'), github.ref_name)", False),
    ("contains(github.ref, 'pred')", True),
    ("github.head_ref || 'none'", "none"),
    ("needs.a.result == 'skipped' && !(1 > 2)", True),
    ("needs['a'].result != 'success'", True),
    ("github.unknown", None),
    ("format('{0}-{1}', 'a', 1)", "a-1"),
    ("'it''s'", "it's"),
    ("!cancelled() && !failure()", True),
    ("null == 0 && true == 1", True),
]


@pytest.mark.parametrize("text, value", EXPRESSIONS)
def test_expressions(text, value):
    status = {"success": True, "failure": False, "always": True, "cancelled": False}
    assert evaluate(parse_expression(text), CONTEXT, status) == value


@pytest.mark.parametrize("text, error", [
    ("secrets.TOKEN == ''", NotLocal), ("hashFiles('x')", NotLocal), ("vars.X", NotLocal),
    ("github.ref ==", ExpressionError), ("a b", ExpressionError), ("'open", ExpressionError),
    ("nonsense.x", ExpressionError),
])
def test_expressions_a_rehearsal_cannot_evaluate(text, error):
    with pytest.raises(error):
        evaluate(parse_expression(text), CONTEXT, {})

