"""``ConmonMonitor``: the :class:`~criolib.conmon.Monitor` protocol on the conmon binary.

Drives containers/conmon (Debian's 2.1.6) the way CRI-O's internal/oci/runtime_oci.go
and podman's libpod/oci_conmon_linux.go do: one conmon per container, started with
``--api-version 1`` and a sync pipe (``_OCI_SYNCPIPE``) on which it reports the
container's pid or the runtime's error; it double-forks and stays behind as the
container's parent (a subreaper), runs only the runtime's ``create`` (the caller runs
``start``), writes the CRI log (``-l k8s-file:PATH``), and on exit writes
``<exit dir>/<id>`` and ``<persist dir>/exit`` (the code in decimal; the file's mtime
is the exit time) and, after an OOM kill, ``<persist dir>/oom`` (src/conmon.c,
src/cgroup.c). Its attach socket is ``<bundle>/attach``, reached through the symlink
``<socket dir>/<cuuid>`` it makes so the path stays short (src/conn_sock.c); its control
fifo ``<bundle>/ctl`` takes ``"1 <rows> <cols>\\n"`` (resize) and ``"2 0 0\\n"``
(reopen the log) (src/ctrl.c). Exec is in :mod:`criolib.conmon._conmon_exec`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from criolib.conmon._api import (
    DEFAULT_EXEC_OUTPUT_LIMIT,
    ContainerConfig,
    ContainerStatus,
    Created,
    ExecResult,
    ExitStatus,
)
from criolib.conmon._conmon_create import (
    conmon_argv,
    remove_conmon_leftovers,
    resolve_binary,
    run_create,
    socket_link,
    undo_create,
    unlink_link,
)
from criolib.conmon._conmon_exec import ExecContext, exec_stream, exec_sync
from criolib.conmon._conmon_proc import (
    CTL_REOPEN_LOG,
    CTL_RESIZE,
    conmon_alive,
    read_pid_file,
    wait_pid_exit,
    wait_replaced,
    write_ctl,
)
from criolib.conmon._errors import (
    ContainerExited,
    CreateFailed,
    InvalidMonitorConfig,
    MonitorError,
    MonitorGone,
    UnknownContainer,
)
from criolib.conmon._exitfile import memory_cgroup_dir, oom_kill_count
from criolib.conmon._records import (
    RECORD,
    RuntimeClients,
    check_exec_args,
    clear_stale_exit,
    container_dir,
    list_containers,
    make_container_dir,
    new_record,
    read_exit,
    read_record,
    remove_container_dir,
    write_record,
)
from criolib.conmon._stdio import Attachment

if TYPE_CHECKING:
    from criolib.conmon._stdio import ExecProcess
    from criolib.runtime_spec import RuntimeClient

__all__ = ["CONMON_LOG_LEVELS", "ConmonMonitor"]

log = logging.getLogger("criolib.conmon")

#: The levels conmon's ``--log-level`` accepts (src/utils.c set_conmon_logs).
CONMON_LOG_LEVELS = ("error", "warn", "warning", "info", "debug", "trace", "fatal")
#: conmon refuses terminal sizes above this (src/ctrl.c).
_MAX_WINSIZE = 1000
#: How long conmon may take to reopen its log after the request.
_REOPEN_TIMEOUT = 10.0


class ConmonMonitor:
    """Containers monitored by the system conmon binary, one conmon per container.

    ``run_dir`` holds a directory per container (record, pid files, conmon's own
    output, exec scratch) and ``s/`` for conmon's attach-socket symlinks; ``binary``
    is conmon (a name looked up on PATH, or a path): missing raises
    :class:`BackendNotFound`; ``log_level`` is conmon's ``--log-level``.
    """

    def __init__(self, run_dir: str | os.PathLike[str], *,
                 binary: str | os.PathLike[str] = "conmon", log_level: str = "error") -> None:
        if log_level not in CONMON_LOG_LEVELS:
            raise InvalidMonitorConfig(f"conmon log_level must be one of "
                                       f"{', '.join(CONMON_LOG_LEVELS)}, not {log_level!r}")
        self._run_dir = Path(run_dir).absolute()
        self._binary = resolve_binary(binary)
        self._log_level = log_level
        self._lock = threading.Lock()
        self._runtimes = RuntimeClients()

    def __repr__(self) -> str:
        return f"ConmonMonitor({str(self._run_dir)!r}, binary={str(self._binary)!r})"

    @property
    def name(self) -> str:
        """The backend's name, ``"conmon"``."""
        return "conmon"

    @property
    def run_dir(self) -> Path:
        """Where this monitor keeps its records."""
        return self._run_dir

    @property
    def binary(self) -> Path:
        """The conmon binary run."""
        return self._binary

    @property
    def _socket_dir(self) -> Path:
        # Short on purpose: conmon binds <socket dir>/<cuuid>/attach through the symlink
        # (sun_path holds 107 bytes; longer paths need the /proc/self/fd detour).
        return self._run_dir / "s"

    def _context(self) -> ExecContext:
        return ExecContext(binary=self._binary, log_level=self._log_level,
                           socket_dir=self._run_dir / "x")

    # -- create ---------------------------------------------------------------------

    def create(self, config: ContainerConfig) -> Created:
        """Start a conmon that runs the runtime's ``create`` for ``config``.

        Returns once conmon reported the container's pid on its sync pipe; the caller
        then starts the container with its runtime client. A failed create raises
        :class:`CreateFailed` naming the container, with the runtime client's diagnosis
        of the runtime's log and of what conmon relayed from its stderr
        (``.runtime_error``), and leaves nothing behind under ``run_dir``.
        """
        if not isinstance(config, ContainerConfig):
            raise InvalidMonitorConfig(f"create needs a ContainerConfig, not {config!r}")
        from criolib.runtime_spec import RuntimeSpecError

        cid = config.container_id
        cdir = container_dir(self._run_dir, cid)
        if (cdir / RECORD).exists():
            raise CreateFailed(f"container {cid!r} is already monitored under "
                               f"{self._run_dir}; forget it first", container_id=cid)
        try:
            command = config.runtime.create_command(
                cid, config.bundle, log_path=cdir / "runtime-create.log",
                pid_file=cdir / "pid", no_pivot=config.no_pivot,
                no_new_keyring=config.no_new_keyring)
        except RuntimeSpecError as exc:
            raise CreateFailed(f"container {cid!r}: {exc}", container_id=cid,
                               runtime_error=exc) from exc
        persist = config.persist_dir or cdir
        argv = conmon_argv(config, cdir, persist, binary=self._binary,
                           log_level=self._log_level, socket_dir=self._socket_dir)
        self._prepare(config, cdir, persist)
        record = new_record(
            "conmon", config, attach=socket_link(self._socket_dir, cid) / "attach",
            ctl=str(config.bundle / "ctl"), conmon_pidfile=str(cdir / "conmon.pid"),
            pid_file=str(cdir / "pid"), socket_dir=str(self._socket_dir),
            socket_link=str(socket_link(self._socket_dir, cid)), cuuid=cid,
            binary=str(self._binary), runtime_log=str(cdir / "runtime-create.log"),
            conmon_log=str(cdir / "conmon.log"), memory_cgroup=None, oom_kill_base=None)
        record["persist_dir"] = str(persist)
        try:
            write_record(self._run_dir, record)
            pid = run_create(config, command, argv, cdir)
        except BaseException:
            undo_create(config, cdir, self._socket_dir)
            raise
        monitor_pid = read_pid_file(cdir / "conmon.pid")
        cgroup = memory_cgroup_dir(pid)
        record.update(pid=pid, monitor_pid=monitor_pid, memory_cgroup=cgroup,
                      oom_kill_base=oom_kill_count(cgroup))
        write_record(self._run_dir, record)
        log.debug("container %s created under conmon %s, pid %s", cid, monitor_pid, pid)
        return Created(container_id=cid, pid=pid, monitor_pid=monitor_pid or 0)

    def _prepare(self, config: ContainerConfig, cdir: Path, persist: Path) -> None:
        cid = config.container_id
        try:
            make_container_dir(self._run_dir, cid)
            # conmon exits silently when its socket dir is missing (MACHINE-NOTES.md).
            self._socket_dir.mkdir(mode=0o700, exist_ok=True)
            config.exit_dir.mkdir(parents=True, exist_ok=True)
            persist.mkdir(parents=True, exist_ok=True)
            clear_stale_exit(config, persist)
        except OSError as exc:
            remove_container_dir(self._run_dir, cid)
            raise MonitorError(f"container {cid!r}: cannot prepare its directories: "
                               f"{exc}") from exc

    def _record(self, container_id: str) -> dict[str, Any]:
        record = read_record(self._run_dir, container_id)
        if record.get("backend") != "conmon":
            raise UnknownContainer(
                f"container {container_id!r} under {self._run_dir} belongs to the "
                f"{record.get('backend')!r} monitor backend, not conmon")
        return record

    def _monitor_pid(self, record: dict[str, Any]) -> int | None:
        pid = record.get("monitor_pid")
        if isinstance(pid, int):
            return pid
        return read_pid_file(record["conmon_pidfile"])

    def _alive(self, record: dict[str, Any]) -> bool:
        return conmon_alive(self._monitor_pid(record), record["cuuid"])

    def _exit(self, record: dict[str, Any]) -> ExitStatus | None:
        status = read_exit(record)
        if status is not None and not status.oom_killed and self._oom_since(record):
            # conmon's cgroup v1 OOM event can lose the race with the exit it caused
            # (its loop quits on the exit first); the memory cgroup, still there until
            # the runtime deletes the container, keeps the count.
            with contextlib.suppress(OSError):
                Path(record["persist_dir"], "oom").touch()
            status = ExitStatus(exit_code=status.exit_code, finished_at=status.finished_at,
                                oom_killed=True)
        return status

    @staticmethod
    def _oom_since(record: dict[str, Any]) -> bool:
        count = oom_kill_count(record.get("memory_cgroup"))
        base = record.get("oom_kill_base") or 0
        return count is not None and count > base

    def status(self, container_id: str) -> ContainerStatus:
        """What the exit file and conmon's liveness say about the container."""
        record = self._record(container_id)
        exit_status = self._exit(record)
        alive = exit_status is None and self._alive(record)
        if exit_status is None and not alive:
            exit_status = self._exit(record)  # conmon wrote it and exited just now
        log_path = record.get("log_path")
        return ContainerStatus(
            container_id=container_id, backend="conmon", pid=record.get("pid"),
            monitor_pid=self._monitor_pid(record), running=alive,
            exit=exit_status, log_path=Path(log_path) if log_path else None)

    def wait(self, container_id: str, timeout: float | None = None) -> ExitStatus | None:
        """The container's exit once conmon recorded it; None if ``timeout`` s pass.

        Blocks on a pidfd of the conmon process (it writes the exit file, then exits).
        :class:`MonitorGone` when conmon is gone without an exit file.
        """
        if timeout is not None and (isinstance(timeout, bool) or
                                    not isinstance(timeout, (int, float)) or timeout < 0):
            raise InvalidMonitorConfig(f"container {container_id!r}: wait timeout must be "
                                       f"a number of seconds >= 0 or None, not {timeout!r}")
        record = self._record(container_id)
        found = self._exit(record)
        if found is not None:
            return found
        pid = self._monitor_pid(record)
        if conmon_alive(pid, record["cuuid"]):
            assert pid is not None
            if not wait_pid_exit(pid, timeout):
                return None
        found = self._exit(record)
        if found is None:
            raise MonitorGone(
                f"container {container_id!r}: its conmon (pid {pid}) is gone and wrote no "
                f"exit file {record['exit_file']}; ask the runtime for its state")
        return found

    def _check_running(self, record: dict[str, Any], verb: str) -> None:
        cid = record["container_id"]
        if self._exit(record) is not None:
            raise ContainerExited(f"container {cid!r} has exited: cannot {verb}")
        if not self._alive(record):
            if self._exit(record) is not None:
                raise ContainerExited(f"container {cid!r} has exited: cannot {verb}")
            raise MonitorGone(f"container {cid!r}: its conmon is gone; cannot {verb}")

    # -- attach and control -----------------------------------------------------------

    def attach(self, container_id: str) -> Attachment:
        """A connection to the container's stdio through conmon's attach socket."""
        record = self._record(container_id)
        self._check_running(record, "attach to it")
        return Attachment.connect(record["attach"], container_id=container_id,
                                  resize=functools.partial(self.resize, container_id))

    def _ctl(self, record: dict[str, Any], kind: int, rows: int, cols: int,
             verb: str) -> None:
        self._check_running(record, verb)
        try:
            write_ctl(record["ctl"], kind, rows, cols)
        except OSError as exc:
            self._check_running(record, verb)  # exited or gone meanwhile: say so
            raise MonitorError(f"container {record['container_id']!r}: cannot {verb} "
                               f"through conmon's control fifo {record['ctl']}: "
                               f"{exc.strerror or exc}") from exc

    def resize(self, container_id: str, rows: int, cols: int) -> None:
        """Set the terminal's size through conmon's ctl fifo; ignored without a terminal."""
        for name, value in (("rows", rows), ("cols", cols)):
            if isinstance(value, bool) or not isinstance(value, int) or \
                    not 0 < value <= _MAX_WINSIZE:
                raise InvalidMonitorConfig(
                    f"container {container_id!r}: terminal {name} must be an integer from "
                    f"1 to {_MAX_WINSIZE} (conmon's limit), not {value!r}")
        record = self._record(container_id)
        if not record.get("terminal"):
            # conmon would queue the size in its winsz fifo, which nobody reads without
            # a terminal: enough of them fill the fifo and block conmon for good.
            self._check_running(record, "resize its terminal")
            return
        self._ctl(record, CTL_RESIZE, rows, cols, "resize its terminal")

    def reopen_log(self, container_id: str) -> None:
        """Make conmon start its log file afresh (after the kubelet rotated it).

        conmon writes ``<log>.tmp`` and renames it over the log, so the log path is a
        new, empty file afterwards whether or not it was moved away; this returns once
        that file is in place.
        """
        record = self._record(container_id)
        path = record.get("log_path")
        if not path:
            self._check_running(record, "reopen its log")
            return
        if not os.path.isdir(os.path.dirname(path)):
            raise MonitorError(f"container {container_id!r}: the log's directory "
                               f"{os.path.dirname(path)} is gone; conmon would exit on reopen")
        try:
            st = os.stat(path)
            before: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            before = None
        done = wait_replaced(
            path, before, _REOPEN_TIMEOUT, lambda: self._alive(record),
            lambda: self._ctl(record, CTL_REOPEN_LOG, 0, 0, "reopen its log"))
        if not done:
            self._check_running(record, "reopen its log")
            raise MonitorError(f"container {container_id!r}: conmon did not reopen its log "
                               f"{path} within {_REOPEN_TIMEOUT:g} s")

    # -- exec -----------------------------------------------------------------------

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
        """Run ``command`` under a second conmon (``-e``), like CRI-O's ExecSyncContainer.

        ``command`` is an argv (run with the container's own process settings: user,
        cwd, env, capabilities) or a whole process object in config.json's form. Past
        ``timeout`` s its process group is SIGKILLed, as conmon's ``-T`` does, and the
        result says ``timed_out`` (exit code 137); conmon's own ``-T``, whose timer
        counts whole seconds and fires up to a second off, is set a second later as a
        backstop should this process die meanwhile. At most ``output_limit`` bytes of stdout
        and of stderr are returned (``truncated`` when more came). A failure of the
        runtime's exec raises :class:`ExecFailed`.
        """
        check_exec_args(container_id, output_limit, timeout)
        record = self._record(container_id)
        self._check_running(record, "exec in it")
        return exec_sync(self._context(), record, runtime or self._runtime_of(record),
                         command, timeout=timeout, output_limit=output_limit,
                         check=functools.partial(self._check_running, record))

    def exec_stream(
        self,
        container_id: str,
        command: Sequence[str] | Mapping[str, Any],
        *,
        tty: bool = False,
        stdin: bool = False,
        runtime: RuntimeClient | None = None,
    ) -> ExecProcess:
        """Start ``command`` under a conmon with ``--exec-attach`` and attach to it.

        The output comes through that conmon's attach socket (stdout and stderr apart,
        or the terminal's output as stdout with ``tty``); stdin is sent there when
        ``stdin``; ``resize`` goes to its control fifo. ``wait`` gives the exit code
        conmon reports on its sync pipe.
        """
        record = self._record(container_id)
        self._check_running(record, "exec in it")
        return exec_stream(self._context(), record, runtime or self._runtime_of(record),
                           command, tty=bool(tty), stdin=bool(stdin),
                           check=functools.partial(self._check_running, record))

    # -- bookkeeping ----------------------------------------------------------------

    def containers(self) -> list[str]:
        """The ids conmon monitors (or monitored) under ``run_dir``, sorted."""
        found = []
        for cid in list_containers(self._run_dir):
            with contextlib.suppress(MonitorError):
                if self._record(cid).get("backend") == "conmon":
                    found.append(cid)
        return found

    def forget(self, container_id: str) -> None:
        """Remove what this monitor and conmon keep of a container that is not running:
        its record directory, conmon's symlink in the socket dir and its socket and
        fifos in the bundle. The runtime's state is the caller's (``runtime.delete``)."""
        record = self._record(container_id)
        if self.status(container_id).running:
            raise MonitorError(f"container {container_id!r} is still running: stop it "
                               "before forgetting it")
        unlink_link(Path(record["socket_link"]))
        remove_conmon_leftovers(Path(record["bundle"]))
        exec_links = self._run_dir / "x"
        with contextlib.suppress(OSError):
            for entry in exec_links.iterdir():
                if entry.name.startswith(f"{container_id}@"):
                    unlink_link(entry)
        remove_container_dir(self._run_dir, container_id)


