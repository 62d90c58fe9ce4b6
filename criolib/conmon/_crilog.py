"""The CRI log *writer*: records in the format the kubelet reads, and the log file.

Format (kubelet pkg/kubelet/kuberuntime/logs, CRI "container logs" of the Kubernetes
v1 CRI): ``<timestamp> <stream> <tag> <message>\\n`` with an RFC3339Nano timestamp
(we write 9 fraction digits and the local offset ``+HH:MM``, like conmon), stream
``stdout``/``stderr`` and tag ``F`` (the record ends a line; the newline is not part of
the message) or ``P`` (partial: the line goes on in a later record of that stream).

Stdlib only: criolib's monitor process imports it (docs/conmon-design.md). The framer
is sans-I/O; :class:`LogFile` is the thin I/O shell with conmon's size maximum.
"""

from __future__ import annotations

import contextlib
import os
import time

__all__ = ["CRILogFramer", "LogFile", "format_timestamp"]

_STREAMS = (b"stdout", b"stderr")


def format_timestamp(time_ns: int) -> bytes:
    """``time_ns`` (since the epoch) as RFC3339Nano with 9 digits and the local offset.

    E.g. ``b"2026-11-27T10:22:34.000000042+00:00"`` (conmon writes the same shape; the
    kubelet parses any RFC3339Nano).
    """
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    tm = time.localtime(seconds)
    offset = tm.tm_gmtoff or 0
    sign = "+" if offset >= 0 else "-"
    offset_min = abs(offset) // 60
    return (f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d}T{tm.tm_hour:02d}:"
            f"{tm.tm_min:02d}:{tm.tm_sec:02d}.{nanos:09d}"
            f"{sign}{offset_min // 60:02d}:{offset_min % 60:02d}").encode()


def _has_long_line(data: bytes, max_line: int) -> bool:
    """Whether ``data`` may hold a run of more than ``max_line`` bytes without a newline.

    Such a run covers a whole aligned window of ``(max_line + 1) // 2`` bytes, so a
    memchr per window decides (a few calls for a 64 KiB read) without making an
    object per line; a newline-free window that belongs to no long line only costs
    the slow path.
    """
    if len(data) <= max_line:
        return False
    width = (max_line + 1) // 2
    if len(data) > 64 * width:
        return max(map(len, data.split(b"\n"))) > max_line
    find = data.find
    return any(find(b"\n", i, i + width) < 0
               for i in range(0, len(data) - width + 1, width))


class CRILogFramer:
    """Turns what one read of a stream returned into CRI log records (sans-I/O).

    Every record of one read shares its timestamp. Data after the last newline is
    written at once as a ``P`` record (no waiting for the rest, like conmon); a line
    longer than ``max_line`` bytes is cut into ``P`` records of ``max_line`` bytes, its
    last piece (1 to ``max_line`` bytes) being the ``F`` record.
    An empty line is an ``F`` record with an empty message. The framer keeps no state
    between reads: a line's continuation is simply the stream's next record.
    """

    __slots__ = ("max_line",)

    def __init__(self, max_line: int) -> None:
        if max_line < 1:
            raise ValueError(f"max_line must be >= 1, not {max_line}")
        self.max_line = max_line

    def frame(self, stream: str, data: bytes, timestamp: bytes) -> bytes:
        """The records for ``data`` read from ``stream`` (``"stdout"``/``"stderr"``)."""
        if not data:
            return b""
        if stream == "stdout":
            name = _STREAMS[0]
        elif stream == "stderr":
            name = _STREAMS[1]
        else:
            raise ValueError(f"stream must be 'stdout' or 'stderr', not {stream!r}")
        full = b"%s %s F " % (timestamp, name)
        if _has_long_line(data, self.max_line):
            return self._frame_long(name, data, timestamp)
        # The fast path: one C-level replace for every line of the read; the
        # replace leaves one prefix too many at the end, which the view drops.
        cut = data.rfind(b"\n") + 1
        if cut == len(data):
            body = data.replace(b"\n", b"\n" + full)
            return full + memoryview(body)[: -len(full)]
        partial = b"%s %s P " % (timestamp, name)
        if cut == 0:
            return partial + data + b"\n"
        body = data[:cut].replace(b"\n", b"\n" + full)
        return b"".join((full, memoryview(body)[: -len(full)], partial,
                         memoryview(data)[cut:], b"\n"))

    def _frame_long(self, name: bytes, data: bytes, timestamp: bytes) -> bytes:
        full = b"%s %s F " % (timestamp, name)
        partial = b"%s %s P " % (timestamp, name)
        max_line = self.max_line
        lines = data.split(b"\n")
        tail = lines.pop()
        out: list[bytes] = []
        for line in lines:
            rest = line
            while len(rest) > max_line:
                out.append(partial + rest[:max_line] + b"\n")
                rest = rest[max_line:]
            out.append(full + rest + b"\n")
        while tail:
            out.append(partial + tail[:max_line] + b"\n")
            tail = tail[max_line:]
        return b"".join(out)


