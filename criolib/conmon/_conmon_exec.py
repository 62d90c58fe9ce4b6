"""Exec under the conmon binary: exec sync (CRI-O's way) and streaming exec (podman's).

Each exec runs under a conmon of its own with ``-e --exec-process-spec FILE``; conmon
runs the runtime's ``exec --detach --pid-file --process FILE`` and reports on its sync
pipe first ``{"data": pid}``, then ``{"data": exit code}`` — or ``{"data": -1,
"message": "command timed out"}`` after ``-T`` seconds, having SIGKILLed the process's
group — or, when the runtime failed, one negative ``data`` with the runtime's stderr as
``message`` (src/conmon.c). ``--sync`` keeps that conmon our child (no double fork), so
it is reaped here. The exec's timeout is kept here (see :class:`_Killer`).

- exec sync (internal/oci/runtime_oci.go ExecSyncContainer): the process is the
  container's config.json ``process`` with ``args`` replaced (prepareProcessExec); the
  output goes to a CRI log (``-l k8s-file:``) capped with ``--log-global-size-max``,
  read back with :func:`~criolib.conmon.read_cri_log`.
- streaming exec (libpod/oci_conmon_exec_linux.go): ``--exec-attach`` with
  ``_OCI_ATTACHPIPE`` (conmon writes ``{"data": 0}`` there once its attach socket
  listens) and ``_OCI_STARTPIPE`` (written once to let conmon start, and again once we
  are attached, so no output is lost before we connect); ``-b`` is the exec's own
  directory, where conmon puts that socket and the exec's ``ctl`` fifo.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from criolib import _exec
from criolib.conmon._api import ExecResult
from criolib.conmon._conmon_proc import CTL_RESIZE, SyncPipe, SyncTimeout, write_ctl
from criolib.conmon._errors import (
    ExecFailed,
    InvalidMonitorConfig,
    MonitorError,
    MonitorProtocolError,
)
from criolib.conmon._logread import read_cri_log
from criolib.conmon._stdio import Attachment, ExecProcess

if TYPE_CHECKING:
    from criolib.runtime_spec import RuntimeClient, RuntimeCommand

__all__ = ["TIMED_OUT_MESSAGE", "ExecContext", "exec_stream", "exec_sync", "runtime_args"]

#: What conmon says on its sync pipe when ``-T`` ran out (conmon's TIMED_OUT_MESSAGE).
TIMED_OUT_MESSAGE = "command timed out"
#: How long the runtime's exec may take to start the process (~50 ms here).
_START_TIMEOUT = 60.0
#: After a timed-out exec was killed, how long conmon may take to report its exit.
_SLACK = 30.0
#: CRI log bytes per output byte budgeted for the timestamp, stream and tag of each
#: record; past the cap conmon stops writing (a flood of tiny lines may hit it first).
_LOG_OVERHEAD = 4

Check = Callable[[str], None]


@attrs.frozen
class ExecContext:
    """What an exec needs of its :class:`~criolib.conmon.ConmonMonitor`."""

    binary: Path
    log_level: str
    socket_dir: Path


def runtime_args(runtime: RuntimeClient, log_path: Path) -> list[str]:
    """``--runtime-arg`` for each of the runtime client's global options (``--root``,
    ``--log=log_path``, ``--log-format=json``, ``--systemd-cgroup``)."""
    args: list[str] = []
    for option in runtime.global_options(log_path=log_path):
        args += ["--runtime-arg", option]
    return args


class _Scratch:
    """``<container dir>/exec/<name>/``: process file, pid file, runtime log, output
    log; for a streaming exec also conmon's bundle (attach socket, ``ctl``, ``winsz``).
    ``cuuid`` is ``<id>@<name>``: unique across containers, so the symlink conmon makes
    in the socket dir is too."""

    def __init__(self, record: dict[str, Any], socket_dir: Path) -> None:
        cdir = Path(record["conmon_pidfile"]).parent
        base = cdir / "exec"
        base.mkdir(mode=0o700, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="x", dir=base))
        self.cuuid = f"{record['container_id']}@{self.dir.name}"
        self.link = socket_dir / self.cuuid
        self.process = self.dir / "process.json"
        self.pid = self.dir / "pid"
        self.runtime_log = self.dir / "runtime.log"
        self.output = self.dir / "output.log"
        self.conmon_log = self.dir / "conmon.log"

    def cleanup(self) -> None:
        with contextlib.suppress(OSError):
            if self.link.is_symlink():
                self.link.unlink()
        shutil.rmtree(self.dir, ignore_errors=True)


def _process(record: dict[str, Any], command: Sequence[str] | Mapping[str, Any],
             tty: bool) -> dict[str, Any]:
    """The exec's process object: ``command`` when it is one, else the container's own
    ``process`` with ``args`` replaced (CRI-O's prepareProcessExec), ``terminal`` set."""
    cid = record["container_id"]
    if isinstance(command, Mapping):
        process = dict(command)
    else:
        if isinstance(command, (str, bytes)) or not command or \
                not all(isinstance(a, str) for a in command):
            raise InvalidMonitorConfig(f"exec in container {cid!r}: the command must be a "
                                       f"non-empty argv list of strings, not {command!r}")
        bundle = Path(record["bundle"])
        try:
            config = json.loads((bundle / "config.json").read_bytes())
        except (OSError, ValueError) as exc:
            raise MonitorError(f"exec in container {cid!r}: cannot read the process of "
                               f"{bundle / 'config.json'}: {exc}") from exc
        process = dict(config.get("process") or {})
        process["args"] = list(command)
    process["terminal"] = tty
    if not tty:
        process.pop("consoleSize", None)
    return process


def _command(record: dict[str, Any], runtime: RuntimeClient,
             command: Sequence[str] | Mapping[str, Any], scratch: _Scratch, *,
             tty: bool) -> RuntimeCommand:
    """Write the process file; the RuntimeCommand is what a failure is diagnosed with."""
    from criolib.runtime_spec import RuntimeSpecError

    cid = record["container_id"]
    try:
        return runtime.exec_command(cid, _process(record, command, tty),
                                    log_path=scratch.runtime_log,
                                    process_file=scratch.process, tty=tty, detach=True,
                                    pid_file=scratch.pid)
    except RuntimeSpecError as exc:
        raise InvalidMonitorConfig(f"exec in container {cid!r}: {exc}") from exc
    except OSError as exc:
        raise MonitorError(f"exec in container {cid!r}: cannot write its process file "
                           f"{scratch.process}: {exc.strerror}") from exc


def _argv(ctx: ExecContext, record: dict[str, Any], runtime: RuntimeClient,
          scratch: _Scratch, log_arg: str) -> list[str]:
    cid = record["container_id"]
    return [str(ctx.binary), "--api-version", "1", "-c", cid, "-u", scratch.cuuid,
            "-n", cid, "-r", str(runtime.path), "-p", str(scratch.pid), "-e",
            "--exec-process-spec", str(scratch.process), "-l", log_arg,
            "--socket-dir-path", str(ctx.socket_dir), "--log-level", ctx.log_level,
            "--sync", *runtime_args(runtime, scratch.runtime_log)]


def _spawn(argv: list[str], command: RuntimeCommand, scratch: _Scratch,
           pipes: Mapping[str, int], what: str) -> subprocess.Popen[bytes]:
    env = {**command.env, **{name: str(fd) for name, fd in pipes.items()}}
    with open(scratch.conmon_log, "wb") as out:
        return _exec.spawn(argv, env=env, cwd=scratch.dir, stdout=out, stderr=out,
                           pass_fds=list(pipes.values()), pdeathsig=None,
                           new_session=True, what=what)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL conmon's process group (conmon, the runtime) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _reap(proc: subprocess.Popen[bytes]) -> None:
    if not _exec.wait_exit(proc, 5.0):
        _stop(proc)


def _failed(record: dict[str, Any], runtime: RuntimeClient, command: RuntimeCommand,
            scratch: _Scratch, *, said: str | None, check: Check) -> MonitorError:
    """The error for an exec conmon reported no pid for: the container exited, or the
    runtime's exec failed (:class:`ExecFailed` with the runtime client's diagnosis)."""
    cid = record["container_id"]
    try:
        check("exec in it")
    except MonitorError as gone:
        return gone
    try:
        log = scratch.runtime_log.read_bytes()
    except OSError:
        log = b""
    stderr = said or ""
    if not said and not log:
        with contextlib.suppress(OSError):
            stderr = scratch.conmon_log.read_bytes()[-2000:].decode(errors="replace")
    # conmon relays the runtime's stderr but not its status; runc and crun exit 1.
    error = runtime.command_error(command, 1, log, stderr=stderr)
    failed = ExecFailed(f"exec in container {cid!r} failed: {error}", container_id=cid,
                        runtime_error=error)
    failed.__cause__ = error
    return failed


def _pid_message(record: dict[str, Any], message: dict[str, Any] | None) -> tuple[int, str]:
    """(data, message) of conmon's first sync message; data <= 0 is a failure."""
    if message is None:
        return -1, ""
    data = message.get("data")
    if not isinstance(data, int) or isinstance(data, bool):
        raise MonitorProtocolError(f"exec in container {record['container_id']!r}: conmon "
                                   f"reported {message!r}")
    said = message.get("message")
    return data, said if isinstance(said, str) else ""


def _output(path: Path, limit: int, cap: int) -> tuple[bytes, bytes, bool]:
    """stdout, stderr (each cut at ``limit``) and whether anything was dropped."""
    try:
        records = read_cri_log(path)
        size = path.stat().st_size
    except (MonitorError, OSError):
        if not path.exists():
            return b"", b"", False
        raise
    parts: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
    for rec in records:
        parts[rec.stream].append(rec.message if rec.partial else rec.message + b"\n")
    out, err = b"".join(parts["stdout"]), b"".join(parts["stderr"])
    truncated = len(out) > limit or len(err) > limit or size >= cap
    return out[:limit], err[:limit], truncated


class _Killer:
    """Kills an exec's process at its deadline, as conmon's ``-T`` does: the process
    group when the process leads one of its own, else the process.

    conmon's own ``-T`` counts whole seconds on a GLib seconds timer, which fires up to a
    quarter second early or most of a second late; so the deadline is kept here, and
    ``-T`` (a second later) only stops an exec whose caller died. The pidfd, opened
    while conmon (the process's reaper) has not reported its exit, cannot name a reused
    pid.
    """

    def __init__(self, pid: int) -> None:
        self.pgid = 0
        try:
            self.pidfd = os.pidfd_open(pid)
            self.pgid = os.getpgid(pid)
        except ProcessLookupError:
            self.pidfd = -1

    def kill(self) -> None:
        if self.pidfd < 0:
            return
        with contextlib.suppress(ProcessLookupError):
            if self.pgid > 1 and self.pgid not in (os.getpgrp(), os.getpid()):
                os.killpg(self.pgid, signal.SIGKILL)
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    def close(self) -> None:
        if self.pidfd >= 0:
            fd, self.pidfd = self.pidfd, -1
            os.close(fd)


def _run_sync(sync: SyncPipe, proc: subprocess.Popen[bytes], timeout: float | None, *,
              failed: Callable[[str], MonitorError],
              record: dict[str, Any]) -> tuple[int, bool]:
    """Read conmon's two sync messages: (exit code, whether the timeout killed it)."""
    what = f"exec in container {record['container_id']!r}"
    try:
        pid, said = _pid_message(record, sync.message(
            time.monotonic() + _START_TIMEOUT))
        if pid <= 0:
            _reap(proc)
            raise failed(said)
        killer = _Killer(pid)
        killed = False
        try:
            try:
                second = sync.message(None if timeout is None
                                      else time.monotonic() + timeout)
            except SyncTimeout:
                killer.kill()
                killed = True
                second = sync.message(time.monotonic() + _SLACK)
        finally:
            killer.close()
    except SyncTimeout:
        _stop(proc)
        raise MonitorError(f"{what}: conmon did not report the exec's end in time; it "
                           "was killed") from None
    except ValueError as exc:
        _stop(proc)
        raise MonitorProtocolError(f"{what}: conmon wrote an unreadable message on its sync "
                                   f"pipe: {exc}") from exc
    _reap(proc)
    if second is None:
        raise MonitorError(f"{what}: conmon exited without reporting the exit code "
                           f"(status {proc.returncode})")
    code, said = _pid_message(record, second)
    timed_out = killed or (code == -1 and said == TIMED_OUT_MESSAGE)
    if code < 0 and not timed_out:
        raise MonitorError(f"{what}: conmon reported exit code {code} "
                           f"({said or 'no message'})")
    return (137 if timed_out else code), timed_out


def exec_sync(ctx: ExecContext, record: dict[str, Any], runtime: RuntimeClient,
              command: Sequence[str] | Mapping[str, Any], *, timeout: float | None,
              output_limit: int, check: Check) -> ExecResult:
    """Run ``command`` to its end under conmon; see ConmonMonitor.exec_sync."""
    cid = record["container_id"]
    what = f"exec in container {cid!r}"
    scratch = _Scratch(record, ctx.socket_dir)
    try:
        cmd = _command(record, runtime, command, scratch, tty=False)
        cap = max(1, output_limit) * 2 * _LOG_OVERHEAD + 65536
        argv = _argv(ctx, record, runtime, scratch, f"k8s-file:{scratch.output}")
        argv += ["--log-global-size-max", str(cap)]
        if timeout is not None:
            argv += ["-T", str(math.ceil(timeout) + 1)]
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        sync = SyncPipe(read_fd)
        try:
            try:
                proc = _spawn(argv, cmd, scratch, {"_OCI_SYNCPIPE": write_fd}, what)
            finally:
                os.close(write_fd)

            def failed(said: str) -> MonitorError:
                return _failed(record, runtime, cmd, scratch, said=said, check=check)

            code, timed_out = _run_sync(sync, proc, timeout, failed=failed, record=record)
        finally:
            sync.close()
        out, err, truncated = _output(scratch.output, output_limit, cap)
        return ExecResult(exit_code=code, stdout=out, stderr=err, timed_out=timed_out,
                          truncated=truncated)
    finally:
        scratch.cleanup()


class _StreamExec:
    """The conmon of one streaming exec: its sync pipe and the end of the session."""

    def __init__(self, proc: subprocess.Popen[bytes], sync: SyncPipe, scratch: _Scratch,
                 record: dict[str, Any]) -> None:
        self.proc = proc
        self.sync = sync
        self.scratch = scratch
        self.record = record
        self.code: int | None = None

    def wait(self, timeout: float | None) -> int | None:
        if self.code is not None:
            return self.code
        what = f"exec in container {self.record['container_id']!r}"
        if self.sync.fd < 0:
            raise MonitorError(f"{what}: the exec was closed before its exit was read")
        try:
            message = self.sync.message(None if timeout is None
                                        else time.monotonic() + timeout)
        except SyncTimeout:
            return None
        except ValueError as exc:
            raise MonitorProtocolError(f"{what}: conmon wrote an unreadable message on its "
                                       f"sync pipe: {exc}") from exc
        self.sync.close()
        _reap(self.proc)
        self.scratch.cleanup()
        if message is None:
            raise MonitorError(f"{what}: conmon exited without reporting the exit code "
                               f"(status {self.proc.returncode})")
        code, said = _pid_message(self.record, message)
        if code < 0:
            raise MonitorError(f"{what}: conmon reported exit code {code} "
                               f"({said or 'no message'})")
        self.code = code
        return code

    def resize(self, rows: int, cols: int) -> None:
        try:
            write_ctl(self.scratch.dir / "ctl", CTL_RESIZE, rows, cols)
        except OSError as exc:
            raise MonitorError(f"exec in container {self.record['container_id']!r}: cannot "
                               f"resize its terminal (the exec has ended?): "
                               f"{exc.strerror or exc}") from exc

    def close(self) -> None:
        # The process runs on; conmon keeps its scratch dir until then (forget removes it).
        self.sync.close()


def _attach(proc: subprocess.Popen[bytes], sync: SyncPipe, ready: SyncPipe, start_w: int,
            *, failed: Callable[[str | None], MonitorError], link: Path,
            cid: str) -> Attachment:
    """Let conmon start, attach once its socket listens, let it run the exec; the
    Attachment once conmon reported the process's pid."""
    what = f"exec in container {cid!r}"
    attachment: Attachment | None = None
    try:
        os.write(start_w, b"\0")  # conmon waits for this before it does anything
        if ready.message(time.monotonic() + _START_TIMEOUT) is None:
            _reap(proc)
            raise failed(None)
        attachment = Attachment.connect(link / "attach", container_id=cid)
        os.write(start_w, b"\0")  # now attached: let it run the runtime's exec
        pid, said = _pid_message({"container_id": cid},
                                 sync.message(time.monotonic() + _START_TIMEOUT))
        if pid <= 0:
            _reap(proc)
            raise failed(said)
    except BaseException as exc:
        if attachment is not None:
            attachment.close()
        if proc.returncode is None:
            _stop(proc)
        if isinstance(exc, SyncTimeout):
            raise MonitorError(f"{what}: conmon did not start the exec within "
                               f"{_START_TIMEOUT:g} s; it was killed") from None
        if isinstance(exc, ValueError):
            raise MonitorProtocolError(f"{what}: conmon wrote an unreadable message: "
                                       f"{exc}") from exc
        raise
    return attachment


def exec_stream(ctx: ExecContext, record: dict[str, Any], runtime: RuntimeClient,
                command: Sequence[str] | Mapping[str, Any], *, tty: bool, stdin: bool,
                check: Check) -> ExecProcess:
    """Start ``command`` under conmon and attach to it; see ConmonMonitor.exec_stream."""
    cid = record["container_id"]
    scratch = _Scratch(record, ctx.socket_dir)
    fds: list[int] = []
    try:
        cmd = _command(record, runtime, command, scratch, tty=tty)
        ctx.socket_dir.mkdir(mode=0o700, exist_ok=True)
        argv = _argv(ctx, record, runtime, scratch, "none")
        argv += ["-b", str(scratch.dir), "--exec-attach"]
        argv += (["-t"] if tty else []) + (["-i"] if stdin else [])
        sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
        fds.append(sync_r)
        start_r, start_w = os.pipe2(os.O_CLOEXEC)
        fds.append(start_w)
        attach_r, attach_w = os.pipe2(os.O_CLOEXEC)
        fds.append(attach_r)
        try:
            proc = _spawn(argv, cmd, scratch, {"_OCI_SYNCPIPE": sync_w,
                                                "_OCI_STARTPIPE": start_r,
                                                "_OCI_ATTACHPIPE": attach_w},
                          f"exec in container {cid!r}")
        finally:
            for fd in (sync_w, start_r, attach_w):
                os.close(fd)
        sync = SyncPipe(sync_r)

        def failed(said: str | None) -> MonitorError:
            return _failed(record, runtime, cmd, scratch, said=said, check=check)

        attachment = _attach(proc, sync, SyncPipe(attach_r), start_w, failed=failed,
                             link=scratch.link, cid=cid)
    except BaseException:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        scratch.cleanup()
        raise
    for fd in (start_w, attach_r):  # conmon reads the start pipe no more
        os.close(fd)
    session = _StreamExec(proc, sync, scratch, record)
    return ExecProcess(attachment, wait=session.wait, resize=session.resize if tty else None,
                       container_id=cid, close=session.close)
