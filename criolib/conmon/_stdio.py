"""A container's stdio as a caller sees it, the same for both monitor backends.

- :class:`Attachment`: a client of conmon's attach protocol, which criolib's monitor
  speaks too (docs/conmon-design.md "Attach socket"). The socket is ``AF_UNIX,
  SOCK_SEQPACKET``; every packet from the monitor is one stream byte (``STDOUT`` = 2,
  ``STDERR`` = 3, conmon's ``ATTACH_PIPE_STDOUT``/``ATTACH_PIPE_STDERR``) followed by at
  most 8192 bytes of output; every packet to the monitor is stdin data; shutting down the
  writing side ends this client's stdin. With ``stdin_once`` the container's stdin is
  closed when *any* attach client goes away (shuts down writing or closes), whether or
  not it wrote: conmon's behaviour, which criolib's monitor follows.
- :class:`PtyStream` (a terminal's master side) and :class:`PipeStream` (stdout and
  stderr pipes merged with a selector, and an optional stdin pipe): the stdio of a
  streaming exec, with the same ``read``/``write``/``close_stdin``/``close`` interface.
- :class:`ExecProcess`: a running exec: its stream, its exit status, terminal resize.

``read(timeout)`` returns ``(stream, data)``, or None at the end of the output; when
nothing comes within ``timeout`` seconds it raises :class:`AttachTimeout` (a
``TimeoutError``), so None always means the end. Every ``OSError`` is raised as a
:class:`MonitorError` naming the container.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import selectors
import socket
import struct
import termios
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self

from criolib.conmon._errors import (
    AttachTimeout,
    InvalidMonitorConfig,
    MonitorError,
    MonitorGone,
    MonitorProtocolError,
)
from criolib.conmon._wire import connect_seqpacket

__all__ = [
    "STDERR",
    "STDIN",
    "STDOUT",
    "Attachment",
    "ExecProcess",
    "PipeStream",
    "PtyStream",
]

#: conmon's attach pipe numbers (conmon src/conn_sock.h): the stream byte of a packet.
STDIN = 1
STDOUT = 2
STDERR = 3

#: The most stdin data one packet carries: conmon reads its attach socket in 8 KiB
#: buffers, and a SEQPACKET packet larger than the reader's buffer is cut off.
_STDIN_PACKET = 8192
#: Output packets hold at most 8192 bytes plus the stream byte; read with room to spare.
_RECV = 65536
_VEOF = b"\x04"


def _what(container_id: str | None) -> str:
    return f"container {container_id!r}" if container_id else "exec stream"


def _check_size(what: str, rows: object, cols: object) -> tuple[int, int]:
    for name, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            raise InvalidMonitorConfig(
                f"{what}: terminal {name} must be an integer from 1 to 65535, not {value!r}")
    return rows, cols  # type: ignore[return-value]


def _wait_readable(fd: int, left: float | None, what: str, asked: float | None) -> None:
    """Block until ``fd`` is readable; :class:`AttachTimeout` after ``left`` s (of the
    ``asked`` timeout, which the message names)."""
    if left is None:
        return
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if not poller.poll(max(0.0, left) * 1000):
        raise AttachTimeout(f"{what}: no output within {asked:g} s")


class _Reader(Protocol):
    def read(self, timeout: float | None = None) -> tuple[int, bytes] | None: ...


def _read_until_eof(reader: _Reader, timeout: float | None, what: str) -> tuple[bytes, bytes]:
    """All of stdout and of stderr up to the end of the output (within ``timeout`` s)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    chunks: dict[int, list[bytes]] = {STDOUT: [], STDERR: []}
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise AttachTimeout(f"{what}: the output did not end within {timeout:g} s")
        try:
            item = reader.read(left)
        except AttachTimeout:
            raise AttachTimeout(
                f"{what}: the output did not end within {timeout:g} s") from None
        if item is None:
            return b"".join(chunks[STDOUT]), b"".join(chunks[STDERR])
        chunks[item[0]].append(item[1])


