"""CriolibMonitor's own behaviour with real runc and crun (the cross-backend suite is
test_monitor_suite.py), and the backend registry."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs
import pytest

from criolib.conmon import (
    BACKENDS,
    BackendNotFound,
    ContainerExited,
    CreateFailed,
    CriolibMonitor,
    ExecFailed,
    ExitStatus,
    InvalidMonitorConfig,
    Monitor,
    MonitorError,
    MonitorGone,
    MonitorProtocolError,
    MonitorStartError,
    PtyStream,
    UnknownContainer,
    available_backends,
    check_container_id,
    open_monitor,
    read_cri_log,
)
from criolib.conmon._wire import bind_seqpacket, recv_msg, send_msg
from criolib.runtime_spec import RuntimeClient, RuntimeCommandError
from criolib.testing import require_root

from .conftest import Containers, new_container_id


@pytest.fixture
def monitor_backend() -> str:
    """Only criolib's backend here (overrides the suite's parametrised fixture)."""
    require_root()
    return "criolib"


def _until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


def _wrapped(containers: Containers, tmp_path: Path, *, before: str = "",
             after: str = "") -> RuntimeClient:
    """A client of a wrapper named like the real runtime (so it speaks its flavour) that
    runs the shell lines ``before``/``after`` around the real runtime's ``create``."""
    real = containers.runtime
    script = tmp_path / "wrapper" / real.name
    script.parent.mkdir(exist_ok=True)
    script.write_text(f'#!/bin/sh\ncase " $* " in *" create "*) ;; *) exec {real.path} "$@";; '
                      f'esac\n{before}\n{real.path} "$@"\nrc=$?\n{after}\nexit $rc\n')
    script.chmod(0o755)
    return RuntimeClient(str(script), root=real.root)


# -- create, record, status, wait ---------------------------------------------------------


@pytest.mark.integration
def test_a_container_being_created_is_creating_not_lost(containers: Containers,
                                                       monitor: Monitor, tmp_path: Path) -> None:
    started = tmp_path / "create-started"
    runtime = _wrapped(containers, tmp_path, before=f"touch {started}; sleep 2")
    config = attrs.evolve(containers.config(["sleep", "1000"]), runtime=runtime)
    cid = config.container_id
    with ThreadPoolExecutor(1) as pool:
        creating = pool.submit(containers.create_config, config)
        _until(started.exists, "the runtime's create to start")
        begun = time.monotonic()
        status = monitor.status(cid)
        assert time.monotonic() - begun < 1.0  # no waiting for an exit that is not coming
        assert (status.creating, status.running, status.exit, status.lost) == (
            True, False, None, False)
        with pytest.raises(MonitorError, match=f"{cid}.*still being created"):
            monitor.forget(cid)
        with pytest.raises(MonitorError, match=f"{cid}.*still being created") as info:
            monitor.exec_sync(cid, ["true"])
        assert not isinstance(info.value, ContainerExited)
        assert not creating.done()  # all of that happened during the create
        creating.result(30)
    status = monitor.status(cid)
    assert (status.creating, status.running, status.log_error, status.log_dropped) == (
        False, True, None, 0)


@pytest.mark.integration
def test_the_creates_of_a_group_run_side_by_side(containers: Containers, monitor: Monitor,
                                                 tmp_path: Path) -> None:
    runtime = _wrapped(containers, tmp_path, before="sleep 1")
    group = new_container_id("pod")
    configs = [attrs.evolve(containers.config(["sleep", "1000"], group=group),
                            runtime=runtime) for _ in range(2)]
    begun = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        created = list(pool.map(containers.create_config, configs))
    took = time.monotonic() - begun
    assert took < 1.8, f"two 1 s creates in one group took {took:.2f} s: serialised"
    assert created[0].created.monitor_pid == created[1].created.monitor_pid


