"""Third-party transports from the ``criolib.image.transports`` entry-point group."""

from __future__ import annotations

import importlib.metadata

import pytest

from criolib.image import TransportError, UnknownTransport, parse_image_name
from criolib.image import _transports as registry
from criolib.image._transports import ENTRY_POINT_GROUP, get_transport


@pytest.fixture
def fake_entry_points(monkeypatch: pytest.MonkeyPatch) -> list[importlib.metadata.EntryPoint]:
    """Entry points the registry sees instead of the installed ones (loaded anew)."""
    declared: list[importlib.metadata.EntryPoint] = []

    def entry_points(*, group: str) -> list[importlib.metadata.EntryPoint]:
        return declared if group == ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_BROKEN", {})
    return declared


def test_a_broken_entry_point_is_named_when_its_transport_is_asked_for(
        fake_entry_points: list[importlib.metadata.EntryPoint]) -> None:
    fake_entry_points.append(importlib.metadata.EntryPoint(
        name="broken-x", value="criolib_no_such_module:TRANSPORT", group=ENTRY_POINT_GROUP))
    with pytest.raises(TransportError, match=r"broken-x.*criolib_no_such_module") as info:
        parse_image_name("broken-x:whatever")
    assert not isinstance(info.value, UnknownTransport)
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    # Other transports still work, and an unknown name is still UnknownTransport.
    assert get_transport("oci").name == "oci"
    with pytest.raises(UnknownTransport):
        get_transport("no-such-transport")


def test_a_working_entry_point_registers_its_transport(
        fake_entry_points: list[importlib.metadata.EntryPoint]) -> None:
    fake_entry_points.append(importlib.metadata.EntryPoint(
        name="oci", value="criolib.image._transports._oci:OCI_TRANSPORT",
        group=ENTRY_POINT_GROUP))
    assert get_transport("oci").name == "oci"
