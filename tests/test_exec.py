"""The one audited exec helper: output, errors, timeouts, stdin."""

from __future__ import annotations

import time

import pytest

from criolib._exec import run
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