@pytest.mark.integration
def test_a_monitor_dying_mid_create_gets_the_container_deleted(
        containers: Containers, monitor: Monitor, tmp_path: Path) -> None:
    created = tmp_path / "created"
    # The runtime's create is done (the container exists) but the monitor has no answer.
    runtime = _wrapped(containers, tmp_path, after=f"echo $$ > {created}.tmp; "
                                                   f"mv {created}.tmp {created}; exec sleep 60")
    config = attrs.evolve(containers.config(["sleep", "1000"]), runtime=runtime)
    cid = config.container_id
    containers.adopt(cid)
    assert isinstance(monitor, CriolibMonitor)
    with ThreadPoolExecutor(1) as pool:
        creating = pool.submit(monitor.create, config)
        _until(created.exists, "the runtime's create to end", timeout=20)
        assert cid in [s.id for s in containers.runtime.list()]
        os.kill(monitor.monitor_pids()[cid], signal.SIGKILL)
        with pytest.raises(MonitorGone, match=f"{cid}.*died during the runtime's create.*"
                                              "was deleted"):
            creating.result(30)
    os.kill(int(created.read_text()), signal.SIGKILL)  # the wrapper, now a sleep
    assert cid not in [s.id for s in containers.runtime.list()]
    assert monitor.containers() == []


_CREATOR = """
import sys
from criolib.conmon import ContainerConfig, CriolibMonitor
from criolib.runtime_spec import RuntimeClient
run_dir, cid, bundle, runtime, root, exits = sys.argv[1:]
CriolibMonitor(run_dir).create(ContainerConfig(
    container_id=cid, bundle=bundle, runtime=RuntimeClient(runtime, root=root),
    exit_dir=exits))
"""


@pytest.mark.integration
def test_a_caller_dying_mid_create_leaves_a_supervised_container(
        containers: Containers, monitor: Monitor, tmp_path: Path) -> None:
    started = tmp_path / "create-started"
    runtime = _wrapped(containers, tmp_path, before=f"touch {started}; sleep 1")
    config = containers.config(["sleep", "1000"], log=False)
    cid = config.container_id
    containers.adopt(cid)
    creator = subprocess.Popen([sys.executable, "-c", _CREATOR, str(monitor.run_dir), cid,
                                str(config.bundle), str(runtime.path), str(runtime.root),
                                str(config.exit_dir)])
    try:
        _until(started.exists, "the runtime's create to start")
    finally:
        creator.kill()
        creator.wait()
    assert isinstance(monitor, CriolibMonitor)
    containers.track_monitor(monitor.monitor_pids()[cid])
    assert monitor.status(cid).creating  # the monitor carries on without its caller
    _until(lambda: monitor.status(cid).running, "the orphaned create to end", timeout=10)
    status = monitor.status(cid)  # the pids its dead caller never recorded
    assert status.pid == containers.runtime.state(cid).pid
    assert status.monitor_pid == monitor.monitor_pids()[cid]
    with pytest.raises(MonitorError, match="still running"):
        monitor.forget(cid)
    assert containers.runtime.state(cid).status == "created"  # never started
    containers.runtime.delete(cid, force=True)
    assert monitor.wait(cid, 10) is not None
    monitor.forget(cid)


@pytest.mark.integration
def test_reopen_log_in_a_removed_directory_fails_and_the_container_runs(
        containers: Containers, monitor: Monitor, tmp_path: Path) -> None:
    log_dir = tmp_path / "own-logs"
    log_dir.mkdir()
    config = attrs.evolve(containers.config(["sleep", "1000"]), log_path=log_dir / "c.log")
    ctr = containers.create_config(config)
    shutil.rmtree(log_dir)
    with pytest.raises(MonitorError, match=re.escape(str(log_dir / "c.log"))) as info:
        monitor.reopen_log(ctr.id)
    assert not isinstance(info.value, (ContainerExited, MonitorGone))
    assert monitor.status(ctr.id).running
    assert monitor.exec_sync(ctr.id, ["echo", "still here"]).stdout == b"still here\n"


