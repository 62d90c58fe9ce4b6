"""Exec through criolib's monitor: exec sync (output captured up to a cap) and streaming.

docs/conmon-design.md ``exec``: the client builds the runtime's ``exec`` command line
(:meth:`~criolib.runtime_spec.RuntimeClient.exec_command`), hands the monitor its ends
of the stdio pipes with the request, and reads the output itself while the monitor
runs the command and reports ``started`` and then ``exited`` on the same connection.
The exit reported is the process's (the runtime's own, or for a detached terminal exec
the process the monitor waits for); only error lines in the runtime's log tell a
failure of the runtime itself apart (:class:`ExecFailed`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import selectors
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from criolib.conmon._api import ExecResult
from criolib.conmon._client_conn import NoMonitor, ReplyTimeout, connect, receive
from criolib.conmon._errors import (
    ContainerExited,
    ExecFailed,
    InvalidMonitorConfig,
    MonitorError,
    MonitorProtocolError,
)
from criolib.conmon._stdio import ExecProcess, PipeStream, PtyStream
from criolib.conmon._wire import _WireError, send_msg

if TYPE_CHECKING:
    from criolib.runtime_spec import RuntimeClient, RuntimeCommand

__all__ = ["exec_stream", "exec_sync"]

Exited = Callable[[str], MonitorError]

_serial = itertools.count()
#: After the exit, output still arriving is read until the pipes are quiet this long:
#: a daemon the process left behind may hold them open for ever (as in criolib._exec).
_DRAIN_IDLE = 0.1
#: How long the monitor may take to start an exec (the runtime's exec, ~50 ms).
_STARTED_TIMEOUT = 60.0
#: Beyond an exec's own timeout, how long to wait for the monitor to report the kill.
_SLACK = 30.0
_READ = 65536


class _Scratch:
    """``<container dir>/exec/<pid>-<n>.*``: the exec's runtime log, pid file, process
    file and console socket, removed when the exec is done."""

    def __init__(self, container_dir: Path) -> None:
        base = container_dir / "exec"
        base.mkdir(mode=0o700, exist_ok=True)
        stem = f"{os.getpid()}-{next(_serial)}"
        self.log = base / f"{stem}.log"
        self.pid = base / f"{stem}.pid"
        self.process = base / f"{stem}.process.json"
        self.console = base / f"{stem}.console.sock"

    def cleanup(self) -> None:
        for path in (self.log, self.pid, self.process, self.console):
            with contextlib.suppress(OSError):
                path.unlink()


def _command(record: dict[str, Any], runtime: RuntimeClient,
             command: Sequence[str] | Mapping[str, Any], scratch: _Scratch, *,
             tty: bool) -> RuntimeCommand:
    from criolib.runtime_spec import RuntimeSpecError

    cid = record["container_id"]
    if isinstance(command, (str, bytes)):
        raise InvalidMonitorConfig(f"exec in container {cid!r}: the command is an argv "
                                   f"list (or a process mapping), not a string {command!r}")
    try:
        return runtime.exec_command(
            cid, command, log_path=scratch.log,
            process_file=scratch.process if isinstance(command, Mapping) else None,
            tty=tty, detach=tty, pid_file=scratch.pid,
            console_socket=scratch.console if tty else None)
    except RuntimeSpecError as exc:
        raise InvalidMonitorConfig(f"exec in container {cid!r}: {exc}") from exc
    except OSError as exc:
        raise MonitorError(f"exec in container {cid!r}: cannot write its process file "
                           f"{scratch.process}: {exc.strerror}") from exc


def _message(record: dict[str, Any], cmd: RuntimeCommand, scratch: _Scratch, *, tty: bool,
             timeout: float | None, fds: list[str]) -> dict[str, Any]:
    return {"op": "exec", "id": record["container_id"], "argv": list(cmd.argv),
            "env": dict(cmd.env), "pid_file": str(scratch.pid),
            "console_socket": str(scratch.console) if tty else None, "terminal": tty,
            "timeout": timeout, "fds": fds}


def _start(record: dict[str, Any], message: dict[str, Any], fds: list[int],
           exited: Exited) -> socket.socket:
    what = f"exec in container {record['container_id']!r}"
    try:
        sock = connect(record["monitor_socket"], what)
    except NoMonitor:
        raise exited("exec") from None
    try:
        send_msg(sock, message, fds)
    except (OSError, _WireError) as exc:
        sock.close()
        raise MonitorError(f"{what}: cannot send the request to the monitor: {exc}") from exc
    return sock


def _event(sock: socket.socket, timeout: float | None, what: str,
           exited: Exited) -> tuple[dict[str, Any], list[int]]:
    """The monitor's next event on an exec connection; its refusals as errors."""
    try:
        reply, fds = receive(sock, timeout, what)
    except ReplyTimeout:
        raise
    except NoMonitor:
        raise exited("exec") from None
    if reply["ok"]:
        return reply, fds
    for fd in fds:
        os.close(fd)
    kind, text = str(reply.get("error")), str(reply.get("message", ""))
    if kind == "exited":
        raise ContainerExited(f"{what}: the container has exited")
    if kind == "creating":
        # Not ContainerExited: the container is on its way up, not gone.
        raise MonitorError(f"{what}: the container is still being created; exec once "
                           "its create is done")
    if kind == "unknown":
        # The monitor drops exited containers after a while: the exit file tells
        # an exit (ContainerExited) from a monitor that lost it (MonitorGone).
        raise exited("exec")
    raise MonitorError(f"{what}: the monitor refused it ({kind}: {text})")


