"""The stdio classes against stub peers: conmon's attach protocol over a SEQPACKET
socketpair, pipes, and a pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from criolib.conmon import (
    STDERR,
    STDOUT,
    Attachment,
    AttachTimeout,
    ExecProcess,
    InvalidMonitorConfig,
    MonitorError,
    MonitorGone,
    MonitorProtocolError,
    PipeStream,
    PtyStream,
)
from criolib.conmon._wire import bind_seqpacket


@pytest.fixture
def pair() -> Iterator[tuple[Attachment, socket.socket]]:
    """An Attachment and the monitor's end of its connection."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    attachment = Attachment(ours, container_id="c1")
    yield attachment, theirs
    attachment.close()
    theirs.close()


def test_packets_come_back_tagged_by_stream(pair: tuple[Attachment, socket.socket]) -> None:
    att, server = pair
    server.send(bytes([STDOUT]) + b"out")
    server.send(bytes([STDERR]) + b"err")
    server.send(bytes([STDOUT]))  # a bare stream byte carries nothing
    server.send(bytes([STDOUT]) + b"x" * 8192)
    server.close()
    assert att.read(5) == (STDOUT, b"out")
    assert att.read(5) == (STDERR, b"err")
    assert att.read(5) == (STDOUT, b"x" * 8192)
    assert att.read(5) is None
    assert att.read() is None  # and stays at the end


def test_read_until_eof_keeps_the_streams_apart(pair: tuple[Attachment, socket.socket]) -> None:
    att, server = pair
    for stream, data in [(STDOUT, b"a"), (STDERR, b"1"), (STDOUT, b"b"), (STDERR, b"2")]:
        server.send(bytes([stream]) + data)
    server.shutdown(socket.SHUT_WR)
    assert att.read_until_eof(5) == (b"ab", b"12")


def test_a_read_times_out_with_an_attach_timeout(pair: tuple[Attachment, socket.socket]) -> None:
    att, server = pair
    with pytest.raises(AttachTimeout, match=r"container 'c1': no output within 0\.05 s") as info:
        att.read(0.05)
    assert isinstance(info.value, TimeoutError)
    server.send(bytes([STDOUT]) + b"late")
    with pytest.raises(AttachTimeout, match=r"did not end within 0\.1 s"):
        att.read_until_eof(0.1)


def test_an_unknown_stream_is_a_protocol_error(pair: tuple[Attachment, socket.socket]) -> None:
    att, server = pair
    server.send(b"\x07junk")
    with pytest.raises(MonitorProtocolError, match="unknown stream 7"):
        att.read(5)


def test_stdin_goes_in_packets_conmon_can_read(pair: tuple[Attachment, socket.socket]) -> None:
    att, server = pair
    data = os.urandom(20000)
    att.write(data)
    att.close_stdin()
    packets = []
    while packet := server.recv(65536):
        packets.append(packet)
    assert [len(p) for p in packets] == [8192, 8192, 3616]
    assert b"".join(packets) == data
    att.close_stdin()  # twice is fine


def test_writing_to_a_closed_connection_names_the_container(
        pair: tuple[Attachment, socket.socket]) -> None:
    att, server = pair
    server.close()
    with pytest.raises(MonitorError, match="container 'c1': cannot write to its stdin"):
        att.write(b"x")


def test_resize_goes_to_the_backend_and_is_checked(
        pair: tuple[Attachment, socket.socket]) -> None:
    att, _ = pair
    att.resize(24, 80)  # no resize channel: ignored, like conmon without a terminal
    calls: list[tuple[int, int]] = []
    with_resize = Attachment(socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)[0],
                             container_id="c2", resize=lambda r, c: calls.append((r, c)))
    with with_resize:
        with_resize.resize(50, 132)
        for rows, cols in [(0, 80), (24, -1), (True, 80), (24, 70000), ("24", 80)]:
            with pytest.raises(InvalidMonitorConfig, match="container 'c2': terminal"):
                with_resize.resize(rows, cols)  # type: ignore[arg-type]
    assert calls == [(50, 132)]


