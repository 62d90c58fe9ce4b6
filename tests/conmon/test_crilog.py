"""The CRI log writer: record framing (kubelet's format) and the log file."""

from __future__ import annotations

import datetime
import errno
import os
import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from criolib.conmon._crilog import CRILogFramer, LogFile, _has_long_line, format_timestamp

TS = b"2026-11-27T10:00:00.000000001+00:00"
# kubelet pkg/kubelet/kuberuntime/logs parseCRILog: "<ts> <stream> <tag> <msg>".
RECORD = re.compile(rb"^(\S+) (stdout|stderr) (P|F) (.*)$", re.DOTALL)


def parse(log: bytes) -> list[tuple[bytes, str, str, bytes]]:
    assert log == b"" or log.endswith(b"\n")
    out = []
    for line in log.split(b"\n")[:-1]:
        m = RECORD.match(line)
        assert m, line
        out.append((m[1], m[2].decode(), m[3].decode(), m[4]))
    return out


def rebuild(records: list[tuple[bytes, str, str, bytes]], stream: str) -> bytes:
    """The stream's bytes back: P records join the next, F ends a line."""
    return b"".join(msg + (b"\n" if tag == "F" else b"")
                    for _, s, tag, msg in records if s == stream)


def test_full_lines_share_the_read_timestamp() -> None:
    out = CRILogFramer(100).frame("stdout", b"a\nbb\n", TS)
    assert out == TS + b" stdout F a\n" + TS + b" stdout F bb\n"


def test_partial_tail_is_written_at_once() -> None:
    framer = CRILogFramer(100)
    assert framer.frame("stderr", b"one\ntw", TS) == (
        TS + b" stderr F one\n" + TS + b" stderr P tw\n")
    assert framer.frame("stderr", b"o\n", TS) == TS + b" stderr F o\n"
    assert framer.frame("stdout", b"no newline", TS) == TS + b" stdout P no newline\n"


def test_empty_line_is_an_empty_full_record() -> None:
    assert CRILogFramer(10).frame("stdout", b"\n\nx\n", TS) == (
        TS + b" stdout F \n" + TS + b" stdout F \n" + TS + b" stdout F x\n")
    assert CRILogFramer(10).frame("stdout", b"", TS) == b""


def test_long_lines_are_cut_into_partials() -> None:
    framer = CRILogFramer(4)
    assert parse(framer.frame("stdout", b"abcdefghij\n", TS)) == [
        (TS, "stdout", "P", b"abcd"), (TS, "stdout", "P", b"efgh"), (TS, "stdout", "F", b"ij")]
    # A line of exactly twice the maximum: the last piece is the full record.
    assert parse(framer.frame("stdout", b"abcdefgh\nxy\n", TS)) == [
        (TS, "stdout", "P", b"abcd"), (TS, "stdout", "F", b"efgh"), (TS, "stdout", "F", b"xy")]
    assert parse(framer.frame("stdout", b"abcdefghi", TS)) == [
        (TS, "stdout", "P", b"abcd"), (TS, "stdout", "P", b"efgh"), (TS, "stdout", "P", b"i")]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_line"):
        CRILogFramer(0)
    with pytest.raises(ValueError, match="stream"):
        CRILogFramer(4).frame("stdin", b"x", TS)


def _parse_ts(ts: bytes) -> datetime.datetime:
    text = ts.decode()
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{9})([+-]\d\d:\d\d)", text)
    assert m, text
    return datetime.datetime.fromisoformat(f"{m[1]}.{m[2][:6]}{m[3]}")


def test_timestamp_is_rfc3339nano_with_local_offset() -> None:
    now = time.time_ns()
    ts = format_timestamp(now)
    parsed = _parse_ts(ts)
    assert abs(parsed.timestamp() - now / 1e9) < 1e-5
    assert ts[20:29] == f"{now % 1_000_000_000:09d}".encode()
    offset = time.localtime(now // 10**9).tm_gmtoff
    sign = "+" if offset >= 0 else "-"
    assert ts[-6:].decode() == f"{sign}{abs(offset) // 3600:02d}:{abs(offset) % 3600 // 60:02d}"


@settings(max_examples=300, deadline=None)
@given(
    max_line=st.integers(1, 40),
    chunks=st.lists(st.tuples(st.sampled_from(["stdout", "stderr"]),
                              st.binary(max_size=120)
                              | st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\r", b" "]),
                                         max_size=60).map(b"".join)),
                    max_size=20),
    when=st.integers(0, 4_000_000_000 * 10**9),
)
def test_framing_round_trips(max_line: int, chunks: list[tuple[str, bytes]],
                             when: int) -> None:
    framer = CRILogFramer(max_line)
    ts = format_timestamp(when)
    _parse_ts(ts)
    log = b"".join(framer.frame(stream, data, ts) for stream, data in chunks)
    records = parse(log)
    for stamp, _, _, msg in records:
        assert stamp == ts
        assert b"\n" not in msg
        assert len(msg) <= max_line
    for stream in ("stdout", "stderr"):
        assert rebuild(records, stream) == b"".join(d for s, d in chunks if s == stream)


