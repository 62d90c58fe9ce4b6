"""JSON text in and out for the converter: strict parsing, the layouts, what JSON cannot hold.

runtime-spec v1.2 config.md, runtime.md and features.md are JSON documents (RFC 8259):
``NaN`` and the infinities are not numbers, text is UTF-8. Parsing refuses what the
spec's JSON does not allow; writing names the JSON path of a value that ``json.dumps``
refuses (an integer of more than 4300 digits, a NaN, a Python object set in code)
instead of letting its ValueError or TypeError escape. The layouts themselves are
described at :func:`criolib.runtime_spec.dump_spec`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from criolib.runtime_spec._errors import SpecFormatError

__all__ = ["JSONText", "describe", "dumps", "format_path", "parse"]

JSONText = bytes | bytearray | memoryview | str
#: Longer integers are described by their size: they would not fit in a message.
_LONG_INT_BITS = 200


def describe(value: object) -> str:
    """``value`` in a few words for a message: its JSON kind, or itself when short."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)  # null, true, false
    if isinstance(value, Mapping | list | tuple):
        return "an object" if isinstance(value, Mapping) else "an array"
    if isinstance(value, int) and value.bit_length() > _LONG_INT_BITS:
        # repr() refuses ints of more than 4300 digits (sys.get_int_max_str_digits).
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, str | int | float):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"a Python {type(value).__name__}"


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def format_path(innermost_first: list[str | int]) -> str:
    """A JSON path like ``linux.sysctl["net.ipv4.ip_forward"]`` from its segments."""
    parts: list[str] = []
    for seg in reversed(innermost_first):
        if isinstance(seg, int):
            parts.append(f"[{seg}]")
        elif _IDENTIFIER.match(seg):
            parts.append(f".{seg}" if parts else seg)
        else:
            # Map keys such as annotation names and sysctls hold dots and slashes.
            parts.append(f"[{json.dumps(seg)}]")
    return "".join(parts)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse(data: JSONText, source: str) -> Any:
    """The JSON value of ``data``, or :class:`SpecFormatError` naming ``source``."""
    if isinstance(data, memoryview):
        data = data.tobytes()
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise SpecFormatError(source, "", f"invalid JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise SpecFormatError(source, "", f"invalid JSON: not UTF-8 text ({exc})") from exc
    except ValueError as exc:
        raise SpecFormatError(source, "", f"invalid JSON: {exc}") from exc
    except RecursionError as exc:
        raise SpecFormatError(source, "", "invalid JSON: nested too deeply") from exc


def dumps(data: dict[str, Any], indent: int | str | None, final_newline: bool,
          source: str) -> bytes:
    """``data`` as UTF-8 JSON text in the given layout (see ``dump_spec``)."""
    separators = (",", ":") if indent is None else (",", ": ")
    end = "\n" if final_newline else ""
    try:
        try:
            text = json.dumps(data, indent=indent, separators=separators,
                              ensure_ascii=False, allow_nan=False)
            return (text + end).encode()
        except UnicodeEncodeError:
            # A lone surrogate (valid JSON as "\udXXX", not encodable as UTF-8): escape all.
            text = json.dumps(data, indent=indent, separators=separators, allow_nan=False)
            return (text + end).encode()
    except (TypeError, ValueError) as exc:
        path, reason = _unwritable(data)
        raise SpecFormatError(source, format_path(path), reason or str(exc)) from exc
    except RecursionError as exc:
        raise SpecFormatError(source, "", "nested too deeply") from exc


def _unwritable(data: Any) -> tuple[list[str | int], str]:
    """Where in ``data`` a value is that ``json.dumps`` refuses, and why (innermost first)."""
    stack: list[tuple[Any, list[str | int], frozenset[int]]] = [(data, [], frozenset())]
    while stack:
        node, path, parents = stack.pop()
        if node is None or isinstance(node, str | bool):
            continue
        if isinstance(node, int):
            try:
                str(node)
            except ValueError:
                return path, f"{describe(node)} is too long to write as JSON"
            continue
        if isinstance(node, float):
            if not math.isfinite(node):
                return path, f"{node} is not a JSON number"
            continue
        if not isinstance(node, dict | list | tuple):
            return path, f"expected a JSON value, got {describe(node)}"
        if id(node) in parents:
            return path, "refers to itself"
        inner = parents | {id(node)}
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str):
                    return path, f"expected string keys, got {describe(key)}"
                stack.append((value, [key, *path], inner))
        else:
            stack.extend((value, [index, *path], inner) for index, value in enumerate(node))
    return [], ""