def test_connect_reaches_a_socket_at_a_long_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "attach"
    assert len(str(path)) > 107
    listener = bind_seqpacket(str(path))
    try:
        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.send(bytes([STDOUT]) + conn.recv(100).upper())
        thread = threading.Thread(target=serve)
        thread.start()
        with Attachment.connect(path, container_id="c3") as att:
            assert att.container_id == "c3" and att.fileno() >= 0
            att.write(b"hello")
            assert att.read_until_eof(5) == (b"HELLO", b"")
        thread.join()
    finally:
        listener.close()


def test_connect_to_nobody_is_monitor_gone(tmp_path: Path) -> None:
    with pytest.raises(MonitorGone, match=r"container 'c4': nobody serves its attach socket"):
        Attachment.connect(tmp_path / "attach", container_id="c4")
    (tmp_path / "attach").touch()  # a file, not a socket
    with pytest.raises(MonitorGone, match="c4"):
        Attachment.connect(tmp_path / "attach", container_id="c4")


def test_pipe_stream_merges_both_pipes() -> None:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe()
    with PipeStream(in_w, out_r, err_r, container_id="c5") as stream:
        os.write(err_w, b"E")
        assert stream.read(5) == (STDERR, b"E")
        with pytest.raises(AttachTimeout, match="container 'c5'"):
            stream.read(0.05)
        os.write(out_w, b"O")
        os.close(out_w)
        os.close(err_w)
        assert stream.read_until_eof(5) == (b"O", b"")
        assert stream.read() is None
        stream.write(b"in")
        stream.close_stdin()
        assert os.read(in_r, 10) == b"in" and os.read(in_r, 10) == b""
        with pytest.raises(MonitorError, match="started without stdin"):
            stream.write(b"more")
    os.close(in_r)


def test_pipe_stream_write_to_a_gone_reader() -> None:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe()
    os.close(in_r)
    with (PipeStream(in_w, out_r, err_r) as stream,
          pytest.raises(MonitorError, match="exec stream: cannot write to its stdin")):
        stream.write(b"x")
    os.close(out_w)
    os.close(err_w)


def _winsize(fd: int) -> tuple[int, int]:
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols


def test_pty_stream_reads_writes_resizes_and_ends() -> None:
    master, slave = os.openpty()
    with PtyStream(master, container_id="c6") as pty:
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO  # what we type must not come back as output
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        os.write(slave, b"out")
        assert pty.read(5) == (STDOUT, b"out")
        pty.write(b"typed\n")
        assert os.read(slave, 100) == b"typed\n"
        pty.close_stdin()  # ^D on an empty line: the reader gets EOF
        assert os.read(slave, 100) == b""
        pty.resize(33, 121)
        assert _winsize(slave) == (33, 121)
        os.close(slave)
        assert pty.read(5) is None  # hung up: EIO is the end, not an error
        assert pty.read_until_eof(1) == (b"", b"")


def test_exec_process_wraps_its_stream_and_exit() -> None:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    answers: list[int | None] = [None, 3]
    asked: list[float | None] = []
    closed: list[bool] = []

    def wait(timeout: float | None) -> int | None:
        asked.append(timeout)
        return answers.pop(0)

    proc = ExecProcess(PipeStream(None, out_r, err_r), wait=wait, container_id="c7",
                       close=lambda: closed.append(True))
    with proc:
        os.write(out_w, b"o")
        os.close(out_w)
        os.close(err_w)
        assert proc.read(5) == (STDOUT, b"o")
        assert proc.read_until_eof(5) == (b"", b"")
        before = proc.returncode
        assert before is None
        assert proc.wait(0.1) is None
        assert proc.wait() == 3
        assert proc.wait(0) == 3 and proc.returncode == 3
        assert asked == [0.1, None]
        proc.resize(10, 10)  # no terminal: ignored
        with pytest.raises(InvalidMonitorConfig, match="exec in container 'c7'"):
            proc.resize(0, 10)
        assert proc.container_id == "c7" and isinstance(proc.stream, PipeStream)
    proc.close()
    assert closed == [True]
