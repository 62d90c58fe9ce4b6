"""Reading runc's and crun's logs and turning failures into errors a caller can act on.

No runtime runs here: the log lines are the ones runc 1.1.5 and crun 1.8.1 write.
"""

from __future__ import annotations

import ast
import json
import pickle
import resource
from pathlib import Path
from typing import Any

import pytest

from criolib.errors import ExecError, ExecTimeout
from criolib.runtime_spec import ALL_CAPABILITIES, CAPABILITY_BITS, _hostcaps, _validate_host
from criolib.runtime_spec._errors import (
    ContainerExists,
    ContainerNotFound,
    PrivilegeError,
    RuntimeCommandError,
    RuntimeTimeout,
)
from criolib.runtime_spec._hostcaps import (
    capability_mask,
    has_cap_sys_resource,
    has_capability,
    host_capabilities,
)
from criolib.runtime_spec._runtime_log import LogRecord, diagnose, parse_log


def test_parse_log_reads_runc_and_crun_json_lines_and_keeps_plain_text() -> None:
    data = (
        b'{"level":"debug","msg":"nsexec[1]: =\\u003e setup","time":"t"}\n'
        b'{"file":"utils.go:61","level":"error","msg":"container does not exist","time":"t"}\n'
        b'{"msg":"setrlimit `RLIMIT_NOFILE`: Operation not permitted","level":"error",'
        b'"time":"t"}\n'
        b"\n"
        b"plain words on stderr\n"
        b'{"level":"error","msg":"trunc'
    )
    assert parse_log(data) == [
        LogRecord("debug", "nsexec[1]: => setup"),
        LogRecord("error", "container does not exist"),
        LogRecord("error", "setrlimit `RLIMIT_NOFILE`: Operation not permitted"),
        LogRecord("error", "plain words on stderr"),
        LogRecord("error", '{"level":"error","msg":"trunc'),
    ]


def _diagnose(*messages: str, **kw: Any) -> RuntimeCommandError:
    records = [LogRecord("debug", "noise")] + [LogRecord("error", m) for m in messages]
    args: dict[str, Any] = {"runtime": "runc", "operation": "create", "container_id": "c1",
                            "argv": ["runc", "create", "c1"], "returncode": 1,
                            "records": records}
    args.update(kw)
    return diagnose(**args)


@pytest.mark.parametrize("message", [
    "container does not exist",
    "error opening file `/run/crun/c1/status`: No such file or directory",
    "cannot open directory '/run/crun/c1': No such file or directory",
])
def test_diagnose_container_not_found_from_either_runtime(message: str) -> None:
    err = _diagnose(message, operation="state")
    assert isinstance(err, ContainerNotFound)
    assert isinstance(err, LookupError) and isinstance(err, ExecError)
    assert "'c1'" in str(err) and "runc state" in str(err) and "exit status 1" in str(err)
    assert err.runtime_message == message and err.container_id == "c1"


@pytest.mark.parametrize("message", [
    "runc create failed: container with given ID already exists",
    "container `c1` already exists",
])
def test_diagnose_container_exists(message: str) -> None:
    assert isinstance(_diagnose(message), ContainerExists)


@pytest.mark.parametrize("messages", [
    ("nsexec[12901]: failed to update /proc/self/oom_score_adj: Permission denied",
     "runc run failed: unable to start container process: can't get final child's PID "
     "from pipe: EOF"),
    ("write to /proc/self/oom_score_adj: Permission denied",),
])
def test_diagnose_negative_oom_score_adj(messages: tuple[str, ...], tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"process": {"oomScoreAdj": -998}}))
    err = _diagnose(*messages, bundle=tmp_path)
    assert isinstance(err, PrivilegeError)
    text = str(err)
    assert "oomScoreAdj" in text and "-998" in text and "CAP_SYS_RESOURCE" in text
    assert f">= {Path('/proc/self/oom_score_adj').read_text().strip()}" in text
    assert all(m in text for m in messages)  # the runtime's own words stay in