@settings(max_examples=500, deadline=None)
@given(max_line=st.integers(1, 300),
       runs=st.lists(st.integers(0, 700), min_size=1, max_size=40))
def test_the_long_line_check_never_misses_one(max_line: int, runs: list[int]) -> None:
    data = b"\n".join(b"a" * n for n in runs)
    if max(runs) > max_line:
        assert _has_long_line(data, max_line)
    framed = CRILogFramer(max_line).frame("stdout", data, TS)
    assert all(len(m) <= max_line for _, _, _, m in parse(framed))


def test_fast_and_slow_paths_agree() -> None:
    data = b"".join(b"x" * (i % 37) + b"\n" for i in range(3000)) + b"tail"
    fast = CRILogFramer(64).frame("stdout", data, TS)
    slow = CRILogFramer(64)._frame_long(b"stdout", data, TS)
    assert fast == slow


def test_logfile_appends_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    log = LogFile(str(path), -1)
    log.write(b"one\n")
    assert (path.stat().st_mode & 0o777) == 0o600
    os.rename(path, tmp_path / "ctr.log.1")  # the kubelet rotates
    log.write(b"two\n")
    log.reopen()
    log.write(b"three\n")
    log.sync()
    log.close()
    assert (tmp_path / "ctr.log.1").read_bytes() == b"one\ntwo\n"
    assert path.read_bytes() == b"three\n"
    LogFile(str(path)).write(b"four\n")
    assert path.read_bytes() == b"three\nfour\n"


def test_logfile_size_max_truncates_before_a_record_that_would_pass_it(
        tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    path.write_bytes(b"old\n")
    log = LogFile(str(path), 10)
    assert log.size == 4
    log.write(b"aaaa\n")  # 9 bytes
    assert path.read_bytes() == b"old\naaaa\n"
    log.write(b"bb\ncc\n")  # "bb" would pass 10: truncate, then "cc" fits
    assert path.read_bytes() == b"bb\ncc\n"
    log.write(b"0123456789abc\n")  # larger than the maximum: written whole
    assert path.read_bytes() == b"0123456789abc\n"
    log.write(b"z\n")
    assert path.read_bytes() == b"z\n"
    log.close()


def test_logfile_size_max_starts_a_new_inode_like_conmon(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    log = LogFile(str(path), 10)
    log.write(b"aaaa\n")
    with open(path, "rb") as reader:  # a reader holding the old file (the kubelet)
        old_ino = path.stat().st_ino
        log.write(b"bbbbbb\n")  # would pass 10: <path>.tmp renamed over the log
        assert path.stat().st_ino != old_ino
        assert path.read_bytes() == b"bbbbbb\n"
        assert reader.read() == b"aaaa\n"  # kept, not truncated under it
    assert not (tmp_path / "ctr.log.tmp").exists()
    assert log.size == 7
    log.close()


def test_logfile_write_error_cuts_back_to_the_last_whole_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ctr.log"
    log = LogFile(str(path))
    log.write(b"aaaa\n")
    real_write = os.write
    calls = []

    def short_then_enospc(fd: int, data: bytes | memoryview) -> int:
        # The kernel takes part of the buffer, then the disk is full.
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:3]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", short_then_enospc)
    with pytest.raises(OSError):
        log.write(b"bbbbbbbb\ncccc\n")
    monkeypatch.setattr(os, "write", real_write)
    assert path.read_bytes() == b"aaaa\n"
    assert log.size == 5 and log.dropped == 14
    assert log.error == f"No space left on device writing {path}"
    log.write(b"dd\n")
    assert path.read_bytes() == b"aaaa\ndd\n"
    # The first error is reported, then at most one per 10 s.
    assert log.report_due(100.0) and not log.report_due(105.0) and log.report_due(110.5)
    log.close()


def test_framing_a_64k_read_of_short_lines_is_fast() -> None:
    data = b"".join(b"line %05d of output\n" % i for i in range(3200))[:65536]
    framer = CRILogFramer(16 * 1024)
    start = time.perf_counter()
    for _ in range(200):
        framer.frame("stdout", data, TS)
    per_read = (time.perf_counter() - start) / 200
    # A per-line Python loop takes ~1 ms here; the replace path ~0.03 ms.
    assert per_read < 0.0002, per_read