class LogFile:
    """The CRI log file: append records, keep it under ``size_max``, reopen on request.

    ``size_max`` > 0: a record that would take the file past it first starts a new file,
    as conmon does: ``<path>.tmp`` is opened with ``O_TRUNC`` and renamed over the log (a
    new inode; a reader holding the old file keeps what it had). A single record larger
    than the maximum is still written whole. Reopen (after the kubelet rotated the file)
    closes the path and opens it again (``O_WRONLY|O_APPEND|O_CREAT``, 0600), the size
    counted from the new file. ``OSError`` from open goes to the caller.

    A failed write (a full disk, EIO) must not leave half a record that later records
    would join onto: the file is cut back to its last whole record (:attr:`size`), the
    records of that write are counted in :attr:`dropped`, :attr:`error` keeps the last
    error's text, and the ``OSError`` goes to the caller (which reports the first one and
    then at most one per :data:`REPORT_EVERY` seconds, see :meth:`report_due`).
    """

    __slots__ = ("dropped", "error", "fd", "path", "reported_at", "size", "size_max")

    #: Seconds between two reports of write errors (the first is reported at once).
    REPORT_EVERY = 10.0

    def __init__(self, path: str, size_max: int = -1) -> None:
        self.path = path
        self.size_max = size_max
        self.fd = -1
        self.size = 0
        self.dropped = 0
        self.error: str | None = None
        self.reported_at: float | None = None
        self.reopen()

    def reopen(self) -> None:
        """Close the file and open ``path`` again (a new file after rotation)."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = fd
        self.size = os.fstat(fd).st_size

    def write(self, records: bytes) -> None:
        """Append ``records`` (whole records, each ending in a newline).

        On ``OSError`` the file is left ending with a whole record and the error is
        raised after being recorded (:attr:`error`, :attr:`dropped`).
        """
        if not records:
            return
        done = 0
        try:
            size_max = self.size_max
            if size_max > 0 and self.size + len(records) > size_max:
                # Rare: decide record by record where the new files start.
                for record in records[:-1].split(b"\n"):
                    one = record + b"\n"
                    if self.size + len(one) > size_max:
                        self._start_over()
                    self._write_all(one)
                    done += len(one)
                return
            self._write_all(records)
        except OSError as exc:
            self._failed(exc, len(records) - done)
            raise

    def _start_over(self) -> None:
        # conmon's reopen at log-size-max: a new file under the same name.
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                     0o600)
        try:
            os.rename(tmp, self.path)
        except OSError:
            os.close(fd)
            raise
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = fd
        self.size = 0

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.size += len(data)

    def _failed(self, exc: OSError, dropped: int) -> None:
        self.dropped += dropped
        self.error = f"{exc.strerror or exc} writing {self.path}"
        if self.fd >= 0:
            try:
                # O_APPEND: the next record goes right after the last whole one.
                os.ftruncate(self.fd, self.size)
            except OSError:
                # Cannot cut: count from what is there (the next record starts a line
                # of its own only if the kernel wrote nothing; nothing better to do).
                with contextlib.suppress(OSError):
                    self.size = os.fstat(self.fd).st_size

    def report_due(self, now: float) -> bool:
        """Whether a write error seen at ``now`` (monotonic) should be reported."""
        if self.reported_at is not None and now - self.reported_at < self.REPORT_EVERY:
            return False
        self.reported_at = now
        return True

    def sync(self) -> None:
        """fsync the file (once, when the container exited)."""
        if self.fd >= 0:
            os.fsync(self.fd)

    def close(self) -> None:
        """Close the file; further writes fail."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
