"""validate(): criolib's own JSON Schemas for config.json (runtime-spec v1.2).

The schema files, the compiled validator, one case per schema rule, and the
promise that what validate() passes the typed model loads.
"""

from __future__ import annotations

import copy
import json
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource

from criolib.runtime_spec import Spec, SpecFormatError, spec_from_dict
from criolib.runtime_spec._convert import _is_mapping, _model_fields
from criolib.runtime_spec._validate import Problem, _validator, format_path, validate
from criolib.runtime_spec._validate_rules import Loc
from criolib.testing.strategies import valid_spec_dicts
from criolib.testing.strategies_json import corrupted, json_paths
from tests.runtime_spec.test_model import _fresh
from tests.runtime_spec.test_validate import (
    SCHEMA_DIR,
    baseline,
    changed,
    found,
)


def test_schema_files_are_valid_draft_2020_12() -> None:
    for path in SCHEMA_DIR.glob("*.json"):
        schema = json.loads(path.read_text())
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(schema)


def _reference_validator() -> Any:
    """The schema files as written, $refs and all, with criolib's integer rule."""
    schemas = [json.loads(p.read_text()) for p in SCHEMA_DIR.glob("*.json")]
    registry: Registry[Any] = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in schemas)
    root = next(s for s in schemas if s["$id"].endswith("/config.schema.json"))
    return jsonschema.Draft202012Validator(root, registry=registry)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted(baseline(), max_edits=4))
def test_compiled_schema_agrees_with_the_files(doc: Any) -> None:
    # criolib inlines $refs and checks string arrays in one loop for speed; the
    # errors must be those of the schema files.
    def errors(validator: Any) -> set[tuple[Any, ...]]:
        return {(tuple(e.absolute_path), e.validator) for e in validator.iter_errors(doc)}

    if any(isinstance(v, float | tuple) or (isinstance(v, int) and abs(v) > 2**80)
           for v in _leaves(doc)):
        return  # where the two type checkers differ, or jsonschema cannot print
    assert errors(_validator()) == errors(_reference_validator())


def _leaves(doc: Any) -> list[Any]:
    nodes = [doc]
    for path in json_paths(doc):
        node = doc
        for key in path:
            node = node[key]
        nodes.append(node)
    return nodes


