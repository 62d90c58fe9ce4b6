"""Reading and writing runtime-spec documents: one configured cattrs converter.

The wire format is the spec's JSON: camelCase property names (``ociVersion``,
``noNewPrivileges``, and the irregular ``classID``, ``kernelTCP``... that the model
spells out in field metadata), arrays, objects and JSON numbers. The rules, for
config.json (runtime-spec v1.2 config.md), the state (runtime.md) and the features
document (features.md):

- **Exact round trip.** ``spec_to_dict(spec_from_dict(d)) == d`` for any document of
  the right shape: absent properties stay absent, ``[]`` stays ``[]``, integers stay
  integers, unknown properties at any depth are kept (in each object's ``extra``) and
  written back, and so is an explicit ``null`` (features.md gives it a meaning).
  Each object's keys come back in the document's order (kept in its private
  ``_order``), so a file another tool wrote is written back byte for byte with the
  matching ``dump_spec`` layout; what was set since loading goes after them.
- **Structure only.** A value of the wrong JSON type, a missing REQUIRED property or
  malformed JSON raises :class:`SpecFormatError` naming the document, the JSON path and
  the cause; so does writing a value JSON cannot hold: no other exception escapes.
  Integers are JSON integers (``1.0`` and ``true`` are not, as in Go's decoder) but
  ranges, enums and cross-field rules are :func:`validate`'s business.

The converter is private to this module (JSON text in and out is in
``_convert_text``); the public face is the ``load_*``, ``dump_spec``, ``*_to_dict``
and ``spec_from_dict`` functions.
"""

from __future__ import annotations

import functools
import math
import operator
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs

from criolib.runtime_spec._convert_text import JSONText, dumps, format_path, parse
from criolib.runtime_spec._convert_text import describe as _describe
from criolib.runtime_spec._errors import SpecFormatError
from criolib.runtime_spec._model import Spec
from criolib.runtime_spec._state import Features, State

__all__ = [
    "dump_spec",
    "features_to_dict",
    "load_features",
    "load_spec",
    "load_state",
    "spec_from_dict",
    "spec_to_dict",
    "state_to_dict",
]

_T = TypeVar("_T")
#: Field metadata key for a wire name that is not the camelCase of the attribute.
_WIRE = "wire"
_EXTRA = "extra"
#: The model's private field with the source's key order (see ``_model_linux``).
_ORDER = "_order"


class _Bad(Exception):
    """A structural fault; the JSON path is collected innermost-first on the way out."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str | int] = []

    def at(self, segment: str | int) -> _Bad:
        self.path.append(segment)
        return self


def _expected(what: str, value: object) -> _Bad:
    return _Bad(f"expected {what}, got {_describe(value)}")


def _copy_json(value: Any) -> Any:
    """A deep copy of a raw JSON value, so a frozen object never shares a caller's dict."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _expected("a JSON value", value)
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Bad(f"expected string keys, got {_describe(key)}")
            try:
                out[key] = _copy_json(item)
            except _Bad as exc:
                exc.path.append(key)
                raise
        return out
    if isinstance(value, list | tuple):
        items: list[Any] = []
        for index, item in enumerate(value):
            try:
                items.append(_copy_json(item))
            except _Bad as exc:
                exc.path.append(index)
                raise
        return items
    raise _expected("a JSON value", value)


# -- primitive and container hooks -------------------------------------------------


def _structure_str(value: Any, _: Any) -> str:
    if isinstance(value, str):
        return value
    raise _expected("a string", value)


def _structure_int(value: Any, _: Any) -> int:
    # bool is an int subclass, but JSON true is not a number.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _expected("an integer", value)


