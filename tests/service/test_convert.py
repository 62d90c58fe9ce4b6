"""CRI objects ⇄ protobuf messages, exactly (hypothesis over the descriptor)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from criolib.service import InvalidRequest, from_proto, proto_class, to_proto
from criolib.service import _cri_types as cri

api_pb2 = pytest.importorskip("cri_api.v1.api_pb2")
FD = api_pb2.DESCRIPTOR.message_types_by_name["PodSandboxConfig"].fields[0].__class__

_INTS = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1), FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1), FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1), FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1), FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1), FD.TYPE_FIXED64: (0, 2**64 - 1),
}
_text = st.text(max_size=8)


def _enum_class(enum_desc: Any) -> Any:
    if enum_desc.containing_type is None:
        return cri.ENUMS[enum_desc.name]
    return getattr(cri.MESSAGES[enum_desc.containing_type.name], enum_desc.name)


def _scalar(field: Any, depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is not None:
        return messages(field.message_type.name, depth - 1)
    if field.enum_type is not None:
        return st.sampled_from(list(_enum_class(field.enum_type)))
    if field.type in _INTS:
        low, high = _INTS[field.type]
        return st.integers(low, high)
    if field.type == FD.TYPE_BOOL:
        return st.booleans()
    if field.type == FD.TYPE_STRING:
        return _text
    if field.type == FD.TYPE_BYTES:
        return st.binary(max_size=8)
    if field.type == FD.TYPE_DOUBLE:
        return st.floats(allow_nan=False)
    if field.type == FD.TYPE_FLOAT:
        return st.floats(allow_nan=False, width=32)
    raise AssertionError(f"unhandled field type {field.type} of {field.full_name}")


def _field(field: Any, depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field.message_type.fields_by_name["value"]
        return st.dictionaries(_text, _scalar(value, depth), max_size=3)
    if field.is_repeated:
        if field.message_type is not None and depth <= 0:
            return st.just([])
        return st.lists(_scalar(field, depth), max_size=3)
    if field.message_type is not None:
        if depth <= 0:
            return st.none()
        return st.none() | messages(field.message_type.name, depth - 1)
    return _scalar(field, depth)


def messages(name: str, depth: int = 5) -> st.SearchStrategy[Any]:
    """A strategy for the CRI class of message ``name``, nested up to ``depth``."""
    desc = api_pb2.DESCRIPTOR.message_types_by_name[name]
    return st.builds(cri.MESSAGES[name], **{f.name: _field(f, depth) for f in desc.fields})


RICH = ["PodSandboxConfig", "ContainerConfig", "ContainerStatus", "ImageStatusResponse",
        "ExecSyncResponse", "ListPodSandboxResponse", "UpdateContainerResourcesRequest"]


@pytest.mark.parametrize("name", RICH)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rich_messages_round_trip_exactly(name: str, data: st.DataObject) -> None:
    obj = data.draw(messages(name))
    msg = to_proto(obj)
    assert type(msg).__name__ == name
    assert from_proto(msg) == obj
    # And through the wire format, as gRPC carries it.
    wire = type(msg).FromString(msg.SerializeToString())
    assert from_proto(wire) == obj


@pytest.mark.parametrize("name", sorted(cri.MESSAGES))
def test_every_message_round_trips_its_defaults(name: str) -> None:
    obj = cri.MESSAGES[name]()
    msg = to_proto(obj)
    assert msg == proto_class(name)()
    assert from_proto(msg) == obj


def test_unset_and_empty_messages_are_told_apart() -> None:
    unset = cri.LinuxPodSandboxConfig()
    empty = cri.LinuxPodSandboxConfig(security_context=cri.LinuxSandboxSecurityContext())
    assert not to_proto(unset).HasField("security_context")
    assert to_proto(empty).HasField("security_context")
    assert from_proto(to_proto(empty)) == empty
    assert from_proto(to_proto(unset)).security_context is None


def test_nested_enums_maps_and_bytes() -> None:
    obj = cri.PodSandboxConfig(
        labels={"a": "b"},
        linux=cri.LinuxPodSandboxConfig(
            sysctls={"kernel.msgmax": "1"},
            security_context=cri.LinuxSandboxSecurityContext(seccomp=cri.SecurityProfile(
                profile_type=cri.SecurityProfile.ProfileType.Unconfined))))
    msg = to_proto(obj)
    assert dict(msg.labels) == {"a": "b"}
    assert msg.linux.security_context.seccomp.profile_type == 1
    back = from_proto(msg)
    assert back.linux.security_context.seccomp.profile_type is (
        cri.SecurityProfile.ProfileType.Unconfined)
    out = from_proto(to_proto(cri.ExecSyncResponse(stdout=b"\x00\xff", exit_code=3)))
    assert out.stdout == b"\x00\xff" and isinstance(out.stdout, bytes)


def test_an_unknown_enum_value_is_an_invalid_request() -> None:
    msg = api_pb2.PortMapping(protocol=7, container_port=80)
    with pytest.raises(InvalidRequest, match=r"PortMapping.protocol: unknown enum value 7"):
        from_proto(msg)
    request = api_pb2.ListContainersRequest()
    request.filter.state.state = 9
    with pytest.raises(InvalidRequest, match=r"ContainerStateValue\.state"):
        from_proto(request)
