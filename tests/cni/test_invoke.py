"""Finding and executing plugins (SPEC.md "Execution Protocol", "Error")."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from criolib.cni import PluginError, PluginNotFound, PluginTimeout, find_plugin
from criolib.cni._invoke import UNPARSABLE_ERROR_CODE, build_env, exec_plugin


def _script(d: Path, name: str, body: str) -> Path:
    p = d / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)
    return p


def test_find_plugin_searches_dirs_in_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    _script(b, "bridge", "exit 0\n")
    assert find_plugin("bridge", [a, b]) == b / "bridge"
    _script(a, "bridge", "exit 0\n")
    assert find_plugin("bridge", [a, b]) == a / "bridge"


def test_find_plugin_names_the_dirs(tmp_path: Path) -> None:
    with pytest.raises(PluginNotFound, match=str(tmp_path)):
        find_plugin("nosuch", [tmp_path])
    with pytest.raises(PluginNotFound, match="invalid"):
        find_plugin("../bin/sh", [tmp_path])


def test_env_is_cni_and_path_only(tmp_path: Path) -> None:
    plugin = _script(tmp_path, "envdump", "env\ncat >/dev/null\n")
    env = build_env(
        "ADD",
        container_id="c1",
        netns="/run/netns/x",
        ifname="eth0",
        args="IgnoreUnknown=1;K8S_POD_NAME=p",
        path=[tmp_path],
    )
    out = exec_plugin(plugin, env, b"{}")
    seen = dict(line.split("=", 1) for line in out.decode().splitlines())
    seen.pop("PWD", None)  # the shell adds it
    assert seen == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/run/netns/x",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=p",
        "CNI_PATH": str(tmp_path),
        "PATH": env["PATH"],
    }
    assert set(build_env("VERSION", path=[tmp_path])) == {"CNI_COMMAND", "CNI_PATH", "PATH"}


def test_stdin_reaches_the_plugin(tmp_path: Path) -> None:
    plugin = _script(tmp_path, "echo", "cat\n")
    assert exec_plugin(plugin, build_env("ADD"), b'{"a": 1}') == b'{"a": 1}'


def test_error_result_becomes_plugin_error(tmp_path: Path) -> None:
    err = {"cniVersion": "1.0.0", "code": 7, "msg": "bad config", "details": "no subnet"}
    plugin = _script(tmp_path, "failing", f"echo '{json.dumps(err)}'\nexit 1\n")
    with pytest.raises(PluginError, match="net1") as info:
        exec_plugin(plugin, build_env("ADD"), b"{}", what="CNI plugin failing of net1")
    assert (info.value.code, info.value.msg, info.value.details) == (7, "bad config", "no subnet")


def test_failure_without_error_result_keeps_stderr(tmp_path: Path) -> None:
    plugin = _script(tmp_path, "crash", "echo boom >&2\nexit 2\n")
    with pytest.raises(PluginError, match="boom") as info:
        exec_plugin(plugin, build_env("ADD"), b"{}")
    assert info.value.code == UNPARSABLE_ERROR_CODE


def test_timeout(tmp_path: Path) -> None:
    plugin = _script(tmp_path, "slow", "exec sleep 5\n")
    with pytest.raises(PluginTimeout):
        exec_plugin(plugin, build_env("ADD"), b"{}", timeout=0.2)


def test_not_executable_is_a_plugin_error(tmp_path: Path) -> None:
    p = tmp_path / "x"
    p.write_text("")
    os.chmod(p, 0o644)
    with pytest.raises(PluginError):
        exec_plugin(p, build_env("ADD"), b"{}")