def _exit_event(reply: dict[str, Any], what: str) -> tuple[int, bool]:
    returncode = reply.get("returncode")
    if reply.get("event") != "exited" or not isinstance(returncode, int):
        raise MonitorProtocolError(f"{what}: expected the exec's exit, got {reply}")
    return returncode, bool(reply.get("timed_out"))


def _check_runtime(runtime: RuntimeClient, cmd: RuntimeCommand, returncode: int,
                   scratch: _Scratch) -> None:
    """Raise :class:`ExecFailed` if the runtime's log says the runtime itself failed."""
    if returncode == 0:
        return
    try:
        log = scratch.log.read_bytes()
    except OSError:
        return
    err = runtime.command_error(cmd, returncode, log)
    if err.runtime_message:
        raise ExecFailed(f"exec in container {cmd.container_id!r} failed: {err}",
                         container_id=cmd.container_id, runtime_error=err) from err


def _pipes() -> tuple[int, int]:
    return os.pipe2(os.O_CLOEXEC)


def exec_sync(record: dict[str, Any], container_dir: Path, runtime: RuntimeClient,
              command: Sequence[str] | Mapping[str, Any], *, timeout: float | None,
              output_limit: int, exited: Exited) -> ExecResult:
    """Run ``command`` to its end; see :meth:`CriolibMonitor.exec_sync`."""
    what = f"exec in container {record['container_id']!r}"
    scratch = _Scratch(container_dir)
    ours: list[int] = []  # descriptors to close on the way out
    try:
        cmd = _command(record, runtime, command, scratch, tty=False)
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        ours.append(devnull)
        out_r, out_w = _pipes()
        ours += [out_r, out_w]
        err_r, err_w = _pipes()
        ours += [err_r, err_w]
        message = _message(record, cmd, scratch, tty=False, timeout=timeout,
                           fds=["stdin", "stdout", "stderr"])
        sock = _start(record, message, [devnull, out_w, err_w], exited)
        for fd in (devnull, out_w, err_w):  # only the runtime may hold the write ends
            ours.remove(fd)
            os.close(fd)
        with contextlib.closing(sock):
            returncode, timed_out, out, err, truncated = _collect(
                sock, out_r, err_r, timeout=timeout, limit=output_limit, what=what,
                exited=exited)
        if not timed_out:
            _check_runtime(runtime, cmd, returncode, scratch)
        return ExecResult(exit_code=returncode, stdout=out, stderr=err, timed_out=timed_out,
                          truncated=truncated)
    finally:
        for fd in ours:
            os.close(fd)
        scratch.cleanup()


def _collect(  # noqa: PLR0912 - one select loop over the socket and two pipes
    sock: socket.socket, out_r: int, err_r: int, *, timeout: float | None, limit: int,
    what: str, exited: Exited,
) -> tuple[int, bool, bytes, bytes, bool]:
    """Read both pipes while waiting for the exit event; keep ``limit`` bytes of each."""
    kept = {out_r: bytearray(), err_r: bytearray()}
    truncated = False
    result: tuple[int, bool] | None = None
    deadline = None if timeout is None else time.monotonic() + timeout + _SLACK
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        for fd in kept:
            sel.register(fd, selectors.EVENT_READ)
        open_pipes = 2
        while result is None or open_pipes:
            if result is not None:
                wait_for: float | None = _DRAIN_IDLE
            else:
                wait_for = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = sel.select(wait_for)
            if not events:
                if result is not None:
                    break  # exited; whatever still holds the pipes is not the process
                raise MonitorError(f"{what}: the monitor reported no exit within "
                                   f"{timeout:g} s + {_SLACK:g} s")
            for key, _ in events:
                if key.fileobj is sock:
                    reply, fds = _event(sock, 5.0, what, exited)
                    for fd in fds:
                        os.close(fd)
                    if reply.get("event") == "started":
                        continue
                    result = _exit_event(reply, what)
                    sel.unregister(sock)
                    continue
                fd = key.fd
                data = os.read(fd, _READ)
                if not data:
                    sel.unregister(fd)
                    open_pipes -= 1
                    continue
                buf = kept[fd]
                room = limit - len(buf)
                if room > 0:
                    buf += data[:room]
                if len(data) > room:
                    truncated = True  # read on, so the process never blocks on a full pipe
    returncode, timed_out = result
    return returncode, timed_out, bytes(kept[out_r]), bytes(kept[err_r]), truncated