@pytest.mark.integration
def test_create_records_the_container_and_its_monitor(containers: Containers,
                                                      monitor: Monitor) -> None:
    ctr = containers.create("read line; echo got $line; exit 7", stdin=True)
    record = json.loads((monitor.run_dir / ctr.id / "monitor.json").read_bytes())
    assert (record["backend"], record["pid"], record["monitor_pid"]) == (
        "criolib", ctr.created.pid, ctr.created.monitor_pid)
    assert record["monitor_socket"] == str(monitor.run_dir / "monitors" / f"{ctr.id}.sock")
    assert record["persist_dir"] == str(monitor.run_dir / ctr.id)  # the default
    assert isinstance(monitor, CriolibMonitor)
    assert monitor.monitor_pids() == {ctr.id: ctr.created.monitor_pid}
    st = monitor.status(ctr.id)
    assert (st.running, st.exit, st.backend, st.pid) == (True, None, "criolib", ctr.created.pid)
    assert monitor.wait(ctr.id, 0.05) is None  # still running: the timeout, not an error
    with pytest.raises(MonitorError, match="still running"):
        monitor.forget(ctr.id)
    with monitor.attach(ctr.id) as att:
        att.write(b"hi\n")
        att.close_stdin()
        assert att.read_until_eof(10) == (b"got hi\n", b"")
    status = containers.wait(ctr)
    assert status.exit_code == 7
    assert (monitor.run_dir / ctr.id / "exit").read_bytes() == b"7"
    assert [r.message for r in read_cri_log(ctr.log_path)] == [b"got hi"]


@pytest.mark.integration
def test_create_failure_carries_the_runtime_diagnosis_and_leaves_nothing(
        containers: Containers, monitor: Monitor) -> None:
    config = containers.config(["/no/such/program"])
    with pytest.raises(CreateFailed, match=config.container_id) as info:
        monitor.create(config)
    err = info.value
    assert err.container_id == config.container_id
    assert isinstance(err.runtime_error, RuntimeCommandError)
    assert err.__cause__ is err.runtime_error
    assert err.runtime_error.operation == "create" and err.runtime_error.runtime_message
    assert "/no/such/program" in str(err)
    assert monitor.containers() == []
    assert not (monitor.run_dir / config.container_id).exists()
    with pytest.raises(UnknownContainer):
        monitor.status(config.container_id)


@pytest.mark.integration
def test_a_second_create_of_one_id_is_refused(containers: Containers, monitor: Monitor) -> None:
    ctr = containers.create(["sleep", "1000"])
    with pytest.raises(CreateFailed, match="already monitored"):
        monitor.create(ctr.config)
    assert monitor.status(ctr.id).running  # the first one is untouched


@pytest.mark.integration
def test_a_monitor_that_cannot_start_says_why(containers: Containers,
                                              monitor_run_dir: Path) -> None:
    config = containers.config(["true"])
    broken = CriolibMonitor(monitor_run_dir, python="/bin/false")
    with pytest.raises(MonitorStartError, match="exited with status 1 without saying ready"):
        broken.create(config)
    assert broken.containers() == []


# -- a new object, a new process -----------------------------------------------------------

_WAITER = """
import json, sys
from criolib.conmon import CriolibMonitor
monitor = CriolibMonitor(sys.argv[1])
st = monitor.status(sys.argv[2])
print(json.dumps({"running": st.running, "pid": st.pid}), flush=True)
sys.stdin.readline()  # the test kills the container, then tells us to wait
status = monitor.wait(sys.argv[2], 20)
print(json.dumps({"exit_code": status.exit_code, "oom": status.oom_killed}), flush=True)
"""


