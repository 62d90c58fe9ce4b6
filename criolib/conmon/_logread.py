"""Reading the CRI container log format back, by the kubelet's rules.

A line is ``<timestamp> <stream> <tag> <message>`` (kubernetes
pkg/kubelet/kuberuntime/logs/logs.go ``parseCRILog``, CRI v1 ``LogTag*``):

- the timestamp runs to the first space and is Go's RFC3339Nano layout
  ``2006-01-02T15:04:05.999999999Z07:00`` as ``time.Parse`` reads it: the fraction is
  optional and may have any number of digits (past 9 they are cut off), the zone is
  ``Z`` or ``±hh:mm``, the hour may be one digit;
- the stream runs to the next space and is ``stdout`` or ``stderr``;
- the tag runs to the next space; it is ``:``-separated tags of which only the first
  counts (forward compatibility): ``P`` marks a partial record, whose line goes on in
  the next record of its stream; anything else (``F``) ends a line;
- the rest of the line is the message. The file's newline is not part of it.

Everything is bytes: a container may write anything but a newline in a message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

import attrs

from criolib.conmon._errors import LogFormatError, MonitorError

__all__ = ["CRILogRecord", "iter_cri_log", "join_partial", "parse_cri_log_line", "read_cri_log"]

# Go's layout "2006-01-02T15:04:05.999999999Z07:00": getnum(hour, fixed=false) takes one
# or two digits for "15"; every other field is fixed width.
_TIME = re.compile(
    rb"(\d{4})-(\d{2})-(\d{2})T(\d{1,2}):(\d{2}):(\d{2})(?:[.,](\d+))?"
    rb"(?:(Z)|([+-])(\d{2}):(\d{2}))")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@attrs.frozen
class CRILogRecord:
    """One record of a CRI log file.

    ``time`` is the timestamp (timezone-aware, to the microsecond), ``time_text`` as
    written (to the nanosecond; :attr:`time_ns` gives the integer), ``stream``
    ``"stdout"`` or ``"stderr"``, ``partial`` for a ``P`` record (the line continues
    in the next record of the stream), ``message`` the bytes after the tag.
    """

    time: datetime
    time_text: str
    stream: Literal["stdout", "stderr"]
    partial: bool
    message: bytes

    @property
    def time_ns(self) -> int:
        """The timestamp in nanoseconds since the epoch, exactly as written."""
        seconds = (self.time - _EPOCH) // timedelta(seconds=1)
        match = _TIME.fullmatch(self.time_text.encode())
        fraction = (match.group(7) or b"") if match else b""
        return seconds * 1_000_000_000 + int((fraction[:9] or b"0").ljust(9, b"0"))


def _parse_time(text: bytes) -> datetime:
    match = _TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"timestamp {text[:40]!r} is not RFC3339Nano "
                         "(2006-01-02T15:04:05.999999999Z07:00)")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = match.group(7) or b""
    if match.group(8):
        zone = UTC
    else:
        hours, minutes = int(match.group(10)), int(match.group(11))
        if hours > 23 or minutes > 59:
            raise ValueError(f"timestamp {text[:40]!r}: zone offset out of range")
        offset = timedelta(hours=hours, minutes=minutes)
        zone = timezone(-offset if match.group(9) == b"-" else offset)
    micro = int((fraction[:6] or b"0").ljust(6, b"0"))
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=zone)
    except ValueError as exc:
        raise ValueError(f"timestamp {text[:40]!r}: {exc}") from None


def parse_cri_log_line(line: bytes, *, source: str = "<log>", lineno: int = 0) -> CRILogRecord:
    """Parse one line of a CRI log (one trailing newline is allowed and dropped).

    Raises :class:`LogFormatError` naming ``source`` and ``lineno`` and what is wrong.
    """
    if not isinstance(line, (bytes, bytearray, memoryview)):
        raise LogFormatError(f"{source}:{lineno}: a log line is bytes, not "
                             f"{type(line).__name__}")
    data = bytes(line)
    if data.endswith(b"\n"):
        data = data[:-1]
    try:
        stamp, sep1, rest = data.partition(b" ")
        if not sep1:
            raise ValueError("timestamp is not found")
        when = _parse_time(stamp)
        stream, sep2, rest = rest.partition(b" ")
        if not sep2:
            raise ValueError("stream type is not found")
        if stream not in (b"stdout", b"stderr"):
            raise ValueError(f"unexpected stream type {stream[:20]!r}")
        tag, sep3, message = rest.partition(b" ")
        if not sep3:
            raise ValueError("log tag is not found")
    except ValueError as exc:
        raise LogFormatError(f"{source}:{lineno}: not a CRI log line ({exc}): "
                             f"{data[:80]!r}") from None
    return CRILogRecord(
        time=when, time_text=stamp.decode("ascii"),
        stream="stdout" if stream == b"stdout" else "stderr",
        partial=tag.split(b":", 1)[0] == b"P", message=message)


def iter_cri_log(path: str | Path) -> Iterator[CRILogRecord]:
    """The records of the CRI log at ``path``, one by one (a last line without its
    newline, as a writer may leave it, is read too).

    :class:`LogFormatError` for a line that does not parse; :class:`MonitorError`
    when the file cannot be read.
    """
    source = str(path)
    try:
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, start=1):
                yield parse_cri_log_line(line, source=source, lineno=lineno)
    except OSError as exc:
        raise MonitorError(f"cannot read the CRI log {source}: {exc.strerror}") from exc


def read_cri_log(path: str | Path) -> list[CRILogRecord]:
    """Every record of the CRI log at ``path`` (see :func:`iter_cri_log`)."""
    return list(iter_cri_log(path))


def join_partial(records: Iterable[CRILogRecord]) -> list[tuple[str, bytes]]:
    """The lines the container wrote: ``(stream, line)`` without the newline.

    Per stream, ``P`` records are joined with the ``F`` record that follows them (the
    streams interleave freely); lines come in the order their ``F`` records do. A
    stream whose last records are ``P`` without an ``F`` (the container is still
    writing that line, or exited without a newline) gives that data as a line too,
    after all the finished ones, in the order those streams started their last line;
    ``records[-1].partial`` for the stream tells it apart.
    """
    pending: dict[str, list[bytes]] = {}
    lines: list[tuple[str, bytes]] = []
    for record in records:
        parts = pending.setdefault(record.stream, [])
        parts.append(record.message)
        if not record.partial:
            lines.append((record.stream, b"".join(parts)))
            del pending[record.stream]
    lines.extend((stream, b"".join(parts)) for stream, parts in pending.items())
    return lines
