"""``CriolibMonitor``: the :class:`~criolib.conmon.Monitor` backend of criolib's monitor.

The caller side of docs/conmon-design.md. Containers of one ``group`` (a pod) share
one monitor process (conmon-rs's model); a container without a group gets its own.
The client writes the record, starts the group's monitor when none listens (under the
group lock), builds the runtime's command lines with
:class:`~criolib.runtime_spec.RuntimeClient` and diagnoses their failures; the monitor
runs them, supervises the containers, writes logs and exit files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from criolib.conmon._api import (
    DEFAULT_EXEC_OUTPUT_LIMIT,
    ContainerConfig,
    ContainerStatus,
    Created,
    ExecResult,
    ExitStatus,
    check_container_id,
)
from criolib.conmon._client_conn import (
    NoMonitor,
    ReplyTimeout,
    group_lock,
    receive,
    request,
    send_request,
    spawn_daemon,
)
from criolib.conmon._client_exec import exec_stream, exec_sync
from criolib.conmon._errors import (
    ContainerExited,
    CreateFailed,
    InvalidMonitorConfig,
    MonitorError,
    MonitorGone,
    MonitorProtocolError,
)
from criolib.conmon._records import (
    RECORD,
    RuntimeClients,
    check_exec_args,
    clear_stale_exit,
    container_dir,
    list_containers,
    make_container_dir,
    new_record,
    pid_alive,
    read_exit,
    read_record,
    remove_container_dir,
    write_record,
)
from criolib.conmon._stdio import Attachment
from criolib.errors import CriolibError

if TYPE_CHECKING:
    from criolib.conmon._stdio import ExecProcess
    from criolib.runtime_spec import RuntimeClient

__all__ = ["CriolibMonitor"]

log = logging.getLogger("criolib.conmon")

#: Extra time, beyond the create timeout, for the monitor's answer to a create.
_CREATE_SLACK = 30.0
#: How long ``status`` waits for the exit files of a container the monitor saw exit.
_EXITING_WAIT = 5.0


def _create_request(config: ContainerConfig, argv: Sequence[str], env: Mapping[str, str],
                    cdir: Path, persist: Path) -> dict[str, Any]:
    """The ``create`` request of docs/conmon-design.md for ``config``."""
    return {
        "op": "create", "id": config.container_id, "argv": list(argv), "env": dict(env),
        "pid_file": str(cdir / "pid"),
        "console_socket": str(cdir / "console.sock") if config.terminal else None,
        "terminal": config.terminal, "stdin": config.stdin, "stdin_once": config.stdin_once,
        "log_path": None if config.log_path is None else str(config.log_path),
        "log_size_max": config.log_size_max, "log_max_line": config.log_max_line,
        "exit_file": str(config.exit_dir / config.container_id), "persist_dir": str(persist),
        "attach": str(cdir / "attach"), "timeout": config.create_timeout,
    }


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _error_of(reply: dict[str, Any]) -> tuple[str, str]:
    return str(reply.get("error", "internal")), str(reply.get("message", ""))


class CriolibMonitor:
    """criolib's monitor (``backend="criolib"``), its state under ``run_dir``.

    ``python`` runs the monitor process (started as ``python -I -S``: the standard
    library only); a group's monitor exits ``idle_exit`` seconds after it supervises
    nothing. Everything is found again from ``run_dir`` by a new object or process.
    """

    def __init__(self, run_dir: str | os.PathLike[str], *, python: str = sys.executable,
                 idle_exit: float = 1.0) -> None:
        if not isinstance(idle_exit, (int, float)) or isinstance(idle_exit, bool) or \
                idle_exit < 0:
            raise InvalidMonitorConfig(f"idle_exit must be a number of seconds >= 0, "
                                       f"not {idle_exit!r}")
        self._run_dir = Path(run_dir).absolute()
        self._python = python
        self._idle_exit = float(idle_exit)
        self._runtimes = RuntimeClients()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CriolibMonitor({str(self._run_dir)!r})"

    @property
    def name(self) -> str:
        """``"criolib"``."""
        return "criolib"

    @property
    def run_dir(self) -> Path:
        """Where the records, sockets and the monitors' logs live."""
        return self._run_dir

    @property
    def _monitors(self) -> Path:
        return self._run_dir / "monitors"

    # -- create ---------------------------------------------------------------------

    def create(self, config: ContainerConfig) -> Created:
        """Run the runtime's ``create`` for ``config`` under the group's monitor.

        Returns once the runtime exited and the init's pid is known; the caller then
        starts the container with its runtime client. A failed create raises
        :class:`CreateFailed` carrying the runtime client's diagnosis, and leaves
        nothing behind under ``run_dir``.
        """
        if not isinstance(config, ContainerConfig):
            raise InvalidMonitorConfig(f"create needs a ContainerConfig, not {config!r}")
        cid = config.container_id
        cdir = container_dir(self._run_dir, cid)
        if (cdir / RECORD).exists():
            raise CreateFailed(f"container {cid!r} is already monitored under "
                               f"{self._run_dir}; forget it first", container_id=cid)
        group = config.group or cid
        sock = self._monitors / f"{group}.sock"
        from criolib.runtime_spec import RuntimeSpecError

        try:
            command = config.runtime.create_command(
                cid, config.bundle, log_path=cdir / "runtime-create.log",
                pid_file=cdir / "pid",
                console_socket=cdir / "console.sock" if config.terminal else None,
                no_pivot=config.no_pivot, no_new_keyring=config.no_new_keyring)
        except RuntimeSpecError as exc:
            raise CreateFailed(f"container {cid!r}: {exc}", container_id=cid,
                               runtime_error=exc) from exc
        persist = config.persist_dir or cdir
        self._prepare_dirs(config, persist)
        record = new_record("criolib", config, attach=cdir / "attach",
                            persist_dir=str(persist), monitor_socket=str(sock))
        message = _create_request(config, command.argv, command.env, cdir, persist)
        what = f"create of container {cid!r}"
        try:
            write_record(self._run_dir, record)
            # The lock only covers finding (or starting) the monitor and handing it the
            # request: once sent, the connection keeps the monitor busy, and a pod's
            # other creates need not wait for this runtime create.
            with group_lock(self._monitors / f"{group}.lock"):
                monitor_pid = self._connect_or_spawn(group, sock)
                conn = send_request(str(sock), message, what)
        except OSError as exc:
            remove_container_dir(self._run_dir, cid)
            raise MonitorError(f"{what}: {exc}") from exc
        except BaseException:
            remove_container_dir(self._run_dir, cid)
            raise
        reply = self._create_reply(config, conn, what)
        if not reply["ok"]:
            self._create_failed(config, command, reply)
        pid = reply.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool):
            raise MonitorProtocolError(f"{what}: the monitor's reply has no pid: {reply}")
        record |= {"pid": pid, "monitor_pid": monitor_pid}
        try:
            write_record(self._run_dir, record)
        except OSError as exc:
            raise MonitorError(f"{what}: the container runs (pid {pid}) but its record "
                               f"cannot be written: {exc}") from exc
        return Created(container_id=cid, pid=pid, monitor_pid=monitor_pid)

    def _create_reply(self, config: ContainerConfig, conn: socket.socket,
                      what: str) -> dict[str, Any]:
        """The monitor's answer to a create sent on ``conn`` (closed here).

        A monitor that dies meanwhile may leave a created container behind: it is
        deleted (best effort) and the error says how that went. A caller interrupted
        here (KeyboardInterrupt, SystemExit) keeps the record: the monitor goes on
        with the create and supervises the container, which a later process finds.
        """
        cid = config.container_id
        try:
            with contextlib.closing(conn):
                reply, fds = receive(conn, config.create_timeout + _CREATE_SLACK, what)
            for fd in fds:
                os.close(fd)
            return reply
        except MonitorGone as exc:
            outcome = self._delete_cut_off(config)
            remove_container_dir(self._run_dir, cid)
            raise MonitorGone(f"{what}: the monitor died during the runtime's create "
                              f"({exc}); {outcome}") from exc
        except Exception:
            remove_container_dir(self._run_dir, cid)
            raise

    @staticmethod
    def _delete_cut_off(config: ContainerConfig) -> str:
        """``runtime delete --force`` of a create cut off halfway; what happened, in words."""
        from criolib.runtime_spec import RuntimeSpecError

        cid = config.container_id
        try:
            config.runtime.delete(cid, force=True)
        except RuntimeSpecError as exc:
            log.debug("container %r: delete after a cut-off create: %s", cid, exc)
            return (f"deleting what the runtime may have created failed ({exc}); check "
                    f"with the runtime whether container {cid!r} exists")
        return f"the runtime's container {cid!r} was deleted (runtime delete --force)"

    def _prepare_dirs(self, config: ContainerConfig, persist: Path) -> None:
        """The container's, monitors', exit and persist dirs, without stale exits."""
        cid = config.container_id
        try:
            make_container_dir(self._run_dir, cid)
            self._monitors.mkdir(mode=0o700, exist_ok=True)
            config.exit_dir.mkdir(parents=True, exist_ok=True)
            persist.mkdir(parents=True, exist_ok=True)
            clear_stale_exit(config, persist)
        except OSError as exc:
            remove_container_dir(self._run_dir, cid)
            raise MonitorError(f"container {cid!r}: cannot prepare its directories: "
                               f"{exc}") from exc

    def _create_failed(self, config: ContainerConfig, command: Any,
                       reply: dict[str, Any]) -> None:
        cid = config.container_id
        kind, text = _error_of(reply)
        if kind == "exists":
            # Another caller is creating this id in the same monitor right now: its
            # directory is not ours to remove.
            raise CreateFailed(f"container {cid!r}: its monitor already supervises a "
                               f"container of that id", container_id=cid)
        try:
            if kind == "create-failed":
                returncode = reply.get("returncode")
                try:
                    log = command.log_path.read_bytes()
                except OSError:
                    log = b""
                err = config.runtime.command_error(
                    command, returncode if isinstance(returncode, int) else None, log)
                raise CreateFailed(f"container {cid!r}: {err}", container_id=cid,
                                   runtime_error=err) from err
            raise CreateFailed(f"container {cid!r}: the monitor refused the create "
                               f"({kind}: {text})", container_id=cid)
        finally:
            remove_container_dir(self._run_dir, cid)

    def _connect_or_spawn(self, group: str, sock: Path) -> int:
        """The pid of the group's monitor, started if none listens (lock held)."""
        what = f"monitor of group {group!r}"
        try:
            reply = request(str(sock), {"op": "status"}, what, timeout=10.0)
        except NoMonitor:
            return spawn_daemon(self._python, group=group, socket_path=sock,
                                lock_path=self._monitors / f"{group}.lock",
                                log_path=self._monitors / f"{group}.log",
                                idle_exit=self._idle_exit)
        pid = reply.get("pid")
        if not reply["ok"] or not isinstance(pid, int):
            raise MonitorProtocolError(f"{what}: odd answer to status: {reply}")
        return pid

    # -- what the monitor knows --------------------------------------------------------

    def _record(self, container_id: str) -> dict[str, Any]:
        return read_record(self._run_dir, check_container_id(container_id))

    def _ask(self, record: dict[str, Any], message: dict[str, Any],
             timeout: float | None = 30.0) -> dict[str, Any]:
        """A request to the record's monitor; :class:`NoMonitor` if it is gone."""
        what = f"container {record['container_id']!r}"
        if not pid_alive(record.get("monitor_pid")) and record.get("pid") is not None:
            raise NoMonitor(f"{what}: its monitor (pid {record.get('monitor_pid')}) is gone")
        return request(record["monitor_socket"], message, what, timeout=timeout)

    def _exit_from_reply(self, record: dict[str, Any], reply: dict[str, Any]) -> ExitStatus:
        found = read_exit(record)
        if found is not None:
            return found
        code, when = reply.get("exit_code"), reply.get("finished_at_ns")
        if not isinstance(code, int) or not isinstance(when, int):
            raise MonitorProtocolError(f"container {record['container_id']!r}: odd exit "
                                       f"from the monitor: {reply}")
        return ExitStatus(exit_code=code, finished_at=when / 1e9,
                          oom_killed=bool(reply.get("oom")))

    def _wait_record(self, record: dict[str, Any], timeout: float | None) -> ExitStatus | None:
        cid = record["container_id"]
        try:
            reply = self._ask(record, {"op": "wait", "id": cid}, timeout=timeout)
        except ReplyTimeout:
            return read_exit(record)
        except NoMonitor:
            reply = {"ok": False, "error": "gone"}
        if reply["ok"]:
            return self._exit_from_reply(record, reply)
        found = read_exit(record)
        if found is not None:
            return found
        kind, text = _error_of(reply)
        if kind in ("unknown", "gone"):
            raise MonitorGone(f"container {cid!r}: its monitor is gone (or no longer knows "
                              f"it) and no exit was recorded in {record['exit_file']}; ask "
                              "the runtime about it")
        raise MonitorError(f"container {cid!r}: wait failed in the monitor ({kind}: {text})")

    def status(self, container_id: str) -> ContainerStatus:
        """The container's state: creating, running, exited (with its exit) or lost.

        The monitor's ``status`` reply gives each container's ``state`` (``creating``,
        ``running``, ``exited``) and its log's health (``log_error``, ``log_dropped``).
        """
        record = self._record(container_id)
        found = read_exit(record)
        running = creating = False
        info: Any = None
        pid, monitor_pid = record.get("pid"), record.get("monitor_pid")
        if found is None:
            try:
                reply = self._ask(record, {"op": "status"}, timeout=10.0)
                known = reply.get("containers") if reply["ok"] else None
                info = known.get(container_id) if isinstance(known, dict) else None
                if pid is None and isinstance(info, dict):
                    # The record's writer died before it learnt them (a cut-off create).
                    pid, monitor_pid = _int_or_none(info.get("pid")), reply.get("pid")
            except NoMonitor:
                pass
            if not isinstance(info, dict):
                info = {}
            state = info.get("state")
            if state == "creating":
                creating = True
            elif state == "running" or (state is None and info.get("running")):
                running = True
            elif info and state in ("exited", None):  # its exit files are on their way
                with contextlib.suppress(MonitorGone):
                    found = self._wait_record(record, _EXITING_WAIT)
            else:
                found = read_exit(record)
        else:
            info = {}
        log_path, log_error, dropped = (record.get("log_path"), info.get("log_error"),
                                        info.get("log_dropped"))
        return ContainerStatus(
            container_id=container_id, backend="criolib", pid=pid,
            monitor_pid=_int_or_none(monitor_pid), running=running, exit=found,
            log_path=None if log_path is None else Path(log_path), creating=creating,
            log_error=log_error if isinstance(log_error, str) else None,
            log_dropped=_int_or_none(dropped) or 0)

    def wait(self, container_id: str, timeout: float | None = None) -> ExitStatus | None:
        """The container's exit, waiting at most ``timeout`` s (None: until it exits).

        None when it is still running at the timeout; :class:`MonitorGone` when its
        monitor died without recording an exit.
        """
        record = self._record(container_id)
        found = read_exit(record)
        if found is not None:
            return found
        return self._wait_record(record, timeout)

    # -- attach and control ---------------------------------------------------------

    def attach(self, container_id: str) -> Attachment:
        """Attach to the container's stdio (see :class:`~criolib.conmon.Attachment`)."""
        record = self._record(container_id)
        if read_exit(record) is not None:
            raise ContainerExited(f"container {container_id!r} has exited: nothing to "
                                  "attach to")
        try:
            return Attachment.connect(record["attach"], container_id=container_id,
                                      resize=partial(self.resize, container_id))
        except MonitorGone:
            if read_exit(record) is not None:
                raise ContainerExited(f"container {container_id!r} has exited: nothing to "
                                      "attach to") from None
            raise

    def _control(self, container_id: str, message: dict[str, Any], verb: str) -> None:
        record = self._record(container_id)
        gone = f"container {container_id!r} has exited: cannot {verb}"
        if read_exit(record) is not None:
            raise ContainerExited(gone)
        try:
            reply = self._ask(record, message)
        except NoMonitor:
            if read_exit(record) is not None:
                raise ContainerExited(gone) from None
            raise MonitorGone(f"container {container_id!r}: its monitor is gone; cannot "
                              f"{verb}") from None
        if reply["ok"]:
            return
        kind, text = _error_of(reply)
        if kind == "exited":
            raise ContainerExited(gone)
        if kind == "creating":
            raise MonitorError(f"container {container_id!r} is still being created: "
                               f"cannot {verb}")
        if kind == "unknown":
            raise MonitorGone(f"container {container_id!r}: its monitor no longer knows it; "
                              f"cannot {verb}")
        raise MonitorError(f"container {container_id!r}: {verb} failed in the monitor "
                           f"({kind}: {text})")

    def resize(self, container_id: str, rows: int, cols: int) -> None:
        """Set the container's terminal size (ignored without a terminal, like conmon)."""
        for name, value in (("rows", rows), ("cols", cols)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
                raise InvalidMonitorConfig(f"container {container_id!r}: terminal {name} "
                                           f"must be an integer from 1 to 65535, not {value!r}")
        self._control(container_id, {"op": "resize", "id": container_id, "rows": rows,
                                     "cols": cols}, "resize its terminal")

    def reopen_log(self, container_id: str) -> None:
        """Close and open the container's log file again (after a rotation).

        A log that cannot be opened (its directory removed, a full disk) raises
        :class:`MonitorError` naming the path; the container keeps running.
        """
        log_path = self._record(container_id).get("log_path")
        verb = "reopen its log" if log_path is None else f"reopen its log {log_path}"
        self._control(container_id, {"op": "reopen_log", "id": container_id}, verb)

    # -- exec ---------------------------------------------------------------------------

    def _runtime_of(self, record: dict[str, Any]) -> RuntimeClient:
        return self._runtimes.for_record(record)

    def exec_sync(
        self,
        container_id: str,
        command: Sequence[str] | Mapping[str, Any],
        *,
        timeout: float | None = None,
        output_limit: int = DEFAULT_EXEC_OUTPUT_LIMIT,
        runtime: RuntimeClient | None = None,
    ) -> ExecResult:
        """Run ``command`` (an argv, or a process object in config.json's form) in the
        container and collect its exit code and output.

        At most ``output_limit`` bytes of stdout and of stderr are kept (the rest is
        read and dropped: ``truncated``); past ``timeout`` s the process is killed
        (``timed_out``, exit code 137). A failure of the runtime itself raises
        :class:`ExecFailed`. ``runtime`` replaces the client rebuilt from the record.
        """
        check_exec_args(container_id, output_limit, timeout)
        record = self._record(container_id)
        self._check_running(record, "exec")
        return exec_sync(record, container_dir(self._run_dir, container_id),
                         runtime or self._runtime_of(record), command,
                         timeout=timeout, output_limit=output_limit,
                         exited=partial(self._exited, record))

    def exec_stream(
        self,
        container_id: str,
        command: Sequence[str] | Mapping[str, Any],
        *,
        tty: bool = False,
        stdin: bool = False,
        runtime: RuntimeClient | None = None,
    ) -> ExecProcess:
        """Start ``command`` in the container with its stdio streamed to the caller: a
        terminal (``tty``) or pipes (stdin only with ``stdin``)."""
        record = self._record(container_id)
        self._check_running(record, "exec")
        return exec_stream(record, container_dir(self._run_dir, container_id),
                           runtime or self._runtime_of(record), command, tty=tty,
                           stdin=stdin, exited=partial(self._exited, record))

    def _check_running(self, record: dict[str, Any], verb: str) -> None:
        if read_exit(record) is not None:
            raise ContainerExited(f"container {record['container_id']!r} has exited: "
                                  f"cannot {verb}")

    def _exited(self, record: dict[str, Any], verb: str) -> MonitorError:
        """The error for a monitor that refused or vanished: exited, or gone."""
        cid = record["container_id"]
        if read_exit(record) is not None:
            return ContainerExited(f"container {cid!r} has exited: cannot {verb}")
        return MonitorGone(f"container {cid!r}: its monitor is gone; cannot {verb}")

    # -- bookkeeping ----------------------------------------------------------------

    def containers(self) -> list[str]:
        """The ids with a record under ``run_dir`` (running, exited or lost), sorted."""
        return list_containers(self._run_dir)

    def forget(self, container_id: str) -> None:
        """Remove the record of a container that is no longer running.

        The runtime's state is the caller's (``runtime.delete``); a running container,
        or one still being created, raises :class:`MonitorError`.
        """
        status = self.status(container_id)
        if status.creating:
            raise MonitorError(f"container {container_id!r} is still being created: wait "
                               "for the create to end (and delete it) before forgetting it")
        if status.running:
            raise MonitorError(f"container {container_id!r} is still running: stop it "
                               "before forgetting it")
        remove_container_dir(self._run_dir, container_id)

    def monitor_pids(self) -> dict[str, int]:
        """Group -> pid of each monitor process serving this run dir now."""
        found: dict[str, int] = {}
        try:
            sockets = sorted(self._monitors.glob("*.sock"))
        except OSError:
            return found
        for sock in sockets:
            group = sock.name[: -len(".sock")]
            try:
                reply = request(str(sock), {"op": "status"}, f"monitor of group {group!r}",
                                timeout=5.0)
            except CriolibError:
                continue
            pid = reply.get("pid")
            if reply["ok"] and isinstance(pid, int):
                found[group] = pid
        return found
