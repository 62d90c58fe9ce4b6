"""criolib's monitor process driven directly through its wire, with real runc and crun.

docs/conmon-design.md "criolib monitor wire protocol", "CRI log format", "Lifetime":
the test plays the client (it builds the runtime's command with
``RuntimeClient.create_command`` and runs ``start`` itself, as the client does).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from criolib.conmon._daemon import BOOTSTRAP, daemon_argv
from criolib.conmon._exitfile import read_exit_file
from criolib.conmon._wire import connect_seqpacket, recv_msg, send_msg
from criolib.runtime_spec import Generator, RuntimeClient, RuntimeSpecError

pytestmark = pytest.mark.integration

_ids = itertools.count()
RECORD = re.compile(rb"^(\S+) (stdout|stderr) (P|F) (.*)$")
Msg = dict[str, object]


def _wait_readable(fd: int | socket.socket, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


class Daemon:
    """A monitor process started the way the client starts it."""

    def __init__(self, directory: Path, idle_exit: float = 0.3,
                 patch: dict[str, object] | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.socket = str(directory / "g.sock")
        self.lock = str(directory / "g.lock")
        self.log = directory / "g.log"
        r, w = os.pipe()
        argv = daemon_argv(sys.executable, socket=self.socket, lock=self.lock, sync_fd=w,
                           idle_exit=idle_exit)
        if patch is None:
            with open(self.log, "ab") as log:
                proc = subprocess.Popen(argv, pass_fds=[w], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=log)
            os.close(w)
            # The starter returns at once: its child forked the daemon and left.
            assert proc.wait(timeout=10) == 0
        else:
            self._fork(argv[argv.index("--socket"):], w, patch)
        with os.fdopen(r, "rb") as sync:
            line = sync.read()
        assert line.startswith(b"ready "), (line, self.log.read_text())
        self.pid = int(line.split()[1])
        self.pidfd = os.pidfd_open(self.pid)
        # Held like a client holds it while it works with the group: the daemon does
        # not go idle between two requests of a test; close() lets it go.
        self.lock_fd = os.open(self.lock, os.O_RDWR)
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)

    def _fork(self, args: list[str], w: int, patch: dict[str, object]) -> None:
        """Run main() in a fork of this process, with daemon constants changed."""
        from criolib.conmon import _daemon, _daemon_attach

        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                os.dup2(fd, 2)
                for name, value in patch.items():
                    setattr(_daemon_attach, name, value)
                code = _daemon.main(args)
            finally:
                os._exit(code)
        os.close(w)
        assert os.waitpid(pid, 0)[1] == 0

    def open(self, message: Msg, fds: list[int] | tuple[int, ...] = ()) -> socket.socket:
        sock = connect_seqpacket(self.socket, timeout=60)
        send_msg(sock, message, fds)
        return sock

    def request(self, message: Msg, fds: list[int] | tuple[int, ...] = ()) -> Msg:
        with self.open(message, fds) as sock:
            reply, got = recv_msg(sock)
        for fd in got:
            os.close(fd)
        assert reply is not None
        return reply

    def exited(self, timeout: float) -> bool:
        return _wait_readable(self.pidfd, timeout)

    def close(self) -> None:
        os.close(self.lock_fd)
        if not self.exited(10):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            os.close(self.pidfd)
            pytest.fail(f"monitor {self.pid} did not exit when idle:\n{self.log.read_text()}")
        os.close(self.pidfd)
        assert "internal error" not in self.log.read_text(), self.log.read_text()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path / "monitors")
    yield d
    d.close()


class Harness:
    """Containers under one daemon and one runtime; all deleted at the end."""

    def __init__(self, daemon: Daemon, runtime: RuntimeClient,
                 make_bundle: Callable[..., Path], tmp_path: Path) -> None:
        self.daemon = daemon
        self.runtime = runtime
        self.make_bundle = make_bundle
        self.tmp = tmp_path
        self.exits = tmp_path / "exits"
        self.exits.mkdir()
        self.ids: list[str] = []

    def request(self, cmd: str, *, terminal: bool = False, stdin: bool = False,
                stdin_once: bool = False, max_line: int = 16384,
                configure: Callable[[Generator], object] | None = None,
                argv: list[str] | None = None) -> tuple[str, Msg]:
        cid = f"cd{os.getpid()}-{next(_ids)}"
        cdir = self.tmp / cid
        cdir.mkdir()
        bundle = self.make_bundle(cmd, terminal=terminal, configure=configure, name=cid)
        command = self.runtime.create_command(
            cid, bundle, log_path=cdir / "runtime-create.log", pid_file=cdir / "pid",
            console_socket=cdir / "console.sock" if terminal else None)
        self.ids.append(cid)
        return cid, {
            "op": "create", "id": cid, "argv": argv or list(command.argv),
            "env": dict(command.env), "pid_file": str(cdir / "pid"),
            "console_socket": str(cdir / "console.sock") if terminal else None,
            "terminal": terminal, "stdin": stdin, "stdin_once": stdin_once,
            "log_path": str(cdir / "ctr.log"), "log_size_max": -1, "log_max_line": max_line,
            "exit_file": str(self.exits / cid), "persist_dir": str(cdir),
            "attach": str(cdir / "attach"), "timeout": 60}

    def create(self, cmd: str, **kwargs: object) -> tuple[str, int]:
        cid, message = self.request(cmd, **kwargs)  # type: ignore[arg-type]
        reply = self.daemon.request(message)
        assert reply["ok"], (reply, self.runtime_log(cid))
        assert isinstance(reply["pid"], int)
        return cid, reply["pid"]

    def runtime_log(self, cid: str) -> str:
        path = self.tmp / cid / "runtime-create.log"
        return path.read_text() if path.exists() else ""

    def wait(self, cid: str, timeout: float = 30) -> Msg:
        with self.daemon.open({"op": "wait", "id": cid}) as sock:
            assert _wait_readable(sock, timeout), f"{cid} did not exit in {timeout} s"
            reply, _ = recv_msg(sock)
        assert reply is not None
        if reply.get("error") == "unknown":
            # Exited and forgotten by the daemon: the exit file tells (as in the client).
            found = read_exit_file(str(self.exits / cid))
            assert found is not None, reply
            return {"ok": True, "exit_code": found[0], "finished_at_ns": found[1],
                    "oom": (self.tmp / cid / "oom").exists()}
        assert reply["ok"], reply
        return reply

    def log(self, cid: str) -> list[tuple[str, str, bytes]]:
        out = []
        for line in (self.tmp / cid / "ctr.log").read_bytes().split(b"\n")[:-1]:
            m = RECORD.match(line)
            assert m, line
            out.append((m[2].decode(), m[3].decode(), m[4]))
        return out

    def attach(self, cid: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.connect(str(self.tmp / cid / "attach"))
        sock.settimeout(30)
        return sock

    def cleanup(self) -> None:
        for cid in self.ids:
            with contextlib.suppress(RuntimeSpecError):
                self.runtime.delete(cid, force=True)
        status = self.daemon.request({"op": "status"})
        containers = status["containers"]
        assert isinstance(containers, dict)
        for cid in containers:
            self.wait(cid)


@pytest.fixture
def h(daemon: Daemon, runtime: RuntimeClient, make_bundle: Callable[..., Path],
      tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(daemon, runtime, make_bundle, tmp_path)
    yield harness
    harness.cleanup()


def read_attach(sock: socket.socket) -> dict[int, bytes]:
    """Everything an attach connection gets until the daemon closes it, per stream."""
    got: dict[int, bytes] = {2: b"", 3: b""}
    while packet := sock.recv(65536):
        assert len(packet) <= 8193
        got[packet[0]] += packet[1:]
    return got


# -- create, output, exit ------------------------------------------------------------------


def test_output_lands_in_the_log_and_wait_gives_the_exit(h: Harness) -> None:
    cid, pid = h.create("echo out; echo err >&2; echo; printf partial; exit 3")
    status = h.daemon.request({"op": "status"})
    assert status["containers"] == {cid: {"pid": pid, "running": True, "exit_code": None,
                                          "oom": False, "state": "running",
                                          "log_error": None, "log_dropped": 0}}
    assert "modules" not in status
    h.runtime.start(cid)
    reply = h.wait(cid)
    assert reply["exit_code"] == 3 and reply["oom"] is False
    log = h.log(cid)
    assert [r for r in log if r[0] == "stdout"] == [
        ("stdout", "F", b"out"), ("stdout", "F", b""), ("stdout", "P", b"partial")]
    assert [r for r in log if r[0] == "stderr"] == [("stderr", "F", b"err")]
    exit_file = h.exits / cid
    assert exit_file.read_bytes() == b"3"
    assert read_exit_file(str(exit_file)) == (3, reply["finished_at_ns"])
    assert (h.tmp / cid / "exit").read_bytes() == b"3"
    assert not (h.tmp / cid / "oom").exists()
    assert not (h.tmp / cid / "attach").exists()
    # Once the exit is recorded the daemon drops the container from its table; a late
    # wait still gets the exit.
    assert h.daemon.request({"op": "status"})["containers"] == {}
    assert h.wait(cid, timeout=5) == reply


def test_stdin_from_two_attachers_with_stdin_once(h: Harness) -> None:
    cid, _ = h.create("cat; echo done; echo bye >&2", stdin=True, stdin_once=True)
    first, second = h.attach(cid), h.attach(cid)
    h.runtime.start(cid)
    first.sendall(b"from first\n")
    assert first.recv(65536) == b"\x02from first\n"
    assert second.recv(65536) == b"\x02from first\n"
    second.sendall(b"from second\n")
    assert first.recv(65536) == b"\x02from second\n"
    # The first client to end its input closes the container's stdin (stdin_once).
    first.shutdown(socket.SHUT_WR)
    assert h.wait(cid)["exit_code"] == 0
    for sock in (first, second):
        got = read_attach(sock)
        assert got[2].endswith(b"done\n") and got[3] == b"bye\n"
        sock.close()
    assert [m for s, _, m in h.log(cid) if s == "stdout"] == [
        b"from first", b"from second", b"done"]


def test_terminal_output_goes_through_the_pty_and_resize_applies(h: Harness) -> None:
    cid, _ = h.create("stty size; echo hi; exit 4", terminal=True)
    reply = h.daemon.request({"op": "resize", "id": cid, "rows": 33, "cols": 101})
    assert reply == {"ok": True}
    attacher = h.attach(cid)
    h.runtime.start(cid)
    assert h.wait(cid)["exit_code"] == 4
    got = read_attach(attacher)
    attacher.close()
    assert got[2] == b"33 101\r\nhi\r\n" and got[3] == b""
    assert [(s, t, m) for s, t, m in h.log(cid)] == [
        ("stdout", "F", b"33 101\r"), ("stdout", "F", b"hi\r")]


def test_terminal_stdin_without_a_log(h: Harness) -> None:
    cid, message = h.request("read x; echo got $x", terminal=True, stdin=True,
                             stdin_once=True)
    message["log_path"] = None  # output is still served to attachers
    assert h.daemon.request(message)["ok"] is True
    attacher = h.attach(cid)
    h.runtime.start(cid)
    attacher.sendall(b"hello\n")
    # stdin_once on a terminal closes only our copy of the master (as conmon does):
    # the container sees no hang-up, so its own exit ends the test.
    attacher.shutdown(socket.SHUT_WR)
    assert h.wait(cid)["exit_code"] == 0
    got = read_attach(attacher)
    attacher.close()
    assert got[2].endswith(b"got hello\r\n") and got[3] == b""
    assert not (h.tmp / cid / "ctr.log").exists()


def test_resize_and_reopen_without_terminal(h: Harness, tmp_path: Path) -> None:
    cid, _ = h.create("read x; echo after; exit 0", stdin=True)
    assert h.daemon.request({"op": "resize", "id": cid, "rows": 1, "cols": 2}) == {"ok": True}
    h.runtime.start(cid)
    log = tmp_path / cid / "ctr.log"
    os.rename(log, tmp_path / cid / "ctr.log.1")
    assert h.daemon.request({"op": "reopen_log", "id": cid}) == {"ok": True}
    with h.attach(cid) as sock:
        sock.sendall(b"go\n")
        assert h.wait(cid)["exit_code"] == 0
    assert h.log(cid) == [("stdout", "F", b"after")]


# -- exec ----------------------------------------------------------------------------------


def _exec(h: Harness, cid: str, argv: list[str], timeout: float | None,
          name: str) -> tuple[bytes, bytes, Msg]:
    scratch = h.tmp / cid / "exec"
    scratch.mkdir(exist_ok=True)
    command = h.runtime.exec_command(cid, argv, log_path=scratch / f"{name}.log",
                                     pid_file=scratch / f"{name}.pid")
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    sock = h.daemon.open({"op": "exec", "id": cid, "argv": list(command.argv),
                          "env": dict(command.env), "pid_file": str(scratch / f"{name}.pid"),
                          "console_socket": None, "terminal": False, "timeout": timeout,
                          "fds": ["stdout", "stderr"]}, [out_w, err_w])
    os.close(out_w)
    os.close(err_w)
    with sock:
        started, _ = recv_msg(sock)
        assert started == {"ok": True, "event": "started"}
        with os.fdopen(out_r, "rb") as out, os.fdopen(err_r, "rb") as err:
            stdout, stderr = out.read(), err.read()
        exited, _ = recv_msg(sock)
    assert exited is not None and exited["event"] == "exited"
    return stdout, stderr, exited


def test_exec_sync_with_pipes_and_timeout(h: Harness) -> None:
    cid, _ = h.create("sleep 60")
    h.runtime.start(cid)
    out, err, exited = _exec(h, cid, ["sh", "-c", "echo o; echo e >&2; exit 5"], 30, "one")
    assert (out, err) == (b"o\n", b"e\n")
    assert exited == {"ok": True, "event": "exited", "returncode": 5, "timed_out": False}
    start = time.monotonic()
    out, err, exited = _exec(h, cid, ["sleep", "50"], 0.5, "two")
    assert time.monotonic() - start < 10
    assert exited["timed_out"] is True and exited["returncode"] == 137
    h.runtime.kill(cid, "SIGKILL")
    assert h.wait(cid)["exit_code"] == 137
    reply = h.daemon.request({"op": "exec", "id": cid, "argv": ["true"], "env": {}})
    assert reply["ok"] is False and reply["error"] == "exited"


# -- OOM, failures ---------------------------------------------------------------------------


def test_oom_kill_is_detected(h: Harness) -> None:
    cid, _ = h.create("exec dd if=/dev/zero of=/dev/null bs=64M count=1",
                      configure=lambda g: g.set_memory_limit(16 * 1024 * 1024))
    h.runtime.start(cid)
    reply = h.wait(cid)
    assert reply["oom"] is True and reply["exit_code"] == 137
    assert (h.tmp / cid / "oom").exists()
    assert (h.tmp / cid / "exit").read_bytes() == b"137"


def test_create_failures_leave_the_daemon_serving(h: Harness) -> None:
    # No such runtime binary.
    cid, message = h.request("true", argv=["/nonexistent/runtime", "create"])
    reply = h.daemon.request(message)
    assert reply["ok"] is False and reply["error"] == "create-failed"
    assert reply["returncode"] == 127
    # A config the runtime rejects (a namespace path that does not exist).
    cid, message = h.request(
        "true", configure=lambda g: g.add_namespace("network", "/nonexistent/netns"))
    reply = h.daemon.request(message)
    assert reply["ok"] is False and reply["error"] == "create-failed", reply
    assert isinstance(reply["returncode"], int) and reply["returncode"] != 0
    assert h.runtime_log(cid)  # the client reads the runtime's words there
    assert not (h.tmp / cid / "attach").exists()
    # The same id can be created once the failure is cleaned up.
    assert h.daemon.request({"op": "status"})["containers"] == {}


def test_missing_program_fails_create(h: Harness) -> None:
    # runc and crun both look the program up before create returns.
    cid, message = h.request("", configure=lambda g: g.set_args(["/no/such/program"]))
    reply = h.daemon.request(message)
    assert reply["ok"] is False and reply["error"] == "create-failed", reply
    assert isinstance(reply["returncode"], int) and reply["returncode"] != 0
    # The runtime's own words: in its --log, and what it wrote to stderr.
    assert "/no/such/program" in h.runtime_log(cid) + str(reply["stderr"])
    assert not (h.tmp / cid / "ctr.log").exists()
    assert h.daemon.request({"op": "status"})["containers"] == {}


def test_create_timeout_kills_the_runtime(h: Harness, tmp_path: Path) -> None:
    fake = tmp_path / "slow-runtime"
    fake.write_text("#!/bin/sh\nsleep 30 &\nexec sleep 30\n")
    fake.chmod(0o755)
    _, message = h.request("true", argv=[str(fake)])
    message["timeout"] = 0.3
    start = time.monotonic()
    reply = h.daemon.request(message)
    assert time.monotonic() - start < 5
    assert reply["ok"] is False and reply["error"] == "create-failed"
    assert reply["returncode"] is None


def test_exec_with_a_terminal_sends_the_pty_master(h: Harness) -> None:
    cid, _ = h.create("sleep 60")
    h.runtime.start(cid)
    scratch = h.tmp / cid / "exec"
    scratch.mkdir()
    command = h.runtime.exec_command(cid, ["sh", "-c", "echo on-tty; exit 2"],
                                     log_path=scratch / "t.log", pid_file=scratch / "t.pid",
                                     console_socket=scratch / "console.sock", tty=True,
                                     detach=True)  # runc takes a console socket only so
    with h.daemon.open({"op": "exec", "id": cid, "argv": list(command.argv),
                        "env": dict(command.env), "pid_file": str(scratch / "t.pid"),
                        "console_socket": str(scratch / "console.sock"), "terminal": True,
                        "timeout": 30}) as sock:
        started, fds = recv_msg(sock)
        assert started == {"ok": True, "event": "started"} and len(fds) == 1
        output = b""
        with contextlib.suppress(OSError):  # EIO once the exec's side is closed
            while chunk := os.read(fds[0], 4096):
                output += chunk
        os.close(fds[0])
        exited, _ = recv_msg(sock)
    assert b"on-tty\r\n" in output
    assert exited == {"ok": True, "event": "exited", "returncode": 2, "timed_out": False}
    h.runtime.kill(cid, "SIGKILL")
    h.wait(cid)


# -- output under load ----------------------------------------------------------------------


def test_a_100mb_burst_loses_nothing(h: Harness) -> None:
    line = b"x" * 99
    cid, _ = h.create(f"yes {line.decode()} | head -c 100000000; echo -n end >&2")
    attacher = h.attach(cid)
    got: dict[int, int] = {}

    def drain() -> None:
        counts = {2: 0, 3: 0}
        while packet := attacher.recv(65536):
            counts[packet[0]] += len(packet) - 1
        got.update(counts)

    reader = threading.Thread(target=drain)
    reader.start()
    h.runtime.start(cid)
    assert h.wait(cid, timeout=60)["exit_code"] == 0
    reader.join(30)
    attacher.close()
    assert got == {2: 100_000_000, 3: 3}
    records = (h.tmp / cid / "ctr.log").read_bytes().split(b"\n")
    assert records.pop() == b""
    # Fixed-width timestamps: the stream is at 36, the tag at 43, the message from 45.
    assert {r[35:36] + r[42:45] for r in records} <= {b"  P ", b"  F "}
    stdout = b"".join(r[45:] + (b"\n" if r[43] == ord("F") else b"")
                      for r in records if r[36:42] == b"stdout")
    assert len(stdout) == 100_000_000 and stdout == (line + b"\n") * 1_000_000
    assert records[-1].endswith(b" stderr P end")


def test_a_slow_attacher_blocks_the_container_without_loss(h: Harness) -> None:
    # 8 MB without newlines: more than the 4 MiB queue plus every kernel buffer.
    cid, _ = h.create("head -c 8000000 /dev/zero | tr '\\0' z", max_line=1000)
    attacher = h.attach(cid)
    h.runtime.start(cid)
    with h.daemon.open({"op": "wait", "id": cid}) as waiter:
        # Back-pressure: while the client reads nothing the container cannot finish.
        assert not _wait_readable(waiter, 2.0)
        total = 0
        while packet := attacher.recv(65536):
            assert packet[0] == 2 and set(packet[1:]) == {ord("z")}
            total += len(packet) - 1
        reply, _ = recv_msg(waiter)
    attacher.close()
    assert total == 8_000_000
    assert reply is not None and reply["exit_code"] == 0
    records = h.log(h.ids[-1])
    assert sum(len(m) for _, _, m in records) == 8_000_000
    assert all(t == "P" and len(m) <= 1000 for _, t, m in records)


@pytest.mark.parametrize("runtime", ["runc"], indirect=True)
def test_a_stuck_attacher_is_dropped(runtime: RuntimeClient, make_bundle: Callable[..., Path],
                                     tmp_path: Path) -> None:
    # The daemon's 30 s and 4 MiB, shrunk so the test takes a second.
    daemon = Daemon(tmp_path / "monitors", patch={"STALL_DROP": 0.5,
                                                  "QUEUE_LIMIT": 256 * 1024})
    h = Harness(daemon, runtime, make_bundle, tmp_path)
    try:
        cid, _ = h.create("head -c 4000000 /dev/zero | tr '\\0' z")
        stuck, reader = h.attach(cid), h.attach(cid)
        got = b""

        def drain() -> None:
            nonlocal got
            while packet := reader.recv(65536):
                got += packet[1:]

        thread = threading.Thread(target=drain)
        thread.start()
        h.runtime.start(cid)
        assert h.wait(cid)["exit_code"] == 0
        thread.join(10)
        assert len(got) == 4_000_000
        stuck_total = 0
        while packet := stuck.recv(65536):
            stuck_total += len(packet) - 1
        assert stuck_total < 4_000_000  # dropped: it got what was queued, then EOF
        assert "client stuck" in daemon.log.read_text()
        stuck.close()
        reader.close()
    finally:
        h.cleanup()
        daemon.close()


def test_detached_exec_is_recognised_by_its_options() -> None:
    from criolib.conmon._daemon_exec import _detached

    assert _detached(["runc", "--root=/r", "exec", "--detach", "--pid-file=p", "c", "sh"])
    assert _detached(["crun", "exec", "-d", "c", "sh"])
    assert not _detached(["runc", "exec", "--pid-file=p", "c", "ls", "-d", "/"])
    assert not _detached(["runc", "create", "--bundle=b", "c"])


# -- the process ----------------------------------------------------------------------------


def test_memory_and_modules_stay_lean(h: Harness) -> None:
    cid, message = h.request("sleep 60")
    assert h.daemon.request(message)["ok"] is True
    again = h.daemon.request(message)
    assert again["ok"] is False and again["error"] == "exists", again
    h.runtime.start(cid)
    status = h.daemon.request({"op": "status", "debug": True})
    modules = status["modules"]
    assert isinstance(modules, list)
    heavy = {"attrs", "cattrs", "jsonschema", "httpx", "typing", "logging", "subprocess",
             "pathlib", "argparse", "threading"}
    assert heavy.isdisjoint(modules), heavy & set(modules)
    assert not [m for m in modules if m.startswith("criolib.") and m not in {
        "criolib.conmon", "criolib.conmon._wire", "criolib.conmon._crilog",
        "criolib.conmon._exitfile"} and not m.startswith("criolib.conmon._daemon")]
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{h.daemon.pid}/status").read_text().splitlines())
    rss_kb = int(fields["VmRSS"].split()[0])
    print(f"monitor VmRSS with one container: {rss_kb} kB")
    assert rss_kb < 14 * 1024, rss_kb
    h.runtime.kill(cid, "SIGKILL")
    assert h.wait(cid)["exit_code"] == 137


_STARTER = """
import os, subprocess, sys
sys.path.insert(0, sys.argv[1])
from criolib.conmon._daemon import daemon_argv
r, w = os.pipe()
subprocess.run(daemon_argv(sys.executable, socket=sys.argv[2], lock=sys.argv[3], sync_fd=w,
                           idle_exit=0.2), pass_fds=[w], check=True,
               stderr=open(sys.argv[4], "ab"))
