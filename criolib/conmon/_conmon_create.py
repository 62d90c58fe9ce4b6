"""Creating a container under the conmon binary: its command line, the sync pipe, and
undoing a create that failed.

conmon's flags as CRI-O's internal/oci/runtime_oci.go CreateContainer passes them;
``--api-version 1`` makes it report ``{"data": pid}`` on ``_OCI_SYNCPIPE``, or a
negative ``data`` with the runtime's stderr as ``message`` (src/conmon.c,
src/parent_pipe_fd.c). The first process forks the monitor off and exits at once; the
monitor's pid is in ``--conmon-pidfile``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

from criolib import _exec
from criolib.conmon._api import ContainerConfig
from criolib.conmon._conmon_exec import runtime_args
from criolib.conmon._conmon_proc import (
    SyncPipe,
    SyncTimeout,
    conmon_alive,
    read_pid_file,
    wait_pid_exit,
)
from criolib.conmon._errors import (
    BackendNotFound,
    CreateFailed,
    InvalidMonitorConfig,
    MonitorProtocolError,
)
from criolib.conmon._records import remove_container_dir
from criolib.errors import CriolibError

if TYPE_CHECKING:
    from criolib.runtime_spec import RuntimeCommand

__all__ = [
    "conmon_argv",
    "kill_conmon",
    "remove_conmon_leftovers",
    "resolve_binary",
    "run_create",
    "socket_link",
    "undo_create",
    "unlink_link",
]

#: How long the first conmon process may take before it forks away (it parses its
#: options, opens the log, forks: milliseconds).
_FORK_TIMEOUT = 30.0
#: The bundle entries conmon makes (src/conn_sock.c, src/ctrl.c), with their kinds.
_CONMON_ENTRIES = (("attach", stat.S_ISSOCK), ("ctl", stat.S_ISFIFO), ("winsz", stat.S_ISFIFO))
_SUN_PATH_MAX = 108


def resolve_binary(binary: str | os.PathLike[str]) -> Path:
    """The conmon binary's absolute path; :class:`BackendNotFound` naming the package."""
    name = os.fspath(binary)
    found = shutil.which(name)
    if found is None:
        raise BackendNotFound(
            f"the conmon binary {name!r} is not installed (or not executable); install "
            "Debian's package 'conmon' (apt-get install conmon), or use the 'criolib' "
            "monitor backend")
    return Path(found).absolute()


def socket_link(socket_dir: Path, cuuid: str) -> Path:
    """Where conmon puts the symlink to a bundle: ``<socket dir>/<cuuid>``, one byte
    shorter when that would be exactly as long as a socket path may be (conmon's own
    workaround, src/conn_sock.c socket_parent_dir)."""
    base = os.fsencode(socket_dir / cuuid)
    if len(base) == _SUN_PATH_MAX - 1:
        base = base[: _SUN_PATH_MAX - 2]
    return Path(os.fsdecode(base))


def remove_conmon_leftovers(directory: Path) -> None:
    """Remove the socket and fifos conmon made in ``directory`` (only of their kinds:
    a user's file of the same name stays)."""
    for name, is_kind in _CONMON_ENTRIES:
        path = directory / name
        with contextlib.suppress(OSError):
            if is_kind(path.lstat().st_mode):
                path.unlink()


def unlink_link(path: Path) -> None:
    """Remove the symlink at ``path``, if it is one."""
    with contextlib.suppress(OSError):
        if path.is_symlink():
            path.unlink()


def conmon_argv(config: ContainerConfig, cdir: Path, persist: Path, *, binary: Path,
                log_level: str, socket_dir: Path) -> list[str]:
    """conmon's command line for creating ``config``'s container (CRI-O's flags)."""
    cid = config.container_id
    if config.log_path is None:
        log_arg = "none"
    elif ":" in str(config.log_path):
        # conmon splits "-l DRIVER:PATH" at every colon (src/ctr_logging.c).
        raise InvalidMonitorConfig(
            f"container {cid!r}: conmon cannot log to {str(config.log_path)!r}: it "
            "splits the log path at ':'; choose a path without one")
    else:
        log_arg = f"k8s-file:{config.log_path}"
    argv = [str(binary), "--api-version", "1", "-c", cid, "-u", cid, "-n", cid,
            "-r", str(config.runtime.path), "-b", str(config.bundle),
            "-p", str(cdir / "pid"), "-P", str(cdir / "conmon.pid"), "-l", log_arg,
            "--exit-dir", str(config.exit_dir), "--persist-dir", str(persist),
            "--socket-dir-path", str(socket_dir), "--log-level", log_level]
    if config.log_size_max > 0:
        argv += ["--log-size-max", str(config.log_size_max)]
    if config.terminal:
        argv.append("-t")
    elif config.stdin:
        # CRI-O's mapping: stdin_once is conmon without --leave-stdin-open.
        argv.append("-i")
        if not config.stdin_once:
            argv.append("--leave-stdin-open")
    if config.no_pivot:
        argv.append("--no-pivot")
    if config.no_new_keyring:
        argv.append("--no-new-keyring")
    # conmon puts these between the runtime's path and "create" (src/runtime_args.c):
    # the runtime's global options, so --root and --log are the client's.
    argv += runtime_args(config.runtime, cdir / "runtime-create.log")
    return argv


