"""The selector loop of criolib's monitor process and its control connections.

docs/conmon-design.md "criolib monitor wire protocol" and "Lifetime": one
``selectors`` loop serves the control socket (one request per connection, replies as
JSON packets), the containers' output, attach and exec; it reaps orphans (it is a
child subreaper) and exits when idle, holding ``<group>.lock``. Stdlib only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import selectors
import signal
import socket
import sys
import time

from criolib.conmon._daemon_proc import describe, diag
from criolib.conmon._wire import _WireError, recv_msg, send_msg

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from criolib.conmon._daemon_ctr import Container
    from criolib.conmon._daemon_exec import Exec

__all__ = ["FORGOTTEN_KEPT", "ControlConn", "Loop", "Timer"]

#: How many exited containers' wait replies the daemon keeps after dropping them.
FORGOTTEN_KEPT = 64


class _BadRequest(Exception):
    """A request the daemon refuses: answered with ``error`` = :attr:`kind`."""

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


class Timer:
    """A one-shot callback at a monotonic deadline; :meth:`cancel` to drop it."""

    __slots__ = ("callback", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], object]) -> None:
        self.deadline = deadline
        self.callback: Callable[[], object] | None = callback

    def cancel(self) -> None:
        """Do not call the callback."""
        self.callback = None


class ControlConn:
    """One control connection: one request, its reply (or replies, for exec)."""

    __slots__ = ("busy", "loop", "on_close", "sock")

    def __init__(self, loop: Loop, sock: socket.socket) -> None:
        self.loop = loop
        self.sock = sock
        self.busy = False
        self.on_close: Callable[[], object] | None = None
        sock.setblocking(False)
        loop.conns.add(self)
        loop.watch(sock, selectors.EVENT_READ, self._readable)

    def _readable(self, mask: int) -> None:
        try:
            message, fds = recv_msg(self.sock)
        except (BlockingIOError, InterruptedError):
            return
        except (_WireError, OSError) as exc:
            self.reply({"ok": False, "error": "invalid", "message": str(exc)})
            return
        if message is None:
            self.close()
            return
        if self.busy:
            for fd in fds:
                os.close(fd)
            self.reply({"ok": False, "error": "invalid",
                        "message": "one request per connection"})
            return
        self.busy = True
        try:
            self.loop.dispatch(self, message, fds)
        except Exception as exc:
            # ``fds`` holds what the handler did not take over.
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if isinstance(exc, _BadRequest):
                self.reply({"ok": False, "error": exc.kind, "message": str(exc)})
            else:
                diag(f"request {message.get('op')!r}: {describe(exc)}")
                self.reply({"ok": False, "error": "internal", "message": str(exc)})

    def reply(self, message: dict[str, object], fds: list[int] | tuple[int, ...] = (),
              *, final: bool = True) -> None:
        """Send ``message`` (with ``fds``); close the connection when ``final``."""
        if self.sock.fileno() < 0:
            return
        try:
            send_msg(self.sock, message, fds)
        except (OSError, _WireError) as exc:
            diag(f"cannot reply {message.get('event') or message.get('ok')}: {exc}")
            final = True
        if final:
            self.close()

    def close(self) -> None:
        """Close the connection (a pending wait or exec then has nobody to tell)."""
        if self.sock.fileno() < 0:
            return
        self.loop.unwatch(self.sock)
        self.sock.close()
        self.loop.conns.discard(self)
        callback, self.on_close = self.on_close, None
        if callback is not None:
            callback()


class Loop:
    """The daemon: the control socket, its containers and execs, one selector."""

    def __init__(self, listener: socket.socket, socket_path: str, lock_fd: int,
                 idle_exit: float) -> None:
        self.sel = selectors.DefaultSelector()
        self.listener = listener
        self.socket_path = socket_path
        self.socket_ino = os.stat(socket_path).st_ino
        self.lock_fd = lock_fd
        self.idle_exit = idle_exit
        self.timers: list[Timer] = []
        self.containers: dict[str, Container] = {}
        #: The wait replies of the last :data:`FORGOTTEN_KEPT` containers that exited
        #: and were dropped from :attr:`containers` (oldest first): a late ``wait`` still
        #: gets the exit and an ``exec`` gets "exited", in bounded memory; older ones
        #: are "unknown" (the client then reads the exit file).
        self.forgotten: dict[str, dict[str, object]] = {}
        self.execs: set[Exec] = set()
        self.conns: set[ControlConn] = set()
        #: pids reaped through their pidfd, never by the orphan sweep.
        self.children: set[int] = set()
        #: open attach connections and other activity that keeps the daemon up.
        self.holds = 0
        #: runtimes whose pid file is not read yet: the orphan it names must not be
        #: reaped by the sweep before we know it (create, detached exec).
        self.defer_sweep = 0
        self.sigchld = True
        listener.setblocking(False)
        self.watch(listener, selectors.EVENT_READ, self._accept)
        self._wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_w = wake_w
        signal.signal(signal.SIGCHLD, _ignore_signal)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        self.watch(self._wake_r, selectors.EVENT_READ, self._woken)

    # -- the selector ------------------------------------------------------------------

    def watch(self, fileobj: int | socket.socket, events: int,
              callback: Callable[[int], object]) -> None:
        """Call ``callback(mask)`` when ``fileobj`` is ready for ``events``."""
        try:
            self.sel.modify(fileobj, events, callback)
        except KeyError:
            self.sel.register(fileobj, events, callback)

    def unwatch(self, fileobj: int | socket.socket) -> None:
        """Stop watching ``fileobj`` (fine if it was not watched)."""
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(fileobj)

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        """Call ``callback()`` after ``delay`` seconds."""
        timer = Timer(time.monotonic() + delay, callback)
        self.timers.append(timer)
        return timer

    def run(self) -> int:
        """Serve until idle; the process's exit code."""
        idle_since: float | None = None
        while True:
            now = time.monotonic()
            self.timers = [t for t in self.timers if t.callback is not None]
            due = [t for t in self.timers if t.deadline <= now]
            for timer in due:
                callback, timer.callback = timer.callback, None
                if callback is not None:
                    self._guard(callback)
            if self.sigchld and not self.defer_sweep:
                self.sigchld = False
                self._sweep()
            if self._busy():
                idle_since = None
            elif idle_since is None:
                idle_since = now
            elif now - idle_since >= self.idle_exit:
                if self._try_exit():
                    return 0
                idle_since = time.monotonic()
            deadlines = [t.deadline for t in self.timers if t.callback is not None]
            if idle_since is not None:
                deadlines.append(idle_since + self.idle_exit)
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            ready = self.sel.select(timeout)
            current = self.sel.get_map()
            for key, mask in ready:
                # An earlier callback of this batch may have unwatched (and closed)
                # this fd, or changed what is watched on it: its event is stale, and the
                # fd number may already name another file. Level-triggered: a live
                # event comes again at the next select.
                if current.get(key.fileobj) is key:
                    self._guard(key.data, mask)

    def _guard(self, callback: Callable[..., object], *args: object) -> None:
        # One bad client or container must never take the loop down.
        try:
            callback(*args)
        except Exception as exc:
            diag(f"internal error in {getattr(callback, '__qualname__', callback)}: "
                 f"{describe(exc)}")

    def _woken(self, mask: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        self.sigchld = True

    def _sweep(self) -> None:
        """Reap orphans that became our children (we are a subreaper) and are not ours
        to wait for; a tracked pid is left to its pidfd handler."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid in self.children:
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(info.si_pid, os.WNOHANG)

    def forget(self, cid: str, wait_reply: dict[str, object]) -> None:
        """Drop the exited container ``cid``, keeping its wait reply (bounded)."""
        self.containers.pop(cid, None)
        self.forgotten.pop(cid, None)
        self.forgotten[cid] = wait_reply
        while len(self.forgotten) > FORGOTTEN_KEPT:
            del self.forgotten[next(iter(self.forgotten))]

    def reaped(self, pid: int) -> None:
        """``pid`` was waited for: forget it, and sweep orphans it may have hidden."""
        self.children.discard(pid)
        self.sigchld = True

    # -- lifetime ----------------------------------------------------------------------

    def _busy(self) -> bool:
        return bool(self.conns or self.execs or self.holds or any(
            c.alive() for c in self.containers.values()))

    def _try_exit(self) -> bool:
        """Exit if nobody holds the group lock and nobody is connecting."""
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            pass
        else:
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
            ControlConn(self, conn)
            return False
        # Keep a newer daemon's socket if one replaced ours.
        with contextlib.suppress(OSError):
            if os.stat(self.socket_path).st_ino == self.socket_ino:
                os.unlink(self.socket_path)
        self.listener.close()
        diag("idle: exiting")
        return True  # the lock goes with the process

    # -- requests ----------------------------------------------------------------------

    def _accept(self, mask: int) -> None:
        for _ in range(16):
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            ControlConn(self, conn)

    def container(self, message: dict[str, object]) -> Container:
        """The container the request's ``id`` names; ``unknown`` when none."""
        cid = message.get("id")
        if not isinstance(cid, str):
            raise _BadRequest(f"field 'id' must be a string, not {cid!r}")
        ctr = self.containers.get(cid)
        if ctr is None and cid in self.forgotten:
            raise _BadRequest(f"container {cid!r} has exited", "exited")
        if ctr is None:
            raise _BadRequest(f"container {cid!r} is not supervised by this monitor",
                             "unknown")
        return ctr

    def dispatch(self, conn: ControlConn, message: dict[str, object], fds: list[int]) -> None:
        """Run one request; replies (now or later) go to ``conn``."""
        from criolib.conmon._daemon_ctr import Container
        from criolib.conmon._daemon_exec import Exec

        op = message.get("op")
        if op != "exec" and fds:
            raise _BadRequest(f"op {op!r} takes no file descriptors")
        if op == "create":
            Container.create(self, conn, message)
        elif op == "status":
            reply: dict[str, object] = {
                "ok": True, "pid": os.getpid(),
                "containers": {cid: c.status() for cid, c in self.containers.items()}}
            if message.get("debug") is True:
                # Only on request: the list is long and costs every status call.
                reply["modules"] = sorted(sys.modules)
            conn.reply(reply)
        elif op == "wait":
            cid = message.get("id")
            done = self.forgotten.get(cid) if isinstance(cid, str) else None
            if done is not None:
                conn.reply(done)
            else:
                self.container(message).add_waiter(conn)
        elif op == "resize":
            rows, cols = message.get("rows"), message.get("cols")
            if not (_is_u16(rows) and _is_u16(cols)):
                raise _BadRequest(f"rows and cols must be integers 0-65535, not {rows!r}, "
                                 f"{cols!r}")
            self.container(message).resize(int(rows), int(cols))  # type: ignore[call-overload]
            conn.reply({"ok": True})
        elif op == "reopen_log":
            self.container(message).reopen_log()
            conn.reply({"ok": True})
        elif op == "exec":
            Exec.start(self, conn, self.container(message), message, fds)
        else:
            raise _BadRequest(f"unknown op {op!r}")


def _is_u16(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFFF


def _ignore_signal(signum: int, frame: object) -> None:
    # The wakeup fd does the work; the handler exists so the fd gets written.
    return None
