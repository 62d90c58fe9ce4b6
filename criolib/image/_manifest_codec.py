"""The one cattrs converter of :mod:`criolib.image`'s documents, with exact wire names.

For image-spec v1.1 (manifest.md, image-index.md, descriptor.md, config.md) and
Docker schema 2 documents modelled as attrs classes: each field's wire name is its
``wire`` metadata or the camelCase of its name; a field typed ``X | None`` is
optional (absent and JSON ``null`` both read as ``None``, and ``None`` is not
written); a field without a default, or with ``required`` metadata, must be
present; a field whose default is ``()`` is not written when empty. Properties a
class does not model go to its ``extra`` mapping and are written back.

Structure only, and strict like Go's decoder: a string is not an array, ``true`` is
not an integer. A fault raises :class:`_StructureError` with the JSON path; callers
turn it into their own error (:class:`~criolib.image.ManifestError`).
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs

__all__ = ["describe", "json_path", "structure", "unstructure"]

_T = TypeVar("_T")


class _StructureError(Exception):
    """A structural fault; the JSON path is collected innermost-first on the way out."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str | int] = []


def describe(value: Any) -> str:
    if value is None:
        return "null"
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(value), type(value).__name__)
    if isinstance(value, list | dict):
        return kind
    text = repr(value)
    return f"{kind} {text[:40]}{'...' if len(text) > 40 else ''}"


def _copy_json(value: Any) -> Any:
    """A deep copy of raw JSON, so a frozen object never shares a caller's dict."""
    if isinstance(value, Mapping):
        return {str(k): _copy_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy_json(v) for v in value]
    return value


def _primitive(kind: type, what: str) -> Callable[[Any, Any], Any]:
    def structure(value: Any, _: Any) -> Any:
        # bool is an int subclass, but JSON true is not a number.
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        raise _StructureError(f"expected {what}, got {describe(value)}")
    return structure


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def _optional_inner(tp: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, ``(tp, False)`` otherwise."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, type(int | None)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True  # noqa: UP007
    return tp, False


@attrs.frozen
class _Field:
    name: str
    wire: str
    type: Any
    optional: bool
    required: bool
    omit_empty: bool


@typing.no_type_check
def _fields_of(cls: type) -> list[_Field]:
    hints = typing.get_type_hints(cls)
    out = []
    for a in attrs.fields(cls):
        if a.name == "extra":
            continue
        inner, optional = _optional_inner(hints[a.name])
        required = a.default is attrs.NOTHING or bool(a.metadata.get("required"))
        out.append(_Field(a.name, a.metadata.get("wire", _camel(a.name)), inner, optional,
                          required, a.default == () and not required))
    return out


def _attrs_structure_factory(cls: type, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    fields = _fields_of(cls)
    wires = {f.wire for f in fields}
    open_ = "extra" in attrs.fields_dict(cls)

    def structure(value: Any, _: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _StructureError(f"expected an object, got {describe(value)}")
        kwargs: dict[str, Any] = {}
        for f in fields:
            if f.wire not in value or (value[f.wire] is None and f.optional):
                if f.required:
                    bad = _StructureError(f"the required property {f.wire!r} is missing")
                    raise bad
                if f.optional:
                    kwargs[f.name] = None
                continue
            try:
                kwargs[f.name] = conv.structure(value[f.wire], f.type)
            except _StructureError as exc:
                exc.path.append(f.wire)
                raise
        if open_:
            kwargs["extra"] = {k: _copy_json(v) for k, v in value.items() if k not in wires}
        return cls(**kwargs)

    return structure


def _attrs_unstructure_factory(cls: type, conv: cattrs.Converter) -> Callable[[Any], Any]:
    fields = _fields_of(cls)
    open_ = "extra" in attrs.fields_dict(cls)

    def unstructure(obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields:
            value = getattr(obj, f.name)
            if value is None or (f.omit_empty and not value):
                continue
            out[f.wire] = conv.unstructure(value)
        if open_:
            for key, item in obj.extra.items():
                out.setdefault(key, _copy_json(item))
        return out

    return unstructure


def _is_tuple(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple


def _is_mapping(tp: Any) -> bool:
    return typing.get_origin(tp) in (Mapping, dict, typing.Mapping)


def _tuple_factory(tp: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    item = typing.get_args(tp)[0]

    def structure(value: Any, _: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise _StructureError(f"expected an array, got {describe(value)}")
        out = []
        for index, element in enumerate(value):
            try:
                out.append(conv.structure(element, item))
            except _StructureError as exc:
                exc.path.append(index)
                raise
        return tuple(out)

    return structure


def _mapping_factory(tp: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    value_type = typing.get_args(tp)[1]

    def structure(value: Any, _: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise _StructureError(f"expected an object, got {describe(value)}")
        if value_type is Any:
            return {str(k): _copy_json(v) for k, v in value.items()}
        out = {}
        for key, element in value.items():
            try:
                out[str(key)] = conv.structure(element, value_type)
            except _StructureError as exc:
                exc.path.append(str(key))
                raise
        return out

    return structure


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter()
    conv.register_structure_hook(str, _primitive(str, "a string"))
    conv.register_structure_hook(int, _primitive(int, "an integer"))
    conv.register_structure_hook(bool, _primitive(bool, "a boolean"))
    conv.register_structure_hook_factory(_is_tuple, lambda tp: _tuple_factory(tp, conv))
    conv.register_structure_hook_factory(_is_mapping, lambda tp: _mapping_factory(tp, conv))
    conv.register_structure_hook_factory(attrs.has,
                                         lambda cls: _attrs_structure_factory(cls, conv))
    conv.register_unstructure_hook_factory(attrs.has,
                                           lambda cls: _attrs_unstructure_factory(cls, conv))
    conv.register_unstructure_hook_factory(
        _is_tuple, lambda tp: lambda value: [conv.unstructure(v) for v in value])
    conv.register_unstructure_hook_factory(
        _is_mapping, lambda tp: lambda value: {k: conv.unstructure(v) for k, v in value.items()})
    return conv


_CONVERTER = _make_converter()


def json_path(parts: list[str | int]) -> str:
    """``layers[0].digest`` from the innermost-first path a :class:`_StructureError` collected."""
    text = ""
    for part in reversed(parts):
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def structure(doc: Any, cls: type[_T]) -> _T:
    """``cls`` from a JSON value; :class:`_StructureError` (with ``path``) if it does not fit."""
    try:
        return _CONVERTER.structure(doc, cls)
    except RecursionError:
        raise _StructureError("nested too deeply") from None


def unstructure(obj: Any) -> Any:
    """The JSON value of a model object, with the spec's property names."""
    return _CONVERTER.unstructure(obj)
