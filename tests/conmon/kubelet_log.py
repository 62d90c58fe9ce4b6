"""The CRI container log read by the kubelet's rules: an independent checker for writers.

Written from kubernetes pkg/kubelet/kuberuntime/logs/logs.go (``parseCRILog`` and the
``ReadLogs`` loop around it), *not* from criolib's own reader
(:mod:`criolib.conmon._logread`), so that a mistake shared by criolib's writer and
criolib's reader cannot hide. The kubelet's rules, as that code applies them:

- The file is read line by line up to and including ``\\n`` (``bufio.ReadBytes('\\n')``).
- ``<timestamp> <stream> <tags> <log>``, single spaces (``bytes.Index(log, ' ')``):
  the timestamp parses with Go's ``time.Parse(RFC3339NanoLenient)``, layout
  ``2006-01-02T15:04:05.999999999Z07:00`` (fraction optional, ``Z`` or ``±hh:mm``);
  the stream is ``stdout`` or ``stderr``; tags are ``:``-separated
  (``runtimeapi.LogTagDelimiter``) and the first one is ``P`` for a partial line.
- A partial record's trailing ``\\n`` is trimmed; a full record's message *keeps* its
  ``\\n``. The kubelet writes each message to the stream it names, one after the
  other, so the bytes the container wrote to a stream are the concatenation of that
  stream's messages: no joining step, no added newline.

This checker is stricter than the kubelet where the issue is: the first tag must be
``P`` or ``F`` and be the only one, and every record must end with ``\\n`` (the
kubelet logs "Incomplete line in log file" for a final line without one and still
prints it; a writer that leaves one has torn a record).
"""

from __future__ import annotations

import calendar
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "KubeletLogError",
    "KubeletRecord",
    "StreamDigest",
    "iter_log",
    "parse_line",
    "parse_rfc3339_nano",
    "read_streams",
]

STREAMS = ("stdout", "stderr")

# Go's RFC3339NanoLenient as time.Parse applies it: 4-digit year, 2-digit fields, an
# optional fraction ('.' or ',' then digits; Go reads at most 9 and ignores the rest),
# then 'Z' or a +hh:mm / -hh:mm offset.
_TIME = re.compile(
    rb"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?(Z|[+-]\d{2}:\d{2})\Z")


class KubeletLogError(ValueError):
    """A line the kubelet would refuse (or that breaks the stricter rules above)."""


@dataclass(frozen=True)
class KubeletRecord:
    """One parsed record: ``log`` is the message as the kubelet writes it out."""

    timestamp_ns: int
    stream: str
    partial: bool
    tags: tuple[str, ...]
    log: bytes


def parse_rfc3339_nano(text: bytes) -> int:
    """Nanoseconds since the epoch of a timestamp, validated as Go's time.Parse does."""
    m = _TIME.match(text)
    if m is None:
        raise KubeletLogError(f"timestamp {text!r} is not RFC3339Nano")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if not 1 <= month <= 12:
        raise KubeletLogError(f"timestamp {text!r}: month out of range")
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        raise KubeletLogError(f"timestamp {text!r}: day out of range")
    if hour > 23 or minute > 59 or second > 59:
        raise KubeletLogError(f"timestamp {text!r}: time of day out of range")
    frac = m.group(7) or b""
    nanos = int((frac[:9] + b"000000000")[:9])
    zone = m.group(8)
    offset = 0
    if zone != b"Z":
        oh, om = int(zone[1:3]), int(zone[4:6])
        if oh > 23 or om > 59:
            raise KubeletLogError(f"timestamp {text!r}: zone offset out of range")
        offset = (oh * 3600 + om * 60) * (1 if zone[:1] == b"+" else -1)
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - offset
    return seconds * 1_000_000_000 + nanos


def parse_line(line: bytes, *, strict: bool = True) -> KubeletRecord:
    """One record, ``line`` as the kubelet reads it (with its ``\\n``).

    ``strict=False`` takes tags as the kubelet does (``P:x:y`` is partial, any other
    first tag full); the default demands exactly ``P`` or ``F``.
    """
    if not line.endswith(b"\n"):
        raise KubeletLogError(f"record {line[:80]!r} does not end with a newline")
    idx = line.find(b" ")
    if idx < 0:
        raise KubeletLogError(f"timestamp is not found in {line[:80]!r}")
    timestamp_ns = parse_rfc3339_nano(line[:idx])
    rest = line[idx + 1:]
    idx = rest.find(b" ")
    if idx < 0:
        raise KubeletLogError(f"stream type is not found in {line[:80]!r}")
    stream = rest[:idx].decode("ascii", "replace")
    if stream not in STREAMS:
        raise KubeletLogError(f"unexpected stream type {stream!r} in {line[:80]!r}")
    rest = rest[idx + 1:]
    idx = rest.find(b" ")
    if idx < 0:
        raise KubeletLogError(f"log tag is not found in {line[:80]!r}")
    tags = tuple(t.decode("ascii", "replace") for t in rest[:idx].split(b":"))
    if strict and tags not in (("P",), ("F",)):
        raise KubeletLogError(f"log tag {rest[:idx]!r} is not P or F in {line[:80]!r}")
    partial = tags[0] == "P"
    if partial:
        rest = rest[:-1]
    return KubeletRecord(timestamp_ns, stream, partial, tags, rest[idx + 1:])


def iter_log(source: str | Path | BinaryIO | Iterable[bytes]) -> Iterator[KubeletRecord]:
    """Every record of a log file (a path, a binary file or lines), streamed.

    Raises :class:`KubeletLogError` naming the line number of the first bad line.
    """
    if isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            yield from iter_log(f)
        return
    for number, line in enumerate(source, 1):
        try:
            yield parse_line(line)
        except KubeletLogError as exc:
            raise KubeletLogError(f"line {number}: {exc}") from None


def read_streams(source: str | Path | BinaryIO | Iterable[bytes]) -> dict[str, bytes]:
    """What the container wrote to each stream, as the kubelet gives it back."""
    out: dict[str, list[bytes]] = {s: [] for s in STREAMS}
    for record in iter_log(source):
        out[record.stream].append(record.log)
    return {s: b"".join(parts) for s, parts in out.items()}


@dataclass
class StreamDigest:
    """Size and sha256 of each stream, fed record by record (for logs too big to hold).

    Also checks, as records go by, that timestamps never go backwards and counts the
    partial records.
    """

    sizes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))
    hashes: dict[str, hashlib._Hash] = field(
        default_factory=lambda: {s: hashlib.sha256() for s in STREAMS})
    records: int = 0
    partials: int = 0
    last_ns: int = 0

    def feed(self, record: KubeletRecord) -> None:
        if record.timestamp_ns < self.last_ns:
            raise KubeletLogError(
                f"record {self.records + 1}: timestamp {record.timestamp_ns} goes back "
                f"from {self.last_ns}")
        self.last_ns = record.timestamp_ns
        self.records += 1
        self.partials += record.partial
        self.sizes[record.stream] += len(record.log)
        self.hashes[record.stream].update(record.log)

    def feed_file(self, path: str | Path) -> StreamDigest:
        for record in iter_log(path):
            self.feed(record)
        return self

    def hexdigest(self, stream: str) -> str:
        return self.hashes[stream].hexdigest()