def run_create(config: ContainerConfig, command: RuntimeCommand, argv: list[str],
               cdir: Path) -> int:
    """Run conmon for ``config`` and return the pid it reports; CreateFailed if none."""
    cid = config.container_id
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    sync = SyncPipe(read_fd)
    try:
        with open(cdir / "conmon.log", "wb") as out:
            try:
                proc = _exec.spawn(
                    argv, env={**command.env, "_OCI_SYNCPIPE": str(write_fd)}, cwd=cdir,
                    stdout=out, stderr=out, pass_fds=[write_fd], pdeathsig=None,
                    new_session=True, what=f"conmon for container {cid!r}")
            finally:
                os.close(write_fd)
        # The first process forks the monitor off and exits at once.
        if not _exec.wait_exit(proc, _FORK_TIMEOUT):
            _exec.stop(proc, grace=1.0)
        if proc.returncode != 0:
            early = _tail(cdir / "conmon.log") or "no message"
            raise CreateFailed(f"container {cid!r}: conmon failed before it ran the runtime "
                               f"(exit status {proc.returncode}): {early}", container_id=cid)
        try:
            message = sync.message(_deadline(config.create_timeout))
        except SyncTimeout:
            kill_conmon(cdir, cid)
            with contextlib.suppress(CriolibError):
                config.runtime.delete(cid, force=True)
            raise _create_failed(
                config, command, cdir, None,
                f"the create did not finish within {config.create_timeout:g} s; "
                "conmon was killed", returncode=None) from None
        except ValueError as exc:
            kill_conmon(cdir, cid)
            raise MonitorProtocolError(f"container {cid!r}: conmon wrote an unreadable "
                                       f"message on its sync pipe: {exc}") from exc
    finally:
        sync.close()
    if message is None:
        raise _create_failed(config, command, cdir, None,
                             "conmon exited without reporting a pid")
    data = message.get("data")
    if not isinstance(data, int) or isinstance(data, bool):
        raise MonitorProtocolError(f"container {cid!r}: conmon reported {message!r} "
                                   "instead of a pid")
    if data <= 0:
        text = message.get("message")
        raise _create_failed(config, command, cdir,
                             text if isinstance(text, str) else None, None)
    return data


def _create_failed(config: ContainerConfig, command: RuntimeCommand, cdir: Path,
                   said: str | None, note: str | None, *,
                   returncode: int | None = 1) -> CreateFailed:
    """The CreateFailed for a create conmon did not report a pid for.

    conmon tells only that the runtime failed (its sync message holds the runtime's
    stderr, not its status); runc and crun exit 1 on error, the status assumed.
    """
    cid = config.container_id
    try:
        runtime_log = (cdir / "runtime-create.log").read_bytes()
    except OSError:
        runtime_log = b""
    error = config.runtime.command_error(command, returncode, runtime_log, stderr=said or "")
    text = f"container {cid!r}: create under conmon failed: {error}"
    if note:
        text += f" ({note})"
    exc = CreateFailed(text, container_id=cid, runtime_error=error)
    exc.__cause__ = error
    return exc


def kill_conmon(cdir: Path, cuuid: str) -> None:
    """SIGKILL the conmon of ``cdir`` if it still runs, and wait until it is gone.

    The runtime's create, conmon's child, goes with it: conmon gives it
    PDEATHSIG=SIGKILL (src/conmon.c).
    """
    pid = read_pid_file(cdir / "conmon.pid")
    if pid is not None and conmon_alive(pid, cuuid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_pid_exit(pid, 5.0)


def undo_create(config: ContainerConfig, cdir: Path, socket_dir: Path) -> None:
    """Remove what a failed create left: conmon, its bundle entries, symlink, records."""
    kill_conmon(cdir, config.container_id)
    remove_conmon_leftovers(config.bundle)
    unlink_link(socket_link(socket_dir, config.container_id))
    remove_container_dir(cdir.parent, config.container_id)


def _deadline(seconds: float) -> float:
    return time.monotonic() + seconds


def _tail(path: Path, size: int = 2000) -> str:
    try:
        data = path.read_bytes()[-size:]
    except OSError:
        return ""
    return data.decode(errors="replace").strip()
