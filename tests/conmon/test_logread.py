"""The CRI log reader: the kubelet's parseCRILog rules, bad input, partial lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from criolib.conmon import (
    CRILogRecord,
    LogFormatError,
    MonitorError,
    iter_cri_log,
    join_partial,
    parse_cri_log_line,
    read_cri_log,
)
from criolib.testing import strategies_crilog as scl


def test_a_conmon_line_parses() -> None:
    record = parse_cri_log_line(b"2026-11-27T10:00:00.123456789+00:00 stdout F hello\n")
    assert record == CRILogRecord(
        time=datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC),
        time_text="2026-11-27T10:00:00.123456789+00:00", stream="stdout", partial=False,
        message=b"hello")
    assert record.time_ns == 1795773600_123456789


def test_the_message_keeps_spaces_and_may_be_empty() -> None:
    assert parse_cri_log_line(b"2026-01-01T00:00:00Z stderr P  a  b ").message == b" a  b "
    record = parse_cri_log_line(b"2026-01-01T00:00:00Z stdout F \n")
    assert record.message == b"" and not record.partial


@pytest.mark.parametrize("stamp, expected", [
    # Go's RFC3339Nano as time.Parse reads it: the fraction is optional and of any length.
    (b"2016-10-06T00:17:09.669794202Z",
     datetime(2016, 10, 6, 0, 17, 9, 669794, tzinfo=UTC)),
    (b"2016-10-06T00:17:09Z", datetime(2016, 10, 6, 0, 17, 9, tzinfo=UTC)),
    (b"2016-10-06T00:17:09.5-07:30",
     datetime(2016, 10, 6, 0, 17, 9, 500000,
              tzinfo=timezone(-timedelta(hours=7, minutes=30)))),
    (b"2016-10-06T00:17:09.1234567891234+01:00",
     datetime(2016, 10, 6, 0, 17, 9, 123456, tzinfo=timezone(timedelta(hours=1)))),
    (b"2016-10-06T7:17:09Z", datetime(2016, 10, 6, 7, 17, 9, tzinfo=UTC)),  # getnum(hour)
])
def test_timestamps_follow_go(stamp: bytes, expected: datetime) -> None:
    record = parse_cri_log_line(stamp + b" stdout F x")
    assert record.time == expected
    assert record.time.tzinfo is not None


def test_time_ns_keeps_the_nanoseconds_and_cuts_past_nine_digits() -> None:
    assert parse_cri_log_line(
        b"1970-01-01T00:00:01.0000000019Z stdout F x").time_ns == 1_000_000_001
    assert parse_cri_log_line(b"1970-01-01T01:00:00+01:00 stdout F x").time_ns == 0


@pytest.mark.parametrize("tag, partial", [
    (b"P", True), (b"F", False),
    # Forward compatible: only the first ':'-separated tag counts; unknown ones are full.
    (b"P:extra", True), (b"F:P", False), (b"X", False),
])
def test_tags(tag: bytes, partial: bool) -> None:
    assert parse_cri_log_line(b"2026-01-01T00:00:00Z stdout " + tag + b" m").partial is partial


@pytest.mark.parametrize("line, why", [
    (b"", "timestamp is not found"),
    (b"2026-01-01T00:00:00Z", "timestamp is not found"),
    (b"2026-01-01 00:00:00Z stdout F x", "not RFC3339Nano"),
    (b"2026-01-01T00:00:00 stdout F x", "not RFC3339Nano"),  # no zone
    (b"2026-01-01T00:00:00.Z stdout F x", "not RFC3339Nano"),
    (b"2026-02-30T00:00:00Z stdout F x", "day is out of range"),
    (b"2026-01-01T24:00:00Z stdout F x", "hour must be"),
    (b"2026-01-01T00:00:60Z stdout F x", "second must be"),
    (b"2026-01-01T00:00:00+24:00 stdout F x", "offset out of range"),
    (b"2026-01-01T00:00:00Z stdout", "stream type is not found"),
    (b"2026-01-01T00:00:00Z stdin F x", "unexpected stream type"),
    (b"2026-01-01T00:00:00Z  stdout F x", "unexpected stream type"),  # double space
    (b"2026-01-01T00:00:00Z stdout F", "log tag is not found"),
    (b"\xff\xfe garbage", "not RFC3339Nano"),
])
def test_bad_lines_name_the_source_line_and_cause(line: bytes, why: str) -> None:
    with pytest.raises(LogFormatError, match=why) as info:
        parse_cri_log_line(line, source="/var/log/x.log", lineno=7)
    assert str(info.value).startswith("/var/log/x.log:7: ")
    assert isinstance(info.value, ValueError) and isinstance(info.value, MonitorError)


def test_text_is_refused() -> None:
    with pytest.raises(LogFormatError, match="bytes, not str"):
        parse_cri_log_line("2026-01-01T00:00:00Z stdout F x")  # type: ignore[arg-type]


@given(scl.cri_records())
def test_any_record_parses_back(parts: tuple[bytes, int, str, bool, bytes]) -> None:
    stamp, nanos, stream, partial, message = parts
    record = parse_cri_log_line(scl.format_cri_record(stamp, stream, partial, message))
    assert (record.time_text.encode(), record.stream, record.partial, record.message) == (
        stamp, stream, partial, message)
    assert record.time_ns == nanos
    assert abs(record.time.timestamp() * 1e9 - nanos) < 2e3


@given(st.binary(max_size=80))
def test_junk_raises_only_log_format_errors(data: bytes) -> None:
    try:
        record = parse_cri_log_line(data)
    except LogFormatError:
        return
    assert record.stream in ("stdout", "stderr")


@given(scl.container_output(), st.integers(1, 64))
def test_framed_output_joins_back_to_the_lines(lines: list[tuple[str, bytes]],
                                               max_line: int) -> None:
    log = scl.frame_output(lines, max_line)
    # Only b"\n" ends a record: a container's \r and other line breaks are data.
    records = [parse_cri_log_line(line) for line in log.split(b"\n")[:-1]]
    assert all(len(r.message) <= max_line for r in records)
    assert join_partial(records) == lines


def _rec(stream: str, partial: bool, message: bytes) -> CRILogRecord:
    return CRILogRecord(time=datetime(2026, 1, 1, tzinfo=UTC),
                        time_text="2026-01-01T00:00:00Z", stream=stream,  # type: ignore[arg-type]
                        partial=partial, message=message)


def test_join_partial_keeps_streams_apart_and_gives_unfinished_lines_last() -> None:
    records = [
        _rec("stdout", True, b"he"), _rec("stderr", True, b"ou"), _rec("stdout", False, b"llo"),
        _rec("stderr", False, b"ch"), _rec("stderr", True, b"tail"), _rec("stdout", True, b"t"),
        _rec("stdout", True, b"ail"),
    ]
    assert join_partial(records) == [
        ("stdout", b"hello"), ("stderr", b"ouch"), ("stderr", b"tail"), ("stdout", b"tail")]


def test_read_and_iter_a_file(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    path.write_bytes(b"2026-01-01T00:00:00Z stdout P a\n"
                     b"2026-01-01T00:00:00Z stdout F b\n"
                     b"2026-01-01T00:00:01Z stderr P no newline yet")
    records = read_cri_log(path)
    assert [r.message for r in records] == [b"a", b"b", b"no newline yet"]
    assert list(iter_cri_log(str(path))) == records
    assert join_partial(records) == [("stdout", b"ab"), ("stderr", b"no newline yet")]


def test_a_bad_line_in_a_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    path.write_bytes(b"2026-01-01T00:00:00Z stdout F a\nnot a record\n")
    with pytest.raises(LogFormatError, match=rf"^{path}:2: "):
        read_cri_log(path)


def test_a_missing_file_is_a_monitor_error(tmp_path: Path) -> None:
    with pytest.raises(MonitorError, match=r"cannot read the CRI log .*nope\.log"):
        read_cri_log(tmp_path / "nope.log")
