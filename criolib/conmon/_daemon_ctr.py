"""One supervised container in criolib's monitor process: create, output, stdin, exit.

docs/conmon-design.md "criolib monitor wire protocol" (``create``, ``wait``,
``resize``, ``reopen_log``), "CRI log format" and the exit/OOM files. The runtime's
``create`` runs asynchronously in the loop; once it exited 0 the init (reparented to
us, a subreaper) is watched through a pidfd. Stdlib only.

stdin: attach clients' packets go to the stdin pipe (or the pty master), queued while
the pipe is full (past :data:`STDIN_LIMIT` no client is read until it drains). With
``stdin_once`` the container's stdin is closed the first time any attach client's input
ends while it could still send, as conmon's ``terminate_remote_sock`` does: its recv
returns 0 bytes (it shut down writing, or closed), its recv or send fails (e.g.
ECONNRESET: it closed with output unread), or it is dropped (stuck for 30 s) or goes
away while its stdin was not being read (paused by a full stdin queue). Clients closed
because the container exited do not count. Queued stdin is written first. For pipes
the container reads EOF; for a terminal only our duplicate of the master is closed, so
the container sees nothing (a pty has no "close the writing side"; conmon leaves the
pty open the same way). An exited container is dropped from the monitor's table once
its exit files are written and its waiters answered.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import selectors
import signal
import struct
import termios
import time

from criolib.conmon._crilog import CRILogFramer, LogFile
from criolib.conmon._daemon_attach import AttachServer
from criolib.conmon._daemon_loop import _BadRequest
from criolib.conmon._daemon_output import READ_SIZE, OutputMixin, grow_pipe
from criolib.conmon._daemon_proc import (
    ConsoleSocket,
    describe,
    diag,
    exit_code_of,
    is_str_dict,
    is_str_list,
    open_devnull,
    spawn,
)
from criolib.conmon._exitfile import memory_cgroup_dir, oom_kill_count, write_exit_files

TYPE_CHECKING = False
if TYPE_CHECKING:

    from criolib.conmon._daemon_loop import ControlConn, Loop, Timer

__all__ = ["STDIN_LIMIT", "Container"]

#: Stdin queued for the container past which attach clients are not read.
STDIN_LIMIT = 1024 * 1024


def _str(message: dict[str, object], name: str, *, optional: bool = False) -> str | None:
    value = message.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise _BadRequest(f"field {name!r} must be a non-empty string, not {value!r}")
    return value


def _bool(message: dict[str, object], name: str) -> bool:
    value = message.get(name, False)
    if not isinstance(value, bool):
        raise _BadRequest(f"field {name!r} must be true or false, not {value!r}")
    return value


def _int(message: dict[str, object], name: str, default: int) -> int:
    value = message.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise _BadRequest(f"field {name!r} must be an integer, not {value!r}")
    return value


def _timeout(message: dict[str, object]) -> float | None:
    value = message.get("timeout")
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise _BadRequest(f"field 'timeout' must be a number of seconds > 0, not {value!r}")
    return float(value)


class _SpawnFailed(Exception):
    """The runtime binary could not be executed."""


class Container(OutputMixin):
    """A container from its runtime ``create`` to its exit files."""

    def __init__(self, loop: Loop, cid: str, message: dict[str, object]) -> None:
        self.loop = loop
        self.id = cid
        argv, env = message.get("argv"), message.get("env", {})
        if not is_str_list(argv):
            raise _BadRequest(f"field 'argv' must be a non-empty list of strings, not {argv!r}")
        if not is_str_dict(env):
            raise _BadRequest("field 'env' must map strings to strings")
        self.argv: list[str] = argv  # type: ignore[assignment]
        self.env: dict[str, str] = env  # type: ignore[assignment]
        self.pid_file = _str(message, "pid_file") or ""
        self.exit_file = _str(message, "exit_file") or ""
        self.persist_dir = _str(message, "persist_dir", optional=True)
        self.attach_path = _str(message, "attach") or ""
        self.log_path = _str(message, "log_path", optional=True)
        self.terminal = _bool(message, "terminal")
        self.stdin = _bool(message, "stdin")
        self.stdin_once = _bool(message, "stdin_once")
        self.console_path = _str(message, "console_socket", optional=self.terminal is False)
        self.log_size_max = _int(message, "log_size_max", -1)
        max_line = _int(message, "log_max_line", 16 * 1024)
        if max_line < 1:
            raise _BadRequest(f"field 'log_max_line' must be >= 1, not {max_line}")
        self.framer = CRILogFramer(max_line)
        self.timeout = _timeout(message) or 240.0
        self.state = "creating"
        self.conn: ControlConn | None = None
        self.runtime_pid = 0
        self.runtime_fd = -1
        self.timer: Timer | None = None
        self.timed_out = False
        self.console: ConsoleSocket | None = None
        self.pid: int | None = None
        self.pidfd = -1
        self.outputs: dict[int, str] = {}
        self.master: int | None = None
        self.stdin_fd: int | None = None
        self.stdin_queue = bytearray()
        self.close_stdin_when_flushed = False
        self.paused = False
        self.log: LogFile | None = None
        self.log_error: str | None = None
        self.log_dropped = 0
        self.log_created = False
        self.attach: AttachServer | None = None
        self.cgroup: str | None = None
        self.oom_base: int | None = None
        self.exit_code: int | None = None
        self.oom = False
        self.finished_at_ns: int | None = None
        self.waiters: list[ControlConn] = []

    # -- create ------------------------------------------------------------------------

    @classmethod
    def create(cls, loop: Loop, conn: ControlConn, message: dict[str, object]) -> None:
        """Start the runtime's create for the request; the reply comes when it exits."""
        cid = _str(message, "id") or ""
        old = loop.containers.get(cid)
        if old is not None and old.state in ("creating", "running"):
            raise _BadRequest(f"container {cid!r} is already supervised", "exists")
        ctr = cls(loop, cid, message)
        loop.forgotten.pop(cid, None)
        ctr.conn = conn
        try:
            ctr._spawn_create()
        except _SpawnFailed as exc:
            ctr._release()
            conn.reply({"ok": False, "error": "create-failed", "returncode": 127,
                        "message": f"container {cid!r}: cannot run {ctr.argv[0]}: {exc}"})
            return
        except OSError as exc:
            ctr._release()
            where = f" {exc.filename}" if exc.filename else ""
            raise _BadRequest(f"container {cid!r}: cannot prepare{where}: {exc.strerror}",
                              "internal") from exc
        except BaseException:
            ctr._release()
            raise
        loop.containers[cid] = ctr

    def _spawn_create(self) -> None:
        if self.log_path is not None:
            self.log_created = not os.path.exists(self.log_path)
            self.log = LogFile(self.log_path, self.log_size_max)
        # Bound before the runtime runs, so success cannot fail afterwards.
        self.attach = AttachServer(self.loop, self.attach_path, on_stdin=self._stdin_data,
                                   on_stdin_eof=self._stdin_eof,
                                   on_unblocked=self._unblocked)
        child: list[int] = []
        try:
            devnull = open_devnull()
            child.append(devnull)
            if self.terminal:
                self.console = ConsoleSocket(self.console_path or "")
                stdio = (devnull, devnull, devnull)
            else:
                out_r, out_w = os.pipe2(os.O_CLOEXEC)
                self.outputs[out_r] = "stdout"
                child.append(out_w)
                err_r, err_w = os.pipe2(os.O_CLOEXEC)
                self.outputs[err_r] = "stderr"
                child.append(err_w)
                for fd in (out_r, err_r):
                    grow_pipe(fd)
                in_r = devnull
                if self.stdin:
                    in_r, self.stdin_fd = os.pipe2(os.O_CLOEXEC)
                    child.append(in_r)
                    os.set_blocking(self.stdin_fd, False)
                for fd in self.outputs:
                    os.set_blocking(fd, False)
                stdio = (in_r, out_w, err_w)
            try:
                self.runtime_pid = spawn(self.argv, self.env, *stdio)
            except OSError as exc:
                raise _SpawnFailed(str(exc)) from exc
        finally:
            for fd in child:
                os.close(fd)
        self.loop.children.add(self.runtime_pid)
        self.runtime_fd = os.pidfd_open(self.runtime_pid)
        self.loop.defer_sweep += 1
        self.loop.watch(self.runtime_fd, selectors.EVENT_READ, self._runtime_exited)
        if self.console is not None:
            for sock in self.console.fds():
                self.loop.watch(sock, selectors.EVENT_READ, self._console_ready)
        self.timer = self.loop.call_later(self.timeout, self._create_timeout)

    def _console_ready(self, mask: int) -> None:
        console = self.console
        if console is None:
            return
        for sock in console.fds():
            self.loop.unwatch(sock)
        console.poll()
        for sock in console.fds():
            self.loop.watch(sock, selectors.EVENT_READ, self._console_ready)

    def _create_timeout(self) -> None:
        self.timer = None
        self.timed_out = True
        diag(f"container {self.id}: create timed out after {self.timeout} s, killing")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.runtime_pid, signal.SIGKILL)

    def _runtime_exited(self, mask: int) -> None:
        info = os.waitid(os.P_PIDFD, self.runtime_fd, os.WEXITED | os.WNOHANG)
        if info is None:
            return
        self.loop.unwatch(self.runtime_fd)
        os.close(self.runtime_fd)
        self.runtime_fd = -1
        self.loop.reaped(self.runtime_pid)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        code = exit_code_of(info)
        try:
            if self.timed_out:
                self._create_failed(None, "timed out")
            elif code != 0:
                self._create_failed(code, f"runtime exited with {code}")
            else:
                try:
                    self._created()
                except Exception as exc:
                    diag(f"container {self.id}: after create: {describe(exc)}")
                    self._create_failed(0, f"container {self.id!r}: {exc}", kind="internal")
        finally:
            self.loop.defer_sweep -= 1
            self.loop.sigchld = True

    def _created(self) -> None:
        if self.console is not None:
            for sock in self.console.fds():
                self.loop.unwatch(sock)
            # The runtime sent the fd before it exited: it is in the socket by now.
            if not self.console.poll():
                raise OSError(errno.EPROTO, "the runtime sent no terminal on "
                              f"{self.console.path}")
            self.master = self.console.master
            self.console.close()
            self.console = None
            assert self.master is not None
            os.set_blocking(self.master, False)
            self.outputs[self.master] = "stdout"
            if self.stdin:
                # A dup so stdin_once can close it without hanging up the terminal
                # (conmon leaves the pty open as well).
                self.stdin_fd = os.dup(self.master)
        with open(self.pid_file, "rb") as f:
            pid = int(f.read().strip())
        self.pidfd = os.pidfd_open(pid)
        self.pid = pid
        self.loop.children.add(pid)
        self.loop.watch(self.pidfd, selectors.EVENT_READ, self._init_exited)
        self.cgroup = memory_cgroup_dir(pid)
        self.oom_base = oom_kill_count(self.cgroup)
        self.state = "running"
        self._resume()
        if self.conn is not None:
            self.conn.reply({"ok": True, "pid": pid})
            self.conn = None

    def _create_failed(self, returncode: int | None, message: str, *,
                       kind: str = "create-failed") -> None:
        stderr = b""
        for fd, stream in self.outputs.items():
            if stream == "stderr":
                with contextlib.suppress(OSError):
                    stderr = os.read(fd, READ_SIZE)
        if self.pidfd >= 0:
            # The init exists but cannot be supervised: do not leave it behind.
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        self._release()
        self.state = "failed"
        if self.loop.containers.get(self.id) is self:
            del self.loop.containers[self.id]
        waiters, self.waiters = self.waiters, []
        for conn in waiters:
            conn.on_close = None
            conn.reply({"ok": False, "error": "unknown",
                        "message": f"container {self.id!r} was not created: {message}"})
        if self.conn is not None:
            self.conn.reply({"ok": False, "error": kind, "returncode": returncode,
                             "message": message,
                             "stderr": stderr.decode(errors="replace")})
            self.conn = None

    def _release(self) -> None:
        """Close what create made (after a failure)."""
        if self.console is not None:
            for sock in self.console.fds():
                self.loop.unwatch(sock)
            self.console.close()
            self.console = None
        self._close_outputs()
        self._close_stdin()
        if self.attach is not None:
            self.attach.close()
            self.attach = None
        if self.log is not None:
            self.log.close()
            self.log = None
            if self.log_created and self.log_path is not None:
                with contextlib.suppress(OSError):
                    if os.path.getsize(self.log_path) == 0:
                        os.unlink(self.log_path)
        if self.pidfd >= 0:
            self.loop.unwatch(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = -1
        if self.pid is not None:
            # Reaped by the sweep once it dies.
            self.loop.children.discard(self.pid)
            self.loop.sigchld = True

    # -- stdin -------------------------------------------------------------------------

    def _stdin_data(self, data: bytes) -> None:
        if self.stdin_fd is None or self.close_stdin_when_flushed:
            return
        if not self.stdin_queue:
            try:
                n = os.write(self.stdin_fd, data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                diag(f"container {self.id}: stdin: {exc}")
                self._close_stdin()
                return
            data = data[n:]
            if not data:
                return
            self.loop.watch(self.stdin_fd, selectors.EVENT_WRITE, self._stdin_writable)
        self.stdin_queue += data
        if len(self.stdin_queue) >= STDIN_LIMIT and self.attach is not None:
            self.attach.set_read_stdin(False)

    def _stdin_writable(self, mask: int) -> None:
        if self.stdin_fd is None:
            return
        try:
            n = os.write(self.stdin_fd, self.stdin_queue)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            diag(f"container {self.id}: stdin: {exc}")
            self._close_stdin()
            return
        del self.stdin_queue[:n]
        if len(self.stdin_queue) < STDIN_LIMIT and self.attach is not None:
            self.attach.set_read_stdin(True)
        if not self.stdin_queue:
            self.loop.unwatch(self.stdin_fd)
            if self.close_stdin_when_flushed:
                self._close_stdin()

    def _stdin_eof(self) -> None:
        if self.stdin_once and self.stdin_fd is not None:
            if self.stdin_queue:
                self.close_stdin_when_flushed = True
            else:
                self._close_stdin()

    def _close_stdin(self) -> None:
        if self.stdin_fd is not None:
            self.loop.unwatch(self.stdin_fd)
            os.close(self.stdin_fd)
            self.stdin_fd = None
        self.stdin_queue.clear()

    # -- exit --------------------------------------------------------------------------

    def _init_exited(self, mask: int) -> None:
        try:
            info = os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            # Not our child after all (the runtime did not leave it to us): the pidfd
            # tells us it ended, not how.
            info = None
            code = 255
            diag(f"container {self.id}: init {self.pid} is not our child; exit code unknown")
        else:
            if info is None:
                return
            code = exit_code_of(info)
        finished = time.time_ns()
        self.loop.unwatch(self.pidfd)
        os.close(self.pidfd)
        self.pidfd = -1
        if self.pid is not None:
            self.loop.reaped(self.pid)
        self._exited(code, finished)

    def _exited(self, code: int, finished_ns: int) -> None:
        # What the init wrote before dying is in the pipes: read it, bounded (a process
        # it left behind may hold the pipes open and write for ever).
        self._drain()
        self._close_outputs()
        self._close_stdin()
        if self.log is not None:
            with contextlib.suppress(OSError):
                self.log.sync()
            self.log_error, self.log_dropped = self.log.error, self.log.dropped
            self.log.close()
            self.log = None
        now = oom_kill_count(self.cgroup)
        self.oom = self.oom_base is not None and now is not None and now > self.oom_base
        self.exit_code = code
        self.finished_at_ns = finished_ns
        self.state = "exited"
        try:
            write_exit_files(self.exit_file, self.persist_dir, code, finished_ns, self.oom)
        except OSError as exc:
            diag(f"container {self.id}: cannot write exit files: {exc}")
        if self.attach is not None:
            # No new attach clients from here; the ones there get the rest (<= 1 s).
            self.attach.finish()
            self.attach = None
        waiters, self.waiters = self.waiters, []
        for conn in waiters:
            conn.on_close = None
            conn.reply(self._wait_reply())
        # Dropped now, so a long-lived group's table does not grow: status no longer
        # lists it; a late wait gets the kept reply (or "unknown" once that is gone
        # too: the client then reads the exit file written above).
        if self.loop.containers.get(self.id) is self:
            self.loop.forget(self.id, self._wait_reply())

    def _wait_reply(self) -> dict[str, object]:
        return {"ok": True, "exit_code": self.exit_code, "oom": self.oom,
                "finished_at_ns": self.finished_at_ns}

    # -- requests ----------------------------------------------------------------------

    def alive(self) -> bool:
        """Whether the container is being created or its init runs."""
        return self.state in ("creating", "running")

    def status(self) -> dict[str, object]:
        """The ``status`` reply's entry for this container.

        ``log_error``: the text of the last failed log write (null if none),
        ``log_dropped``: the bytes of records dropped by failed writes so far.
        """
        if self.log is not None:
            self.log_error, self.log_dropped = self.log.error, self.log.dropped
        return {"pid": self.pid, "running": self.state == "running",
                "exit_code": self.exit_code, "oom": self.oom, "state": self.state,
                "log_error": self.log_error, "log_dropped": self.log_dropped}

    def add_waiter(self, conn: ControlConn) -> None:
        """Answer ``conn`` once the exit files are written (now, if they are)."""
        if self.state == "exited":
            conn.reply(self._wait_reply())
            return
        self.waiters.append(conn)

        def gone() -> None:
            with contextlib.suppress(ValueError):
                self.waiters.remove(conn)
        conn.on_close = gone

    def resize(self, rows: int, cols: int) -> None:
        """TIOCSWINSZ on the terminal; ignored without one (like conmon)."""
        if self.master is not None:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def reopen_log(self) -> None:
        """Reopen the CRI log (after rotation); nothing to do once exited."""
        if self.log is not None:
            try:
                self.log.reopen()
            except OSError as exc:
                raise _BadRequest(f"container {self.id!r}: cannot reopen log "
                                  f"{self.log_path}: {exc.strerror}", "internal") from exc

