"""The generated CRI v1 classes match the installed descriptor (scripts/gen_cri_types.py)."""

from __future__ import annotations

import enum
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from criolib.service import _cri_types as cri

api_pb2 = pytest.importorskip("cri_api.v1.api_pb2")
ROOT = Path(__file__).resolve().parents[2]


def test_generated_module_is_up_to_date() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_cri_types.py"),
                           "--check"], check=False)
    assert done.returncode == 0, "run scripts/gen_cri_types.py: _cri_types.py is stale"


def test_every_message_and_field_is_mirrored() -> None:
    desc = api_pb2.DESCRIPTOR
    assert set(cri.MESSAGES) == set(desc.message_types_by_name)
    for name, message in desc.message_types_by_name.items():
        fields = [f.name for f in attrs.fields(cri.MESSAGES[name])]
        assert fields == [f.name for f in message.fields], name
    for name, enum_desc in desc.enum_types_by_name.items():
        members = {m.name: m.value for m in cri.ENUMS[name]}
        assert members == {v.name: v.number for v in enum_desc.values}


def test_defaults_are_proto3_zero_values() -> None:
    config = cri.PodSandboxConfig()
    assert config.metadata is None
    assert config.labels == {} and config.port_mappings == []
    assert cri.PortMapping().protocol is cri.Protocol.TCP
    profile = cri.SecurityProfile()
    assert profile.profile_type is cri.SecurityProfile.ProfileType.RuntimeDefault
    assert isinstance(profile.profile_type, enum.IntEnum)
    # Mutable defaults are per instance.
    a, b = cri.PodSandboxConfig(), cri.PodSandboxConfig()
    a.labels["x"] = "y"
    assert b.labels == {}
