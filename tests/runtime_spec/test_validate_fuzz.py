"""validate() on any input: broken, deep, not JSON, generated; and its cost (v1.2)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from criolib.runtime_spec import (
    SpecFormatError,
    dump_spec,
    load_spec,
    spec_from_dict,
    spec_to_dict,
)
from criolib.runtime_spec._validate import Problem, validate
from criolib.testing.strategies import valid_spec_dicts
from criolib.testing.strategies_json import corrupted, junk_values, non_objects
from tests.runtime_spec.test_validate import (
    SCHEMA_DIR,
    E,
    baseline,
    found,
)
from tests.runtime_spec.test_validate_schema import (
    WRONG,
    reported_at,
    retyped,
    typed_paths,
)
from tests.runtime_spec.test_validate_schema import _kinds as kinds_of


def _well_formed(problems: object) -> None:
    assert isinstance(problems, list)
    for problem in problems:
        assert isinstance(problem, Problem)
        assert problem.path.startswith("$") and problem.message
        assert problem.severity in ("error", "warning")
        str(problem)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted(baseline(), max_edits=5))
def test_corrupted_configs_are_reported_not_raised(doc: Any) -> None:
    _well_formed(validate(doc))


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(doc=corrupted(baseline(), max_edits=3))
def test_corrupted_configs_with_rootfs_and_host(doc: Any) -> None:
    _well_formed(validate(doc, rootfs="/nonexistent", host=True))
    _well_formed(validate(doc, rootfs=SCHEMA_DIR, host=True))


@settings(max_examples=200)
@given(non_objects())
def test_non_objects_are_reported_not_raised(value: Any) -> None:
    problems = validate(value)
    _well_formed(problems)
    assert [p.path for p in problems] == ["$"]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(list(baseline())), junk_values()))
def test_junk_members_are_reported_not_raised(doc: dict[str, Any]) -> None:
    _well_formed(validate(doc, host=True))


def test_deep_nesting_and_odd_keys() -> None:
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    doc = baseline()
    doc["annotations"] = {"a": deep}
    doc["linux"]["sysctl"] = {1: "x", None: "y"}
    doc["linux"]["timeOffsets"] = {(1, 2): {}}
    doc["x-huge"] = {"n": 10**20000}
    assert found(doc, host=True) == [
        ("$.annotations.a", E, "must be a string, not array"),
        ("$.linux.sysctl", E, "key 1 is not allowed: keys must be non-empty strings"),
        ("$.linux.sysctl", E, "key None is not allowed: keys must be non-empty strings"),
        ("$.linux.timeOffsets", E, "key <array> is not allowed: keys must be non-empty "
         "strings"),
        ("$.linux.timeOffsets", E, "time offsets need a new time namespace in "
         "linux.namespaces"),
    ]
    cyclic: dict[str, Any] = baseline()
    cyclic["linux"]["x-self"] = cyclic
    cyclic["process"]["env"].append(cyclic)
    assert found(cyclic) == [
        ('$.linux["x-self"]', E, "holds itself: a cycle is not JSON"),
        ("$.process.env[2]", E, "must be a string, not object"),
    ]


def test_what_is_not_json_is_an_error_even_where_unknown_properties_go() -> None:
    doc = baseline()
    shared = {"same": [1]}
    doc["x-vendor"] = {"nan": float("nan"), "inf": [float("-inf")], "set": {1},
                       "keys": {1: "a", "b": {(2,): None}}, "a": shared, "b": shared}
    doc["process"]["x-bytes"] = b"raw"
    doc["process"]["env"].append(float("nan"))  # the schema says it first
    doc["annotations"] = {5: "x"}
    assert found(doc) == [
        ("$.annotations", E, "key 5 is not allowed: keys must be non-empty strings"),
        ("$.process.env[2]", E, "must be a string, not number"),
        ('$.process["x-bytes"]', E, "a Python bytes is not a JSON value"),
        ('$["x-vendor"].inf[0]', E, "-inf is not a JSON number"),
        ('$["x-vendor"].keys', E, "key 1 is not a string: JSON object keys are strings"),
        ('$["x-vendor"].keys.b', E, "key <array> is not a string: JSON object keys are "
         "strings"),
        ('$["x-vendor"].nan', E, "nan is not a JSON number"),
        ('$["x-vendor"].set', E, "a Python set is not a JSON value"),
    ]
    for broken in (doc, {"ociVersion": "1.2.0", "x": float("nan")}):
        with pytest.raises(SpecFormatError):
            spec_from_dict(broken)


# --- generated configs: valid ones pass and round-trip, retyped ones are reported -------


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(valid_spec_dicts())
def test_valid_generated_configs_pass_and_come_back_exactly(doc: dict[str, Any]) -> None:
    assert [p for p in validate(doc) if p.severity == "error"] == []
    spec = spec_from_dict(doc)
    assert json.dumps(spec_to_dict(spec)) == json.dumps(doc)  # key order included
    assert validate(spec) == validate(doc)
    for indent in (None, "\t"):
        separators = (",", ":") if indent is None else (",", ": ")
        raw = json.dumps(doc, indent=indent, separators=separators,
                         ensure_ascii=False).encode()
        assert dump_spec(load_spec(raw), indent=indent) == raw


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(valid_spec_dicts(), st.data())
def test_a_known_field_of_the_wrong_type_is_reported_at_its_path(
        doc: dict[str, Any], data: st.DataObject) -> None:
    loc, tp = data.draw(st.sampled_from(list(typed_paths(doc))), label="path")
    kind = data.draw(st.sampled_from(sorted(set(WRONG) - kinds_of(tp))), label="kind")
    broken = retyped(doc, loc, WRONG[kind])
    problems = validate(broken)
    assert reported_at(problems, loc), (loc, kind, problems)


# --- cost ------------------------------------------------------------------------------


def test_validate_costs_milliseconds() -> None:
    doc = baseline()
    validate(doc)  # compiles the schema once
    runs = 50
    start = time.perf_counter()
    for _ in range(runs):
        validate(doc)
    assert (time.perf_counter() - start) / runs < 0.02