os.close(w)
print(os.read(r, 100).decode().split()[1])
"""


def test_the_daemon_outlives_its_starter_and_exits_when_idle(tmp_path: Path) -> None:
    root = str(Path(__file__).resolve().parents[2])
    sock, lock, log = (str(tmp_path / n) for n in ("g.sock", "g.lock", "g.log"))
    out = subprocess.run([sys.executable, "-c", _STARTER, root, sock, lock, log],
                         capture_output=True, text=True, check=True).stdout
    pid = int(out)
    pidfd = os.pidfd_open(pid)
    try:
        # The client holds the group lock while it creates: the daemon must stay.
        with open(lock, "a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            os.kill(pid, signal.SIGTERM)  # ignored, like SIGINT and SIGHUP
            os.kill(pid, signal.SIGHUP)
            assert not _wait_readable(pidfd, 1.0)
            with connect_seqpacket(sock) as conn:
                send_msg(conn, {"op": "status"})
                reply, _ = recv_msg(conn)
            assert reply is not None and reply["pid"] == pid and reply["containers"] == {}
        assert _wait_readable(pidfd, 10), Path(log).read_text()
    finally:
        os.close(pidfd)
    assert not os.path.exists(sock)
    assert "idle: exiting" in Path(log).read_text()


def test_start_up_failure_is_reported_on_the_sync_pipe(tmp_path: Path) -> None:
    r, w = os.pipe()
    proc = subprocess.run(
        daemon_argv(sys.executable, socket=str(tmp_path / "no" / "such" / "dir" / "g.sock"),
                    lock=str(tmp_path / "g.lock"), sync_fd=w),
        pass_fds=[w], capture_output=True)
    os.close(w)
    with os.fdopen(r, "rb") as sync:
        line = sync.read()
    assert proc.returncode == 0
    assert line.startswith(b"error ") and b"No such file" in line
    assert b"cannot start" in proc.stderr
    bad = subprocess.run([sys.executable, "-I", "-S", "-c", BOOTSTRAP,
                          str(Path(__file__).resolve().parents[2]), "--bogus"],
                         capture_output=True)
    assert bad.returncode == 2 and b"unknown argument" in bad.stderr


def test_bad_requests_are_refused_and_the_daemon_goes_on(daemon: Daemon) -> None:
    def ask(message: Msg, fds: tuple[int, ...] = ()) -> tuple[object, object]:
        reply = daemon.request(message, fds)
        assert reply["ok"] is False, reply
        return reply["error"], reply["message"]

    assert ask({"op": "fly"})[0] == "invalid"
    assert ask({"op": "wait", "id": "nope"})[0] == "unknown"
    assert ask({"op": "wait", "id": 7})[0] == "invalid"
    assert ask({"op": "create"})[0] == "invalid"
    kind, message = ask({"op": "create", "id": "c1", "argv": "runc create"})
    assert kind == "invalid" and "argv" in str(message)
    assert ask({"op": "create", "id": "c1", "argv": ["x"], "env": {"A": 1}})[0] == "invalid"
    assert ask({"op": "resize", "id": "nope", "rows": -1, "cols": 2})[0] == "invalid"
    assert ask({"op": "resize", "id": "nope", "rows": 1, "cols": 2})[0] == "unknown"
    assert ask({"op": "reopen_log", "id": "nope"})[0] == "unknown"
    # Descriptors that come with a refused request are closed, not leaked.
    r, w = os.pipe()
    assert ask({"op": "exec", "id": "nope", "argv": ["true"]}, (w,))[0] == "unknown"
    os.close(w)
    assert _wait_readable(r, 5) and os.read(r, 1) == b""
    os.close(r)
    with connect_seqpacket(daemon.socket) as sock:
        sock.send(b"{not json")
        reply, _ = recv_msg(sock)
    assert reply is not None and reply["error"] == "invalid"
    with connect_seqpacket(daemon.socket) as sock:
        sock.send(json.dumps([1, 2]).encode())
        reply, _ = recv_msg(sock)
    assert reply is not None and reply["error"] == "invalid"
    assert daemon.request({"op": "status"})["ok"] is True


# -- robustness: full disks, stray writers, fds, a long-lived group ----------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 300 KiB tmpfs (a disk that fills up), unmounted at the end."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k,mode=0700", "tmpfs", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mnt)], check=True)


def _echo(sock: socket.socket, data: bytes) -> None:
    """Send ``data`` as stdin (8 KiB packets) and read back its echo by ``cat``: by then
    the daemon has tried to log it."""
    for i in range(0, len(data), 8192):
        sock.sendall(data[i:i + 8192])
    got = b""
    while len(got) < len(data):
        packet = sock.recv(65536)
        assert packet[:1] == b"\x02", packet[:20]
        got += packet[1:]
    assert got == data


@pytest.mark.parametrize("runtime", ["runc"], indirect=True)
def test_a_full_disk_drops_whole_records_and_is_reported(h: Harness, small_fs: Path) -> None:
    from . import kubelet_log

    filler = small_fs / "filler"
    filler.write_bytes(b"x" * 200 * 1024)
    cid, message = h.request("cat", stdin=True, stdin_once=True)
    log = small_fs / "ctr.log"
    message["log_path"] = str(log)
    assert h.daemon.request(message)["ok"] is True
    sock = h.attach(cid)
    h.runtime.start(cid)
    _echo(sock, b"".join(b"%04d " % i + b"y" * 94 + b"\n" for i in range(2000)))
    entry = h.daemon.request({"op": "status"})["containers"][cid]  # type: ignore[index]
    filler.unlink()  # space again: later records land, after whole ones
    _echo(sock, b"after\n")
    sock.shutdown(socket.SHUT_WR)
    assert h.wait(cid)["exit_code"] == 0
    sock.close()
    assert (h.exits / cid).read_bytes() == b"0"
    data = log.read_bytes()
    records = [kubelet_log.parse_line(line + b"\n") for line in data.split(b"\n")[:-1]]
    assert records[-1].log == b"after\n" and not records[-1].partial
    assert entry.get("log_error") == f"No space left on device writing {log}", entry
    assert isinstance(entry["log_dropped"], int) and entry["log_dropped"] > 0
    assert f"cannot write log {log}: [Errno 28]" in h.daemon.log.read_text()


def test_a_removed_persist_dir_does_not_cost_the_exit_file(h: Harness) -> None:
    cid, message = h.request("exit 5")
    persist = h.tmp / f"{cid}.persist"
    persist.mkdir()
    message["persist_dir"] = str(persist)
    assert h.daemon.request(message)["ok"] is True
    persist.rmdir()
    h.runtime.start(cid)
    assert h.wait(cid)["exit_code"] == 5
    assert (h.exits / cid).read_bytes() == b"5"
    assert "cannot write exit files" in h.daemon.log.read_text()


def test_a_writer_that_outlives_the_init_does_not_hold_the_daemon(
        h: Harness, small_fs: Path) -> None:
    other, _ = h.create("sleep 60")
    h.runtime.start(other)
    # No pid namespace: the background writers survive the init and keep writing to
    # the same stdout pipe. Short lines make many records per read: the daemon reads
    # slower than they write. (The log is on a small tmpfs: an endless drain would
    # otherwise fill the disk.)
    cid, message = h.request("yes & yes & exit 7",
                             configure=lambda g: g.remove_namespace("pid"))
    message["log_path"] = str(small_fs / "ctr.log")
    assert h.daemon.request(message)["ok"] is True
    try:
        h.runtime.start(cid)
        start = time.monotonic()
        assert h.wait(cid, timeout=5)["exit_code"] == 7
        assert time.monotonic() - start < 2.0
        entry = h.daemon.request({"op": "status"})["containers"][other]  # type: ignore[index]
        assert entry["running"] is True
    finally:
        # The writers are in the container's cgroup: --force kills all of it.
        with contextlib.suppress(RuntimeSpecError):
            h.runtime.delete(cid, force=True)
    h.runtime.kill(other, "SIGKILL")
    assert h.wait(other)["exit_code"] == 137


def test_a_read_only_attacher_going_away_closes_stdin_once(h: Harness) -> None:
    cid, _ = h.create("echo hi; cat; echo done", stdin=True, stdin_once=True)
    quitter, reader = h.attach(cid), h.attach(cid)
    h.runtime.start(cid)
    assert reader.recv(65536) == b"\x02hi\n"
    # It never read "hi": the daemon's recv fails (ECONNRESET) instead of reading 0
    # bytes; the client could still have sent, so its input ends (stdin_once).
    quitter.close()
    assert h.wait(cid, timeout=10)["exit_code"] == 0
    assert read_attach(reader)[2] == b"done\n"
    reader.close()


def _fake(daemon: Daemon, tmp: Path, script: str, **fields: object) -> tuple[str, Msg]:
    """A create request whose "runtime" is ``sh -c script`` ($1: the pid file): what it
    leaves running and names in the pid file is the "init" (no runc needed)."""
    cid = f"fk{os.getpid()}-{next(_ids)}"
    cdir = tmp / cid
    cdir.mkdir(parents=True)
    (tmp / "exits").mkdir(exist_ok=True)
    message: Msg = {
        "op": "create", "id": cid,
        "argv": ["/bin/sh", "-c", script, "sh", str(cdir / "pid")],
        "env": {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, "pid_file": str(cdir / "pid"),
        "console_socket": None, "terminal": False, "stdin": False, "stdin_once": False,
        "log_path": str(cdir / "ctr.log"), "log_size_max": -1, "log_max_line": 16384,
        "exit_file": str(tmp / "exits" / cid), "persist_dir": str(cdir),
        "attach": str(cdir / "attach"), "timeout": 10}
    message.update(fields)
    return cid, message


def _fake_init(code: int) -> str:
    """A ``_fake`` script leaving an "init" that exits ``code`` once the "runtime"
    exited (like runc's init it outlives create: the runtime's shell could otherwise
    reap it first). The fifo ends when the runtime exits and closes it."""
    return (f'mkfifo "$1.f" && {{ (read x < "$1.f"; exit {code}) & echo $! > "$1"; '
            'exec 5> "$1.f"; }')


def _fake_wait(daemon: Daemon, cid: str) -> Msg:
    with daemon.open({"op": "wait", "id": cid}) as sock:
        assert _wait_readable(sock, 10), f"{cid} did not exit"
        reply, _ = recv_msg(sock)
    assert reply is not None and reply["ok"], reply
    return reply


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_exited_containers_leave_the_table(daemon: Daemon, tmp_path: Path) -> None:
    rss = []
    for i in range(50):
        cid, message = _fake(daemon, tmp_path / "c", _fake_init(3))
        created = daemon.request(message)
        assert created["ok"] is True, (created, daemon.log.read_text())
        assert _fake_wait(daemon, cid)["exit_code"] == 3
        assert (tmp_path / "c" / "exits" / cid).read_bytes() == b"3"
        assert daemon.request({"op": "status"})["containers"] == {}
        # A late wait still gets the exit; an exec is told it exited.
        assert _fake_wait(daemon, cid)["exit_code"] == 3
        refused = daemon.request({"op": "exec", "id": cid, "argv": ["true"]})
        assert refused["error"] == "exited", refused
        if i in (9, 49):
            rss.append(_rss_kb(daemon.pid))
    assert rss[1] - rss[0] < 1024, rss


def test_exec_while_creating_is_refused_as_creating(daemon: Daemon, tmp_path: Path) -> None:
    cid, message = _fake(daemon, tmp_path, "sleep 30", timeout=1)
    creating = daemon.open(message)
    deadline = time.monotonic() + 10
    while daemon.request({"op": "status"})["containers"] == {}:
        assert time.monotonic() < deadline
    refused = daemon.request({"op": "exec", "id": cid, "argv": ["true"]})
    assert refused["ok"] is False and refused["error"] == "creating", refused
    with creating:
        assert _wait_readable(creating, 10)
        reply, _ = recv_msg(creating)
    assert reply is not None and reply["error"] == "create-failed"


def test_received_fds_are_close_on_exec() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    os.set_inheritable(w, True)
    with a, b:
        send_msg(a, {"op": "x"}, [w])
        message, fds = recv_msg(b)
    os.close(r)
    os.close(w)
    assert message == {"op": "x"} and len(fds) == 1
    try:
        assert os.get_inheritable(fds[0]) is False
    finally:
        os.close(fds[0])


def test_the_daemon_keeps_no_fds(daemon: Daemon, tmp_path: Path) -> None:
    def fds() -> list[str]:
        # Once the daemon closed this connection it has closed the ones before too.
        with daemon.open({"op": "status"}) as sock:
            assert recv_msg(sock)[0] is not None and recv_msg(sock) == (None, [])
        where = f"/proc/{daemon.pid}/fd"
        return sorted(f"{n} {os.readlink(f'{where}/{n}')}" for n in os.listdir(where))

    before = fds()
    r, w = os.pipe()
    refused = daemon.request({"op": "exec", "id": "nope", "argv": ["true"],
                              "fds": ["stdout"]}, [w])
    assert refused["error"] == "unknown"
    os.close(r)
    os.close(w)
    cid, message = _fake(daemon, tmp_path, "exit 1", terminal=True,
                         console_socket=str(tmp_path / "console.sock"))
    assert daemon.request(message)["error"] == "create-failed"
    cid, message = _fake(daemon, tmp_path, _fake_init(0))
    assert daemon.request(message)["ok"] is True
    assert _fake_wait(daemon, cid)["exit_code"] == 0
    assert fds() == before


def test_the_daemon_asks_the_oom_killer_to_spare_it() -> None:
    # Needs CAP_SYS_RESOURCE, which this machine lacks (MACHINE-NOTES.md): then the
    # score stays as it was, silently.
    before = Path("/proc/self/oom_score_adj").read_text().strip()
    out = subprocess.run(
        [sys.executable, "-c", "from criolib.conmon._daemon import _spare_from_oom_killer\n"
         "_spare_from_oom_killer()\nprint(open('/proc/self/oom_score_adj').read().strip())"],
        capture_output=True, check=True, text=True)
    assert out.stdout.strip() in ("-1000", before) and out.stderr == ""
