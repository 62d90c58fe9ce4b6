"""The client's side of criolib's monitor: requests, the group lock, starting a monitor.

docs/conmon-design.md: one SEQPACKET connection per request to
``<run_dir>/monitors/<group>.sock``; the group's ``.lock`` is held (flock) by a client
while it connects (or starts the monitor) and sends its create request, and by a
monitor while it decides to exit, so a client never talks to a monitor that is on its
way out. The lock is released before the runtime's create runs: the monitor counts the
open connection as busy, so the creates of a pod run side by side.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from criolib import _exec
from criolib.conmon._errors import (
    MonitorError,
    MonitorGone,
    MonitorProtocolError,
    MonitorStartError,
)
from criolib.conmon._wire import _WireError, connect_seqpacket, recv_msg, send_msg
from criolib.errors import ExecError

__all__ = [
    "DAEMON_START_TIMEOUT",
    "NoMonitor",
    "ReplyTimeout",
    "connect",
    "group_lock",
    "log_tail",
    "receive",
    "request",
    "send_request",
    "spawn_daemon",
]

log = logging.getLogger("criolib.conmon")

#: How long a new monitor process may take to say ``ready`` (Python's start-up is
#: ~20 ms; a loaded machine is given plenty).
DAEMON_START_TIMEOUT = 30.0
_CONNECT_TIMEOUT = 10.0
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_TAIL = 2000


class NoMonitor(MonitorGone):
    """Nobody listens on the monitor socket (callers mostly turn it into a
    ContainerExited, a MonitorGone with more words, or a start)."""


class ReplyTimeout(MonitorError, TimeoutError):
    """No reply within the time asked (internal: ``wait`` turns it into None)."""


def connect(path: str, what: str) -> socket.socket:
    """A connection to the monitor socket ``path``; :class:`NoMonitor` if nobody listens."""
    try:
        return connect_seqpacket(path, timeout=_CONNECT_TIMEOUT)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise NoMonitor(f"{what}: no monitor listens on {path} ({exc.strerror})") from exc
    except OSError as exc:
        if exc.errno in (errno.ENOTSOCK, errno.ECONNRESET):
            raise NoMonitor(f"{what}: no monitor listens on {path} "
                            f"({exc.strerror})") from exc
        raise MonitorError(f"{what}: cannot connect to the monitor socket {path}: "
                           f"{exc.strerror or exc}") from exc


def receive(sock: socket.socket, timeout: float | None,
            what: str) -> tuple[dict[str, Any], list[int]]:
    """The next message on ``sock`` and its fds.

    :class:`ReplyTimeout` after ``timeout`` s, :class:`NoMonitor` when the monitor
    closed the connection (it died), :class:`MonitorProtocolError` for junk.
    """
    if timeout is not None:
        # poll, not settimeout: a timeout of 0 would make recv non-blocking (EAGAIN).
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        if not poller.poll(max(0.0, timeout) * 1000):
            raise ReplyTimeout(f"{what}: no answer from the monitor within {timeout:g} s")
    sock.settimeout(None)
    try:
        message, fds = recv_msg(sock)
    except _WireError as exc:
        raise MonitorProtocolError(f"{what}: unreadable message from the monitor: "
                                   f"{exc}") from exc
    except ConnectionResetError:
        message, fds = None, []
    except OSError as exc:
        raise MonitorError(f"{what}: reading the monitor's reply failed: "
                           f"{exc.strerror or exc}") from exc
    if message is None:
        raise NoMonitor(f"{what}: the monitor closed the connection without an answer "
                        "(it died?)")
    if not isinstance(message.get("ok"), bool):
        for fd in fds:
            os.close(fd)
        raise MonitorProtocolError(f"{what}: the monitor's reply has no 'ok': "
                                   f"{str(message)[:200]}")
    return message, fds


def send_request(path: str, message: dict[str, Any], what: str,
                 fds: Sequence[int] = ()) -> socket.socket:
    """A new connection to the monitor with ``message`` sent on it (the caller reads
    the reply with :func:`receive` and closes it).

    Once this returns the connection sits in the monitor's accept queue (or is
    accepted): a monitor deciding to exit accepts it under the group lock and stays.
    """
    sock = connect(path, what)
    try:
        send_msg(sock, message, list(fds))
    except (BrokenPipeError, ConnectionResetError) as exc:
        sock.close()
        raise NoMonitor(f"{what}: the monitor closed the connection ({exc.strerror})"
                        ) from exc
    except (OSError, _WireError) as exc:
        sock.close()
        raise MonitorError(f"{what}: cannot send the request to the monitor: "
                           f"{exc}") from exc
    return sock


def request(path: str, message: dict[str, Any], what: str, *, timeout: float | None = 30.0,
            fds: Sequence[int] = ()) -> dict[str, Any]:
    """Send one request on a new connection and return the reply (fds closed)."""
    with contextlib.closing(send_request(path, message, what, fds)) as sock:
        reply, got = receive(sock, timeout, what)
        for fd in got:
            os.close(fd)
        return reply


@contextlib.contextmanager
def group_lock(path: Path) -> Iterator[None]:
    """Hold the group's flock (exclusive) for the ``with`` body."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise MonitorError(f"cannot open the monitor lock {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


