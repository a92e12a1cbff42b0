"""The subset of GitHub Actions expressions (`${{ ... }}`, `if:`) that choosing a workflow's jobs needs, evaluated
as GitHub evaluates them, so that `mlops pipeline show|run` skips and runs the jobs GitHub would.

Supported: literals, contexts and their properties (`github.*`, `needs.<job>.result`), `==`/`!=`/`<`/`<=`/`>`/`>=`,
`!`/`&&`/`||`, startsWith/endsWith/contains/format/join/toJSON/fromJSON and the status functions
success()/failure()/always()/cancelled(); strings compare case-insensitively and other values loosely, as numbers.
An expression reading what only a GitHub run has (secrets, vars, ...) raises NotLocal, so its caller can leave that
value out instead of guessing it.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable

# Contexts a rehearsal cannot know: an expression reading them is not evaluated here.
_NOT_LOCAL = ("secrets", "vars", "env", "inputs", "matrix", "steps", "strategy", "runner", "job", "jobs")
_STATUS = ("success", "failure", "always", "cancelled")


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
    """The expression as a small tree of tuples (what evaluate takes); ExpressionError when it does not parse."""
    return _Parser(text).parse()


def _children(node: tuple) -> list[tuple]:
    return list(node[2]) if node[0] == "call" else [c for c in node[1:] if isinstance(c, tuple)]


def uses_status_function(node: tuple) -> bool:
    """Whether success()/failure()/always()/cancelled() appear: without one, GitHub adds `success() &&`."""
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


def truthy(v: Any) -> bool:
    """GitHub's truthiness: null, false, '', 0 and NaN are false."""
    return v not in (None, False, "", 0) and not (isinstance(v, float) and v != v)


def to_text(v: Any) -> str:
    """A value as GitHub writes it into a string (null is '', numbers without a needless .0, objects as JSON)."""
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
    return to_text(needle).lower() in to_text(haystack).lower()


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "contains": _contains,
    "startswith": lambda s, p: to_text(s).lower().startswith(to_text(p).lower()),
    "endswith": lambda s, p: to_text(s).lower().endswith(to_text(p).lower()),
    "format": lambda f, *a: re.sub(r"\{(\d+)\}", lambda m: to_text(a[int(m.group(1))]), to_text(f)),
    "join": lambda a, sep=",": to_text(sep).join(to_text(x) for x in a) if isinstance(a, list) else to_text(a),
    "tojson": lambda v: json.dumps(v, indent=2),
    "fromjson": lambda s: json.loads(to_text(s)),
}


def _get(obj: Any, key: Any) -> Any:
    if isinstance(obj, dict):
        key = to_text(key).lower()
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
        return not truthy(evaluate(node[1], context, status))
    if kind == "bin":
        op, left = node[1], evaluate(node[2], context, status)
        if op == "&&":
            return evaluate(node[3], context, status) if truthy(left) else left
        if op == "||":
            return left if truthy(left) else evaluate(node[3], context, status)
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


def strip_braces(text: str) -> str:
    """An `if:` value without its optional `${{ }}` (GitHub accepts either form)."""
    text = text.strip()
    if text.startswith("${{") and text.endswith("}}") and text.count("${{") == 1:
        return text[3:-2].strip()
    return text


_TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def interpolate(text: str, context: dict) -> str:
    """`${{ expr }}` parts of a value replaced by their values; NotLocal when one reads secrets, vars..."""
    return _TEMPLATE.sub(lambda m: to_text(evaluate(parse_expression(m.group(1)), context)), text)
