"""hypothesis strategies that break JSON documents, for testing validators and parsers.

This module imports hypothesis, a test-only dependency (``criolib[test]``): only
tests import it. Where :mod:`criolib.testing.strategies` draws documents of the
right shape, these draw the wrong ones: values a parser must survive
(:func:`junk_values`, :func:`non_objects`) and random damage to a valid document
(:func:`corrupted`): nodes deleted, replaced, retyped, duplicated, emptied, or
joined by unknown members. A validator fed them must report, never crash.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from hypothesis import strategies as st

__all__ = ["EDITS", "JsonPath", "corrupted", "json_paths", "junk_values", "non_objects"]

Strategy = st.SearchStrategy
JsonPath = tuple[str | int, ...]

#: The kinds of damage :func:`corrupted` does, by name.
EDITS = ("delete", "replace", "retype", "duplicate", "empty", "insert")


def _power_of_ten(digits: int) -> int:
    return int(10**digits)


def _scalars() -> Strategy[Any]:
    return (
        st.none()
        | st.booleans()
        | st.integers()
        # The edges of the spec's integer widths, and past them.
        | st.sampled_from([-1, 0, 2**31, 2**32, 2**63, -(2**63) - 1, 2**64, 2**64 - 1])
        # Too long for Python to print (more than 4300 digits). Built by map: hypothesis
        # prints its strategies, and could not print st.just(10**5000).
        | st.sampled_from([5000, 20000]).map(_power_of_ten)
        | st.floats()  # NaN and the infinities too: json.loads accepts them
        | st.text(max_size=20)
        | st.sampled_from(["", "/", "..", "relative/path", "CAP_FOO", "\x00", "a,b", "1.2",
                           "1.2.0", "0-3,7", "9" * 5000])
    )


def junk_values(*, max_leaves: int = 12) -> Strategy[Any]:
    """Any JSON-ish value: scalars above, arrays (lists and tuples) and objects."""
    return st.recursive(
        _scalars(),
        lambda children: (
            st.lists(children, max_size=4)
            | st.lists(children, max_size=3).map(tuple)
            | st.dictionaries(st.text(max_size=10), children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def non_objects() -> Strategy[Any]:
    """Junk that is not a JSON object, for where a document must be one."""
    return junk_values().filter(lambda v: not isinstance(v, Mapping))


def json_paths(doc: Any) -> list[JsonPath]:
    """The path of every node below the root of ``doc``, parents before children."""
    found: list[JsonPath] = []
    stack: list[tuple[JsonPath, Any]] = [((), doc)]
    while stack:
        path, node = stack.pop()
        if path:
            found.append(path)
        if isinstance(node, Mapping):
            stack.extend(((*path, k), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend(((*path, i), v) for i, v in enumerate(node))
    found.sort(key=len)
    return found


def _retyped(value: Any) -> list[Any]:
    """Values of other JSON types that a careless writer might put for ``value``."""
    others: list[Any] = ["null", 0, False]
    if isinstance(value, bool):
        others = [int(value), str(value).lower(), None]
    elif isinstance(value, int) and value.bit_length() > 1000:
        others = ["1e5000", None, True, []]  # str() and float() refuse such ints
    elif isinstance(value, float):
        others = [repr(value), True, [], None]
    elif isinstance(value, int):
        others = [str(value), float(value), True, []]
    elif isinstance(value, str):
        others = [len(value), [value], {"value": value}, None]
    elif isinstance(value, list):
        others = [{str(i): v for i, v in enumerate(value)}, value[0] if value else None, "[]"]
    elif isinstance(value, Mapping):
        others = [list(value.values()), list(value), "{}", 0]
    return others


@st.composite
def corrupted(draw: Callable[..., Any], doc: Any, *, max_edits: int = 3) -> Any:
    """A deep copy of ``doc`` with 1 to ``max_edits`` random :data:`EDITS` done to it."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, max_edits))):
        paths = json_paths(doc)
        if not paths:
            return draw(junk_values())
        path = draw(st.sampled_from(paths))
        parent: Any = doc
        for key in path[:-1]:
            parent = parent[key]
        key, node = path[-1], parent[path[-1]]
        edit = draw(st.sampled_from(EDITS))
        if edit == "delete":
            del parent[key]
        elif edit == "replace":
            parent[key] = draw(junk_values(max_leaves=4))
        elif edit == "retype":
            parent[key] = draw(st.sampled_from(_retyped(node)))
        elif edit == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(node))
        elif edit == "empty" and isinstance(node, list | dict):
            node.clear()
        elif edit == "insert" and isinstance(node, dict):
            node[draw(st.text(max_size=12))] = draw(junk_values(max_leaves=4))
        else:
            parent[key] = None
    return doc
