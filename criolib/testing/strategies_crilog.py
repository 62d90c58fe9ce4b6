"""hypothesis strategies for the CRI container log format (what the kubelet reads).

This module imports hypothesis, a test-only dependency (``criolib[test]``). It serves
:func:`criolib.conmon.parse_cri_log_line` and :func:`~criolib.conmon.join_partial`:
a line is ``<timestamp> <stream> <tag> <message>`` (kubernetes
pkg/kubelet/kuberuntime/logs/logs.go ``parseCRILog``), the timestamp Go's
RFC3339Nano layout ``2006-01-02T15:04:05.999999999Z07:00``.

:func:`timestamps` draws a timestamp's text with the instant it stands for (in ns),
:func:`cri_records` whole records as parts, :func:`format_cri_record` writes one;
:func:`container_output` draws what a container writes (lines per stream) and
:func:`frame_output` frames it into records the way a monitor does (long lines cut
into partial records), so a test can check that reading gives the lines back.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence

from hypothesis import strategies as st

__all__ = [
    "STREAMS",
    "container_output",
    "cri_records",
    "format_cri_record",
    "frame_output",
    "messages",
    "timestamps",
]

Strategy = st.SearchStrategy

STREAMS = ("stdout", "stderr")


@st.composite
def timestamps(draw: st.DrawFn) -> tuple[bytes, int]:
    """An RFC3339Nano timestamp as a writer may spell it, and its instant in ns.

    The fraction has 0 to 9 digits (Go's ``.999999999`` drops trailing zeros; conmon
    writes all 9), the zone is ``Z`` or an offset up to ±23:59.
    """
    year = draw(st.integers(1971, 2200))
    month = draw(st.integers(1, 12))
    day = draw(st.integers(1, calendar.monthrange(year, month)[1]))
    hour, minute, second = (draw(st.integers(0, 23)), draw(st.integers(0, 59)),
                            draw(st.integers(0, 59)))
    digits = draw(st.integers(0, 9))
    fraction = draw(st.integers(0, 10**digits - 1)) if digits else 0
    offset = draw(st.one_of(st.none(), st.integers(-(23 * 60 + 59), 23 * 60 + 59)))
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    if digits:
        text += f".{fraction:0{digits}d}"
    if offset is None:
        text += "Z"
        offset = 0
    else:
        sign = "-" if offset < 0 else "+"
        text += f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    local = calendar.timegm((year, month, day, hour, minute, second))
    nanos = fraction * 10 ** (9 - digits) if digits else 0
    return text.encode(), (local - offset * 60) * 1_000_000_000 + nanos


def messages(max_size: int = 64) -> Strategy[bytes]:
    """A record's message: any bytes but a newline (spaces and NULs included)."""
    return st.binary(max_size=max_size).map(lambda b: b.replace(b"\n", b"_"))


def cri_records() -> Strategy[tuple[bytes, int, str, bool, bytes]]:
    """(timestamp text, its ns, stream, partial, message) of one record."""
    return st.tuples(timestamps(), st.sampled_from(STREAMS), st.booleans(),
                     messages()).map(lambda t: (t[0][0], t[0][1], t[1], t[2], t[3]))


def format_cri_record(stamp: bytes, stream: str, partial: bool, message: bytes) -> bytes:
    """One log line, with its newline."""
    return b"%s %s %s %s\n" % (stamp, stream.encode(), b"P" if partial else b"F", message)


def container_output(max_lines: int = 12) -> Strategy[list[tuple[str, bytes]]]:
    """What a container writes, in order: (stream, line without its newline)."""
    return st.lists(st.tuples(st.sampled_from(STREAMS), messages(max_size=200)),
                    max_size=max_lines)


def frame_output(lines: Sequence[tuple[str, bytes]], max_line: int,
                 stamp: bytes = b"2026-01-02T03:04:05.000000006+00:00") -> bytes:
    """The CRI log a monitor writes for ``lines``: each cut into ``P`` records of
    ``max_line`` bytes and ended by an ``F`` record (docs/conmon-design.md)."""
    out = []
    for stream, line in lines:
        rest = line
        while len(rest) > max_line:
            out.append(format_cri_record(stamp, stream, True, rest[:max_line]))
            rest = rest[max_line:]
        out.append(format_cri_record(stamp, stream, False, rest))
    return b"".join(out)
