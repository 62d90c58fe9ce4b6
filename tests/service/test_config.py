"""The service config: crio.conf-shaped TOML, its defaults, overrides and every error."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from criolib.service import (
    DEFAULT_CAPABILITIES,
    APIConfig,
    Config,
    ConfigError,
    InvalidRequest,
    RuntimeHandlerConfig,
    ServiceError,
    load_config,
)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string, once DEL (legal in JSON) is escaped too.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


def _write(path: Path, tables: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def test_defaults_are_the_design_pages() -> None:
    config = load_config()
    assert config == Config()
    assert config.root == Path("/var/lib/criolib/storage")
    assert config.runroot == Path("/run/criolib/storage")
    assert config.storage_driver == "overlay" and config.storage_option == ()
    assert config.state_dir == Path("/run/criolib/service")
    assert config.api == APIConfig(listen=Path("/run/criolib/criolib.sock"),
                                   grpc_max_send_msg_size=16777216,
                                   grpc_max_recv_msg_size=16777216)
    rt = config.runtime
    assert (rt.default_runtime, rt.cgroup_manager, rt.monitor) == ("runc", "cgroupfs", "auto")
    assert rt.container_exits_dir == Path("/run/criolib/exits")
    assert rt.container_attach_socket_dir == Path("/run/criolib/monitor")
    assert rt.log_dir == Path("/var/log/criolib/pods")
    assert rt.namespaces_dir == Path("/var/run")
    assert rt.default_capabilities == DEFAULT_CAPABILITIES
    assert "NET_RAW" not in rt.default_capabilities and len(DEFAULT_CAPABILITIES) == 9
    assert rt.default_sysctls == () and rt.seccomp_profile == ""
    assert rt.seccomp_use_default_when_empty is False
    assert (rt.pids_limit, rt.log_size_max, rt.ctr_stop_timeout, rt.no_pivot) == (
        1024, -1, 30, False)
    assert dict(rt.runtimes) == {
        "runc": RuntimeHandlerConfig(name="runc", runtime_root=Path("/run/criolib/runc")),
        "crun": RuntimeHandlerConfig(name="crun", runtime_root=Path("/run/criolib/crun"))}
    assert attrs.asdict(config.image) == {"global_auth_file": "", "signature_policy": "",
                                          "registries_conf": "", "insecure_registries": ()}
    net = config.network
    assert net.network_dir == Path("/etc/cni/net.d/")
    assert net.plugin_dirs == ("/opt/cni/bin/", "/usr/lib/cni/")
    assert net.cni_default_network == "" and net.cache_dir == Path("/var/lib/cni")


def test_every_key_is_read(tmp_path: Path) -> None:
    path = _write(tmp_path / "crio.conf", {
        "crio": {"root": "/r", "runroot": "/rr", "storage_driver": "vfs",
                 "storage_option": ["vfs.ignore_chown_errors=true"], "state_dir": "/s"},
        "crio.api": {"listen": "/l.sock", "grpc_max_send_msg_size": 1000,
                     "grpc_max_recv_msg_size": 2000},
        "crio.runtime": {"default_runtime": "crun", "cgroup_manager": "cgroupfs",
                         "monitor": "conmon", "container_exits_dir": "/e",
                         "container_attach_socket_dir": "/m", "log_dir": "/logs",
                         "namespaces_dir": "/ns",
                         "default_capabilities": ["CHOWN"],
                         "default_sysctls": ["net.ipv4.ping_group_range=0 0"],
                         "seccomp_profile": "/p.json",
                         "seccomp_use_default_when_empty": True,
                         "pids_limit": 10, "log_size_max": 99,
                         "ctr_stop_timeout": 5, "no_pivot": True},
        "crio.runtime.runtimes.crun": {"runtime_path": "/usr/bin/crun",
                                       "runtime_root": "/cr"},
        "crio.runtime.runtimes.kata": {"runtime_path": "/opt/kata"},
        "crio.image": {"global_auth_file": "/auth.json", "signature_policy": "/policy.json",
                       "registries_conf": "/reg.conf", "insecure_registries": ["a:5000"]},
        "crio.network": {"network_dir": "/net", "plugin_dirs": ["/bin1"],
                         "cni_default_network": "n", "cache_dir": "/cache"},
    })
    c = load_config(path)
    assert (c.root, c.runroot, c.storage_driver, c.state_dir) == (
        Path("/r"), Path("/rr"), "vfs", Path("/s"))
    assert c.storage_option == ("vfs.ignore_chown_errors=true",)
    assert c.api == APIConfig(listen=Path("/l.sock"), grpc_max_send_msg_size=1000,
                              grpc_max_recv_msg_size=2000)
    rt = c.runtime
    assert (rt.default_runtime, rt.monitor, rt.container_exits_dir, rt.log_dir) == (
        "crun", "conmon", Path("/e"), Path("/logs"))
    assert rt.container_attach_socket_dir == Path("/m") and rt.namespaces_dir == Path("/ns")
    assert rt.default_capabilities == ("CHOWN",)
    assert rt.default_sysctls == ("net.ipv4.ping_group_range=0 0",)
    assert (rt.seccomp_profile, rt.pids_limit, rt.log_size_max, rt.ctr_stop_timeout,
            rt.no_pivot) == ("/p.json", 10, 99, 5, True)
    assert rt.seccomp_use_default_when_empty is True
    assert rt.runtimes["crun"] == RuntimeHandlerConfig(name="crun", runtime_path="/usr/bin/crun",
                                                       runtime_root=Path("/cr"))
    # A new handler gets a root of its own; the built-in ones stay.
    assert rt.runtimes["kata"] == RuntimeHandlerConfig(
        name="kata", runtime_path="/opt/kata", runtime_root=Path("/run/criolib/kata"))
    assert rt.runtimes["runc"].runtime_root == Path("/run/criolib/runc")
    assert rt.handler("") is rt.runtimes["crun"] and rt.handler("kata").name == "kata"
    assert c.image.insecure_registries == ("a:5000",)
    assert (c.image.global_auth_file, c.image.signature_policy, c.image.registries_conf) == (
        "/auth.json", "/policy.json", "/reg.conf")
    assert c.network.plugin_dirs == ("/bin1",)
    assert (c.network.network_dir, c.network.cni_default_network, c.network.cache_dir) == (
        Path("/net"), "n", Path("/cache"))


def test_overrides_nested_and_dotted_win_over_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.toml", {"crio": {"root": "/file", "runroot": "/file-run"},
                                        "crio.api": {"listen": "/file.sock"}})
    c = load_config(path, overrides={"crio": {"root": "/over"}, "crio.api.listen": "/o.sock",
                                     "crio.runtime.runtimes.runc.runtime_path": "/x/runc"})
    assert (c.root, c.runroot, c.api.listen) == (Path("/over"), Path("/file-run"),
                                                 Path("/o.sock"))
    assert c.runtime.runtimes["runc"].runtime_path == "/x/runc"
    assert load_config(overrides={"crio.storage_driver": "vfs"}).storage_driver == "vfs"


@pytest.mark.parametrize("tables, table, key", [
    ({"nope": {"x": 1}}, "the top level", "nope"),
    ({"crio": {"rooot": "/x"}}, "[crio]", "rooot"),
    ({"crio.api": {"stream_port": "1"}}, "[crio.api]", "stream_port"),
    ({"crio.runtime": {"conmon_cgroup": "pod"}}, "[crio.runtime]", "conmon_cgroup"),
    ({"crio.runtime.runtimes.runc": {"runtime_type": "oci"}}, "[crio.runtime.runtimes.runc]",
     "runtime_type"),
    ({"crio.image": {"pause_image": "x"}}, "[crio.image]", "pause_image"),
    ({"crio.network": {"net_dir": "/x"}}, "[crio.network]", "net_dir"),
])
def test_unknown_keys_are_refused_naming_file_table_and_key(
        tmp_path: Path, tables: dict[str, dict[str, Any]], table: str, key: str) -> None:
    path = _write(tmp_path / "bad.conf", tables)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and table in message and key in message
    assert "unknown key" in message


@pytest.mark.parametrize("table, key, value, expected", [
    ("crio", "root", 5, "a non-empty path string"),
    ("crio", "root", "", "a non-empty path string"),
    ("crio", "storage_driver", ["overlay"], "a string"),
    ("crio", "storage_option", "a=b", "an array of strings"),
    ("crio", "storage_option", [1], "an array of strings"),
    ("crio.api", "grpc_max_send_msg_size", 0, "a positive integer"),
    ("crio.api", "grpc_max_recv_msg_size", "big", "a positive integer"),
    ("crio.runtime", "pids_limit", True, "an integer"),
    ("crio.runtime", "ctr_stop_timeout", "30", "an integer"),
    ("crio.runtime", "no_pivot", 1, "true or false"),
    ("crio.runtime", "seccomp_use_default_when_empty", "yes", "true or false"),
    ("crio.runtime", "cgroup_manager", "systemd", "one of 'cgroupfs'"),
    ("crio.runtime", "monitor", "runc", "one of 'auto', 'conmon', 'criolib'"),
    ("crio.runtime", "default_sysctls", ["kernel.shm_rmid_forced"], "\"key=value\""),
    ("crio.runtime", "default_capabilities", "CHOWN", "an array of strings"),
    ("crio.runtime.runtimes.runc", "runtime_root", 3, "a non-empty path string"),
    ("crio.image", "insecure_registries", "a:1", "an array of strings"),
    ("crio.network", "plugin_dirs", "/opt/cni/bin", "an array of strings"),
    ("crio.network", "network_dir", False, "a non-empty path string"),
])
def test_wrong_types_name_the_key_and_what_was_expected(
        tmp_path: Path, table: str, key: str, value: Any, expected: str) -> None:
    path = _write(tmp_path / "crio.conf", {table: {key: value}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"[{table}] {key}" in message and expected in message and str(path) in message
    assert isinstance(info.value, InvalidRequest) and isinstance(info.value, ValueError)
    assert info.value.code == "INVALID_ARGUMENT"


def test_default_runtime_must_name_a_runtimes_table(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.conf", {"crio.runtime": {"default_runtime": "kata"}})
    with pytest.raises(ConfigError, match=r"\[crio.runtime\] default_runtime: 'kata' names "
                       r"no \[crio.runtime.runtimes.kata\] table \(configured: crun, runc\)"):
        load_config(path)
    path = _write(tmp_path / "c.conf", {"crio.runtime": {"default_runtime": "kata"},
                                        "crio.runtime.runtimes.kata": {}})
    assert load_config(path).runtime.handler().name == "kata"


@pytest.mark.parametrize("text, problem", [
    ("[crio\nroot = 1", "not valid TOML"),
    ("crio = 3", "crio: must be a table"),
    ("[crio]\napi = 3", "must be a table"),
    ("[crio.runtime]\nruntimes = 3", "must be a table"),
    ("[crio.runtime.runtimes]\nrunc = 3", "must be a table"),
    ('[crio.runtime.runtimes."a/b"]', "not a usable runtime name"),
])
def test_malformed_files(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert problem in str(info.value) and str(path) in str(info.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing.conf: cannot read the config"):
        load_config(tmp_path / "missing.conf")


def test_bad_overrides_say_so() -> None:
    with pytest.raises(ConfigError, match=r"<overrides>: \[crio\] root: expected"):
        load_config(overrides={"crio.root": 7})


def _paths(value: Any) -> list[Path]:
    if isinstance(value, Path):
        return [value]
    if attrs.has(type(value)):
        return [p for f in attrs.fields(type(value)) for p in _paths(getattr(value, f.name))]
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths(v)]
    return []


def test_for_root_puts_every_path_under_one_directory(tmp_path: Path) -> None:
    config = Config.for_root(tmp_path, storage_driver="vfs")
    paths = _paths(config)
    # root, runroot, state, listen, exits, monitor, logs, namespaces, 2 runtime roots, 2 CNI
    assert len(paths) == 12
    for path in paths:
        assert path.is_relative_to(tmp_path), path
    assert config.storage_driver == "vfs"
    assert {h.runtime_root for h in config.runtime.runtimes.values()} == {
        tmp_path / "run" / "runc", tmp_path / "run" / "crun"}
    # Plugins are the system's: they are read, not written.
    assert config.network.plugin_dirs == Config().network.plugin_dirs


def test_handler_lookup_and_path_resolution() -> None:
    rt = Config().runtime
    with pytest.raises(ConfigError, match=r"no runtime handler 'kata' .*configured: crun, runc"):
        rt.handler("kata")
    runc = rt.handler("runc")
    assert runc.resolved_path() == shutil.which("runc")
    assert attrs.evolve(runc, runtime_path="/opt/runc").resolved_path() == "/opt/runc"
    ghost = RuntimeHandlerConfig(name="no-such-runtime-xyz")
    with pytest.raises(ConfigError, match="'no-such-runtime-xyz' is not on PATH"):
        ghost.resolved_path()
    assert issubclass(ConfigError, ServiceError)


@settings(max_examples=60, deadline=None)
@given(
    root=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20),
    pids=st.integers(-2**63, 2**63 - 1),
    size=st.integers(1, 2**31),
    caps=st.lists(st.text(max_size=8), max_size=4),
    no_pivot=st.booleans(),
)
def test_values_round_trip_through_toml(tmp_path_factory: pytest.TempPathFactory, root: str,
                                        pids: int, size: int, caps: list[str],
                                        no_pivot: bool) -> None:
    path = _write(tmp_path_factory.mktemp("conf") / "c.toml", {
        "crio": {"root": "/" + root},
        "crio.api": {"grpc_max_send_msg_size": size},
        "crio.runtime": {"pids_limit": pids, "default_capabilities": caps,
                         "no_pivot": no_pivot}})
    c = load_config(path)
    assert c.root == Path("/" + root)
    assert c.api.grpc_max_send_msg_size == size
    assert (c.runtime.pids_limit, c.runtime.default_capabilities, c.runtime.no_pivot) == (
        pids, tuple(caps), no_pivot)


def test_importing_the_package_stays_cheap() -> None:
    code = ("import sys, criolib.service; "
            "print(sorted(m for m in sys.modules if m.startswith(('criolib.service.', "
            "'criolib.storage', 'criolib.cni', 'grpc', 'cri_api', 'cattrs'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
