"""Walking a JSON-like value (a payload) depth first, without recursion, in memory that
grows with its depth only; a node's place is spelled out as a dotted path only when asked."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

# Deepest nesting of objects and lists a payload may have. Everything that walks a payload
# (redaction, JSON encoders, the child) stays far from Python's recursion limit.
MAX_DEPTH = 32


# A node's place in a value: a link to its parent's place, its key there and whether that
# key is a list index. Spelled out as a dotted path only for an error message: paths built
# for every node repeat their ancestors' keys, which a long key above a long list turns
# into gigabytes.
Place = tuple["Place", object, bool] | None


# What most nodes of a parsed payload are: checked first, as a plain type check is several
# times cheaper than the abstract Mapping's.
_LEAVES = (str, int, float, type(None))
OBJECTS = (dict, Mapping)
CONTAINERS = (dict, list, Mapping, tuple)


def children_of(node: Any) -> Iterator[tuple[object, Any, bool]] | None:
    if isinstance(node, _LEAVES):
        return None
    if isinstance(node, OBJECTS):
        return ((k, v, False) for k, v in node.items())
    if isinstance(node, list | tuple):
        return ((i, v, True) for i, v in enumerate(node))
    return None


def walk(value: Any) -> Iterator[tuple[Place, Any, int]]:
    """(place, node, depth) for every node of a JSON-like value, depth first, without
    recursion; memory grows with the depth only (one iterator per level)."""
    yield None, value, 0
    top = children_of(value)
    stack: list[tuple[Place, Iterator[tuple[object, Any, bool]], int]] = []
    if top is not None:
        stack.append((None, top, 1))
    while stack:
        parent, children, depth = stack[-1]
        step = next(children, None)
        if step is None:
            stack.pop()
            continue
        key, node, is_index = step
        place: Place = (parent, key, is_index)
        yield place, node, depth
        below = children_of(node)
        if below is not None:
            stack.append((place, below, depth + 1))


def dotted(place: Place) -> str:
    """`a.b[0].c` for a place."""
    parts: list[str] = []
    while place is not None:
        place, key, is_index = place
        parts.append(f"[{key}]" if is_index else f".{key}")
    return "".join(reversed(parts)).removeprefix(".")


def top_field(place: Place) -> str:
    """The top-level field a place is under."""
    key: object = ""
    while place is not None:
        place, key, _is_index = place
    return str(key)


def json_nested_too_deep(text: str, value: Any) -> bool:
    """Whether `value`, parsed from the JSON `text`, has a node deeper than MAX_DEPTH (a
    node at depth MAX_DEPTH is still fine, as in payload validation). Counting the text's
    brackets first spares a walk of every shallow value."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    return any(depth > MAX_DEPTH for _place, _node, depth in walk(value))