@pytest.mark.integration
def test_a_new_object_and_a_new_process_find_the_container(
        containers: Containers, monitor_run_dir: Path) -> None:
    ctr = containers.create("trap 'exit 42' TERM; while :; do sleep 0.1; done")
    fresh = CriolibMonitor(monitor_run_dir)
    assert fresh.containers() == [ctr.id]
    assert fresh.status(ctr.id).running
    waiter = subprocess.Popen([sys.executable, "-c", _WAITER, str(monitor_run_dir), ctr.id],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert waiter.stdout is not None and waiter.stdin is not None
        assert json.loads(waiter.stdout.readline()) == {"running": True,
                                                        "pid": ctr.created.pid}
        containers.runtime.kill(ctr.id, "SIGTERM")
        waiter.stdin.write("go\n")
        waiter.stdin.flush()
        assert json.loads(waiter.stdout.readline()) == {"exit_code": 42, "oom": False}
        assert waiter.wait(20) == 0
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert fresh.wait(ctr.id, 0) == containers.monitor.wait(ctr.id, 0)


@pytest.mark.integration
def test_a_killed_monitor_leaves_the_container_lost(containers: Containers,
                                                    monitor: Monitor) -> None:
    ctr = containers.create(["sleep", "1000"], group="g")
    os.kill(ctr.created.monitor_pid, signal.SIGKILL)
    _until(lambda: not _alive(ctr.created.monitor_pid), "the monitor to die")
    st = monitor.status(ctr.id)
    assert st.lost and not st.running
    with pytest.raises(MonitorGone, match=ctr.id):
        monitor.wait(ctr.id, 5)
    with pytest.raises(MonitorGone, match=ctr.id):
        monitor.exec_sync(ctr.id, ["true"])
    containers.runtime.delete(ctr.id, force=True)
    monitor.forget(ctr.id)  # lost is not running: it may be forgotten
    assert monitor.containers() == []
    # The dead monitor left its socket file behind; the group's next container gets a
    # new monitor all the same.
    assert (monitor.run_dir / "monitors" / "g.sock").exists()
    again = containers.create(["true"], group="g")
    assert again.created.monitor_pid != ctr.created.monitor_pid
    assert containers.wait(again).exit_code == 0


# -- exec ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_exec_sync_output_limit_drains_the_rest(containers: Containers,
                                                monitor: Monitor) -> None:
    ctr = containers.create(["sleep", "1000"])
    # 1 MiB on each stream, far past a pipe's 64 KiB: the process must not block.
    script = "head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2; exit 3"
    result = monitor.exec_sync(ctr.id, ["sh", "-c", script], timeout=30, output_limit=1000)
    assert (result.exit_code, result.truncated, result.timed_out) == (3, True, False)
    assert result.stdout == result.stderr == b"\0" * 1000
    whole = monitor.exec_sync(ctr.id, ["sh", "-c", "echo -n out; echo -n err >&2"],
                              output_limit=3)
    assert (whole.stdout, whole.stderr, whole.truncated) == (b"out", b"err", False)
    assert list((monitor.run_dir / ctr.id / "exec").iterdir()) == []  # scratch removed


@pytest.mark.integration
def test_exec_sync_timeout_and_a_process_mapping(containers: Containers,
                                                 monitor: Monitor) -> None:
    ctr = containers.create(["sleep", "1000"])
    started = time.monotonic()
    result = monitor.exec_sync(ctr.id, ["sh", "-c", "echo before; sleep 100"], timeout=0.5)
    assert result.timed_out and result.exit_code == 137 and result.stdout == b"before\n"
    assert time.monotonic() - started < 10
    process = {"args": ["sh", "-c", "echo $GREETING; pwd"], "cwd": "/tmp",
               "env": ["GREETING=hello", "PATH=/bin"], "user": {"uid": 0, "gid": 0}}
    result = monitor.exec_sync(ctr.id, process, timeout=10)
    assert (result.exit_code, result.stdout) == (0, b"hello\n/tmp\n")


@pytest.mark.integration
def test_exec_bad_arguments(containers: Containers, monitor: Monitor) -> None:
    ctr = containers.create(["sleep", "1000"])
    for kwargs in ({"timeout": 0}, {"timeout": -1}, {"output_limit": -1},
                   {"output_limit": True}):
        with pytest.raises(InvalidMonitorConfig, match=ctr.id):
            monitor.exec_sync(ctr.id, ["true"], **kwargs)
    with pytest.raises(InvalidMonitorConfig, match="not a string"):
        monitor.exec_sync(ctr.id, "true")
    with pytest.raises(InvalidMonitorConfig, match="needs a program"):
        monitor.exec_sync(ctr.id, [])
    with pytest.raises(UnknownContainer, match="nope"):
        monitor.exec_sync("nope", ["true"])


