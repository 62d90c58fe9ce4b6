"""The runtime client's checks of its arguments, its signals, ids and process plumbing.

Everything here is refused or decided before a container exists: no runtime runs.
"""

from __future__ import annotations

import ast
import inspect
import os
import signal
import subprocess
from pathlib import Path

import pytest

import criolib.runtime_spec
from criolib.runtime_spec import InvalidArgument, RuntimeSpecError
from criolib.runtime_spec._errors import RuntimeNotFound
from criolib.runtime_spec._runtime import OCIRuntime, RuntimeClient
from criolib.runtime_spec._runtime_proc import (
    check_id,
    child_subreaper,
    exit_code,
    is_child_subreaper,
    signal_arg,
    signal_name,
    signal_number,
    spawn_and_wait,
)
from criolib.testing import require_binaries

PACKAGE = Path(criolib.runtime_spec.__file__).parent


@pytest.fixture
def client() -> RuntimeClient:
    require_binaries("runc")
    return RuntimeClient("runc")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A bundle the client's own checks accept; no runtime ever reads it here."""
    (tmp_path / "config.json").write_text("{}")
    return tmp_path


@pytest.mark.parametrize(("sig", "number"), [
    ("SIGTERM", "15"), ("term", "15"), ("KILL", "9"), (10, "10"),
    (signal.SIGUSR2, str(int(signal.SIGUSR2))), ("12", "12"),
    ("SIGRTMIN+3", str(int(signal.SIGRTMIN) + 3)), ("RTMAX-1", str(int(signal.SIGRTMAX) - 1)),
])
def test_signal_names_become_numbers(sig: str | int, number: str) -> None:
    assert signal_arg(sig) == number


@pytest.mark.parametrize("sig", ["SIGNOPE", "", 0, -9, 65, "99", True, 1.5, None])
def test_a_bad_signal_is_an_invalid_argument(sig: object) -> None:
    with pytest.raises(InvalidArgument, match="unknown signal") as info:
        signal_number(sig, container_id="c1")  # type: ignore[arg-type]
    assert "'c1'" in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, RuntimeSpecError)


@pytest.mark.parametrize(("number", "name"), [
    (15, "SIGTERM"), (6, "SIGABRT"), (int(signal.SIGRTMIN), "SIGRTMIN"),
    (int(signal.SIGRTMIN) + 3, "SIGRTMIN+3"), (int(signal.SIGRTMAX), "SIGRTMAX"),
])
def test_signal_names_are_canonical(number: int, name: str) -> None:
    assert signal_name(number) == name
    assert signal_number(name) == number


@pytest.mark.parametrize("bad", ["", "-rf", "--help", 7])
def test_a_bad_container_id_is_an_invalid_argument(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="invalid container id"):
        check_id(bad)  # type: ignore[arg-type]


def test_operations_refuse_bad_arguments_naming_the_container(
    client: RuntimeClient, bundle: Path,
) -> None:
    with pytest.raises(InvalidArgument, match=r"container 'c1'.*unknown signal 'SIGNOPE'"):
        client.kill("c1", "SIGNOPE")
    with pytest.raises(InvalidArgument, match="invalid container id '-x'"):
        client.kill("-x", "TERM")
    for argv in ([], [""], ["-e", "x"]):
        with pytest.raises(InvalidArgument, match=r"exec in container 'c1' needs a program"):
            client.exec("c1", argv)
    with pytest.raises(InvalidArgument, match=r"container 'c1'.*preserve_fds .* not -1"):
        client.create("c1", bundle, preserve_fds=-1)
    with pytest.raises(InvalidArgument, match="log_format must be 'json'"):
        RuntimeClient("runc", log_format="text")  # type: ignore[arg-type]


def test_a_runtime_gone_after_the_check_is_runtime_not_found(
    tmp_path: Path, bundle: Path,
) -> None:
    fake = tmp_path / "runc"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    client = RuntimeClient(fake)
    fake.unlink()  # create's spawn, through criolib._exec, now finds no program
    with pytest.raises(RuntimeNotFound, match=r"runc create of container 'c1'.*cannot run"):
        client.create("c1", bundle)


def test_spawn_and_wait_passes_stdio_and_fds_and_times_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r, w = os.pipe()
    try:
        with out.open("wb") as f:
            code = spawn_and_wait(["sh", "-c", f"echo hi; echo passed >/dev/fd/{w}; exit 3"],
                                  env={"PATH": "/usr/bin:/bin"}, stdin=None, stdout=f,
                                  stderr=None, pass_fds=[w], timeout=None)
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as passed:
        assert passed.read() == b"passed\n"
    assert (code, out.read_bytes()) == (3, b"hi\n")
    killed: list[int] = []

    def on_timeout(proc: subprocess.Popen[bytes]) -> None:
        killed.append(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)

    assert spawn_and_wait(["sleep", "10"], env={"PATH": "/usr/bin:/bin"}, stdin=None,
                          stdout=None, stderr=None, timeout=0.2, on_timeout=on_timeout) is None
    assert len(killed) == 1


def test_only_the_audited_helper_starts_programs() -> None:
    """STYLE.md: every exec goes through criolib._exec, never subprocess directly."""
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            func = node.func if isinstance(node, ast.Call) else None
            if (isinstance(func, ast.Attribute) and func.attr in
                    ("Popen", "run", "call", "check_call", "check_output", "execv", "execve",
                     "posix_spawn", "fork")
                    and isinstance(func.value, ast.Name)
                    and func.value.id in ("subprocess", "os")):
                offenders.append(f"{path.name}:{func.lineno} {func.value.id}.{func.attr}")
    assert offenders == []


def test_client_methods_match_the_protocol() -> None:
    for name, member in inspect.getmembers(OCIRuntime):
        if name.startswith("_") or not callable(member):
            continue
        wanted = inspect.signature(member)
        got = inspect.signature(getattr(RuntimeClient, name))
        assert list(wanted.parameters) == list(got.parameters), name
        for pname, param in wanted.parameters.items():
            assert param.default == got.parameters[pname].default, (name, pname)
            assert param.kind == got.parameters[pname].kind, (name, pname)


def test_exit_code_is_shell_style() -> None:
    assert exit_code(os.CLD_EXITED, 7) == 7
    assert exit_code(os.CLD_KILLED, signal.SIGKILL) == 137
    assert exit_code(os.CLD_DUMPED, signal.SIGSEGV) == 139


def test_missing_binary_raises_runtime_not_found_naming_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeNotFound, match="'crun'") as info:
        RuntimeClient("crun")
    assert "Debian package 'crun'" in str(info.value)
    with pytest.raises(RuntimeNotFound, match="not executable"):
        RuntimeClient("/nonexistent/runc")


def test_subreaper_is_held_only_inside_the_block() -> None:
    before = is_child_subreaper()
    with child_subreaper():
        assert is_child_subreaper()
        with child_subreaper():
            assert is_child_subreaper()
        assert is_child_subreaper()
    assert is_child_subreaper() == before
