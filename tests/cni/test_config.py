"""criolib.cni._config: loading, validation, version pick, directory watching."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from criolib.cni._config import (
    CNI_SPEC_VERSIONS,
    NetworkWatcher,
    load_conf_bytes,
    load_conf_file,
    load_networks,
    pick_version,
)
from criolib.cni._errors import CNIError, ConfigError

BRIDGE = {
    "type": "bridge",
    "bridge": "cni0",
    "ipam": {"type": "host-local", "subnet": "10.88.0.0/16"},
}


def conflist(name: str = "net1", version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    return {"cniVersion": version, "name": name, "plugins": [BRIDGE, {"type": "portmap"}], **extra}


def write(path: Path, doc: Any) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_conflist_loads(tmp_path: Path) -> None:
    net = load_conf_file(write(tmp_path / "10-a.conflist", conflist(disableCheck=True)))
    assert net.name == "net1"
    assert net.cni_version == "1.0.0"
    assert [p["type"] for p in net.plugins] == ["bridge", "portmap"]
    assert net.disable_check is True
    assert net.disable_gc is False
    assert json.loads(net.to_json())["cniVersion"] == "1.0.0"


@pytest.mark.parametrize("ext", [".conf", ".json"])
def test_single_conf_is_wrapped(tmp_path: Path, ext: str) -> None:
    doc = {"cniVersion": "0.4.0", "name": "single", **BRIDGE}
    net = load_conf_file(write(tmp_path / f"a{ext}", doc))
    assert net.name == "single"
    assert net.cni_version == "0.4.0"
    assert net.plugins == (doc,)


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"cniVersion": "1.0.0", "plugins": [BRIDGE]}, "name is required"),
        ({"cniVersion": "1.0.0", "name": "-bad", "plugins": [BRIDGE]}, "invalid network name"),
        ({"cniVersion": "1.0.0", "name": "a b", "plugins": [BRIDGE]}, "invalid network name"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": []}, "'plugins' is empty"),
        ({"cniVersion": "1.0.0", "name": "n"}, "'plugins' must be a list"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": [{"x": 1}]}, "plugins[0] has no 'type'"),
        ({"cniVersion": "0.2.0", "name": "n", "plugins": [BRIDGE]}, "unsupported cniVersion"),
        ({"name": "n", "plugins": [BRIDGE]}, "cniVersion is required"),
        ({"cniVersions": ["9.9.9"], "name": "n", "plugins": [BRIDGE]}, "no supported version"),
        ({"cniVersions": "1.0.0", "name": "n", "plugins": [BRIDGE]}, "list of strings"),
        ({**conflist(), "disableGC": "yes"}, "disableGC must be a boolean"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_invalid_lists(doc: Any, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        load_conf_bytes(json.dumps(doc))


def test_single_conf_needs_type() -> None:
    with pytest.raises(ConfigError, match="has no 'type'"):
        load_conf_bytes(b'{"cniVersion": "1.0.0", "name": "n"}', single=True)


def test_valid_names() -> None:
    for name in ("a", "0", "a.b-c_d", "Net-1"):
        assert load_conf_bytes(json.dumps(conflist(name))).name == name


@pytest.mark.parametrize(
    ("doc", "want"),
    [
        ({"cniVersions": ["0.3.1", "1.1.0", "1.0.0"], "cniVersion": "0.4.0"}, "1.1.0"),
        ({"cniVersions": ["0.3.1", "2.0.0"], "cniVersion": "1.0.0"}, "0.3.1"),
        ({"cniVersions": ["9.0.0"], "cniVersion": "1.0.0"}, "1.0.0"),
        ({"cniVersion": "0.3.0"}, "0.3.0"),
    ],
)
def test_pick_version(doc: dict[str, Any], want: str) -> None:
    assert pick_version(doc) == want


def test_load_networks_sorted_with_errors(tmp_path: Path) -> None:
    write(tmp_path / "20-b.conflist", conflist("b"))
    write(tmp_path / "10-a.conflist", conflist("a"))
    write(tmp_path / "05-broken.conf", "{not json")
    write(tmp_path / "30-dup.conflist", conflist("a"))
    write(tmp_path / "40-notype.conf", {"cniVersion": "1.0.0", "name": "x"})
    write(tmp_path / "README.md", "ignored")
    (tmp_path / "sub.conf").mkdir()
    nets = load_networks(tmp_path)
    assert list(nets.networks) == ["a", "b"]
    assert nets.default == "a"
    assert nets.default_network() is nets.networks["a"]
    assert sorted(p.name for p in nets.errors) == [
        "05-broken.conf",
        "30-dup.conflist",
        "40-notype.conf",
    ]
    err = nets.errors[tmp_path / "05-broken.conf"]
    assert isinstance(err, ConfigError)
    assert err.path == tmp_path / "05-broken.conf"
    assert "05-broken.conf" in str(err)
    assert "already defined" in str(nets.errors[tmp_path / "30-dup.conflist"])


def test_default_name(tmp_path: Path) -> None:
    write(tmp_path / "10-a.conflist", conflist("a"))
    write(tmp_path / "20-b.conflist", conflist("b"))
    assert load_networks(tmp_path, default_name="b").default == "b"
    assert load_networks(tmp_path, default_name="missing").default == "a"
    assert load_networks(tmp_path / "nope").default is None


def test_watcher_reloads_on_change(tmp_path: Path) -> None:
    watcher = NetworkWatcher(tmp_path)
    assert watcher.networks().networks == {}
    write(tmp_path / "10-a.conflist", conflist("a"))
    first = watcher.networks()
    assert list(first.networks) == ["a"]
    assert watcher.networks() is first  # unchanged: no reload
    path = write(tmp_path / "10-a.conflist", conflist("renamed-longer"))
    st_ = path.stat()
    os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns + 1_000_000_000))
    assert list(watcher.networks().networks) == ["renamed-longer"]
    path.unlink()
    assert watcher.networks().networks == {}


def test_watcher_polls_new_files_and_fixed_bad_ones(tmp_path: Path) -> None:
    write(tmp_path / "10-a.conflist", conflist("a"))
    bad = tmp_path / "20-b.conflist"
    bad.write_text("{")
    watcher = NetworkWatcher(tmp_path)
    first = watcher.networks()
    assert list(first.networks) == ["a"] and list(first.errors) == [bad]
    write(tmp_path / "30-c.conflist", conflist("c"))  # added after the first load
    assert sorted(watcher.networks().networks) == ["a", "c"]
    write(bad, conflist("b"))  # the bad file gets fixed
    st_ = bad.stat()
    os.utime(bad, ns=(st_.st_atime_ns, st_.st_mtime_ns + 1_000_000_000))
    fixed = watcher.networks()
    assert sorted(fixed.networks) == ["a", "b", "c"] and fixed.errors == {}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3)
    ),
    max_leaves=10,
)
config_like = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=6) | json_values,
        "cniVersion": st.sampled_from([*CNI_SPEC_VERSIONS, "0.2.0"]) | json_values,
        "cniVersions": st.lists(st.sampled_from(CNI_SPEC_VERSIONS)) | json_values,
        "plugins": st.lists(
            st.fixed_dictionaries({}, optional={"type": st.text(max_size=4) | json_values}),
            max_size=3,
        )
        | json_values,
        "type": st.text(max_size=4) | json_values,
        "disableCheck": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(doc=config_like | json_values, single=st.booleans())
def test_random_configs_only_raise_config_error(doc: Any, single: bool) -> None:
    try:
        net = load_conf_bytes(json.dumps(doc), single=single)
    except ConfigError:
        return
    assert net.cni_version in CNI_SPEC_VERSIONS
    assert net.plugins and all(p["type"] for p in net.plugins)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=40))
def test_random_bytes_only_raise_config_error(data: bytes) -> None:
    with pytest.raises(CNIError):
        load_conf_bytes(data)
