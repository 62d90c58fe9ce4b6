"""``exec`` in criolib's monitor process: run the runtime's exec with the client's fds.

docs/conmon-design.md, the ``exec`` row: the client sends its pipe ends (stdin or
none, stdout, stderr, named by ``"fds"``) or asks for a terminal (console socket; the
pty master goes back with the ``started`` reply). The runtime's exit status is the
process's (128+N for a signal); at ``timeout`` the process named in ``pid_file`` and
the runtime's process group are SIGKILLed and ``timed_out`` is reported. Stdlib only.

A runtime exec with ``--detach`` (runc accepts ``--console-socket`` only with it; conmon
always detaches) exits once the process runs: the daemon, a subreaper, then waits for
the process named in ``pid_file`` and reports *its* status, as conmon does.

An exec for a container whose create still runs is refused with error ``"creating"``
(not ``"exited"``: it is on its way up); one that exited with ``"exited"``.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal

from criolib.conmon._daemon_loop import _BadRequest
from criolib.conmon._daemon_proc import (
    ConsoleSocket,
    diag,
    exit_code_of,
    is_str_dict,
    is_str_list,
    open_devnull,
    spawn,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from criolib.conmon._daemon_ctr import Container
    from criolib.conmon._daemon_loop import ControlConn, Loop, Timer

__all__ = ["Exec"]

_FD_NAMES = ("stdin", "stdout", "stderr")


class Exec:
    """One runtime exec, from spawn to its ``exited`` reply."""

    def __init__(self, loop: Loop, conn: ControlConn, ctr: Container, pid_file: str | None,
                 timeout: float | None) -> None:
        self.loop = loop
        self.conn = conn
        self.ctr = ctr
        self.pid_file = pid_file
        self.timeout = timeout
        self.pid = 0
        self.pidfd = -1
        #: ``--detach``: the runtime exits once the process runs (runc needs it for a
        #: console socket); the process, reparented to us, is then waited for instead.
        self.detached = False
        self.runtime_code: int | None = None
        self.console: ConsoleSocket | None = None
        self.started = False
        self.timed_out = False
        self.timer: Timer | None = None

    @classmethod
    def start(cls, loop: Loop, conn: ControlConn, ctr: Container, message: dict[str, object],
              fds: list[int]) -> None:
        """Check the request, spawn the runtime, reply ``started`` (now or on the pty)."""
        argv, env = message.get("argv"), message.get("env", {})
        if not is_str_list(argv):
            raise _BadRequest(f"field 'argv' must be a non-empty list of strings, not {argv!r}")
        if not is_str_dict(env):
            raise _BadRequest("field 'env' must map strings to strings")
        terminal = message.get("terminal", False)
        if not isinstance(terminal, bool):
            raise _BadRequest(f"field 'terminal' must be true or false, not {terminal!r}")
        names = message.get("fds", [])
        if (not isinstance(names, list) or len(names) != len(fds)
                or any(n not in _FD_NAMES for n in names) or len(set(names)) != len(names)):
            raise _BadRequest(f"field 'fds' {names!r} must name each of the {len(fds)} "
                              "fds sent (stdin, stdout, stderr)")
        pid_file, console_path = message.get("pid_file"), message.get("console_socket")
        for name, value in (("pid_file", pid_file), ("console_socket", console_path)):
            if value is not None and not isinstance(value, str):
                raise _BadRequest(f"field {name!r} must be a string or null, not {value!r}")
        if terminal and not console_path:
            raise _BadRequest("a terminal exec needs 'console_socket'")
        timeout = message.get("timeout")
        if timeout is not None and (not isinstance(timeout, (int, float))
                                    or isinstance(timeout, bool) or timeout <= 0):
            raise _BadRequest(f"field 'timeout' must be seconds > 0 or null, not {timeout!r}")
        if ctr.state == "creating":
            raise _BadRequest(f"container {ctr.id!r} is still being created", "creating")
        if not ctr.alive() or ctr.state != "running":
            raise _BadRequest(f"container {ctr.id!r} is not running ({ctr.state})", "exited")
        ex = cls(loop, conn, ctr, pid_file,  # type: ignore[arg-type]
                 None if timeout is None else float(timeout))
        given = dict(zip(names, fds, strict=True))
        fds.clear()  # _spawn owns (and closes) them now
        ex._spawn(argv, env, given, console_path if terminal else None)  # type: ignore[arg-type]

    def _spawn(self, argv: list[str], env: dict[str, str], given: dict[str, int],
               console_path: str | None) -> None:
        devnull = open_devnull()
        try:
            if console_path is not None:
                self.console = ConsoleSocket(console_path)
            stdio = [given.get(name, devnull) for name in _FD_NAMES]
            try:
                self.pid = spawn(argv, env, *stdio)
            except OSError as exc:
                if self.console is not None:
                    self.console.close()
                raise _BadRequest(f"exec in container {self.ctr.id!r}: cannot run "
                                  f"{argv[0]}: {exc}", "internal") from exc
        finally:
            os.close(devnull)
            for fd in given.values():
                os.close(fd)
        self.loop.children.add(self.pid)
        self.pidfd = os.pidfd_open(self.pid)
        self.loop.execs.add(self)
        self.detached = _detached(argv)
        if self.detached:
            # Until the pid file is read, an orphan may be the process itself.
            self.loop.defer_sweep += 1
        self.loop.watch(self.pidfd, selectors.EVENT_READ, self._exited)
        if self.timeout is not None:
            self.timer = self.loop.call_later(self.timeout, self._timed_out)
        if self.console is None:
            self._started()
        else:
            for sock in self.console.fds():
                self.loop.watch(sock, selectors.EVENT_READ, self._console_ready)

    def _started(self, master: int | None = None) -> None:
        self.started = True
        fds = [] if master is None else [master]
        self.conn.reply({"ok": True, "event": "started"}, fds, final=False)
        if master is not None:
            os.close(master)

    def _console_ready(self, mask: int) -> None:
        console = self.console
        if console is None:
            return
        for sock in console.fds():
            self.loop.unwatch(sock)
        if console.poll():
            self.console = None
            self._started(console.master)
            return
        for sock in console.fds():
            self.loop.watch(sock, selectors.EVENT_READ, self._console_ready)

    def _read_pid_file(self) -> int:
        if self.pid_file is None:
            return 0
        try:
            with open(self.pid_file, "rb") as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return 0

    def _follow(self) -> bool:
        """After a detached runtime exited 0: wait for the process it left; False when
        there is none to wait for."""
        pid = self._read_pid_file()
        if pid <= 0:
            return False
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        self.pid, self.pidfd = pid, pidfd
        self.loop.children.add(pid)
        self.loop.watch(pidfd, selectors.EVENT_READ, self._exited)
        return True

    def _timed_out(self) -> None:
        self.timer = None
        self.timed_out = True
        diag(f"exec in container {self.ctr.id}: timed out after {self.timeout} s, killing")
        pid = self._read_pid_file()
        if pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.runtime_code is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)

    def _exited(self, mask: int) -> None:
        try:
            info = os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            diag(f"exec in container {self.ctr.id}: {self.pid} is not our child; "
                 "exit code unknown")
            code = 255
        else:
            if info is None:
                return
            code = exit_code_of(info)
        self.loop.unwatch(self.pidfd)
        os.close(self.pidfd)
        self.pidfd = -1
        self.loop.reaped(self.pid)
        if self.runtime_code is None:
            self.runtime_code = code
            if self.detached:
                self.loop.defer_sweep -= 1
                if code == 0 and not self.timed_out and self._follow():
                    if self.console is not None:
                        self._console_ready(0)
                    return
        self.loop.execs.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.console is not None:
            for sock in self.console.fds():
                self.loop.unwatch(sock)
            master = self.console.master if self.console.poll() else None
            self.console.close()
            self.console = None
            if not self.started:
                self._started(master)
        elif not self.started:
            self._started()
        self.conn.reply({"ok": True, "event": "exited", "returncode": code,
                         "timed_out": self.timed_out})


def _detached(argv: list[str]) -> bool:
    """Whether the runtime's ``exec`` options (before the container id) hold --detach."""
    try:
        start = argv.index("exec") + 1
    except ValueError:
        return False
    for arg in argv[start:]:
        if not arg.startswith("-"):
            return False
        if arg in ("--detach", "-d"):
            return True
    return False