class Attachment:
    """One attach connection to a container's stdio (conmon's attach protocol).

    Made by a monitor's ``attach(id)`` or :meth:`connect`. Output is read as
    ``(STDOUT|STDERR, data)`` packets from the moment of connecting; ``write`` sends
    stdin (when the container was created with ``stdin``), ``close_stdin`` ends it.
    ``resize`` goes through the monitor's control channel (``resize`` given by the
    backend); without one it is ignored, as conmon ignores it for a container
    without a terminal.
    """

    def __init__(self, sock: socket.socket, *, container_id: str,
                 resize: Callable[[int, int], None] | None = None) -> None:
        self._sock = sock
        self._container_id = container_id
        self._resize = resize
        self._eof = False

    @classmethod
    def connect(cls, path: str | os.PathLike[str], *, container_id: str,
                resize: Callable[[int, int], None] | None = None,
                timeout: float = 10.0) -> Attachment:
        """Connect to the attach socket at ``path`` (any length: long paths go
        through ``/proc/self/fd``). Nobody listening raises :class:`MonitorGone`."""
        what = _what(container_id)
        try:
            sock = connect_seqpacket(os.fspath(path), timeout=timeout)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise MonitorGone(f"{what}: nobody serves its attach socket {path} "
                              f"({exc.strerror})") from exc
        except OSError as exc:
            raise MonitorError(f"{what}: cannot connect to its attach socket {path}: "
                               f"{exc.strerror or exc}") from exc
        sock.settimeout(None)
        return cls(sock, container_id=container_id, resize=resize)

    @property
    def container_id(self) -> str:
        """The container this connection is attached to."""
        return self._container_id

    def fileno(self) -> int:
        """The socket's descriptor (readable when output or the end is there)."""
        return self._sock.fileno()

    def read(self, timeout: float | None = None) -> tuple[int, bytes] | None:
        """The next chunk of output as ``(STDOUT|STDERR, data)``; None at the end.

        :class:`AttachTimeout` when nothing arrives within ``timeout`` seconds.
        """
        what = _what(self._container_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._eof:
            left = None if deadline is None else deadline - time.monotonic()
            _wait_readable(self._sock.fileno(), left, what, timeout)
            try:
                data = self._sock.recv(_RECV)
            except ConnectionResetError:
                data = b""
            except OSError as exc:
                raise MonitorError(f"{what}: reading the attach connection failed: "
                                   f"{exc.strerror or exc}") from exc
            if not data:
                self._eof = True
                break
            if data[0] not in (STDOUT, STDERR):
                raise MonitorProtocolError(
                    f"{what}: attach packet for unknown stream {data[0]} "
                    f"(expected {STDOUT} or {STDERR})")
            if len(data) > 1:  # a bare stream byte carries nothing; wait for more
                return data[0], data[1:]
        return None

    def read_until_eof(self, timeout: float | None = None) -> tuple[bytes, bytes]:
        """(stdout, stderr) until the monitor closes the connection (the container
        exited); :class:`AttachTimeout` if that takes longer than ``timeout`` s."""
        return _read_until_eof(self, timeout, _what(self._container_id))

    def write(self, data: bytes) -> None:
        """Send ``data`` to the container's stdin (in packets of at most 8 KiB)."""
        view = memoryview(data)
        try:
            for start in range(0, len(view), _STDIN_PACKET):
                self._sock.sendall(view[start:start + _STDIN_PACKET])
        except OSError as exc:
            raise MonitorError(
                f"{_what(self._container_id)}: cannot write to its stdin through the "
                f"attach connection: {exc.strerror or exc}") from exc

    def close_stdin(self) -> None:
        """End this client's stdin (shutdown of the writing side: conmon's EOF)."""
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                raise MonitorError(f"{_what(self._container_id)}: cannot close stdin: "
                                   f"{exc.strerror or exc}") from exc

    def resize(self, rows: int, cols: int) -> None:
        """Set the container's terminal size (through the monitor)."""
        rows, cols = _check_size(_what(self._container_id), rows, cols)
        if self._resize is not None:
            self._resize(rows, cols)

    def close(self) -> None:
        """Close the connection (the container keeps running)."""
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class PtyStream:
    """The master side of a terminal: everything read is ``STDOUT``.

    ``close_stdin`` types the terminal's end-of-file character (VEOF, ^D), which ends
    input for a program reading in canonical mode, as a user's ^D would.
    """

    def __init__(self, master_fd: int, *, container_id: str | None = None) -> None:
        self._fd = master_fd
        self._container_id = container_id
        self._eof = False

    def fileno(self) -> int:
        """The terminal master's descriptor."""
        return self._fd

    def read(self, timeout: float | None = None) -> tuple[int, bytes] | None:
        """The next output as ``(STDOUT, data)``; None once the terminal is hung up."""
        if self._eof:
            return None
        what = _what(self._container_id)
        _wait_readable(self._fd, timeout, what, timeout)
        try:
            data = os.read(self._fd, _RECV)
        except OSError as exc:
            # Linux reports a hung-up terminal (every slave fd closed) as EIO.
            if exc.errno != errno.EIO:
                raise MonitorError(f"{what}: reading its terminal failed: "
                                   f"{exc.strerror}") from exc
            data = b""
        if not data:
            self._eof = True
            return None
        return STDOUT, data

    def read_until_eof(self, timeout: float | None = None) -> tuple[bytes, bytes]:
        """(output, b"") until the terminal is hung up."""
        return _read_until_eof(self, timeout, _what(self._container_id))

    def write(self, data: bytes) -> None:
        """Type ``data`` into the terminal."""
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            raise MonitorError(f"{_what(self._container_id)}: cannot write to its "
                               f"terminal: {exc.strerror}") from exc

    def close_stdin(self) -> None:
        """Type ^D (the end of input for a program reading the terminal)."""
        self.write(_VEOF)

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal's size (TIOCSWINSZ; the program gets SIGWINCH)."""
        rows, cols = _check_size(_what(self._container_id), rows, cols)
        try:
            fcntl.ioctl(self._fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        except OSError as exc:
            raise MonitorError(f"{_what(self._container_id)}: cannot resize its "
                               f"terminal: {exc.strerror}") from exc

    def close(self) -> None:
        """Close the master side (the program sees a hang-up)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class PipeStream:
    """stdout and stderr pipes read as one stream, and an optional stdin pipe.

    The stream owns the descriptors given (it closes them). ``read`` returns whichever
    pipe has data first, tagged ``STDOUT`` or ``STDERR``; None once both are at EOF.
    """

    def __init__(self, stdin_w: int | None, stdout_r: int, stderr_r: int, *,
                 container_id: str | None = None) -> None:
        self._stdin = stdin_w
        self._container_id = container_id
        self._sel = selectors.DefaultSelector()
        self._open: dict[int, int] = {stdout_r: STDOUT, stderr_r: STDERR}
        for fd in self._open:
            self._sel.register(fd, selectors.EVENT_READ)

    def read(self, timeout: float | None = None) -> tuple[int, bytes] | None:
        """The next chunk from either pipe as ``(STDOUT|STDERR, data)``; None at EOF."""
        what = _what(self._container_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._open:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = self._sel.select(left)
            if not ready:
                raise AttachTimeout(f"{what}: no output within {timeout:g} s")
            fd = ready[0][0].fd
            try:
                data = os.read(fd, _RECV)
            except OSError as exc:
                raise MonitorError(f"{what}: reading its output failed: "
                                   f"{exc.strerror}") from exc
            if data:
                return self._open[fd], data
            self._sel.unregister(fd)
            del self._open[fd]
            os.close(fd)
        return None

    def read_until_eof(self, timeout: float | None = None) -> tuple[bytes, bytes]:
        """(stdout, stderr) until both pipes are at EOF."""
        return _read_until_eof(self, timeout, _what(self._container_id))

    def write(self, data: bytes) -> None:
        """Write ``data`` to the stdin pipe."""
        what = _what(self._container_id)
        if self._stdin is None:
            raise MonitorError(f"{what}: it was started without stdin")
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._stdin, view):]
        except OSError as exc:
            raise MonitorError(f"{what}: cannot write to its stdin: {exc.strerror}") from exc

    def close_stdin(self) -> None:
        """Close the stdin pipe (the program reads EOF)."""
        if self._stdin is not None:
            fd, self._stdin = self._stdin, None
            os.close(fd)

    def close(self) -> None:
        """Close every pipe still open."""
        self.close_stdin()
        for fd in list(self._open):
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(fd)
            os.close(fd)
        self._open.clear()
        self._sel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class ExecProcess:
    """A process started by a monitor's ``exec_stream``: its stdio and its exit.

    The stdio is a :class:`PtyStream` or :class:`PipeStream` (criolib's monitor), or an
    :class:`Attachment` to the exec's own conmon (the conmon backend).

    ``wait(timeout)`` returns the exit code as the runtime's exec reports it (128+N
    for signal N), or None while it runs; ``resize`` sets the terminal's size (ignored
    without a terminal). ``close`` closes the stdio and lets the monitor forget it;
    the process itself keeps running until it exits.
    """

    def __init__(self, stream: PtyStream | PipeStream | Attachment, *,
                 wait: Callable[[float | None], int | None],
                 resize: Callable[[int, int], None] | None = None,
                 container_id: str,
                 close: Callable[[], None] | None = None) -> None:
        self._stream = stream
        self._wait = wait
        self._resize = resize
        self._container_id = container_id
        self._on_close = close
        self._returncode: int | None = None

    @property
    def container_id(self) -> str:
        """The container the process runs in."""
        return self._container_id

    @property
    def stream(self) -> PtyStream | PipeStream | Attachment:
        """The process's stdio (a terminal, pipes, or conmon's attach connection)."""
        return self._stream

    @property
    def returncode(self) -> int | None:
        """The exit code once :meth:`wait` saw it, else None."""
        return self._returncode

    def read(self, timeout: float | None = None) -> tuple[int, bytes] | None:
        """The next output as ``(STDOUT|STDERR, data)``; None at the end of it."""
        return self._stream.read(timeout)

    def read_until_eof(self, timeout: float | None = None) -> tuple[bytes, bytes]:
        """(stdout, stderr) up to the end of the output."""
        return self._stream.read_until_eof(timeout)

    def write(self, data: bytes) -> None:
        """Write to the process's stdin (or type into its terminal)."""
        self._stream.write(data)

    def close_stdin(self) -> None:
        """End the process's stdin (^D on a terminal)."""
        self._stream.close_stdin()

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal's size; ignored when the process has no terminal."""
        rows, cols = _check_size(f"exec in container {self._container_id!r}", rows, cols)
        if self._resize is not None:
            self._resize(rows, cols)

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code, waiting at most ``timeout`` s (None: as long as it takes)."""
        if self._returncode is None:
            self._returncode = self._wait(timeout)
        return self._returncode

    def close(self) -> None:
        """Close the stdio and the monitor connection."""
        self._stream.close()
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
