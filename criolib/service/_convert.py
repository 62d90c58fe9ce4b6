"""CRI objects to protobuf messages and back, field by field (the ``cri`` extra).

Walks the CRI v1 descriptor (``cri_api.v1.api_pb2``, package ``runtime.v1``): a
message field maps to a :mod:`criolib.service._cri_types` object (an unset one to
``None``), a repeated field to a list, a map to a dict, an enum to its ``IntEnum``
(a value this version does not know is an :class:`InvalidRequest`), bytes to bytes.
One plan per message type is built on first use and cached.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from typing import Any

from criolib.service import _cri_types as cri
from criolib.service._errors import Internal, InvalidRequest

__all__ = ["from_proto", "proto_class", "to_proto"]

_Plan = list[tuple[str, str, Any]]  # (field name, kind, helper)
_plans: dict[str, _Plan] = {}
_plans_lock = threading.Lock()


def _api() -> Any:
    try:
        from cri_api.v1 import api_pb2
    except ImportError as exc:
        raise Internal("the CRI protobuf stubs are not installed: install criolib[cri] "
                       f"({exc})") from exc
    return api_pb2


def proto_class(name: str) -> Any:
    """The protobuf class of the CRI message ``name`` (``"PodSandboxConfig"``)."""
    cls = getattr(_api(), name, None)
    if cls is None:
        raise Internal(f"the CRI stubs have no message {name!r}")
    return cls


def _enum_class(enum_desc: Any) -> type[enum.IntEnum]:
    containing = enum_desc.containing_type
    if containing is None:
        return cri.ENUMS[enum_desc.name]
    found: type[enum.IntEnum] = getattr(cri.MESSAGES[containing.name], enum_desc.name)
    return found


def _plan(desc: Any) -> _Plan:
    plan = _plans.get(desc.full_name)
    if plan is not None:
        return plan
    plan = []
    for field in desc.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            is_message = value_field.message_type is not None
            plan.append((field.name, "map_message" if is_message else "map", None))
        elif field.message_type is not None:
            kind = "repeated_message" if _repeated(field) else "message"
            plan.append((field.name, kind, None))
        elif field.enum_type is not None:
            kind = "repeated_enum" if _repeated(field) else "enum"
            plan.append((field.name, kind, _enum_class(field.enum_type)))
        else:
            plan.append((field.name, "repeated" if _repeated(field) else "scalar", None))
    with _plans_lock:
        _plans[desc.full_name] = plan
    return plan


def _repeated(field: Any) -> bool:
    is_repeated = getattr(field, "is_repeated", None)
    if is_repeated is not None:
        return bool(is_repeated)
    return bool(field.label == field.LABEL_REPEATED)


def to_proto(obj: Any) -> Any:
    """The protobuf message for a CRI object (a ``_cri_types`` instance)."""
    msg = proto_class(type(obj).__name__)()
    _fill(msg, obj)
    return msg


def _fill(msg: Any, obj: Any) -> None:
    for name, kind, _ in _plan(msg.DESCRIPTOR):
        value = getattr(obj, name)
        if kind in {"scalar", "enum"}:
            setattr(msg, name, value)
        elif kind == "message":
            if value is not None:
                sub = getattr(msg, name)
                sub.SetInParent()
                _fill(sub, value)
        elif kind in ("repeated", "repeated_enum"):
            getattr(msg, name).extend(value)
        elif kind == "repeated_message":
            target = getattr(msg, name)
            for item in value:
                _fill(target.add(), item)
        elif kind == "map":
            getattr(msg, name).update(value)
        else:  # map_message
            target = getattr(msg, name)
            for key, item in value.items():
                _fill(target[key], item)


def from_proto(msg: Any) -> Any:
    """The CRI object (a ``_cri_types`` instance) for a protobuf message.

    An enum value this version of the CRI does not define is an
    :class:`InvalidRequest` naming the message and the field.
    """
    cls = cri.MESSAGES.get(msg.DESCRIPTOR.name)
    if cls is None:
        raise Internal(f"no CRI class for message {msg.DESCRIPTOR.full_name}")
    kwargs: dict[str, Any] = {}
    for name, kind, helper in _plan(msg.DESCRIPTOR):
        value = getattr(msg, name)
        if kind == "scalar":
            kwargs[name] = value
        elif kind == "message":
            kwargs[name] = from_proto(value) if msg.HasField(name) else None
        elif kind == "enum":
            kwargs[name] = _enum_value(helper, value, msg, name)
        elif kind == "repeated":
            kwargs[name] = list(value)
        elif kind == "repeated_enum":
            kwargs[name] = [_enum_value(helper, v, msg, name) for v in value]
        elif kind == "repeated_message":
            kwargs[name] = [from_proto(v) for v in value]
        elif kind == "map":
            kwargs[name] = dict(value)
        else:  # map_message
            kwargs[name] = {k: from_proto(v) for k, v in value.items()}
    return cls(**kwargs)


def _enum_value(cls: Callable[[int], Any], value: int, msg: Any, name: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        raise InvalidRequest(f"{msg.DESCRIPTOR.name}.{name}: unknown enum value {value}"
                             ) from None
