"""Key order and layout: a file another tool wrote comes back byte for byte.

runtime-spec v1.2 config.md: each object's keys are written back in the document's
order (unknown ones in place, new ones at the end); ``dump_spec``'s ``indent`` and
``final_newline`` match the layouts of ``runc spec`` and ``crun spec``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings

from criolib.runtime_spec import (
    LinuxNamespace,
    Process,
    Spec,
    User,
    dump_spec,
    load_spec,
    spec_from_dict,
    spec_to_dict,
)
from criolib.testing import require_binaries
from criolib.testing.strategies import spec_dicts

_SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


def _spec_file(argv: list[str], tmp_path: Path) -> bytes:
    require_binaries(argv[0])
    subprocess.run(argv, cwd=tmp_path, check=True, capture_output=True, timeout=30)
    return (tmp_path / "config.json").read_bytes()


# -- the files runc and crun write --------------------------------------------------------


@pytest.mark.parametrize("argv", [["runc", "spec"], ["runc", "spec", "--rootless"]],
                         ids=" ".join)
def test_runc_spec_output_comes_back_byte_for_byte(argv: list[str], tmp_path: Path) -> None:
    raw = _spec_file(argv, tmp_path)
    # Go's json.MarshalIndent(spec, "", "\t"): tabs, ": ", no final newline; and runc
    # writes linux.uidMappings or .resources before .namespaces, unlike the model.
    assert raw.startswith(b'{\n\t"ociVersion": ') and not raw.endswith(b"\n")
    linux = list(json.loads(raw)["linux"])
    assert linux.index("namespaces") > 0
    assert linux[0] in ("resources", "uidMappings")
    spec = load_spec(raw)
    assert dump_spec(spec, indent="\t") == raw
    assert spec_to_dict(spec)["linux"] == json.loads(raw)["linux"]


@pytest.mark.parametrize("argv", [["crun", "spec"], ["crun", "spec", "--rootless"]],
                         ids=" ".join)
def test_crun_spec_output_comes_back_but_for_its_template_quirks(
        argv: list[str], tmp_path: Path) -> None:
    raw = _spec_file(argv, tmp_path)
    written = dump_spec(load_spec(raw), indent="\t", final_newline=True)
    # crun writes a fixed template: two spaces before "{", its empty arrays
    # ("inheritable") as "[", newline, indentation, "]", and in the rootless one a
    # space before one line's tabs. Nothing else differs.
    assert raw.startswith(b"  {\n\t") and raw.endswith(b"}\n")
    assert re.search(rb"\[\n\t+\]", raw)
    template = re.sub(rb"\[\n\t+\]", b"[]", raw.removeprefix(b"  "))
    assert written == template.replace(b"\n \t", b"\n\t")
    assert json.loads(written) == json.loads(raw)


# -- key order ----------------------------------------------------------------------------

# The runc example of the issue, and unknown keys in the middle of objects.
_ODD_ORDER: dict[str, Any] = {
    "x-first": 1,
    "root": {"readonly": True, "path": "rootfs"},
    "linux": {
        "resources": {"pids": {"limit": 5}, "x-middle": [], "devices": [
            {"access": "rwm", "allow": False}]},
        "namespaces": [{"path": "/proc/1/ns/net", "type": "network"}, {"type": "pid"}],
        "sysctl": {"net.b": "1", "net.a": "2"},
    },
    "process": {"cwd": "/", "x-null": None, "user": {"gid": 0, "uid": 0}, "args": ["sh"],
                "terminal": None},
    "ociVersion": "1.2.0",
}


def _text(doc: Any) -> str:
    return json.dumps(doc)  # keeps dict order: equal text means equal order


def test_each_object_keeps_the_documents_key_order() -> None:
    spec = spec_from_dict(_ODD_ORDER)
    assert _text(spec_to_dict(spec)) == _text(_ODD_ORDER)
    raw = json.dumps(_ODD_ORDER, indent="\t").encode()
    assert dump_spec(load_spec(raw), indent="\t") == raw


def test_keys_set_later_come_after_the_documents_own() -> None:
    spec = spec_from_dict(_ODD_ORDER)
    assert spec.process is not None and spec.root is not None
    changed = attrs.evolve(
        spec, hostname="h", root=attrs.evolve(spec.root, path="other"),
        process=attrs.evolve(spec.process, terminal=True, env=("A=1",), args=None))
    out = spec_to_dict(changed)
    assert list(out) == ["x-first", "root", "linux", "process", "ociVersion", "hostname"]
    assert out["root"] == {"readonly": True, "path": "other"}  # replaced in place
    # terminal replaces the kept null where it was; args is gone; env is new.
    assert list(out["process"]) == ["cwd", "x-null", "user", "terminal", "env"]


def test_objects_built_in_code_follow_the_model_order() -> None:
    spec = Spec(oci_version="1.2.0", process=Process(cwd="/", user=User(uid=0, gid=0)),
                hostname="h")
    assert list(spec_to_dict(spec)) == ["ociVersion", "process", "hostname"]
    assert list(spec_to_dict(spec)["process"]) == ["user", "cwd"]
    # A loaded object keeps its order; one built in code and put in it has the model's.
    loaded = spec_from_dict(_ODD_ORDER)
    out = spec_to_dict(attrs.evolve(loaded, process=spec.process))
    assert list(out)[-2:] == ["process", "ociVersion"] and list(out["process"]) == [
        "user", "cwd"]


def test_the_order_is_no_part_of_equality_hash_or_repr() -> None:
    forward = spec_from_dict({"ociVersion": "1.2.0", "hostname": "h"})
    backward = spec_from_dict({"hostname": "h", "ociVersion": "1.2.0"})
    assert forward == backward and repr(forward) == repr(backward)
    assert "_order" not in repr(forward) and "order" not in repr(forward)
    a = spec_from_dict({"ociVersion": "1", "linux": {"namespaces": [
        {"type": "network", "path": "/n"}]}}).linux
    b = LinuxNamespace(path="/n", type="network")
    assert a is not None and a.namespaces is not None
    assert a.namespaces[0] == b and hash(a.namespaces[0]) == hash(b)


@_SETTINGS
@given(spec_dicts())
def test_generated_documents_come_back_byte_for_byte(doc: dict[str, Any]) -> None:
    for indent in (None, "\t", 4):
        separators = (",", ":") if indent is None else (",", ": ")
        raw = json.dumps(doc, indent=indent, separators=separators,
                         ensure_ascii=False).encode()
        assert dump_spec(load_spec(raw), indent=indent) == raw


# -- the layout ---------------------------------------------------------------------------


def test_dump_writes_utf8_compact_or_indented() -> None:
    spec = spec_from_dict({"ociVersion": "1.2.0", "hostname": "hôte", "x-lone": "\ud800"})
    compact = dump_spec(spec)
    assert b"\n" not in compact and b": " not in compact
    assert load_spec(compact) == spec  # a lone surrogate forces \u escapes, still JSON
    plain = dump_spec(spec_from_dict({"ociVersion": "1.2.0", "hostname": "hôte"}), indent=2)
    assert "hôte".encode() in plain and plain.startswith(b"{\n  ")


@pytest.mark.parametrize(("indent", "final_newline", "expected"), [
    (None, False, b'{"ociVersion":"1.2.0","mounts":[]}'),
    (None, True, b'{"ociVersion":"1.2.0","mounts":[]}\n'),
    (0, False, b'{\n"ociVersion": "1.2.0",\n"mounts": []\n}'),
    (2, False, b'{\n  "ociVersion": "1.2.0",\n  "mounts": []\n}'),
    ("\t", True, b'{\n\t"ociVersion": "1.2.0",\n\t"mounts": []\n}\n'),
])
def test_indent_is_spaces_or_a_string(indent: int | str | None, final_newline: bool,
                                      expected: bytes) -> None:
    spec = spec_from_dict({"ociVersion": "1.2.0", "mounts": []})
    assert dump_spec(spec, indent=indent, final_newline=final_newline) == expected


def test_go_html_escapes_are_read_but_not_written() -> None:
    # What dump_spec documents: Go writes <, > and & as \u003c...; the value is the same.
    raw = b'{\n\t"ociVersion": "1.2.0",\n\t"hostname": "a\\u0026b"\n}'
    spec = load_spec(raw)
    assert spec.hostname == "a&b"
    assert dump_spec(spec, indent="\t") == raw.replace(b"\\u0026", b"&")