SCHEMA_CASES: list[tuple[str, Callable[[dict[str, Any]], object], str, str]] = [
    ("ociVersion missing", lambda d: d.pop("ociVersion"), "$.ociVersion", "is required"),
    ("root missing", lambda d: d.pop("root"), "$.root", "is required"),
    ("cwd missing", lambda d: d["process"].pop("cwd"), "$.process.cwd", "is required"),
    ("gid missing", lambda d: d["process"]["user"].pop("gid"), "$.process.user.gid",
     "is required"),
    ("uid negative", lambda d: d["process"]["user"].update(uid=-1), "$.process.user.uid",
     "-1 is out of range for uint32 (0 to 4294967295)"),
    ("terminal a string", lambda d: d["process"].update(terminal="yes"),
     "$.process.terminal", "must be a boolean, not string"),
    ("hard a float", lambda d: d["process"]["rlimits"][0].update(hard=1024.0),
     "$.process.rlimits[0].hard", "must be an integer, not number"),
    ("hard a bool", lambda d: d["process"]["rlimits"][0].update(hard=True),
     "$.process.rlimits[0].hard", "must be an integer, not boolean"),
    ("hard past uint64", lambda d: d["process"]["rlimits"][0].update(hard=2**64),
     "$.process.rlimits[0].hard",
     "18446744073709551616 is out of range for uint64 (0 to 18446744073709551615)"),
    ("oomScoreAdj", lambda d: d["process"].update(oomScoreAdj=-1001), "$.process.oomScoreAdj",
     "-1001 is out of range for oom_score_adj (-1000 to 1000)"),
    ("ioPriority", lambda d: d["process"].update(
        ioPriority={"class": "IOPRIO_CLASS_BE", "priority": 8}),
     "$.process.ioPriority.priority", "8 is out of range for an I/O priority (0 to 7)"),
    ("namespace type", lambda d: d["linux"]["namespaces"][1].update(type="net"),
     "$.linux.namespaces[1].type",
     "'net' is not one of: pid, network, mount, ipc, uts, user, cgroup, time"),
    ("rootfsPropagation", lambda d: d["linux"].update(rootfsPropagation="bogus"),
     "$.linux.rootfsPropagation",
     "'bogus' is not one of: shared, slave, private, unbindable, rshared, rslave, rprivate"),
    ("device type", lambda d: d["linux"].update(devices=[{"type": "x", "path": "/dev/x"}]),
     "$.linux.devices[0].type", "'x' is not one of: c, b, u, p"),
    ("personality", lambda d: d["linux"].update(personality={"domain": "LINUX64"}),
     "$.linux.personality.domain", "'LINUX64' is not one of: LINUX, LINUX32"),
    ("seccomp action", lambda d: d["linux"].update(seccomp={"defaultAction": "ALLOW"}),
     "$.linux.seccomp.defaultAction", "'ALLOW' is not one of: SCMP_ACT_KILL, "
     "SCMP_ACT_KILL_PROCESS, SCMP_ACT_KILL_THREAD, SCMP_ACT_TRAP, SCMP_ACT_ERRNO, "
     "SCMP_ACT_TRACE, SCMP_ACT_ALLOW, SCMP_ACT_LOG, SCMP_ACT_NOTIFY"),
    ("seccomp names empty", lambda d: d["linux"].update(seccomp={
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]}),
     "$.linux.seccomp.syscalls[0].names", "must not be empty"),
    ("seccomp name empty", lambda d: d["linux"].update(seccomp={
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["read", ""], "action": "SCMP_ACT_ERRNO"}]}),
     "$.linux.seccomp.syscalls[0].names[1]", "must not be empty"),
    ("seccomp op", lambda d: d["linux"].update(seccomp={
        "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{
            "names": ["personality"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 8, "op": "EQ"}]}]}),
     "$.linux.seccomp.syscalls[0].args[0].op", "'EQ' is not one of: SCMP_CMP_NE, "
     "SCMP_CMP_LT, SCMP_CMP_LE, SCMP_CMP_EQ, SCMP_CMP_GE, SCMP_CMP_GT, SCMP_CMP_MASKED_EQ"),
    ("seccomp arch", lambda d: d["linux"].update(seccomp={
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}),
     "$.linux.seccomp.architectures[0]", "'SCMP_ARCH_Z80' is not one of: SCMP_ARCH_X86, "
     "SCMP_ARCH_X86_64, SCMP_ARCH_X32, SCMP_ARCH_ARM, SCMP_ARCH_AARCH64, SCMP_ARCH_MIPS, "
     "SCMP_ARCH_MIPS64, SCMP_ARCH_MIPS64N32, SCMP_ARCH_MIPSEL, SCMP_ARCH_MIPSEL64, "
     "SCMP_ARCH_MIPSEL64N32, SCMP_ARCH_PPC, SCMP_ARCH_PPC64, SCMP_ARCH_PPC64LE, "
     "SCMP_ARCH_S390, SCMP_ARCH_S390X, SCMP_ARCH_PARISC, SCMP_ARCH_PARISC64, "
     "SCMP_ARCH_RISCV64, SCMP_ARCH_LOONGARCH64, SCMP_ARCH_M68K, SCMP_ARCH_SH, SCMP_ARCH_SHEB"),
    ("annotation key empty", lambda d: d.update(annotations={"": "x"}), "$.annotations",
     "key '' is not allowed: keys must be non-empty strings"),
    ("annotation value", lambda d: d.update(annotations={"a.b": 1}), '$.annotations["a.b"]',
     "must be a string, not integer"),
    ("sysctl value", lambda d: d["linux"].update(sysctl={"net.core.somaxconn": 256}),
     '$.linux.sysctl["net.core.somaxconn"]', "must be a string, not integer"),
    ("env entry", lambda d: d["process"]["env"].append(None), "$.process.env[2]",
     "must be a string, not null"),
    ("pids limit missing", lambda d: d["linux"]["resources"].update(pids={}),
     "$.linux.resources.pids.limit", "is required"),
    # What the typed model requires, the schema requires (runtime-spec v1.2 and v1.3).
    ("user missing", lambda d: d["process"].pop("user"), "$.process.user", "is required"),
    ("memoryPolicy mode missing", lambda d: d["linux"].update(memoryPolicy={"nodes": "0"}),
     "$.linux.memoryPolicy.mode", "is required"),
    ("netDevices entry", lambda d: d["linux"].update(netDevices={"eth0": "eth1"}),
     "$.linux.netDevices.eth0", "must be an object, not string"),
    ("intelRdt schemata", lambda d: d["linux"].update(intelRdt={"schemata": 5}),
     "$.linux.intelRdt.schemata", "must be a string or an array, not integer"),
    ("intelRdt schemata line", lambda d: d["linux"].update(intelRdt={"schemata": ["L3", 5]}),
     "$.linux.intelRdt.schemata[1]", "must be a string, not integer"),
    ("freebsd", lambda d: d.update(freebsd=[]), "$.freebsd", "must be an object, not array"),
]


@pytest.mark.parametrize(("edit", "path", "message"), [c[1:] for c in SCHEMA_CASES],
                         ids=[c[0] for c in SCHEMA_CASES])
def test_schema_rule(edit: Callable[[dict[str, Any]], object], path: str,
                     message: str) -> None:
    assert found(changed(edit)) == [(path, "error", message)]


def test_a_document_must_be_an_object() -> None:
    assert found([baseline()]) == [("$", "error", "must be an object, not array")]
    assert found(None) == [("$", "error", "must be an object, not null")]




def test_a_windows_user_needs_no_uid_or_process_user() -> None:
    # config.md: only POSIX platforms require process.user (with uid and gid).
    doc = changed(lambda d: (d.update(windows={}), d.pop("linux"), d.pop("hostname"),
                             d["process"].pop("user")))
    assert found(doc) == []


# --- what validate() passes, the typed model loads ---------------------------------------


