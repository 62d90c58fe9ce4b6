"""The converter's failures: every one a SpecFormatError naming the JSON path.

runtime-spec v1.2 config.md, runtime.md: wrong types, missing REQUIRED properties,
malformed JSON, values JSON cannot hold (on the way in and on the way out), and any
damage hypothesis does to a document.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from criolib.runtime_spec import (
    Mount,
    Process,
    RuntimeSpecError,
    Spec,
    SpecFormatError,
    User,
    dump_spec,
    load_spec,
    load_state,
    spec_from_dict,
    spec_to_dict,
)
from criolib.testing.strategies import spec_dicts, valid_spec_dicts
from criolib.testing.strategies_json import corrupted
from tests.runtime_spec.test_model import FULL_CONFIG, _fresh

_SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


# -- structural faults -------------------------------------------------------------------


def _with(path: list[str | int], value: Any) -> dict[str, Any]:
    doc = _fresh()
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["process", "user", "uid"], "root",
         "config.json: process.user.uid: expected an integer, got 'root'"),
        (["process", "user", "gid"], True,
         "config.json: process.user.gid: expected an integer, got true"),
        (["process", "user", "additionalGids", 1], 6.0,
         "config.json: process.user.additionalGids[1]: expected an integer, got 6.0"),
        (["process", "terminal"], "yes",
         "config.json: process.terminal: expected a boolean, got 'yes'"),
        (["process", "env"], "A=1",
         "config.json: process.env: expected an array, got 'A=1'"),
        (["process", "cwd"], None, "config.json: process.cwd: expected a string, got null"),
        (["process", "cwd"], _DELETE, "config.json: process: missing required property 'cwd'"),
        (["process", "user"], [], "config.json: process.user: expected an object, got an array"),
        (["mounts", 1, "options", 0], 1,
         "config.json: mounts[1].options[0]: expected a string, got 1"),
        (["annotations", "com.example.key1"], 1,
         'config.json: annotations["com.example.key1"]: expected a string, got 1'),
        (["linux", "namespaces", 0], "pid",
         "config.json: linux.namespaces[0]: expected an object, got 'pid'"),
        (["linux", "resources", "memory", "limit"], "1G",
         "config.json: linux.resources.memory.limit: expected an integer, got '1G'"),
        (["linux", "resources", "rdma", "mlx5_1", "hcaHandles"], -0.5,
         "config.json: linux.resources.rdma.mlx5_1.hcaHandles: expected an integer, got -0.5"),
        (["linux", "seccomp", "syscalls", 0, "args", 0, "index"], "0",
         "config.json: linux.seccomp.syscalls[0].args[0].index: expected an integer, got '0'"),
        (["linux", "seccomp", "syscalls", 0, "names"], _DELETE,
         "config.json: linux.seccomp.syscalls[0]: missing required property 'names'"),
        (["linux", "timeOffsets", "monotonic"], 5,
         "config.json: linux.timeOffsets.monotonic: expected an object, got 5"),
        (["root"], None, None),  # null for an optional object is kept, not an error
    ],
)
def test_wrong_types_name_the_json_path(path: list[str | int], value: Any,
                                        message: str | None) -> None:
    doc = _with(path, value)
    if message is None:
        assert spec_to_dict(spec_from_dict(doc)) == doc
        return
    with pytest.raises(SpecFormatError) as info:
        spec_from_dict(doc)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError) and isinstance(info.value, RuntimeSpecError)
    assert info.value.source == "config.json"
    assert message.startswith(f"config.json: {info.value.path}: {info.value.reason}")


def test_the_document_itself_must_be_an_object_with_its_required_properties() -> None:
    with pytest.raises(SpecFormatError, match=r"^config\.json: expected an object, got an array$"):
        load_spec(b"[]")
    with pytest.raises(SpecFormatError,
                       match=r"^config\.json: missing required property 'ociVersion'$"):
        load_spec("{}")
    for parsed in (None, [{"ociVersion": "1.2.0"}], 5):  # parsed JSON that is no object
        with pytest.raises(SpecFormatError, match=r"^config\.json: expected an object"):
            load_spec(parsed)  # type: ignore[arg-type]
    with pytest.raises(SpecFormatError, match=r"^state: missing required property 'bundle'$"):
        load_state({"ociVersion": "1.2.0", "id": "a", "status": "created"})


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "invalid JSON: Expecting value"),
        (b'{"ociVersion": "1.2.0",', "invalid JSON: Expecting property name"),
        (b'{"ociVersion": "1.2.0", "x": NaN}', "invalid JSON: NaN is not a JSON number"),
        (b'{"ociVersion": "\xff"}', "invalid JSON: not UTF-8 text"),
        ("[" * 100000, "invalid JSON: nested too deeply"),
    ],
)
def test_malformed_json_is_a_spec_format_error(data: bytes | str, reason: str) -> None:
    with pytest.raises(SpecFormatError) as info:
        load_spec(data, source="/bundle/config.json")
    assert str(info.value).startswith(f"/bundle/config.json: {reason}")
    assert info.value.path == ""


def test_a_too_deep_mapping_is_a_spec_format_error() -> None:
    deep: list[Any] = []
    for _ in range(100000):
        deep = [deep]
    with pytest.raises(SpecFormatError, match=r"^config\.json: nested too deeply$"):
        spec_from_dict({"ociVersion": "1.2.0", "x": deep})


def test_non_json_values_in_a_mapping_are_reported() -> None:
    with pytest.raises(SpecFormatError, match=r"^config\.json: x\.y: expected a JSON value, "
                                              r"got a Python set$"):
        spec_from_dict({"ociVersion": "1.2.0", "x": {"y": {1}}})


def test_spec_format_error_pickles() -> None:
    with pytest.raises(SpecFormatError) as info:
        load_spec('{"ociVersion": 1}')
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value) == "config.json: ociVersion: expected a string, got 1"
    assert (again.source, again.path, again.reason) == (info.value.source, info.value.path,
                                                        info.value.reason)




# -- values JSON cannot hold, and objects that are not the model's ----------------------

_HUGE = 10**5000  # more than the 4300 digits Python turns into text


def test_a_huge_integer_is_described_by_its_size() -> None:
    for load in (spec_from_dict, load_spec):
        with pytest.raises(SpecFormatError) as info:
            load({"ociVersion": _HUGE})
        assert str(info.value) == ("config.json: ociVersion: expected a string, got an "
                                   "integer of 16610 bits")
    with pytest.raises(SpecFormatError, match=r"^config\.json: x\[0\]: expected string "
                                              r"keys, got an integer of 16610 bits$"):
        spec_from_dict({"ociVersion": "1.2.0", "x": [{_HUGE: 1}]})


def test_a_value_json_cannot_hold_is_reported_on_dump_with_its_path() -> None:
    spec = spec_from_dict({"ociVersion": "1.2.0", "x-vendor": {"n": [1, _HUGE]}})
    assert spec_to_dict(spec)["x-vendor"]["n"][1] == _HUGE  # a dict may hold it
    with pytest.raises(SpecFormatError) as info:
        dump_spec(spec)
    assert str(info.value) == ('config.json: ["x-vendor"].n[1]: an integer of 16610 bits '
                               "is too long to write as JSON")
    user = User(uid=0, gid=0)
    for value, reason in [
        (_HUGE, "an integer of 16610 bits is too long to write as JSON"),
        (float("nan"), "nan is not a JSON number"),
        (Path("/x"), "expected a JSON value, got a Python PosixPath"),
    ]:
        spec = Spec(oci_version="1.2.0", process=Process(
            user=attrs.evolve(user, umask=value), cwd="/"))
        with pytest.raises(SpecFormatError) as info:
            dump_spec(spec, indent="\t")
        assert (info.value.path, info.value.reason) == ("process.user.umask", reason)


@pytest.mark.parametrize(("spec", "path", "reason"), [
    ("config.json", "", "expected a Spec, got 'config.json'"),
    (Spec(oci_version="1", process="sh"),  # type: ignore[arg-type]
     "process", "expected a Process, got 'sh'"),
    (Spec(oci_version="1", mounts=(Mount(destination="/a"), "/b")),  # type: ignore[arg-type]
     "mounts[1]", "expected a Mount, got '/b'"),
    (Spec(oci_version="1", mounts=5),  # type: ignore[arg-type]
     "mounts", "expected an array, got 5"),
    (Spec(oci_version="1", annotations=["a=b"]),  # type: ignore[arg-type]
     "annotations", "expected an object, got an array"),
    (Spec(oci_version="1", annotations={1: "x"}),  # type: ignore[dict-item]
     "annotations", "expected string keys, got 1"),
    (Spec(oci_version="1", solaris="zone"),  # type: ignore[arg-type]
     "solaris", "expected an object, got 'zone'"),
    (Spec(oci_version="1", extra={1: 2}),  # type: ignore[dict-item]
     "", "expected string keys, got 1"),
    (Spec(oci_version="1", extra={"x": {2, 3}}),
     "x", "expected a JSON value, got a Python set"),
])
def test_what_is_not_a_spec_is_a_spec_format_error(spec: Any, path: str, reason: str) -> None:
    for write in (spec_to_dict, dump_spec):
        with pytest.raises(SpecFormatError) as info:
            write(spec)
        assert (info.value.source, info.value.path, info.value.reason) == (
            "config.json", path, reason)


def test_a_state_is_not_a_spec() -> None:
    state = load_state({"ociVersion": "1.2.0", "id": "a", "status": "created",
                        "bundle": "/b"})
    with pytest.raises(SpecFormatError, match=r"^config\.json: expected a Spec, got a "
                                              r"Python State$"):
        spec_to_dict(state)  # type: ignore[arg-type]


def test_a_cycle_built_in_python_is_a_spec_format_error() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(SpecFormatError, match=r"^config\.json: nested too deeply$"):
        dump_spec(Spec(oci_version="1.2.0", extra={"x": loop}))


def test_an_unknown_key_must_be_a_string() -> None:
    with pytest.raises(SpecFormatError, match=r"^config\.json: process: expected string "
                                              r"keys, got 7$"):
        spec_from_dict({"ociVersion": "1.2.0", "process": {"cwd": "/", 7: "x",
                                                           "user": {"uid": 0, "gid": 0}}})


# -- any damage, only SpecFormatError ----------------------------------------------------


def _load_dump_load(doc: Any) -> None:
    """Load ``doc`` every way and write it back: SpecFormatError or success, nothing else."""
    try:
        spec = spec_from_dict(doc)
    except SpecFormatError:
        with pytest.raises(SpecFormatError):
            load_spec(doc)
        return
    assert load_spec(doc) == spec
    try:
        text = json.dumps(doc)  # NaN is written as NaN, which load_spec refuses
    except ValueError:
        pass  # a key or an integer Python cannot write
    else:
        try:
            assert load_spec(text) == spec
        except SpecFormatError:
            assert "NaN" in text or "Infinity" in text
    for indent in (None, "\t", 2):
        try:
            data = dump_spec(spec, indent=indent)
        except SpecFormatError as exc:
            assert "too long to write as JSON" in exc.reason
            continue
        assert load_spec(data) == spec


@_SETTINGS
@given(corrupted(FULL_CONFIG, max_edits=4))
def test_a_damaged_full_config_loads_or_raises_spec_format_error(doc: Any) -> None:
    _load_dump_load(doc)


@_SETTINGS
@given(st.one_of(spec_dicts(), valid_spec_dicts()).flatmap(corrupted))
def test_damaged_generated_configs_load_or_raise_spec_format_error(doc: Any) -> None:
    _load_dump_load(doc)