def log_tail(path: Path, size: int = _TAIL) -> str:
    """The last ``size`` bytes of the monitor's log, as text ("" if there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - size))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


def _read_line(fd: int, timeout: float) -> tuple[bytes, bool]:
    """Read up to a newline or EOF from the sync pipe; (data, whether time ran out)."""
    deadline = time.monotonic() + timeout
    data = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            return data, True
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data, False


def spawn_daemon(python: str, *, group: str, socket_path: Path, lock_path: Path,
                 log_path: Path, idle_exit: float) -> int:
    """Start the monitor process of ``group``; its pid once it said ``ready``.

    The caller holds the group lock. The bootstrap double-forks (the monitor is not
    our child: it outlives us), so the direct child is reaped here; the sync pipe
    carries ``ready <pid>`` or ``error <message>``. Anything else raises
    :class:`MonitorStartError` with the tail of the group's log.
    """
    from criolib.conmon._daemon import daemon_argv

    what = f"criolib monitor of group {group!r}"
    read_end, write_end = os.pipe()
    try:
        argv = daemon_argv(python, socket=str(socket_path), lock=str(lock_path),
                           sync_fd=write_end, idle_exit=idle_exit)
        env = {"PATH": os.environ.get("PATH", _DEFAULT_PATH)}
        try:
            with open(log_path, "ab") as log_file:
                proc = _exec.spawn(argv, env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=log_file,
                                   pass_fds=[write_end], pdeathsig=None, new_session=True,
                                   what=what)
        except (OSError, ExecError) as exc:
            raise MonitorStartError(f"{what}: cannot start {python}: {exc}") from exc
        os.close(write_end)
        write_end = -1
        line, timed_out = _read_line(read_end, DAEMON_START_TIMEOUT)
        if not _exec.wait_exit(proc, 5.0):
            _exec.stop(proc, grace=1.0)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    text = line.decode(errors="replace").strip()
    word, _, rest = text.partition(" ")
    if word == "ready" and rest.isdigit():
        log.debug("%s started: pid %s", what, rest)
        return int(rest)
    if word == "error":
        cause = rest
    elif text:
        cause = f"it said {text[:200]!r}"
    elif timed_out:
        cause = f"it did not say ready within {DAEMON_START_TIMEOUT:g} s"
    elif proc.returncode:
        cause = f"it exited with status {proc.returncode} without saying ready"
    else:
        cause = "it closed the sync pipe without saying ready"
    tail = log_tail(log_path)
    detail = f"; its log {log_path} ends with: {tail}" if tail else ""
    raise MonitorStartError(f"{what} did not start: {cause}{detail}")