def exec_stream(  # noqa: PLR0912, PLR0915 - three kinds of stdio, each with its clean-up
    record: dict[str, Any], container_dir: Path, runtime: RuntimeClient,
    command: Sequence[str] | Mapping[str, Any], *, tty: bool, stdin: bool, exited: Exited,
) -> ExecProcess:
    """Start ``command`` with streamed stdio; see :meth:`CriolibMonitor.exec_stream`.

    A terminal comes from the runtime's console socket: the monitor sends the pty
    master back with ``started``, and ``resize`` is TIOCSWINSZ on it. The runtime's
    exec is detached then (``--detach``), as conmon runs it, for both runc and crun:
    runc refuses a console socket otherwise ("cannot use console socket if runc will
    not detach or allocate tty"), and the monitor, a subreaper, waits for the process
    named in the pid file and reports *its* status, not the runtime's.
    """
    cid = record["container_id"]
    what = f"exec in container {cid!r}"
    scratch = _Scratch(container_dir)
    theirs: list[int] = []  # the process's ends: closed once the monitor has them
    ours: list[int] = []
    sock: socket.socket | None = None
    try:
        cmd = _command(record, runtime, command, scratch, tty=tty)
        names: list[str] = []
        stdin_w = out_r = err_r = -1
        if not tty:
            if stdin:
                stdin_r, stdin_w = _pipes()
                theirs.append(stdin_r)
                ours.append(stdin_w)
            else:
                theirs.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            out_r, out_w = _pipes()
            err_r, err_w = _pipes()
            theirs += [out_w, err_w]
            ours += [out_r, err_r]
            names = ["stdin", "stdout", "stderr"]
        message = _message(record, cmd, scratch, tty=tty, timeout=None, fds=names)
        sock = _start(record, message, theirs, exited)
        for fd in theirs:
            os.close(fd)
        theirs.clear()
        reply, got = _event(sock, _STARTED_TIMEOUT, what, exited)
        if reply.get("event") == "started" and tty and not got:
            # No terminal came: the runtime failed before sending one; its exit says why.
            reply, got = _event(sock, _STARTED_TIMEOUT, what, exited)
        if reply.get("event") != "started":
            for fd in got:
                os.close(fd)
            if reply.get("event") == "exited":
                _check_runtime(runtime, cmd, _exit_event(reply, what)[0], scratch)
            raise MonitorProtocolError(f"{what}: expected 'started' (with the terminal "
                                       f"when asked), got {reply}")
        if tty and not got:
            raise MonitorProtocolError(f"{what}: the monitor reported the start without "
                                       "the terminal")
        stream: PtyStream | PipeStream
        resize: Callable[[int, int], None] | None = None
        if tty:
            pty = PtyStream(got.pop(0), container_id=cid)
            stream = pty
            resize = pty.resize
        else:
            stream = PipeStream(stdin_w if stdin else None, out_r, err_r, container_id=cid)
        ours.clear()  # the stream owns them now
        for fd in got:
            os.close(fd)
    except BaseException:
        for fd in theirs + ours:
            os.close(fd)
        if sock is not None:
            sock.close()
        scratch.cleanup()
        raise
    return ExecProcess(stream, wait=_Waiter(sock, runtime=runtime, cmd=cmd, scratch=scratch,
                                               what=what, exited=exited),
                       resize=resize, container_id=cid,
                       close=_closer(sock, scratch))


class _Waiter:
    """The ``wait`` of a streaming exec: the ``exited`` event on the held connection."""

    def __init__(self, sock: socket.socket, *, runtime: RuntimeClient, cmd: RuntimeCommand,
                 scratch: _Scratch, what: str, exited: Exited) -> None:
        self._sock = sock
        self._runtime = runtime
        self._cmd = cmd
        self._scratch = scratch
        self._what = what
        self._exited = exited

    def __call__(self, timeout: float | None) -> int | None:
        if self._sock.fileno() < 0:
            raise MonitorError(f"{self._what}: the exec was closed before its exit was read")
        try:
            reply, fds = _event(self._sock, timeout, self._what, self._exited)
        except ReplyTimeout:
            return None
        for fd in fds:
            os.close(fd)
        returncode, _ = _exit_event(reply, self._what)
        try:
            _check_runtime(self._runtime, self._cmd, returncode, self._scratch)
        finally:
            self._sock.close()
            self._scratch.cleanup()
        return returncode


def _closer(sock: socket.socket, scratch: _Scratch) -> Callable[[], None]:
    """Close an exec's connection and remove its scratch files."""
    def close() -> None:
        sock.close()
        scratch.cleanup()
    return close
