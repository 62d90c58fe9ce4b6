"""Process plumbing for driving the conmon binary: its sync pipes, its pid, its fifos.

conmon (containers/conmon, 2.1.6 here) reports to its caller through pipes named by
environment variables: ``_OCI_SYNCPIPE`` gets one JSON object per line, ``{"data": N}``
with ``--api-version 1`` (the container's pid, then for an exec its exit code; a
negative value and ``"message"`` on failure); ``_OCI_ATTACHPIPE`` gets ``{"data": 0}``
once an exec's attach socket listens; a write to ``_OCI_STARTPIPE`` lets it go on
(src/parent_pipe_fd.c, src/conmon.c). Without ``--sync`` it double-forks, so the
process that stays is no child of ours: its pid comes from ``--conmon-pidfile`` and we
wait for it with a pidfd (pidfd_open(2) works on any process).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import selectors
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from criolib.conmon._errors import MonitorError

__all__ = [
    "CTL_REOPEN_LOG",
    "CTL_RESIZE",
    "SyncPipe",
    "SyncTimeout",
    "conmon_alive",
    "read_pid_file",
    "wait_pid_exit",
    "wait_replaced",
    "write_ctl",
]

#: conmon's control fifo messages "<type> <rows> <cols>\n" (src/ctrl.c,
#: WIN_RESIZE_EVENT and REOPEN_LOGS_EVENT).
CTL_RESIZE = 1
CTL_REOPEN_LOG = 2


class SyncTimeout(MonitorError):
    """No message came on a sync pipe before the deadline (caught inside the backend,
    which raises an error naming the container instead)."""


class SyncPipe:
    """The reading end of one of conmon's sync pipes: JSON objects, one per line."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = b""
        self._eof = False

    def message(self, deadline: float | None) -> dict[str, Any] | None:
        """The next object; None at end of file; :class:`SyncTimeout` past ``deadline``
        (a ``time.monotonic()`` value); ValueError for a line that is not an object."""
        while b"\n" not in self._buf and not self._eof:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise SyncTimeout
            with selectors.DefaultSelector() as sel:
                sel.register(self.fd, selectors.EVENT_READ)
                if not sel.select(left):
                    raise SyncTimeout
            chunk = os.read(self.fd, 65536)
            if chunk:
                self._buf += chunk
            else:
                self._eof = True
        if not self._buf.strip():
            return None
        line, _, self._buf = self._buf.partition(b"\n")
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise ValueError(f"not a JSON object: {line[:200]!r}")
        return obj

    def close(self) -> None:
        """Close the descriptor."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def read_pid_file(path: str | os.PathLike[str]) -> int | None:
    """The pid in a pid file (conmon's and the runtime's hold bare decimals), or None."""
    try:
        text = Path(path).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        pid = int(text)
    except ValueError:
        return None
    return pid if pid > 0 else None


def conmon_alive(pid: int | None, cuuid: str) -> bool:
    """Whether ``pid`` is a live conmon started for ``cuuid`` (not a reused pid).

    Checked on /proc/<pid>/cmdline, which conmon never rewrites: the program is a
    conmon and ``-u <cuuid>`` is among its arguments.
    """
    if pid is None or pid <= 0:
        return False
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    if stat.rsplit(b")", 1)[-1].split()[:1] in ([b"Z"], [b"X"]):
        return False
    args = raw.split(b"\0")
    if not args or b"conmon" not in os.path.basename(args[0]):
        return False
    want = cuuid.encode()
    return any(a == b"-u" and b == want for a, b in itertools.pairwise(args))


def wait_pid_exit(pid: int, timeout: float | None) -> bool:
    """Block until process ``pid`` exits (True) or ``timeout`` s pass (False).

    A pidfd in a selector: no polling, and it works for a process that is not our child
    (conmon double-forked away from us).
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(pidfd, selectors.EVENT_READ)
            return bool(sel.select(timeout))
    finally:
        os.close(pidfd)


def write_ctl(path: str | os.PathLike[str], kind: int, rows: int, cols: int) -> None:
    """Send one message to conmon's control fifo (``ctl`` in its bundle directory).

    Opened non-blocking: with no conmon reading it the open fails (ENXIO) instead of
    waiting for ever. Raises OSError.
    """
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.write(fd, f"{kind} {rows} {cols}\n".encode())
    finally:
        os.close(fd)


# inotify(7): watch the log's directory for the new file conmon renames into place.
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_libc: ctypes.CDLL | None = None


def _inotify(directory: str) -> int:
    global _libc  # noqa: PLW0603 - loaded once, on first use
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fd = int(_libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    wd = int(_libc.inotify_add_watch(fd, os.fsencode(directory), _IN_MOVED_TO | _IN_CREATE))
    if wd < 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, os.strerror(err), directory)
    return fd


def _inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def wait_replaced(path: str, before: tuple[int, int] | None, timeout: float,
                  alive: Callable[[], bool], trigger: Callable[[], None]) -> bool:
    """Call ``trigger()`` and wait until ``path`` is a different file than ``before``
    (conmon's log reopen writes ``<log>.tmp`` and renames it over the log,
    src/ctr_logging.c); False when ``timeout`` s pass or ``alive()`` turns false first.

    The directory is watched (inotify) before the trigger, so the rename cannot slip
    between the request and the wait.
    """
    fd = _inotify(os.path.dirname(path) or ".")
    deadline = time.monotonic() + timeout
    try:
        trigger()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                now_ino = _inode(path)
                if now_ino is not None and now_ino != before:
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or not alive():
                    return False
                # Wake up now and then to notice a conmon that died meanwhile.
                if sel.select(min(left, 0.5)):
                    with contextlib.suppress(BlockingIOError):
                        while os.read(fd, 4096):
                            pass
    finally:
        os.close(fd)