@pytest.mark.parametrize("message", [
    "runc run failed: unable to start container process: error during container init: "
    "error setting rlimits for ready process: error setting rlimit type 7: operation not "
    "permitted",
    "setrlimit `RLIMIT_NOFILE`: Operation not permitted",
])
def test_diagnose_rlimit_above_hard_limit(message: str, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"process": {"rlimits": [
        {"type": "RLIMIT_NOFILE", "soft": 4194304, "hard": 4194304}]}}))
    err = _diagnose(message, bundle=tmp_path)
    assert isinstance(err, PrivilegeError)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert "RLIMIT_NOFILE" in str(err) and "hard limit" in str(err)
    assert "4194304" in str(err)
    assert (str(hard) if hard != resource.RLIM_INFINITY else "unlimited") in str(err)


def test_diagnose_without_a_message_says_where_it_went() -> None:
    err = diagnose(runtime="crun", operation="create", container_id="c1", argv=["crun"],
                   returncode=1, records=[], stderr_is_container=True)
    assert type(err) is RuntimeCommandError
    assert "container's stderr" in str(err)
    err = diagnose(runtime="crun", operation="ps", container_id="c1", argv=["crun"],
                   returncode=253, records=[],
                   stderr="error opening file `/r/c1/status`: No such file or directory\n")
    assert isinstance(err, ContainerNotFound) and "exit status 253" in str(err)


def test_command_errors_pickle_with_their_fields() -> None:
    err = _diagnose("container does not exist")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ContainerNotFound and str(back) == str(err)
    assert (back.runtime, back.operation, back.container_id, back.returncode) == (
        "runc", "create", "c1", 1)
    timeout = RuntimeTimeout("slow", runtime="crun", operation="exec", container_id="x")
    assert isinstance(timeout, ExecTimeout)


@pytest.mark.parametrize("message", [
    "runc run failed: systemd not running on this host, cannot use systemd cgroups manager",
    "cannot open sd-bus: No such file or directory",
])
def test_diagnose_systemd_cgroup_without_systemd(message: str) -> None:
    argv = ["runc", "--systemd-cgroup", "create", "c1"]
    err = _diagnose(message, argv=argv)
    assert type(err) is RuntimeCommandError
    text = str(err)
    assert "'c1'" in text and message in text
    assert "needs a running systemd" in text and "systemd_cgroup=False" in text
    # Without --systemd-cgroup the words are the runtime's own, with no guess added.
    assert "Cause" not in str(_diagnose(message))


# -- what this process may grant ----------------------------------------------------


def _status_mask(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1], 16)
    raise AssertionError(field)


def test_host_capabilities_come_from_proc() -> None:
    eff, bnd = _status_mask("CapEff"), _status_mask("CapBnd")
    assert capability_mask("CapEff") == eff and capability_mask("CapBnd") == bnd
    assert has_cap_sys_resource() == bool(eff >> 24 & 1)
    assert has_capability("CAP_CHOWN") == bool(eff & 1)
    assert not has_capability("CAP_NOT_A_THING")
    assert host_capabilities() == tuple(
        c for c in ALL_CAPABILITIES if bnd >> CAPABILITY_BITS[c] & 1)


def test_one_capability_check_serves_validation_and_diagnosis() -> None:
    """_hostcaps holds the only reader of CapEff: no module keeps a copy of its own."""
    package = Path(_hostcaps.__file__).parent
    copies = [path.name for path in package.glob("*.py") if path.name != "_hostcaps.py"
              and any(isinstance(node, ast.FunctionDef) and "cap" in node.name.lower()
                      and "CapEff" in ast.unparse(node)
                      for node in ast.walk(ast.parse(path.read_text())))]
    assert copies == []
    assert vars(_validate_host)["_has_cap_sys_resource"] is has_cap_sys_resource
