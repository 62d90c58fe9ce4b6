"""The criolib monitor's control wire: one JSON object per SEQPACKET packet, with fds.

Stdlib only: the monitor process imports it (docs/conmon-design.md). Unix socket
paths are limited to 107 bytes; longer ones are reached through the directory's
``/proc/self/fd/N`` alias, which both ``bind`` and ``connect`` accept.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import socket

__all__ = [
    "MAX_FDS",
    "MAX_MESSAGE",
    "bind_seqpacket",
    "connect_seqpacket",
    "recv_msg",
    "send_msg",
]

#: The largest message either side sends (requests carry argv and env).
MAX_MESSAGE = 256 * 1024
#: The most descriptors one message carries (exec: stdin, stdout, stderr).
MAX_FDS = 4
_SUN_PATH_MAX = 107


class _WireError(Exception):
    """A message could not be sent or read (the client maps it to a MonitorError)."""


def send_msg(
    sock: socket.socket, message: dict[str, object], fds: list[int] | tuple[int, ...] = ()
) -> None:
    """Send ``message`` as one packet, with ``fds`` attached (SCM_RIGHTS)."""
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise _WireError(f"message of {len(data)} bytes is larger than {MAX_MESSAGE}")
    ancillary = []
    if fds:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
    sock.sendmsg([data], ancillary)


def recv_msg(sock: socket.socket) -> tuple[dict[str, object] | None, list[int]]:
    """Receive one message and the fds that came with it; (None, []) at end of stream.

    The caller owns (and must close) the returned fds, also when it rejects the message.
    They arrive close-on-exec (``MSG_CMSG_CLOEXEC``, atomically): a process the monitor
    spawns gets only the ones it dup2's onto its stdio, never the others.
    """
    data, ancdata, flags, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * 4),
                                           socket.MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(array.array("i", payload[:usable]))
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        raise _WireError("message truncated (too large, or too many fds)")
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    try:
        message = json.loads(data)
    except ValueError as exc:
        for fd in fds:
            os.close(fd)
        raise _WireError(f"message is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        for fd in fds:
            os.close(fd)
        raise _WireError("message is not a JSON object")
    return message, fds


def _short(path: str) -> tuple[str, int | None]:
    """``path`` itself, or its /proc/self/fd alias (and the dir fd to close after)."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        return path, None
    directory, name = os.path.split(path)
    dirfd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{dirfd}/{name}", dirfd


def bind_seqpacket(path: str, *, backlog: int = 64, mode: int = 0o600) -> socket.socket:
    """A listening SEQPACKET socket at ``path`` (a stale socket file is replaced)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    address, dirfd = _short(path)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        # The umask decides the mode at bind; chmod after would leave a window.
        old = os.umask(0o777 & ~mode)
        try:
            sock.bind(address)
        finally:
            os.umask(old)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    finally:
        if dirfd is not None:
            os.close(dirfd)
    return sock


def connect_seqpacket(path: str, *, timeout: float | None = None) -> socket.socket:
    """A SEQPACKET connection to the socket at ``path``; OSError when nobody listens."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    address, dirfd = _short(path)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    finally:
        if dirfd is not None:
            os.close(dirfd)
    return sock
