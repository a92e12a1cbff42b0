"""Reading mlops_settings.yaml with bounds: size, nesting, aliases, and keys written twice.

PyYAML resolves aliases by reference, so a 589-byte file of nested aliases is a tree of billions of values to
whatever walks it (it ran 150 s at 11.6 GB before being killed), `&a [*a]` is a value that contains itself, and
50,000 nested brackets exhaust the composer's recursion. A mapping with a key written twice silently keeps the
second. None of that has a place in a settings file: the limits below are far beyond any real one.
"""
from __future__ import annotations

from pathlib import Path

import yaml

MAX_BYTES = 1_000_000
MAX_DEPTH = 50  # nesting of mappings and lists, aliases expanded
MAX_VALUES = 100_000  # values once aliases are expanded
MAX_NUMBER_CHARS = 100  # an integer setting never needs more digits; Python refuses to read 4,300 and more
MERGE_TAG = "tag:yaml.org,2002:merge"
INT_TAG = "tag:yaml.org,2002:int"


class Refused(Exception):
    """The file is beyond a limit; the message names the line."""


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses nesting beyond MAX_DEPTH while it builds the node tree (it recurses)."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise Refused(f"line {mark.line + 1}: nested more than {MAX_DEPTH} levels deep; settings need a few")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def read_documents(path: Path) -> tuple[list[yaml.Node], list[object]]:
    """(nodes, values) of every document of the file; Refused or yaml.YAMLError when it cannot be read."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise Refused(f"is {size:,} bytes; a settings file may have at most {MAX_BYTES:,}")
    text = path.read_bytes()[:MAX_BYTES + 1].decode("utf-8")
    loader = BoundedLoader(text)
    try:
        nodes: list[yaml.Node] = []
        while loader.check_node():
            node = loader.get_node()
            assert node is not None, "check_node() said a document follows"
            nodes.append(node)
    finally:
        loader.dispose()
    problems = [p for n in nodes for p in check(n)]
    if problems:
        raise Refused(*problems)
    constructor = yaml.SafeLoader("")
    values: list[object] = []
    for node in nodes:
        try:
            values.append(constructor.construct_document(node))
        except (ValueError, OverflowError) as e:  # e.g. a timestamp out of range
            raise Refused(f"line {node.start_mark.line + 1}: a value cannot be read: {e}") from None
    return nodes, values


def check(root: yaml.Node) -> list[str]:
    """What makes a document unfit to be read: keys written twice, a value containing itself, more than MAX_VALUES
    values or MAX_DEPTH levels once aliases are expanded, numbers too long to read. Iterative: depth is unbounded."""
    problems: list[str] = []
    size: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth), each node counted once
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        children = _children(node)
        if done:
            on_path.discard(id(node))
            values = 1 + sum(size[id(c)][0] for c in children)
            depth = 1 + max((size[id(c)][1] for c in children), default=0)
            size[id(node)] = (values, depth)
            if values > MAX_VALUES or depth > MAX_DEPTH:
                what = f"{values:,} values" if values > MAX_VALUES else f"{depth} levels of nesting"
                return problems + [f"line {node.start_mark.line + 1}: expands to {what} through aliases (at most "
                                   f"{MAX_VALUES:,} values and {MAX_DEPTH} levels): use fewer or flatter aliases"]
            continue
        if id(node) in size:
            continue
        if isinstance(node, yaml.MappingNode):
            problems += _repeated_keys(node)
        if isinstance(node, yaml.ScalarNode) and node.tag == INT_TAG and len(node.value) > MAX_NUMBER_CHARS:
            problems.append(f"line {node.start_mark.line + 1}: a number of {len(node.value):,} characters; no "
                            f"setting needs more than {MAX_NUMBER_CHARS}")
        on_path.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                return problems + [f"line {child.start_mark.line + 1}: an alias used inside its own anchor (line "
                                   f"{node.start_mark.line + 1}) makes a value that contains itself: remove it"]
            if id(child) not in size:
                stack.append((child, False))
    return problems


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _repeated_keys(node: yaml.MappingNode) -> list[str]:
    first: dict[tuple, int] = {}
    problems = []
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == MERGE_TAG:
            continue
        line = key.start_mark.line + 1
        if (key.tag, key.value) in first:
            seen = first[key.tag, key.value]
            lines = f"lines {seen} and {line}" if seen != line else "both on this line"
            problems.append(f"line {line}: key {key.value!r} is written twice in one mapping ({lines}); YAML would "
                            "silently keep the second: remove one")
        first.setdefault((key.tag, key.value), line)
    return problems