def _clean_full_config() -> dict[str, Any]:
    """test_model's config with every field, made valid for Linux (no windows)."""
    doc = _fresh()
    del doc["windows"], doc["process"]["commandLine"]
    doc["linux"]["namespaces"].append({"type": "user"})
    del doc["linux"]["seccomp"]["syscalls"][0]["errnoRet"]
    doc["process"]["scheduler"]["priority"] = 0
    return doc


_KINDS: dict[Any, set[str]] = {str: {"string"}, int: {"integer"}, bool: {"boolean"},
                               float: {"number", "integer"}}
#: A value of each JSON kind, to put where another kind belongs.
WRONG: dict[str, Any] = {"string": "7", "integer": 7, "boolean": True, "null": None,
                         "array": ["x"], "object": {"x": 1}, "number": 0.5}


def _kinds(tp: Any) -> set[str]:
    """The JSON kinds a model type takes."""
    if tp in _KINDS:
        return _KINDS[tp]
    if typing.get_origin(tp) is tuple:
        return {"array"}
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        return set().union(*(_kinds(a) for a in typing.get_args(tp)))
    return {"object"}  # a model class or a mapping


def typed_paths(doc: Any, tp: Any = Spec, loc: Loc = ()) -> Iterator[tuple[Loc, Any]]:
    """(path, model type) of every node of ``doc`` that the typed model knows."""
    if attrs.has(tp) and isinstance(doc, dict):
        fields = {wire: hint for _, wire, hint, _, _ in _model_fields(tp)}
        for key, value in doc.items():
            if key in fields:
                yield (*loc, key), fields[key]
                yield from typed_paths(value, fields[key], (*loc, key))
    elif typing.get_origin(tp) in (types.UnionType, typing.Union):
        for member in typing.get_args(tp):
            if typing.get_origin(member) is tuple and isinstance(doc, list):
                yield from typed_paths(doc, member, loc)
    elif typing.get_origin(tp) is tuple and isinstance(doc, list):
        for index, value in enumerate(doc):
            yield (*loc, index), typing.get_args(tp)[0]
            yield from typed_paths(value, typing.get_args(tp)[0], (*loc, index))
    elif _is_mapping(tp) and typing.get_args(tp)[1] is not Any and isinstance(doc, dict):
        for key, value in doc.items():
            yield (*loc, key), typing.get_args(tp)[1]
            yield from typed_paths(value, typing.get_args(tp)[1], (*loc, key))


def retyped(doc: dict[str, Any], loc: Loc, value: Any) -> dict[str, Any]:
    """A copy of ``doc`` with ``value`` at ``loc``."""
    doc = copy.deepcopy(doc)
    parent: Any = doc
    for key in loc[:-1]:
        parent = parent[key]
    parent[loc[-1]] = value
    return doc


def reported_at(problems: list[Problem], loc: Loc) -> bool:
    """Whether an error names ``loc`` or an object or array that holds it."""
    where = {format_path(loc[:end]) for end in range(len(loc) + 1)}
    return any(p.severity == "error" and p.path in where for p in problems)


def test_every_typed_field_of_the_wrong_json_type_is_an_error_there() -> None:
    doc = _clean_full_config()
    assert [p for p in validate(doc) if p.severity == "error"] == []
    paths = list(typed_paths(doc))
    assert len(paths) > 250  # the whole model, arrays' and maps' members included
    for loc, tp in paths:
        for kind, value in WRONG.items():
            if kind in _kinds(tp):
                continue
            broken = retyped(doc, loc, value)
            assert reported_at(validate(broken), loc), (loc, value)
            if value is not None:  # the model keeps an optional property's null
                with pytest.raises(SpecFormatError):
                    spec_from_dict(broken)


def test_every_property_the_model_requires_the_schema_requires() -> None:
    doc = _clean_full_config()
    for loc, _ in typed_paths(doc):
        broken = copy.deepcopy(doc)
        parent: Any = broken
        for key in loc[:-1]:
            parent = parent[key]
        del parent[loc[-1]]
        try:
            spec_from_dict(broken)
        except SpecFormatError:
            # "is required", reported at the path of the missing member itself.
            assert (format_path(loc), "error", "is required") in found(broken), loc


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(corrupted(baseline(), max_edits=4), corrupted(_clean_full_config()),
                 valid_spec_dicts().flatmap(corrupted)))
def test_what_validate_passes_without_errors_the_model_loads(doc: Any) -> None:
    if isinstance(doc, dict) and "windows" in doc:
        return  # a Windows user without uid and gid: valid, but the model cannot hold it
    if not any(p.severity == "error" for p in validate(doc)):
        spec_from_dict(doc)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow],
          deadline=None)
@given(valid_spec_dicts(), st.data())
def test_a_valid_config_less_any_property_is_an_error_or_loads(doc: dict[str, Any],
                                                              data: st.DataObject) -> None:
    loc, _ = data.draw(st.sampled_from(list(typed_paths(doc))))
    parent: Any = doc
    for key in loc[:-1]:
        parent = parent[key]
    del parent[loc[-1]]
    if not any(p.severity == "error" for p in validate(doc)):
        spec_from_dict(doc)