@pytest.mark.integration
def test_exec_stream_with_pipes_and_with_a_terminal(containers: Containers,
                                                    monitor: Monitor) -> None:
    ctr = containers.create(["sleep", "1000"])
    with monitor.exec_stream(ctr.id, ["sh", "-c", "cat; echo done >&2; exit 4"],
                             stdin=True) as proc:
        proc.write(b"piped\n")
        proc.close_stdin()
        assert proc.read_until_eof(10) == (b"piped\n", b"done\n")
        assert proc.wait(10) == 4 and proc.returncode == 4
    # Both runtimes run a terminal exec detached with a console socket: the pty master
    # comes back from the monitor and a resize is TIOCSWINSZ on it, seen at once.
    script = "echo started; read x; stty size; echo got $x"
    with monitor.exec_stream(ctr.id, ["sh", "-c", script], tty=True) as proc:
        assert isinstance(proc.stream, PtyStream)
        first = b""
        while not first.endswith(b"\r\n"):  # running, with its first size, before the resize
            item = proc.read(10)
            assert item is not None
            first += item[1]
        proc.resize(40, 120)
        proc.write(b"typed\n")
        out, err = proc.read_until_eof(10)
        assert proc.wait(10) == 0
    assert err == b""
    assert first == b"started\r\n"
    # The container's terminal echoes the input once and turns \n into \r\n.
    assert out == b"typed\r\n40 120\r\ngot typed\r\n"
    # The status is the process's, not that of the detached runtime (which exits 0).
    with monitor.exec_stream(ctr.id, ["sh", "-c", "echo bye; exit 7"], tty=True) as proc:
        assert proc.read_until_eof(10) == (b"bye\r\n", b"")
        assert proc.wait(10) == 7
    with monitor.exec_stream(ctr.id, ["sh", "-c", "kill -TERM $$"], tty=True) as proc:
        proc.read_until_eof(10)
        assert proc.wait(10) == 128 + signal.SIGTERM
    with monitor.exec_stream(ctr.id, ["sleep", "100"]) as proc:
        assert proc.wait(0.1) is None  # still running
    assert list((monitor.run_dir / ctr.id / "exec").iterdir()) == []


@pytest.mark.integration
def test_a_runtime_failure_in_a_streaming_exec_is_exec_failed(containers: Containers,
                                                              monitor: Monitor) -> None:
    ctr = containers.create(["sleep", "1000"])
    for tty in (False, True):
        # At the start (no terminal came) or at the exit: either way ExecFailed.
        with (pytest.raises(ExecFailed, match=ctr.id) as info,
              monitor.exec_stream(ctr.id, ["/no/such/program"], tty=tty) as proc):
            proc.read_until_eof(10)
            proc.wait(10)
        assert isinstance(info.value.runtime_error, RuntimeCommandError)
        assert info.value.__cause__ is info.value.runtime_error
    assert list((monitor.run_dir / ctr.id / "exec").iterdir()) == []


# -- groups -------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_group_shares_one_monitor_which_exits_after_its_last_container(
        containers: Containers, monitor: Monitor) -> None:
    assert isinstance(monitor, CriolibMonitor)
    configs = [containers.config("read x", stdin=True, group="pod1") for _ in range(2)]
    # At once: the group lock makes the two callers start one monitor, not two.
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(containers.create_config, configs)
    pid = first.created.monitor_pid
    assert second.created.monitor_pid == pid
    assert monitor.monitor_pids() == {"pod1": pid}
    for ctr in (first, second):
        with monitor.attach(ctr.id) as att:
            att.write(b"go\n")
        assert containers.wait(ctr).exit_code == 0
    _until(lambda: not _alive(pid), "the group's monitor to exit after its last container")
    assert monitor.monitor_pids() == {}
    # The next container of the group starts a new monitor.
    third = containers.create(["true"], group="pod1")
    assert third.created.monitor_pid != pid
    assert containers.wait(third).exit_code == 0


# -- backends -------------------------------------------------------------------------------


class _EntryPoint:
    def __init__(self, name: str, value: object) -> None:
        self.name = name
        self.value = f"thirdparty:{name}"
        self.dist = None
        self._loaded = value

    def load(self) -> object:
        if isinstance(self._loaded, Exception):
            raise self._loaded
        return self._loaded


