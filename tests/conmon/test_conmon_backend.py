"""The conmon backend (:class:`~criolib.conmon.ConmonMonitor`) against the real conmon
binary (Debian's 2.1.6) under runc and crun: what is particular to driving conmon.

The behaviour both backends share is tested in test_monitor_suite.py; here: conmon's
command line and files (sync pipe, pid files, socket-dir symlink, ctl fifo, exit and
oom files), a second ConmonMonitor object finding containers by their records, exec
under a second conmon, and the failures only this backend meets (conmon missing, conmon
killed, paths conmon cannot take).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest

from criolib.conmon import (
    Attachment,
    BackendNotFound,
    ConmonMonitor,
    ContainerConfig,
    ContainerExited,
    CreateFailed,
    ExecFailed,
    InvalidMonitorConfig,
    MonitorError,
    MonitorGone,
    UnknownContainer,
    open_monitor,
    read_cri_log,
)
from criolib.runtime_spec import Generator, RuntimeClient, RuntimeCommandError
from criolib.testing import require_binaries, require_root
from tests.conmon.conftest import Containers, new_container_id

pytestmark = pytest.mark.integration


@pytest.fixture
def monitor_backend() -> str:
    """Only the conmon backend here (the conftest's fixture runs both)."""
    require_root()
    require_binaries("conmon")
    return "conmon"


def _read_until(stream: Attachment, needle: bytes, timeout: float = 10.0) -> bytes:
    """Output (both streams) read until ``needle`` shows up in it."""
    got = b""
    deadline = time.monotonic() + timeout
    while needle not in got:
        item = stream.read(max(0.0, deadline - time.monotonic()))
        assert item is not None, f"output ended before {needle!r}: {got!r}"
        got += item[1]
    return got


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def _record(run_dir: Path, cid: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((run_dir / cid / "monitor.json").read_bytes())
    return data


# -- create, logs, exit --------------------------------------------------------------------


def test_create_runs_conmon_with_its_files_and_exit_is_read_back(
        containers: Containers, monitor_run_dir: Path, runtime: RuntimeClient) -> None:
    assert not monitor_run_dir.exists()  # the socket dir is made for conmon
    ctr = containers.create("echo hello; echo oops >&2; printf tail; exit 3", start=False)
    record = _record(monitor_run_dir, ctr.id)
    assert record["backend"] == "conmon"
    assert record["pid"] == ctr.created.pid
    assert record["monitor_pid"] == ctr.created.monitor_pid
    # One conmon per container, with the runtime client's global options before
    # "create" (conmon's --runtime-arg), so the runtime sees the test's --root.
    argv = _cmdline(ctr.created.monitor_pid)
    assert os.path.basename(argv[0]) == "conmon"
    assert argv[argv.index("-c") + 1] == ctr.id
    assert argv[argv.index("--api-version") + 1] == "1"
    runtime_args = [argv[i + 1] for i, a in enumerate(argv) if a == "--runtime-arg"]
    assert f"--root={runtime.root}" in runtime_args
    # conmon's symlink to the bundle in the short socket dir, its socket and fifo there.
    link = monitor_run_dir / "s" / ctr.id
    assert link.is_symlink() and link.resolve() == ctr.config.bundle
    assert stat.S_ISSOCK((ctr.config.bundle / "attach").lstat().st_mode)
    assert stat.S_ISFIFO((ctr.config.bundle / "ctl").lstat().st_mode)
    assert runtime.state(ctr.id).status == "created"

    runtime.start(ctr.id)
    status = containers.wait(ctr)
    assert status.exit_code == 3
    assert not status.oom_killed
    assert abs(status.finished_at - time.time()) < 30
    # conmon's formats: the code in decimal, mtime the exit time; persist dir too.
    assert ctr.exit_file.read_bytes() == b"3"
    assert status.finished_at == ctr.exit_file.stat().st_mtime_ns / 1e9
    assert (monitor_run_dir / ctr.id / "exit").read_bytes() == b"3"
    # stdout and stderr are separate pipes: their order in the log is not fixed.
    records = read_cri_log(ctr.log_path)
    assert [(r.message, r.partial) for r in records if r.stream == "stdout"] == [
        (b"hello", False), (b"tail", True)]
    assert [(r.message, r.partial) for r in records if r.stream == "stderr"] == [
        (b"oops", False)]

    fresh = ConmonMonitor(monitor_run_dir)
    assert fresh.wait(ctr.id, 0) == status
    seen = fresh.status(ctr.id)
    assert (seen.running, seen.exit, seen.pid, seen.backend) == (False, status, ctr.created.pid,
                                                                 "conmon")
    assert fresh.containers() == [ctr.id]


def test_a_new_monitor_object_finds_a_running_container(
        containers: Containers, monitor_run_dir: Path) -> None:
    ctr = containers.create("read line; echo got $line; exit 5", stdin=True, stdin_once=True)
    fresh = ConmonMonitor(monitor_run_dir)
    status = fresh.status(ctr.id)
    assert status.running and status.exit is None and not status.lost
    assert (status.pid, status.monitor_pid) == (ctr.created.pid, ctr.created.monitor_pid)
    # conmon reports no create in progress nor the log's health.
    assert (status.creating, status.log_error, status.log_dropped) == (False, None, 0)
    assert fresh.wait(ctr.id, 0.2) is None
    with fresh.attach(ctr.id) as att:
        att.write(b"ping\n")
        att.close_stdin()
        assert att.read_until_eof(10) == (b"got ping\n", b"")
    exit_status = ConmonMonitor(monitor_run_dir).wait(ctr.id, 10)
    assert exit_status is not None and exit_status.exit_code == 5
    with pytest.raises(ContainerExited, match=ctr.id):
        fresh.attach(ctr.id)
    with pytest.raises(ContainerExited, match=ctr.id):
        fresh.resize(ctr.id, 24, 80)


def test_conmon_killed_leaves_the_container_lost(containers: Containers,
                                                 runtime: RuntimeClient) -> None:
    monitor = containers.monitor
    ctr = containers.create("sleep 60")
    os.kill(ctr.created.monitor_pid, signal.SIGKILL)
    # wait blocks until conmon is gone, then finds no exit file.
    with pytest.raises(MonitorGone, match=ctr.id):
        monitor.wait(ctr.id, 10)
    assert monitor.status(ctr.id).lost
    with pytest.raises(MonitorGone, match=ctr.id):
        monitor.attach(ctr.id)
    with pytest.raises(MonitorGone, match=ctr.id):
        monitor.exec_sync(ctr.id, ["true"])
    runtime.delete(ctr.id, force=True)
    monitor.forget(ctr.id)  # a lost container can be forgotten
    with pytest.raises(UnknownContainer):
        monitor.status(ctr.id)


def test_socket_path_at_the_unix_limit(containers: Containers, tmp_path: Path,
                                       runtime: RuntimeClient) -> None:
    config = containers.config("read x; echo got $x", stdin=True, stdin_once=True)
    cid = config.container_id
    # <run dir>/s/<id> exactly 107 bytes long: conmon makes its symlink one byte shorter
    # (src/conn_sock.c), and the attach socket path is past sun_path's 108 bytes.
    pad = 107 - len(os.fsencode(tmp_path)) - len(f"/x/s/{cid}") + 1
    run_dir = tmp_path / ("d" * pad)
    assert len(os.fsencode(run_dir / "s" / cid)) == 107
    monitor = ConmonMonitor(run_dir)
    created = monitor.create(config)
    containers.adopt(cid, created.monitor_pid)
    link = Path(str(_record(run_dir, cid)["socket_link"]))
    assert link.is_symlink() and len(os.fsencode(link)) == 106
    runtime.start(cid)
    with monitor.attach(cid) as att:
        att.write(b"far\n")
        att.close_stdin()
        assert att.read_until_eof(10) == (b"got far\n", b"")
    status = monitor.wait(cid, 10)
    assert status is not None and status.exit_code == 0
    runtime.delete(cid)
    monitor.forget(cid)
    assert not link.is_symlink()


# -- exec ----------------------------------------------------------------------------------


def test_exec_sync_runs_with_the_containers_process_settings(
        containers: Containers, monitor_run_dir: Path, runtime: RuntimeClient) -> None:
    def configure(gen: Generator) -> None:
        gen.set_cwd("/tmp")
        gen.set_env("CRIOLIB_GREETING", "hi there")

    monitor = containers.monitor
    ctr = containers.create("sleep 60", configure=configure)
    result = monitor.exec_sync(ctr.id, ["sh", "-c", 'pwd; echo "$CRIOLIB_GREETING" >&2; '
                                        'printf no-newline; exit 7'])
    assert (result.exit_code, result.stdout, result.stderr) == (
        7, b"/tmp\nno-newline", b"hi there\n")
    assert not result.timed_out and not result.truncated

    big = monitor.exec_sync(ctr.id, ["sh", "-c", "head -c 5000 /dev/zero | tr '\\0' a; "
                                     "echo; echo short >&2"], output_limit=1000)
    assert big.stdout == b"a" * 1000 and big.stderr == b"short\n" and big.truncated

    # A fraction of a second is kept (conmon's -T counts whole seconds), and the exec's
    # whole process group goes: the shell and its sleep.
    started = time.monotonic()
    slow = monitor.exec_sync(ctr.id, ["sh", "-c", "echo begun; sleep 30; true"], timeout=0.5)
    elapsed = time.monotonic() - started
    assert slow.timed_out and slow.exit_code == 137
    assert slow.stdout == b"begun\n"
    assert 0.5 <= elapsed < 1.5
    assert runtime.ps(ctr.id) == [ctr.created.pid]

    with pytest.raises(ExecFailed, match=ctr.id) as failed:
        monitor.exec_sync(ctr.id, ["/no/such/program"])
    assert "/no/such/program" in str(failed.value)
    assert isinstance(failed.value.runtime_error, RuntimeCommandError)

    with pytest.raises(InvalidMonitorConfig):
        monitor.exec_sync(ctr.id, [])
    # Each exec's scratch (process file, logs, conmon's symlink) is gone.
    assert list((monitor_run_dir / ctr.id / "exec").iterdir()) == []
    assert list((monitor_run_dir / "x").glob("*")) == []


def test_exec_stream_pipes_and_terminal(containers: Containers, monitor_run_dir: Path) -> None:
    monitor = containers.monitor
    ctr = containers.create("sleep 60")
    with monitor.exec_stream(ctr.id, ["sh", "-c", "read x; echo got $x; echo err >&2; exit 4"],
                             stdin=True) as proc:
        proc.write(b"one\n")
        proc.close_stdin()
        assert proc.read_until_eof(10) == (b"got one\n", b"err\n")
        assert proc.wait(10) == 4

    script = "while read x; do stty size; [ $x = end ] && exit 2; done"
    with monitor.exec_stream(ctr.id, ["sh", "-c", script], tty=True, stdin=True) as proc:
        proc.resize(33, 101)
        # The resize travels through conmon's ctl fifo, apart from stdin: ask until seen.
        deadline = time.monotonic() + 10
        seen = b""
        while b"33 101" not in seen and time.monotonic() < deadline:
            proc.write(b"again\n")
            item = proc.read(10)
            assert item is not None
            seen += item[1]
        assert b"33 101" in seen
        proc.write(b"end\n")
        proc.read_until_eof(10)
        assert proc.wait(10) == 2
    assert list((monitor_run_dir / ctr.id / "exec").iterdir()) == []


def test_exec_in_exited_container(containers: Containers) -> None:
    ctr = containers.create("exit 0")
    containers.wait(ctr)
    with pytest.raises(ContainerExited, match=ctr.id):
        containers.monitor.exec_sync(ctr.id, ["true"])
    with pytest.raises(ContainerExited, match=ctr.id):
        containers.monitor.exec_stream(ctr.id, ["true"])


# -- control fifo --------------------------------------------------------------------------


def test_reopen_log_after_rotation(containers: Containers) -> None:
    monitor = containers.monitor
    ctr = containers.create("while read x; do echo $x; done", stdin=True)
    with monitor.attach(ctr.id) as att:
        att.write(b"first\n")
        # conmon writes the log before it sends the output to attach clients.
        _read_until(att, b"first")
        rotated = ctr.log_path.with_name(ctr.log_path.name + ".1")
        ctr.log_path.rename(rotated)
        monitor.reopen_log(ctr.id)
        assert ctr.log_path.exists()
        att.write(b"second\n")
        _read_until(att, b"second")
    assert [r.message for r in read_cri_log(rotated)] == [b"first"]
    assert [r.message for r in read_cri_log(ctr.log_path)] == [b"second"]


def test_terminal_container_resize(containers: Containers) -> None:
    monitor = containers.monitor
    ctr = containers.create("while read x; do stty size; done", terminal=True, stdin=True)
    with monitor.attach(ctr.id) as att:
        monitor.resize(ctr.id, 40, 120)
        deadline = time.monotonic() + 10
        seen = b""
        while b"40 120" not in seen and time.monotonic() < deadline:
            att.write(b"x\n")
            item = att.read(10)
            assert item is not None
            seen += item[1]
        assert b"40 120" in seen
    with pytest.raises(InvalidMonitorConfig, match="1000"):
        monitor.resize(ctr.id, 1001, 80)


# -- OOM -----------------------------------------------------------------------------------


def test_oom_kill_recorded_by_conmon(containers: Containers, monitor_run_dir: Path) -> None:
    def limit(gen: Generator) -> None:
        gen.set_memory_limit(16 * 1024 * 1024, swap=16 * 1024 * 1024)

    # dd's 256 MiB block is one buffer it fills from /dev/zero: past the limit at once.
    ctr = containers.create("dd if=/dev/zero of=/dev/null bs=256M count=1; exit 0",
                            configure=limit)
    status = containers.wait(ctr)
    assert status.oom_killed
    assert (monitor_run_dir / ctr.id / "oom").exists()


# -- failures ------------------------------------------------------------------------------


def test_create_failure_names_the_runtimes_error_and_leaves_nothing(
        containers: Containers, monitor_run_dir: Path) -> None:
    config = containers.config(["/no/such/init"])
    with pytest.raises(CreateFailed) as failed:
        containers.monitor.create(config)
    text = str(failed.value)
    assert config.container_id in text and "/no/such/init" in text
    assert isinstance(failed.value.runtime_error, RuntimeCommandError)
    assert failed.value.__cause__ is failed.value.runtime_error
    assert containers.monitor.containers() == []
    assert not (monitor_run_dir / config.container_id).exists()
    assert list((monitor_run_dir / "s").iterdir()) == []
    assert sorted(p.name for p in config.bundle.iterdir()) == ["config.json", "rootfs"]
    assert not (config.exit_dir / config.container_id).exists()


def test_create_refuses_what_conmon_cannot_take(containers: Containers, tmp_path: Path) -> None:
    config = containers.config("true")
    odd = ContainerConfig(container_id=config.container_id, bundle=config.bundle,
                          runtime=config.runtime, exit_dir=config.exit_dir,
                          log_path=tmp_path / "a:b.log")
    with pytest.raises(InvalidMonitorConfig, match="':'"):
        containers.monitor.create(odd)
    ctr = containers.create_config(config, start=False)
    with pytest.raises(CreateFailed, match="already monitored"):
        containers.monitor.create(config)
    with pytest.raises(MonitorError, match="still running"):
        containers.monitor.forget(ctr.id)


def test_forget_removes_conmons_leftovers(containers: Containers,
                                          monitor_run_dir: Path) -> None:
    ctr = containers.create("exit 0")
    containers.wait(ctr)
    containers.runtime.delete(ctr.id)
    containers.monitor.forget(ctr.id)
    assert sorted(p.name for p in ctr.config.bundle.iterdir()) == ["config.json", "rootfs"]
    assert not (monitor_run_dir / "s" / ctr.id).is_symlink()
    assert not (monitor_run_dir / ctr.id).exists()
    with pytest.raises(UnknownContainer, match=ctr.id):
        containers.monitor.wait(ctr.id)


def test_missing_conmon_binary_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(BackendNotFound, match="package 'conmon'"):
        ConmonMonitor(tmp_path / "run", binary="no-such-conmon-binary")
    with pytest.raises(BackendNotFound, match="apt-get install conmon"):
        open_monitor("conmon", tmp_path / "run", binary=tmp_path / "missing" / "conmon")
    with pytest.raises(InvalidMonitorConfig, match="log_level"):
        ConmonMonitor(tmp_path / "run", log_level="chatty")
    with pytest.raises(UnknownContainer):
        ConmonMonitor(tmp_path / "run").status(new_container_id())


def test_conmon_failing_before_the_runtime_says_why(containers: Containers,
                                                    tmp_path: Path) -> None:
    config = containers.config("true")
    nowhere = ContainerConfig(container_id=config.container_id, bundle=config.bundle,
                              runtime=config.runtime, exit_dir=config.exit_dir,
                              log_path=tmp_path / "no" / "such" / "dir" / "c.log")
    with pytest.raises(CreateFailed, match="Failed to open log file") as failed:
        containers.monitor.create(nowhere)
    assert config.container_id in str(failed.value)
    assert containers.monitor.containers() == []


def test_create_timeout_kills_conmon_and_cleans_up(containers: Containers,
                                                   monitor_run_dir: Path,
                                                   runtime: RuntimeClient) -> None:
    config = containers.config("sleep 60")
    hasty = ContainerConfig(container_id=config.container_id, bundle=config.bundle,
                            runtime=runtime, exit_dir=config.exit_dir,
                            log_path=config.log_path, create_timeout=0.001)
    with pytest.raises(CreateFailed, match="did not finish within") as failed:
        containers.monitor.create(hasty)
    assert config.container_id in str(failed.value)
    assert [s.id for s in runtime.list()] == []
    assert not (monitor_run_dir / config.container_id).exists()
    # The id is free again: the same container can be created now.
    ctr = containers.create_config(config)
    assert containers.monitor.status(ctr.id).running
