"""A supervised container's output in criolib's monitor process: read, log, broadcast.

docs/conmon-design.md "criolib monitor wire protocol" (output: pipes or the pty master →
the CRI log → every attach client) and "CRI log format". Stdlib only.

Back-pressure: while an attach client's queue is full the output is not read (the
container blocks, nothing is lost). A log write that fails (a full disk) costs the
records of that read, never the file's shape: :class:`~criolib.conmon._crilog.LogFile`
cuts the file back to its last whole record and counts what it dropped; the first error
is reported on the monitor's stderr, then at most one per 10 s; ``status`` shows the
last error and the dropped bytes (``log_error``, ``log_dropped``).

The drain when the init exited is bounded per fd, by the pipe's size (``F_GETPIPE_SZ``:
what the init can have left in it) or :data:`DRAIN_SECONDS`, whichever comes first: a
process that outlived the init (no pid namespace, or a shared one) and keeps writing
to the same pipe must not keep the loop, and so every other container of the monitor,
for ever. Our read end is closed after it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import selectors
import time

from criolib.conmon._crilog import format_timestamp
from criolib.conmon._daemon_proc import diag

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from criolib.conmon._crilog import CRILogFramer, LogFile
    from criolib.conmon._daemon_attach import AttachServer
    from criolib.conmon._daemon_loop import Loop

__all__ = ["DRAIN_SECONDS", "PIPE_SIZE", "READ_SIZE", "OutputMixin", "grow_pipe"]

#: Bytes per read of the container's output: framing is fastest around 128 KiB (bigger
#: reads cost more in allocation than they save in loop turns; measured).
READ_SIZE = 128 * 1024
#: The size output pipes are grown to (see grow_pipe); also the drain bound of a pty.
PIPE_SIZE = 1024 * 1024
#: The longest the exit drain reads one fd.
DRAIN_SECONDS = 1.0
#: fcntl F_SETPIPE_SZ / F_GETPIPE_SZ (linux/fcntl.h).
_F_SETPIPE_SZ = 1031
_F_GETPIPE_SZ = 1032


class OutputMixin:
    """The output half of :class:`~criolib.conmon._daemon_ctr.Container`."""

    loop: Loop
    id: str
    outputs: dict[int, str]
    master: int | None
    paused: bool
    state: str
    log: LogFile | None
    log_path: str | None
    log_error: str | None
    log_dropped: int
    framer: CRILogFramer
    attach: AttachServer | None

    def _resume(self) -> None:
        self.paused = False
        for fd, stream in self.outputs.items():
            self.loop.watch(fd, selectors.EVENT_READ, self._reader(fd, stream))

    def _pause(self) -> None:
        self.paused = True
        for fd in self.outputs:
            self.loop.unwatch(fd)

    def _unblocked(self) -> None:
        if self.paused and self.state == "running":
            self._resume()

    def _reader(self, fd: int, stream: str) -> Callable[[int], None]:
        def readable(mask: int) -> None:
            self._readable(fd, stream)
        return readable

    def _readable(self, fd: int, stream: str) -> None:
        if self.outputs.get(fd) != stream:
            return  # closed since (the loop skips such stale events too)
        for _ in range(8):
            if not self._read_once(fd, stream, drain=False) or self.paused:
                return

    def _read_once(self, fd: int, stream: str, *, drain: bool) -> int:
        """Read once from ``fd``: the bytes read, 0 at EAGAIN or end of the stream."""
        try:
            data = os.read(fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            # EIO: a pty whose slave side is closed everywhere.
            if exc.errno != errno.EIO:
                diag(f"container {self.id}: reading {stream}: {exc}")
            data = b""
        if not data:
            self.loop.unwatch(fd)
            del self.outputs[fd]
            if fd != self.master:
                os.close(fd)
            return 0
        self._emit(stream, data, drain)
        return len(data)

    def _drain(self) -> None:
        """Read what the init left in the outputs, bounded per fd (module docstring)."""
        for fd, stream in list(self.outputs.items()):
            try:
                budget = fcntl.fcntl(fd, _F_GETPIPE_SZ)
            except OSError:
                budget = PIPE_SIZE  # a pty master
            deadline = time.monotonic() + DRAIN_SECONDS
            while budget > 0 and time.monotonic() < deadline:
                n = self._read_once(fd, stream, drain=True)
                if not n:
                    break
                budget -= n
            else:
                diag(f"container {self.id}: {stream} still written after the init "
                     "exited (a process outlived it); not read further")

    def _emit(self, stream: str, data: bytes, drain: bool) -> None:
        log = self.log
        if log is not None:
            try:
                log.write(self.framer.frame(stream, data, format_timestamp(time.time_ns())))
            except OSError as exc:
                self.log_error, self.log_dropped = log.error, log.dropped
                if log.report_due(time.monotonic()):
                    diag(f"container {self.id}: cannot write log {self.log_path}: {exc}; "
                         f"{log.dropped} bytes dropped so far")
        if self.attach is not None and self.attach.broadcast(stream, data) and not drain:
            self._pause()

    def _close_outputs(self) -> None:
        for fd in list(self.outputs):
            self.loop.unwatch(fd)
            if fd != self.master:
                os.close(fd)
        self.outputs.clear()
        if self.master is not None:
            os.close(self.master)
            self.master = None


def grow_pipe(fd: int) -> None:
    """Give a container output pipe 1 MiB (the default unprivileged maximum).

    A burst then fills one pipe before the container blocks, and a wake-up of the
    monitor finds more to read and frame at once: fewer loop turns per megabyte, which
    is what bounds the log throughput (bench/conmon_monitor.py).
    """
    # pipe-max-size lowered by the admin: the 64 KiB default still works.
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
