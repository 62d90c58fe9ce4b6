"""criolib.cni._result: results of every version, conversions, error results."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from criolib.cni._config import CNI_SPEC_VERSIONS
from criolib.cni._errors import PluginError, ResultError
from criolib.cni._result import (
    DNS,
    ErrorResult,
    Interface,
    IPConfig,
    Result,
    Route,
    parse_error_result,
    parse_result,
)

OLD_SAMPLE = {  # SPEC 0.4.0 "Result" example
    "cniVersion": "0.4.0",
    "interfaces": [
        {"name": "cni0", "mac": "00:11:22:33:44:55"},
        {"name": "eth0", "mac": "00:11:22:33:44:66", "sandbox": "/var/run/netns/blue"},
    ],
    "ips": [
        {"version": "4", "address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 1},
        {"version": "6", "address": "fd00::5/64", "interface": 1},
    ],
    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.2.0.0/16", "gw": "10.1.0.1"}],
    "dns": {"nameservers": ["10.1.0.1"], "domain": "example.com", "search": ["a.example"]},
}

NEW_SAMPLE = {  # SPEC 1.1.0 "Success" with the 1.1.0 fields
    "cniVersion": "1.1.0",
    "interfaces": [
        {
            "name": "eth0",
            "mac": "00:11:22:33:44:66",
            "sandbox": "/var/run/netns/blue",
            "mtu": 1450,
            "socketPath": "/run/vhost.sock",
            "pciID": "0000:00:1f.6",
        },
    ],
    "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 0}],
    "routes": [
        {
            "dst": "0.0.0.0/0",
            "gw": "10.1.0.1",
            "mtu": 1400,
            "advmss": 1360,
            "priority": 10,
            "table": 100,
            "scope": 0,
        }
    ],
    "dns": {"nameservers": ["10.1.0.1"], "options": ["ndots:2"]},
}


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_parse_old_versions(version: str) -> None:
    r = parse_result(json.dumps({**OLD_SAMPLE, "cniVersion": version}).encode())
    assert r.cni_version == version
    assert r.interfaces[1] == Interface("eth0", "00:11:22:33:44:66", "/var/run/netns/blue")
    assert r.ips[0] == IPConfig("10.1.0.5/16", "10.1.0.1", 1)
    assert r.ips[1].family == "6"
    assert r.routes[1] == Route("10.2.0.0/16", "10.1.0.1")
    assert r.dns == DNS(("10.1.0.1",), "example.com", ("a.example",))
    # Round trip in its own version is exact.
    assert r.to_dict() == {**OLD_SAMPLE, "cniVersion": version}


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_parse_new_versions(version: str) -> None:
    r = parse_result({**NEW_SAMPLE, "cniVersion": version})
    assert r.interfaces[0].mtu == 1450
    assert r.interfaces[0].pci_id == "0000:00:1f.6"
    assert r.routes[0].table == 100
    assert r.to_dict() == {**NEW_SAMPLE, "cniVersion": version}


def test_convert_old_to_new_drops_version_field() -> None:
    doc = json.loads(parse_result(OLD_SAMPLE).to_json("1.0.0"))
    assert doc["cniVersion"] == "1.0.0"
    assert all("version" not in ip for ip in doc["ips"])
    assert doc["ips"][0] == {"interface": 1, "address": "10.1.0.5/16", "gateway": "10.1.0.1"}


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_convert_new_to_old_adds_version_and_drops_new_fields(version: str) -> None:
    doc = parse_result(NEW_SAMPLE).to_dict(version)
    assert doc["cniVersion"] == version
    assert doc["ips"][0]["version"] == "4"
    assert doc["interfaces"][0] == {
        "name": "eth0",
        "mac": "00:11:22:33:44:66",
        "sandbox": "/var/run/netns/blue",
    }
    assert doc["routes"][0] == {"dst": "0.0.0.0/0", "gw": "10.1.0.1"}
    back = parse_result(doc)
    assert back.ips == parse_result(NEW_SAMPLE).ips


def test_to_version() -> None:
    r = parse_result(NEW_SAMPLE).to_version("0.3.0")
    assert r.cni_version == "0.3.0"
    assert r.interfaces[0].mtu is None
    with pytest.raises(ResultError, match="unsupported"):
        r.to_json("0.2.0")


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"cniVersion": "0.2.0"}, "unsupported result cniVersion"),
        ({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1"}]}, "lacks a prefix"),
        ({"cniVersion": "1.0.0", "ips": [{"address": "nope/8"}]}, "CIDR"),
        ({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "gateway": "x"}]}, "not an IP"),
        ({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "interface": -1}]}, "negative"),
        ({"cniVersion": "1.0.0", "interfaces": [{"mac": "x"}]}, "name is required"),
        ({"cniVersion": "1.0.0", "interfaces": "eth0"}, "list of objects"),
        ({"cniVersion": "1.0.0", "routes": [{"dst": "0.0.0.0/0", "mtu": "x"}]}, "integer"),
        ({"cniVersion": "1.0.0", "dns": {"nameservers": "1.1.1.1"}}, "list of strings"),
        ({"cniVersion": "1.0.0", "code": 7, "msg": "bad"}, "an error result"),
    ],
)
def test_invalid_results(doc: dict[str, Any], problem: str) -> None:
    with pytest.raises(ResultError, match=problem):
        parse_result(doc)


def test_not_json() -> None:
    with pytest.raises(ResultError, match="not valid JSON"):
        parse_result(b"{")
    with pytest.raises(ResultError, match="JSON object"):
        parse_result(b"[]")


def test_error_result() -> None:
    err = parse_error_result(
        b'{"cniVersion": "1.0.0", "code": 7, "msg": "Invalid config", "details": "no ipam"}'
    )
    assert err == ErrorResult("1.0.0", 7, "Invalid config", "no ipam")
    assert err.to_dict()["code"] == 7
    exc = err.to_exception("ADD bridge")
    assert isinstance(exc, PluginError)
    assert (exc.code, exc.msg, exc.details) == (7, "Invalid config", "no ipam")
    assert "ADD bridge failed (code 7)" in str(exc)
    with pytest.raises(ResultError, match="code must be an integer"):
        parse_error_result({"cniVersion": "1.0.0", "msg": "x"})


# Strategies for the result models, reused by the round trips below.
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
cidrs = st.one_of(st.tuples(ipv4, st.integers(0, 32)), st.tuples(ipv6, st.integers(0, 128))).map(
    lambda t: f"{t[0]}/{t[1]}"
)
names = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=15)
opt_int = st.none() | st.integers(0, 2**31 - 1)
interfaces = st.builds(
    Interface,
    names,
    st.sampled_from(["", "00:11:22:33:44:55"]),
    st.sampled_from(["", "/x"]),
    opt_int,
    st.sampled_from(["", "/run/s.sock"]),
    st.sampled_from(["", "0000:00:1f.6"]),
)
ipconfigs = st.builds(IPConfig, cidrs, st.none() | ipv4 | ipv6, st.none() | st.integers(0, 5))
routes = st.builds(
    Route, cidrs, st.none() | ipv4 | ipv6, opt_int, opt_int, opt_int, opt_int, opt_int
)
words = st.lists(names, max_size=3).map(tuple)
dnss = st.builds(DNS, words, st.sampled_from(["", "example.com"]), words, words)
results = st.builds(
    Result,
    st.sampled_from(CNI_SPEC_VERSIONS),
    st.lists(interfaces, max_size=3).map(tuple),
    st.lists(ipconfigs, max_size=3).map(tuple),
    st.lists(routes, max_size=3).map(tuple),
    dnss,
)


@settings(max_examples=200, deadline=None)
@given(result=results)
def test_round_trip_own_version(result: Result) -> None:
    expected = (
        result if result.cni_version.startswith("1.") else result.to_version(result.cni_version)
    )
    assert parse_result(result.to_json()) == expected


@settings(max_examples=200, deadline=None)
@given(result=results, a=st.sampled_from(CNI_SPEC_VERSIONS), b=st.sampled_from(CNI_SPEC_VERSIONS))
def test_conversion_keeps_addresses(result: Result, a: str, b: str) -> None:
    there = parse_result(result.to_json(a))
    back = parse_result(there.to_json(b))
    assert back.cni_version == b
    assert back.ips == result.ips
    assert [r.dst for r in back.routes] == [r.dst for r in result.routes]
    assert [i.name for i in back.interfaces] == [i.name for i in result.interfaces]
    assert back.dns == result.dns
    if a.startswith("1.") and b.startswith("1."):
        assert back == Result(b, result.interfaces, result.ips, result.routes, result.dns)
