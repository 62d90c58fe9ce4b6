"""Validating an OCI runtime config.json: JSON Schema first, then semantic rules.

Implements the checks of runtime-spec v1.2 (config.md, config-linux.md; v1.2.1
additions included) in the spirit of runtime-tools' ``validate``: criolib's own
JSON Schemas (``schema/*.json``, draft 2020-12, written from the spec's prose)
check types, required fields, enums and integer ranges; the rules in
``_validate_rules``, ``_validate_linux`` and ``_validate_host`` check what a schema
cannot say (absolute paths, uniqueness, namespaces a setting needs, the root
filesystem, this host's limits).

:func:`validate` never raises on bad input, whatever its shape: it returns every
problem at once, sorted by JSON path. :func:`check` raises :class:`InvalidSpec`
when any of them is an error. Nothing in criolib validates implicitly.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import attrs
import jsonschema
import jsonschema.protocols
import jsonschema.validators
from referencing import Registry, Resource

from criolib.runtime_spec import _validate_host, _validate_linux, _validate_rules
from criolib.runtime_spec._errors import InvalidSpec
from criolib.runtime_spec._validate_rules import Ctx, Loc, show, type_name

__all__ = ["Problem", "Severity", "check", "validate"]

Severity = Literal["error", "warning"]

_SCHEMA_FILES = ("defs.schema.json", "config-linux.schema.json", "config.schema.json")
_ROOT_ID = "https://criolib.invalid/runtime-spec/1.2/config.schema.json"
#: Wider than any integer the spec allows (uint64), small enough to print.
_HUGE_BITS = 256
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@attrs.define(frozen=True)
class Problem:
    """One thing wrong with a config.json.

    ``path`` is a JSON path into the document (``$.linux.namespaces[2].type``),
    ``message`` says what is wrong in words, ``severity`` is ``"error"`` (the
    spec or the runtime rejects it) or ``"warning"`` (legal, but likely not what
    was meant, or ignored by runtimes).
    """

    path: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" + (
            " (warning)" if self.severity == "warning" else "")


def validate(
    config: object, *, rootfs: str | Path | None = None, host: bool = False
) -> list[Problem]:
    """Every problem of ``config`` (a config.json document), sorted by path.

    ``config`` is the wire form (a mapping, as ``json.load`` returns it) or a
    :class:`Spec`. With ``rootfs`` (the container's root filesystem directory),
    the directory, ``process.cwd`` and the executable are looked up in it,
    following symlinks only inside it. With ``host=True``, what this process may
    grant (rlimits, oom_score_adj, namespace and hook paths) is checked too.
    runtime-spec v1.2, config.md and config-linux.md.
    """
    if attrs.has(type(config)):
        from criolib.runtime_spec._convert import spec_to_dict

        try:
            config = spec_to_dict(config)
        except Exception as exc:  # a Spec built by hand can hold anything
            return [Problem("$", f"the Spec cannot be converted to JSON: {exc}")]
    doc = _tame_huge_ints(config)
    found: list[tuple[Loc, Severity, str]] = list(_schema_problems(doc))
    if isinstance(doc, Mapping):
        ctx = Ctx(doc)
        _validate_rules.check_all(ctx)
        _validate_linux.check_all(ctx)
        if rootfs is not None:
            _validate_host.check_rootfs(ctx, Path(rootfs))
        if host:
            _validate_host.check_host(ctx)
        found.extend(ctx.found)
    elif rootfs is not None:
        _validate_host.check_rootfs(Ctx({}), Path(rootfs))
    unique = {(loc, sev, msg) for loc, sev, msg in found}
    return [Problem(format_path(loc), msg, sev)
            for loc, sev, msg in sorted(unique, key=_sort_key)]


def check(config: object, *, rootfs: str | Path | None = None, host: bool = False) -> None:
    """Raise :class:`InvalidSpec` when :func:`validate` finds any error.

    Warnings alone pass; when it raises, ``.problems`` holds every problem,
    warnings included. runtime-spec v1.2, config.md and config-linux.md.
    """
    problems = validate(config, rootfs=rootfs, host=host)
    if any(p.severity == "error" for p in problems):
        raise InvalidSpec(problems)


def format_path(loc: Loc) -> str:
    """``("linux", "namespaces", 2)`` as ``$.linux.namespaces[2]``."""
    out = ["$"]
    for part in loc:
        if isinstance(part, int):
            out.append("[<huge>]" if is_huge(part) else f"[{part}]")
        elif _IDENT.match(part):
            out.append(f".{part}")
        else:
            out.append("[" + json.dumps(part) + "]")
    return "".join(out)


def _sort_key(item: tuple[Loc, Severity, str]) -> tuple[Any, ...]:
    loc, severity, message = item
    # Indices sort as numbers ([2] before [10]); a key never compares with an index.
    parts = tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in loc)
    return (parts, severity != "error", message)


# --- JSON Schema ---------------------------------------------------------------------


def _is_object(_checker: object, instance: object) -> bool:
    return isinstance(instance, Mapping)


def _is_array(_checker: object, instance: object) -> bool:
    return isinstance(instance, list | tuple)


def _is_integer(_checker: object, instance: object) -> bool:
    # 1.0 is a JSON Schema integer, but Go's encoding/json (runc) rejects it for int
    # fields, and True is an int in Python: neither is an integer on the wire.
    return isinstance(instance, int) and not isinstance(instance, bool)


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    """The config.json validator, compiled once per process."""
    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine_many(
        {"object": _is_object, "array": _is_array, "integer": _is_integer})
    cls = jsonschema.validators.extend(base, type_checker=checker)
    schemas = {name: _load_schema(name) for name in _SCHEMA_FILES}
    registry: Registry[Any] = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in schemas.values())
    validator: jsonschema.protocols.Validator = cls(
        schemas["config.schema.json"], registry=registry)
    return validator


def _load_schema(name: str) -> dict[str, Any]:
    text = resources.files("criolib.runtime_spec").joinpath("schema", name).read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def _schema_problems(doc: object) -> Iterator[tuple[Loc, Severity, str]]:
    for error in _validator().iter_errors(doc):
        loc: Loc = tuple(p if isinstance(p, int) else str(p) for p in error.absolute_path)
        if error.validator == "required":
            # One error per missing name; the path names the missing member itself.
            present = error.instance if isinstance(error.instance, Mapping) else {}
            for name in error.validator_value:
                if name not in present:
                    yield (*loc, name), "error", "is required"
            continue
        yield loc, "error", _message(error)


def _message(error: jsonschema.ValidationError) -> str:
    kind, value, sub = error.validator, error.instance, error.schema
    expected = error.validator_value
    if "propertyNames" in error.relative_schema_path:
        return f"key {show(value)} is not allowed: keys must be non-empty strings"
    if kind == "type":
        names = expected if isinstance(expected, list) else [expected]
        return f"must be {' or '.join(_article(n) for n in names)}, not {type_name(value)}"
    if kind == "enum":
        return f"{show(value)} is not one of: {', '.join(map(str, expected))}"
    if kind in ("minimum", "maximum") and isinstance(sub, Mapping):
        low, high, title = sub.get("minimum"), sub.get("maximum"), sub.get("title")
        if title and low is not None and high is not None:
            return f"{show(value)} is out of range for {title} ({low} to {high})"
        word = "below the minimum" if kind == "minimum" else "above the maximum"
        return f"{show(value)} is {word} {expected}"
    if kind == "minItems":
        return "must not be empty" if expected == 1 else f"needs at least {expected} entries"
    if kind == "minLength":
        return "must not be empty"
    return error.message[:300]


def is_huge(value: object) -> bool:
    """Whether ``value`` is an int too long to print safely."""
    return isinstance(value, int) and value.bit_length() > _HUGE_BITS


def _article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


# --- inputs that would break printing -------------------------------------------------


class _HugeInt(int):
    """An integer too long to print: shown by its size, compared by its value."""

    def __repr__(self) -> str:
        return f"<an integer of {self.bit_length()} bits>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)


def _tame_huge_ints(doc: object) -> object:
    """``doc`` with absurdly large integers wrapped so messages can show them.

    Python refuses to turn an int of more than 4300 digits into text, and
    jsonschema's messages would try; such numbers are out of every range anyway.
    The walk is iterative, so deeply nested junk cannot exhaust the stack.
    """
    paths = list(_huge_int_paths(doc))
    if not paths:
        return doc
    if paths == [()]:
        return _HugeInt(doc)  # type: ignore[call-overload]
    copies: dict[int, Any] = {}

    def own(node: Any) -> Any:
        if id(node) not in copies:
            copies[id(node)] = dict(node) if isinstance(node, Mapping) else list(node)
        return copies[id(node)]

    root = own(doc)
    for path in paths:
        node = root
        for key in path[:-1]:
            node[key] = own(node[key])
            node = node[key]
        node[path[-1]] = _HugeInt(node[path[-1]])
    return root


def _huge_int_paths(doc: object) -> Iterator[tuple[Any, ...]]:
    stack: list[tuple[tuple[Any, ...], object]] = [((), doc)]
    while stack:
        path, node = stack.pop()
        children: Iterable[tuple[Any, object]]
        if isinstance(node, Mapping):
            children = node.items()
        elif isinstance(node, list | tuple):
            children = enumerate(node)
        else:
            if is_huge(node) and not isinstance(node, _HugeInt):
                yield path
            continue
        stack.extend(((*path, k), v) for k, v in children)