def _structure_bool(value: Any, _: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise _expected("a boolean", value)


def _structure_float(value: Any, _: Any) -> float | int:
    # Kept as given: an integer stays an integer so it is written back unchanged.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    raise _expected("a number", value)


_PRIMITIVES: dict[Any, Callable[[Any, Any], Any]] = {
    str: _structure_str,
    int: _structure_int,
    bool: _structure_bool,
    float: _structure_float,
}


def _is_tuple_of(tp: Any) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis


def _is_mapping(tp: Any) -> bool:
    return typing.get_origin(tp) in (Mapping, dict)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (types.UnionType, typing.Union)


def _tuple_structure_factory(tp: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    item_type = typing.get_args(tp)[0]
    item_hook = conv.get_structure_hook(item_type)
    primitive = item_type if item_type in (str, int, bool) else None

    def structure(value: Any, _: Any) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise _expected("an array", value)
        if primitive is not None and all(type(v) is primitive for v in value):
            return tuple(value)  # the common case (args, env, capabilities) in one pass
        out = []
        for index, item in enumerate(value):
            try:
                out.append(item_hook(item, item_type))
            except _Bad as exc:
                exc.path.append(index)
                raise
        return tuple(out)

    return structure


def _mapping_structure_factory(tp: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    value_type = typing.get_args(tp)[1]
    if value_type is Any:
        # An opaque JSON object (a platform section criolib does not model).
        def structure_raw(value: Any, _: Any) -> dict[str, Any]:
            if not isinstance(value, Mapping):
                raise _expected("an object", value)
            copied: dict[str, Any] = _copy_json(value)
            return copied

        return structure_raw
    value_hook = conv.get_structure_hook(value_type)

    def structure(value: Any, _: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise _expected("an object", value)
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Bad(f"expected string keys, got {_describe(key)}")
            try:
                out[key] = value_hook(item, value_type)
            except _Bad as exc:
                exc.path.append(key)
                raise
        return out

    return structure


def _union_structure_factory(tp: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """A union of JSON kinds (``str | tuple[str, ...]``): pick the member by the value."""
    members = typing.get_args(tp)
    arrays = [(m, conv.get_structure_hook(m)) for m in members if _is_tuple_of(m)]
    scalars = [m for m in members if m in _PRIMITIVES]
    kinds = {str: "a string", int: "an integer", bool: "a boolean", float: "a number"}
    names = " or ".join(kinds.get(m, "an array") for m in members)

    def structure(value: Any, _: Any) -> Any:
        if isinstance(value, list | tuple) and arrays:
            array_type, array_hook = arrays[0]
            return array_hook(value, array_type)
        for member in scalars:
            try:
                return _PRIMITIVES[member](value, member)
            except _Bad:
                continue
        raise _expected(names, value)

    return structure


# -- model classes --------------------------------------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _model_fields(cls: type) -> list[tuple[str, str, Any, bool, bool]]:
    """(attribute, wire name, type without None, optional, required) for each wire field."""
    hints = typing.get_type_hints(cls)
    fields = []
    for field in attrs.fields(cls):
        if field.name in (_EXTRA, _ORDER):
            continue
        tp = hints[field.name]
        optional = False
        if _is_union(tp) and type(None) in typing.get_args(tp):
            optional = True
            rest = tuple(a for a in typing.get_args(tp) if a is not type(None))
            tp = functools.reduce(operator.or_, rest)
        wire = field.metadata.get(_WIRE) or _camel(field.name)
        fields.append((field.name, wire, tp, optional, field.default is attrs.NOTHING))
    return fields


def _class_structure_factory(cls: type, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    by_wire: dict[str, tuple[str, Any, Callable[[Any, Any], Any], bool]] = {}
    required: list[tuple[str, str]] = []
    for name, wire, tp, optional, is_required in _model_fields(cls):
        by_wire[wire] = (name, tp, conv.get_structure_hook(tp), optional)
        if is_required:
            required.append((name, wire))

    def structure(value: Any, _: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _expected("an object", value)
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, item in value.items():
            known = by_wire.get(key)
            if known is None and not isinstance(key, str):
                raise _Bad(f"expected string keys, got {_describe(key)}")
            try:
                if known is None:
                    extra[key] = _copy_json(item)
                    continue
                name, tp, hook, optional = known
                if item is None and optional:
                    # Absent for the model, but the null itself goes back on the wire.
                    extra[key] = None
                    continue
                kwargs[name] = hook(item, tp)
            except _Bad as exc:
                exc.path.append(key)
                raise
        for name, wire in required:
            if name not in kwargs:
                raise _Bad(f"missing required property {wire!r}")
        return cls(**kwargs, extra=extra, _order=tuple(value))

    return structure


def _unstructure_hook_for(tp: Any, conv: cattrs.Converter) -> Callable[[Any], Any] | None:
    """How to write a value of declared type ``tp``; ``None`` when it is written as it is."""
    hook: Callable[[Any], Any] | None
    if tp in _PRIMITIVES:
        hook = None
    elif _is_tuple_of(tp):
        item = _unstructure_hook_for(typing.get_args(tp)[0], conv)
        hook = _as_list if item is None else functools.partial(_list_of, item)
    elif _is_mapping(tp):
        value_type = typing.get_args(tp)[1]
        item = None if value_type is Any else _unstructure_hook_for(value_type, conv)
        if value_type is Any:
            hook = _copy_json_object
        else:
            hook = _as_dict if item is None else functools.partial(_dict_of, item)
    elif _is_union(tp):
        hook = _list_if_array
    else:
        hook = conv.get_unstructure_hook(tp)
    return hook


def _as_list(value: Any) -> list[Any]:
    # A string is iterable too: ``args="sh"`` must not be written as ["s", "h"].
    if isinstance(value, str | bytes | Mapping):
        raise _expected("an array", value)
    try:
        return list(value)
    except TypeError:
        raise _expected("an array", value) from None


def _list_of(item: Callable[[Any], Any], value: Any) -> list[Any]:
    values = _as_list(value)
    try:
        return [item(v) for v in values]
    except _Bad:
        pass
    for index, member in enumerate(values):  # again, to name the bad entry
        try:
            item(member)
        except _Bad as exc:
            raise exc.at(index) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _as_dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _expected("an object", value)
    out = dict(value)
    for key in out:
        if not isinstance(key, str):
            raise _Bad(f"expected string keys, got {_describe(key)}")
    return out


def _dict_of(item: Callable[[Any], Any], value: Any) -> dict[str, Any]:
    out = _as_dict(value)
    for key, member in out.items():
        try:
            out[key] = item(member)
        except _Bad as exc:
            raise exc.at(key) from None
    return out


def _copy_json_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _expected("an object", value)
    copied: dict[str, Any] = _copy_json(value)
    return copied


def _list_if_array(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def _class_unstructure_factory(cls: type, conv: cattrs.Converter) -> Callable[[Any], Any]:
    plan = [
        (name, wire, _unstructure_hook_for(tp, conv))
        for name, wire, tp, _, _ in _model_fields(cls)
    ]

    def unstructure(obj: Any) -> dict[str, Any]:
        if not isinstance(obj, cls):
            raise _expected(f"a {cls.__name__}", obj)
        model: Any = obj
        out: dict[str, Any] = {}
        for name, wire, hook in plan:
            value = getattr(model, name)
            if value is None:
                continue
            try:
                out[wire] = value if hook is None else hook(value)
            except _Bad as exc:
                exc.path.append(wire)
                raise
            except (TypeError, ValueError, AttributeError) as exc:
                # A value of the wrong kind set in code (a str for a mapping...).
                raise _Bad(f"cannot be written as JSON: {exc}").at(wire) from None
        extra = model.extra
        if not isinstance(extra, Mapping):
            raise _expected("a mapping", extra).at(_EXTRA)
        for key, value in extra.items():
            if key in out:
                continue  # a typed value set since loading wins over a kept null
            if not isinstance(key, str):
                raise _Bad(f"expected string keys, got {_describe(key)}")
            try:
                out[key] = _copy_json(value)
            except _Bad as exc:
                exc.path.append(key)
                raise
        order = model._order
        if not order:
            return out
        # The document's own order; what was set since loading goes after it.
        ordered = {key: out[key] for key in order if key in out}
        if len(ordered) != len(out):
            ordered.update(out)
        return ordered

    return unstructure


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(detailed_validation=False)
    for tp, hook in _PRIMITIVES.items():
        conv.register_structure_hook(tp, hook)
    conv.register_structure_hook_factory(_is_tuple_of, _tuple_structure_factory)
    conv.register_structure_hook_factory(_is_mapping, _mapping_structure_factory)
    conv.register_structure_hook_factory(_is_union, _union_structure_factory)
    conv.register_structure_hook_factory(attrs.has, _class_structure_factory)
    conv.register_unstructure_hook_factory(attrs.has, _class_unstructure_factory)
    return conv


_converter = _make_converter()


# -- the public face --------------------------------------------------------------------


def _from_dict(data: Any, cls: type[_T], source: str) -> _T:
    try:
        result: _T = _converter.structure(data, cls)
    except _Bad as exc:
        raise SpecFormatError(source, format_path(exc.path), exc.reason) from None
    except RecursionError as exc:
        raise SpecFormatError(source, "", "nested too deeply") from exc
    return result


def _to_dict(obj: object, cls: type, source: str) -> dict[str, Any]:
    try:
        out: dict[str, Any] = _converter.unstructure(obj, cls)
    except _Bad as exc:
        raise SpecFormatError(source, format_path(exc.path), exc.reason) from None
    except RecursionError as exc:
        raise SpecFormatError(source, "", "nested too deeply") from exc
    return out


def _load(data: JSONText | Mapping[str, Any], cls: type[_T], source: str) -> _T:
    if isinstance(data, str | bytes | bytearray | memoryview):
        data = parse(data, source)
    # Anything else is taken as parsed JSON: a list or None is "expected an object".
    return _from_dict(data, cls, source)


def spec_from_dict(data: Mapping[str, Any], *, source: str = "config.json") -> Spec:
    """The :class:`Spec` for a parsed config.json (runtime-spec v1.2 config.md).

    Raises :class:`SpecFormatError` naming ``source`` and the JSON path when a value
    has the wrong type or a REQUIRED property is missing.
    """
    return _from_dict(data, Spec, source)


def load_spec(
    data: bytes | bytearray | memoryview | str | Mapping[str, Any], *, source: str = "config.json"
) -> Spec:
    """Read a config.json from its JSON text (bytes or str) or its parsed mapping.

    runtime-spec v1.2 config.md. ``source`` names the document in errors (pass the
    file's path when reading one). Each object remembers its keys' order, which
    :func:`dump_spec` writes back. Raises :class:`SpecFormatError` for malformed JSON
    and for structural faults, and for anything that is not a JSON object.
    """
    return _load(data, Spec, source)


def spec_to_dict(spec: Spec) -> dict[str, Any]:
    """The JSON-ready dict of ``spec``: wire names, absent properties left out, extras back in.

    runtime-spec v1.2 config.md. Keys come in the loaded document's order, then what
    was set since; an object built in code has the model's order. Raises
    :class:`SpecFormatError` naming the path of a value of the wrong kind set in code
    (a str for an object, a Mount where a Process goes), or when ``spec`` is no Spec.
    """
    return _to_dict(spec, Spec, "config.json")


def dump_spec(
    spec: Spec, *, indent: int | str | None = None, final_newline: bool = False
) -> bytes:
    """The config.json bytes of ``spec``: UTF-8 JSON, compact unless ``indent`` is given.

    runtime-spec v1.2 config.md. ``indent`` is a number of spaces or the string to
    indent with; ``final_newline`` ends the text with ``\\n``. Properties come in
    the order the loaded document had them (see :func:`load_spec`). The layouts of
    other tools, byte for byte:

    - ``runc spec`` (Go's ``json.MarshalIndent(v, "", "\\t")``): ``indent="\\t"``,
      no final newline. CRI-O, Podman and containerd write compact JSON with Go's
      ``json.Marshal``: the default. Go escapes ``<``, ``>``, ``&``, U+2028 and
      U+2029 in strings as ``\\u003c``...; criolib writes them as they are (the same
      JSON value), so only strings holding them come back in other bytes.
    - ``crun spec`` writes a fixed template: ``indent="\\t", final_newline=True``
      gives its bytes but for the template's own whitespace: two spaces before the
      opening ``{``, an empty array as ``[`` newline, indentation, ``]`` (criolib
      writes ``[]``) and, in the ``--rootless`` one, a space before a line's tabs.

    Raises :class:`SpecFormatError` naming the JSON path of a value that JSON cannot
    hold (an integer of more than 4300 digits, a NaN, a Python object set in code).
    """
    return dumps(spec_to_dict(spec), indent, final_newline, "config.json")


def load_state(
    data: bytes | bytearray | memoryview | str | Mapping[str, Any], *, source: str = "state"
) -> State:
    """Read a container's state, as ``runc state`` prints it (runtime-spec v1.2 runtime.md).

    Raises :class:`SpecFormatError` for malformed JSON and for structural faults.
    """
    return _load(data, State, source)


def state_to_dict(state: State) -> dict[str, Any]:
    """The JSON-ready dict of ``state`` (runtime-spec v1.2 runtime.md "State")."""
    return _to_dict(state, State, "state")


def load_features(
    data: bytes | bytearray | memoryview | str | Mapping[str, Any], *, source: str = "features"
) -> Features:
    """Read a runtime's features document, as ``runc features`` prints it.

    runtime-spec v1.2 features.md and features-linux.md. Raises
    :class:`SpecFormatError` for malformed JSON and for structural faults.
    """
    return _load(data, Features, source)


def features_to_dict(features: Features) -> dict[str, Any]:
    """The JSON-ready dict of ``features`` (runtime-spec v1.2 features.md)."""
    return _to_dict(features, Features, "features")
