"""Validating an OCI runtime config.json: JSON Schema first, then semantic rules.

Implements the checks of runtime-spec v1.2 (config.md, config-linux.md; v1.2.1
additions included) in the spirit of runtime-tools' ``validate``: criolib's own
JSON Schemas (``schema/*.json``, draft 2020-12, written from the spec's prose)
check types, required fields, enums and integer ranges; the rules in
``_validate_rules``, ``_validate_linux`` and ``_validate_host`` check what a schema
cannot say (absolute paths, uniqueness, namespaces a setting needs, the root
filesystem, this host's limits).

:func:`validate` never raises on bad input, whatever its shape: it returns every
problem at once, sorted by JSON path. What is not JSON at all (a NaN, a key that is
not a string, a Python object, a cycle) is an error wherever it is, unknown
properties included, so that a config without errors always loads with
:func:`load_spec`: the schemas require what the typed model requires (``process.user``
on POSIX platforms, the v1.3 objects it reads), with the one exception of a Windows
``process.user`` without ``uid`` and ``gid``, which the model cannot hold.
:func:`check` raises :class:`InvalidSpec` when any of them is an error. Nothing in
criolib validates implicitly.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import attrs
import jsonschema  # type: ignore[import-untyped]
import jsonschema.protocols  # type: ignore[import-untyped]
import jsonschema.validators  # type: ignore[import-untyped]

from criolib.runtime_spec import _validate_host, _validate_linux, _validate_rules
from criolib.runtime_spec._errors import InvalidSpec
from criolib.runtime_spec._validate_rules import Ctx, Loc, show, type_name

__all__ = ["Problem", "Severity", "check", "validate"]

Severity = Literal["error", "warning"]

_SCHEMA_FILES = ("defs.schema.json", "config-linux.schema.json", "config.schema.json")
#: Wider than any integer the spec allows (uint64), small enough to print.
_HUGE_BITS = 256
#: Deeper than anything in config.json; below it, values are not printed whole.
_MAX_DEPTH = 32
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
            config = spec_to_dict(config)  # type: ignore[arg-type]
        except Exception as exc:  # a Spec built by hand can hold anything
            return [Problem("$", f"the Spec cannot be converted to JSON: {exc}")]
    wild, odd = _scan(config)
    doc = _tame(config) if wild else config
    found: list[tuple[Loc, Severity, str]] = list(_schema_problems(doc))
    if odd:
        found.extend(_not_json(doc, {loc for loc, sev, _ in found if sev == "error"}))
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
    cls = jsonschema.validators.extend(
        base, validators={"items": _items}, type_checker=checker)
    validator: jsonschema.protocols.Validator = cls(_inlined_schema())
    return validator


def _inlined_schema() -> dict[str, Any]:
    """config.schema.json with every ``$ref`` replaced by what it points to.

    Looking a reference up costs jsonschema more than checking what it names (a
    third of the time on a config with a seccomp profile), and criolib's schemas
    have no recursion, so they are inlined once. This also keeps jsonschema from
    switching to its stock validator class at each resource's ``$schema``.
    """
    files = {name: _load_schema(name) for name in _SCHEMA_FILES}

    def inline(node: Any, base: str) -> Any:
        if isinstance(node, list):
            return [inline(v, base) for v in node]
        if not isinstance(node, dict):
            return node
        out = {k: inline(v, base) for k, v in node.items() if k not in _SCHEMA_ONLY}
        ref = node.get("$ref")
        if ref is None:
            return out
        name, _, pointer = ref.partition("#")
        target: Any = files[name or base]
        for part in pointer.split("/")[1:]:
            target = target[part]
        target = inline(target, name or base)
        # Beside $ref, other keywords apply as well (draft 2020-12): allOf says so.
        return {"allOf": [target, out]} if out else target

    return dict(inline(files["config.schema.json"], "config.schema.json"))


#: Keywords that only organise the schema files; gone once references are inlined.
_SCHEMA_ONLY = frozenset({"$ref", "$defs", "$id", "$schema", "$comment"})


def _items(validator: Any, items: Any, instance: Any, schema: Any) -> Iterator[Any]:
    """``items``, with arrays of strings checked in one loop.

    Descending into a subschema costs jsonschema some 15 µs; a seccomp profile has
    hundreds of syscall names, and every other string array adds to it. The result
    is the same errors ``type`` and ``minLength`` would give.
    """
    if not (isinstance(items, Mapping) and items.get("type") == "string"
            and items.keys() <= {"type", "minLength"} and "prefixItems" not in schema):
        yield from _ITEMS(validator, items, instance, schema)
        return
    if not _is_array(None, instance):
        return
    shortest = items.get("minLength", 0)
    for index, item in enumerate(instance):
        if not isinstance(item, str):
            yield jsonschema.ValidationError(
                "is not of type 'string'", validator="type", validator_value="string",
                instance=item, schema=items, path=(index,), schema_path=("type",))
        elif len(item) < shortest:
            yield jsonschema.ValidationError(
                "is too short", validator="minLength", validator_value=shortest,
                instance=item, schema=items, path=(index,), schema_path=("minLength",))


_ITEMS = jsonschema.Draft202012Validator.VALIDATORS["items"]


def _load_schema(name: str) -> dict[str, Any]:
    text = resources.files("criolib.runtime_spec").joinpath("schema", name).read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def _schema_problems(doc: object) -> Iterator[tuple[Loc, Severity, str]]:
    for error in _validator().iter_errors(doc):
        loc: Loc = tuple(p if isinstance(p, int | str) else show(p) for p in error.absolute_path)
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
    text: str = error.message[:300]
    if "propertyNames" in error.relative_schema_path:
        text = f"key {show(value)} is not allowed: keys must be non-empty strings"
    elif kind == "type":
        names = expected if isinstance(expected, list) else [expected]
        text = f"must be {' or '.join(_article(n) for n in names)}, not {type_name(value)}"
    elif kind == "enum":
        text = f"{show(value)} is not one of: {', '.join(map(str, expected))}"
    elif kind in ("minimum", "maximum") and isinstance(sub, Mapping):
        low, high, title = sub.get("minimum"), sub.get("maximum"), sub.get("title")
        word = "below the minimum" if kind == "minimum" else "above the maximum"
        text = (f"{show(value)} is out of range for {title} ({low} to {high})"
                if title and low is not None and high is not None
                else f"{show(value)} is {word} {expected}")
    elif kind == "minItems":
        text = "must not be empty" if expected == 1 else f"needs at least {expected} entries"
    elif kind == "minLength":
        text = "must not be empty"
    return text


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


class _DeepList(list[Any]):
    """An array nested too deep to print; its members are kept."""

    def __repr__(self) -> str:
        return "<an array nested too deep>"


class _DeepDict(dict[Any, Any]):
    """An object nested too deep to print; its members are kept."""

    def __repr__(self) -> str:
        return "<an object nested too deep>"


def _tame(doc: object) -> object:
    """A copy of ``doc`` that every message can print.

    Python refuses to turn an int of more than 4300 digits into text, and repr()
    of a value nested a thousand deep exhausts the stack; jsonschema's messages
    would try both. Such integers are wrapped in :class:`_HugeInt`, and containers
    past any depth the schema reaches in ``_Deep*``. The walks are iterative, and
    shared or cyclic members (a Mapping built in Python may have them) are copied
    once.
    """
    memo: dict[int, Any] = {}
    work: list[tuple[Any, Any, int]] = []

    def tamed(node: Any, depth: int) -> Any:
        if is_huge(node):
            return node if isinstance(node, _HugeInt) else _HugeInt(node)
        if not isinstance(node, Mapping | list | tuple):
            return node
        if depth >= _MAX_DEPTH:
            return _DeepDict(node) if isinstance(node, Mapping) else _DeepList(node)
        if id(node) not in memo:
            memo[id(node)] = {} if isinstance(node, Mapping) else []
            work.append((node, memo[id(node)], depth))
        return memo[id(node)]

    root = tamed(doc, 0)
    while work:
        source, target, depth = work.pop()
        if isinstance(source, Mapping):
            target.update((k, tamed(v, depth + 1)) for k, v in source.items())
        else:
            target.extend(tamed(v, depth + 1) for v in source)
    return root


def _scan(doc: object) -> tuple[bool, bool]:
    """Whether ``doc`` is wild (see :func:`_tame`) and whether it may hold non-JSON.

    One pass over every node, the common checks inline (a seccomp profile is hundreds
    of strings); "may", because a member seen twice may be shared rather than a cycle,
    which :func:`_not_json` tells apart.
    """
    wild = odd = False
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [([doc], -1)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            odd = True
            continue
        seen.add(id(node))
        wild = wild or depth >= _MAX_DEPTH
        if isinstance(node, Mapping):
            odd = odd or any(type(key) is not str for key in node)
            node = node.values()
        for value in node:
            kind = type(value)
            if kind is str or kind is bool or value is None:
                continue
            if kind is dict or kind is list or isinstance(value, Mapping | list | tuple):
                stack.append((value, depth + 1))
            elif kind is int:
                wild = wild or value.bit_length() > _HUGE_BITS
            else:
                wild = wild or (is_huge(value) and not isinstance(value, _HugeInt))
                odd = odd or _not_json_scalar(value) is not None
    return wild, odd


def _not_json_scalar(value: object) -> str | None:
    if isinstance(value, float):
        return None if value - value == 0 else f"{value} is not a JSON number"
    if value is None or isinstance(value, str | int):
        return None
    return f"a Python {type(value).__name__} is not a JSON value"


def _not_json(doc: object, errors: set[Loc]) -> Iterator[tuple[Loc, Severity, str]]:
    """What in ``doc`` JSON cannot hold, except where an error is already reported.

    config.md: the configuration is a JSON document. Depth first with the path of
    open containers, so that a member shared by two parents is not taken for a cycle.
    """
    open_: set[int] = set()
    stack: list[tuple[Loc, Any, bool]] = [((), doc, False)]
    while stack:
        loc, node, leaving = stack.pop()
        if leaving:
            open_.discard(id(node))
        elif any(loc[:end] in errors for end in range(len(loc) + 1)):
            continue
        elif not isinstance(node, Mapping | list | tuple):
            problem = _not_json_scalar(node)
            if problem is not None:
                yield loc, "error", problem
        elif id(node) in open_:
            yield loc, "error", "holds itself: a cycle is not JSON"
        else:
            open_.add(id(node))
            stack.append((loc, node, True))
            is_object = isinstance(node, Mapping)
            members: Iterable[tuple[Any, Any]] = (
                node.items() if isinstance(node, Mapping) else enumerate(node))
            for key, value in members:
                if is_object and not isinstance(key, str):
                    yield loc, "error", (f"key {show(key)} is not a string: JSON object "
                                         "keys are strings")
                else:
                    stack.append(((*loc, key), value, False))