def _entry_points(monkeypatch: pytest.MonkeyPatch, *entries: _EntryPoint) -> None:
    def fake(group: str) -> list[_EntryPoint]:
        assert group == "criolib.monitors"
        return list(entries)
    monkeypatch.setattr(metadata, "entry_points", fake)


def test_auto_picks_conmon_only_when_installed(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    import shutil

    import criolib.conmon._backends as backends

    seen: list[tuple[str, Path]] = []

    def factory(name: str) -> Callable[..., Any]:
        def make(run_dir: Path, **options: Any) -> str:
            seen.append((name, run_dir))
            return name
        return make
    monkeypatch.setattr(backends, "BACKENDS", {n: factory(n) for n in BACKENDS})
    _entry_points(monkeypatch)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    picked: Any = open_monitor("auto", run_dir=tmp_path)
    assert picked == "criolib"
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    picked = open_monitor(run_dir="rel")
    assert picked == "conmon"
    assert seen == [("criolib", tmp_path), ("conmon", Path("rel").absolute())]


def test_the_default_backends_open(tmp_path: Path) -> None:
    _ = BACKENDS["criolib"]
    monitor = open_monitor("criolib", run_dir=tmp_path, idle_exit=0.5)
    assert isinstance(monitor, CriolibMonitor) and monitor.run_dir == tmp_path
    assert monitor.name == "criolib" and monitor.containers() == []
    with pytest.raises(InvalidMonitorConfig, match="does not take these options"):
        open_monitor("criolib", run_dir=tmp_path, colour="red")
    with pytest.raises(InvalidMonitorConfig, match="idle_exit"):
        CriolibMonitor(tmp_path, idle_exit=-1)


def test_unknown_backend_lists_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    _entry_points(monkeypatch)
    with pytest.raises(BackendNotFound, match="no monitor backend 'crio'; known: auto, "
                                              "conmon, criolib"):
        open_monitor("crio")
    with pytest.raises(InvalidMonitorConfig):
        open_monitor(None)  # type: ignore[arg-type]


def test_third_party_backends_come_from_entry_points(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    made: list[Path] = []

    def mine(run_dir: Path, **options: Any) -> Any:
        made.append(run_dir)
        return options
    _entry_points(monkeypatch, _EntryPoint("mine", mine))
    assert set(available_backends()) == {"conmon", "criolib", "mine"}
    opened: Any = open_monitor("mine", run_dir=tmp_path, x=1)
    assert opened == {"x": 1}
    assert made == [tmp_path]


@pytest.mark.parametrize("entries, message", [
    ([_EntryPoint("criolib", lambda *a: None)], "'criolib' is registered twice"),
    ([_EntryPoint("x", lambda *a: None), _EntryPoint("x", lambda *a: None)],
     "'x' is registered twice"),
    ([_EntryPoint("x", ImportError("no module y"))], "'x' .* cannot be loaded: no module y"),
    ([_EntryPoint("x", 42)], "'x' .* is not callable"),
])
def test_bad_entry_points_are_errors(monkeypatch: pytest.MonkeyPatch,
                                     entries: list[_EntryPoint], message: str) -> None:
    _entry_points(monkeypatch, *entries)
    with pytest.raises(MonitorError, match=message):
        open_monitor("criolib")


def test_container_ids_are_directory_names_of_at_most_255_characters() -> None:
    assert check_container_id("a" * 255) == "a" * 255
    with pytest.raises(InvalidMonitorConfig, match="at most 255 characters"):
        check_container_id("a" * 256)
    with pytest.raises(InvalidMonitorConfig, match="at most 255"):
        CriolibMonitor("/nonexistent").status("b" * 256)


def test_create_checks_its_argument(tmp_path: Path) -> None:
    monitor = CriolibMonitor(tmp_path / "run")
    with pytest.raises(InvalidMonitorConfig, match="needs a ContainerConfig"):
        monitor.create({"container_id": "x"})  # type: ignore[arg-type]
    with pytest.raises(InvalidMonitorConfig, match="not usable"):
        monitor.status("../etc")
    with pytest.raises(UnknownContainer, match="not monitored"):
        monitor.wait(new_container_id())


# -- the wire, against a stub monitor ------------------------------------------------------

Answer = Callable[[dict[str, Any]], "dict[str, Any] | bytes | None"]


class StubMonitor:
    """A fake monitor process: each request gets ``answer(request)`` — a reply, raw bytes,
    or None (hold the connection without answering until the client goes)."""

    def __init__(self, path: Path, answer: Answer) -> None:
        self.requests: list[dict[str, Any]] = []
        self._answer = answer
        self._listener = bind_seqpacket(str(path))
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                message, fds = recv_msg(conn)
                for fd in fds:
                    os.close(fd)
                assert message is not None
                self.requests.append(message)
                reply = self._answer(message)
                if isinstance(reply, bytes):
                    conn.send(reply)
                elif reply is not None:
                    send_msg(conn, reply)
                else:
                    conn.recv(1)  # until the client closes

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[Callable[[Answer], tuple[CriolibMonitor, StubMonitor]]]:
    """A CriolibMonitor whose container 'c' is served by a StubMonitor."""
    stubs: list[StubMonitor] = []

    def make(answer: Answer) -> tuple[CriolibMonitor, StubMonitor]:
        run_dir = tmp_path / "run"
        (run_dir / "c").mkdir(parents=True)
        (run_dir / "monitors").mkdir()
        sock = run_dir / "monitors" / "c.sock"
        record = {"version": 1, "backend": "criolib", "container_id": "c",
                  "exit_file": str(tmp_path / "exit-c"), "persist_dir": str(run_dir / "c"),
                  "log_path": None, "attach": str(run_dir / "c" / "attach"),
                  "monitor_socket": str(sock), "monitor_pid": os.getpid(), "pid": 4242,
                  "runtime": {"path": "/usr/sbin/runc", "root": None,
                              "systemd_cgroup": False}}
        (run_dir / "c" / "monitor.json").write_text(json.dumps(record))
        stubs.append(StubMonitor(sock, answer))
        return CriolibMonitor(run_dir), stubs[-1]

    yield make
    for s in stubs:
        s.close()


def _status_reply(running: bool) -> dict[str, Any]:
    return {"ok": True, "pid": os.getpid(),
            "containers": {"c": {"pid": 4242, "running": running, "exit_code": None}}}


def test_status_asks_the_monitor(stub: Any) -> None:
    monitor, server = stub(lambda m: _status_reply(True))
    st = monitor.status("c")
    assert (st.running, st.exit, st.pid, st.monitor_pid) == (True, None, 4242, os.getpid())
    assert server.requests == [{"op": "status"}]


def test_status_of_an_exiting_container_waits_for_its_exit(stub: Any) -> None:
    def answer(m: dict[str, Any]) -> dict[str, Any]:
        if m["op"] == "status":
            return _status_reply(False)
        return {"ok": True, "exit_code": 5, "oom": True, "finished_at_ns": 1_500_000_000}
    monitor, server = stub(answer)
    st = monitor.status("c")
    assert not st.running and st.exit == ExitStatus(exit_code=5, finished_at=1.5,
                                                    oom_killed=True)
    assert server.requests == [{"op": "status"}, {"op": "wait", "id": "c"}]


def test_status_says_creating_and_the_log_health_without_waiting(stub: Any) -> None:
    state = {"state": "creating", "running": False, "log_error": None, "log_dropped": 0}

    def answer(m: dict[str, Any]) -> dict[str, Any] | None:
        if m["op"] == "status":
            return {"ok": True, "pid": os.getpid(), "containers": {"c": {
                "pid": None, "exit_code": None, **state}}}
        return None  # a wait: no exit is coming
    monitor, server = stub(answer)
    begun = time.monotonic()
    st = monitor.status("c")
    assert time.monotonic() - begun < 1.0
    assert (st.creating, st.running, st.exit, st.lost) == (True, False, None, False)
    with pytest.raises(MonitorError, match="'c' is still being created"):
        monitor.forget("c")
    assert [r["op"] for r in server.requests] == ["status", "status"]  # never a wait
    state.update(state="running", running=True, log_error="No space left on device",
                 log_dropped=8192)
    st = monitor.status("c")
    assert (st.creating, st.running, st.log_error, st.log_dropped) == (
        False, True, "No space left on device", 8192)


def test_a_container_being_created_refuses_exec_and_control_as_creating(stub: Any) -> None:
    monitor, server = stub(lambda m: {"ok": False, "error": "creating", "message": "wait"})
    calls: list[Callable[[], object]] = [
        lambda: monitor.exec_sync("c", ["true"]), lambda: monitor.reopen_log("c"),
        lambda: monitor.resize("c", 24, 80)]
    for call in calls:
        with pytest.raises(MonitorError, match=r"'c'.*still being created") as info:
            call()
        assert not isinstance(info.value, (ContainerExited, MonitorGone))
    assert [r["op"] for r in server.requests] == ["exec", "reopen_log", "resize"]


def test_a_monitor_that_hangs_up_leaves_the_container_lost(stub: Any) -> None:
    monitor, _ = stub(lambda m: b"")
    assert monitor.status("c").lost
    with pytest.raises(MonitorGone, match="'c': its monitor is gone"):
        monitor.wait("c")
    with pytest.raises(MonitorGone, match="cannot resize its terminal"):
        monitor.resize("c", 10, 10)


def test_wait_times_out_with_none_and_prefers_the_exit_file(stub: Any, tmp_path: Path) -> None:
    monitor, server = stub(lambda m: None)
    assert monitor.wait("c", 0.05) is None
    assert monitor.wait("c", 0) is None
    (tmp_path / "exit-c").write_text("9")
    # The stub never answers: only the exit file can have given the 9.
    assert monitor.wait("c", 0).exit_code == 9
    assert server.requests[0] == {"op": "wait", "id": "c"}


@pytest.mark.parametrize("reply, error, message", [
    ({"ok": False, "error": "exited"}, ContainerExited, "'c' has exited: cannot reopen"),
    ({"ok": False, "error": "unknown"}, MonitorGone, "no longer knows it"),
    ({"ok": False, "error": "internal", "message": "disk full"}, MonitorError,
     r"reopen its log failed in the monitor \(internal: disk full\)"),
    (b"not json", MonitorProtocolError, "unreadable message"),
    (b"[1]", MonitorProtocolError, "not a JSON object"),
    ({"error": "x"}, MonitorProtocolError, "has no 'ok'"),
])
def test_control_refusals_become_errors(stub: Any, reply: dict[str, Any] | bytes,
                                        error: type[Exception], message: str) -> None:
    monitor, server = stub(lambda m: reply)
    with pytest.raises(error, match=message):
        monitor.reopen_log("c")
    assert server.requests == [{"op": "reopen_log", "id": "c"}]


def test_a_failed_reopen_names_the_log_path(stub: Any, tmp_path: Path) -> None:
    monitor, _ = stub(lambda m: {"ok": False, "error": "internal",
                                 "message": "No such file or directory"})
    record_file = monitor.run_dir / "c" / "monitor.json"
    log_path = tmp_path / "gone" / "c.log"
    record_file.write_text(json.dumps(json.loads(record_file.read_text()) |
                                      {"log_path": str(log_path)}))
    with pytest.raises(MonitorError, match=f"'c': reopen its log {re.escape(str(log_path))} "
                                           "failed in the monitor"):
        monitor.reopen_log("c")


def test_control_requests_on_the_wire(stub: Any, tmp_path: Path) -> None:
    monitor, server = stub(lambda m: {"ok": True})
    monitor.resize("c", 24, 80)
    monitor.reopen_log("c")
    assert server.requests == [{"op": "resize", "id": "c", "rows": 24, "cols": 80},
                               {"op": "reopen_log", "id": "c"}]
    with pytest.raises(InvalidMonitorConfig, match="rows must be an integer"):
        monitor.resize("c", 0, 80)
    (tmp_path / "exit-c").write_text("0")
    with pytest.raises(ContainerExited):
        monitor.resize("c", 24, 80)
    with pytest.raises(ContainerExited, match="nothing to attach to"):
        monitor.attach("c")
    assert len(server.requests) == 2
