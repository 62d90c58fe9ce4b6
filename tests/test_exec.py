"""The one audited exec helper: output, errors, timeouts, stdin."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from criolib._exec import InvalidArgv, run, spawn, stop, wait_exit
from criolib.errors import CriolibError, ExecError, ExecTimeout


def test_output_and_status() -> None:
    done = run(["sh", "-c", "echo out; echo err >&2; exit 0"], env={"PATH": "/bin:/usr/bin"})
    assert done.stdout == b"out\n"
    assert done.stderr == b"err\n"
    assert done.returncode == 0


def test_failure_names_the_object_and_keeps_stderr() -> None:
    with pytest.raises(ExecError) as info:
        run(["sh", "-c", "echo broken thing >&2; exit 3"], env={}, what="container abc")
    exc = info.value
    assert isinstance(exc, CriolibError)
    assert exc.returncode == 3
    assert "container abc" in str(exc) and "exit status 3" in str(exc)
    assert "broken thing" in str(exc)
    assert exc.argv[0] == "sh"


def test_unchecked_failure_returns() -> None:
    assert run(["sh", "-c", "exit 7"], env={}, check=False).returncode == 7


def test_killed_by_signal_is_described() -> None:
    with pytest.raises(ExecError, match="killed by SIGKILL"):
        run(["sh", "-c", "kill -9 $$"], env={})


def test_missing_program() -> None:
    with pytest.raises(ExecError, match="cannot run /nonexistent/prog") as info:
        run(["/nonexistent/prog"], env={})
    assert info.value.returncode is None


def test_timeout_kills_the_whole_group() -> None:
    start = time.monotonic()
    with pytest.raises(ExecTimeout, match=r"did not finish within 0\.3 s"):
        # The grandchild keeps stdout open: the helper must not wait for it.
        run(["sh", "-c", "sleep 30 & sleep 30"], env={"PATH": "/bin:/usr/bin"}, timeout=0.3)
    assert time.monotonic() - start < 5


def test_large_stdin_and_stdout_do_not_deadlock() -> None:
    data = bytes(range(256)) * 20000  # 5 MB each way, far past any pipe buffer
    done = run(["cat"], env={"PATH": "/bin:/usr/bin"}, input=data, timeout=30)
    assert done.stdout == data


def test_returns_when_the_program_exits_though_a_daemon_holds_its_pipes() -> None:
    start = time.monotonic()
    done = run(["sh", "-c", "setsid sleep 3 & echo started"], env={"PATH": "/bin:/usr/bin"},
               timeout=1.5)
    assert time.monotonic() - start < 1.0
    assert done.stdout == b"started\n" and done.returncode == 0


def test_output_written_just_before_exit_is_all_there() -> None:
    done = run(["sh", "-c", "head -c 300000 /dev/zero; echo tail >&2"],
               env={"PATH": "/bin:/usr/bin"})
    assert done.stdout == bytes(300000) and done.stderr == b"tail\n"


def test_a_bad_working_directory_is_named() -> None:
    for call in (lambda: run(["true"], env={}, cwd="/nonexistent/dir"),
                 lambda: spawn(["true"], env={}, cwd="/nonexistent/dir")):
        with pytest.raises(ExecError) as info:
            call()
        message = str(info.value)
        assert "working directory /nonexistent/dir" in message
        assert "cannot run" not in message


@pytest.mark.parametrize("call", [run, lambda argv: spawn(argv, env={})])
def test_an_empty_argv_is_a_value_error(call: Callable[[list[str]], object]) -> None:
    with pytest.raises(InvalidArgv, match="empty argv") as info:
        call([])
    assert isinstance(info.value, ExecError) and isinstance(info.value, ValueError)


_SPAWNER = """
import sys
from criolib._exec import spawn
child = spawn(["sleep", "30"], env={"PATH": "/bin:/usr/bin"})
print(child.pid, flush=True)
sys.stdin.read()
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def test_a_spawned_daemon_dies_with_its_parent() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _SPAWNER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    assert _alive(pid)
    parent.kill()
    parent.communicate(timeout=10)
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(pid)


def test_stop_escalates_to_sigkill_and_reaps_the_group() -> None:
    proc = spawn(["sh", "-c", "trap '' TERM; sleep 30 & wait"],
                 env={"PATH": "/bin:/usr/bin"}, stdout=subprocess.PIPE)
    time.sleep(0.05)  # let the shell install its trap
    start = time.monotonic()
    assert stop(proc, grace=0.2)
    assert proc.returncode == -signal.SIGKILL
    assert 0.2 <= time.monotonic() - start < 2
    assert wait_exit(proc, 0)
