"""The monitor's public types and the :class:`Monitor` protocol every backend implements.

A monitor sits between its caller (the service, a program, a test) and each container:
it runs the OCI runtime's ``create`` as the parent of the container's init, holds the
container's stdio (pipes, or a terminal from the runtime's console socket), writes the
CRI log the kubelet reads, records the exit (and an OOM kill) in files the caller reads,
serves attach connections, and runs exec. The caller runs ``start`` with its own
:class:`~criolib.runtime_spec.RuntimeClient`, as CRI-O does with conmon.

Two backends: ``"criolib"`` (criolib's monitor process, one per container or one per
pod) and ``"conmon"`` (the system conmon binary, one per container).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from criolib.conmon._errors import InvalidMonitorConfig

if TYPE_CHECKING:
    from criolib.conmon._stdio import Attachment, ExecProcess
    from criolib.runtime_spec import RuntimeClient

__all__ = [
    "DEFAULT_CREATE_TIMEOUT",
    "DEFAULT_EXEC_OUTPUT_LIMIT",
    "DEFAULT_LOG_MAX_LINE",
    "ContainerConfig",
    "ContainerStatus",
    "Created",
    "ExecResult",
    "ExitStatus",
    "Monitor",
    "check_container_id",
]

#: CRI-O's timeout for a container's create (``ctr_create_timeout``... 240 s).
DEFAULT_CREATE_TIMEOUT = 240.0
#: Exec sync keeps at most this much of stdout and of stderr (CRI-O's 16 MiB cap).
DEFAULT_EXEC_OUTPUT_LIMIT = 16 * 1024 * 1024
#: Lines longer than this are split into partial (P) records (containerd's default).
DEFAULT_LOG_MAX_LINE = 16 * 1024

# runc's and crun's own characters for ids, which also keeps them safe as file names;
# the id names a directory under the run dir, so it is at most NAME_MAX (255) bytes.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+.-]{0,254}$")


def check_container_id(container_id: object) -> str:
    """``container_id`` if it is a usable id (letters, digits, ``_+.-``; at most 255
    characters, as it names a directory), else raise.

    Raises :class:`InvalidMonitorConfig` naming the id.
    """
    if not isinstance(container_id, str) or not _ID.match(container_id) or container_id in (
            ".", ".."):
        raise InvalidMonitorConfig(
            f"container id {container_id!r} is not usable: it must start with a letter or "
            "digit, hold only letters, digits and '_', '+', '.', '-', and be at most 255 "
            "characters long (it names a directory)")
    return container_id


def _abs_path(name: str) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None:
            return
        if not isinstance(value, (str, os.PathLike)) or not os.path.isabs(os.fspath(value)):
            raise InvalidMonitorConfig(f"{name} must be an absolute path, not {value!r}")
    return check


def _opt_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


@attrs.frozen
class ContainerConfig:
    """What a monitor needs to create and supervise one container.

    - ``container_id``, ``bundle`` (absolute, holding config.json) and ``runtime``
      (the :class:`~criolib.runtime_spec.RuntimeClient` whose command line and
      ``--root`` the monitor uses);
    - ``exit_dir``: the exit file is ``exit_dir/<container_id>``, holding the exit code
      in decimal (conmon's format); its mtime is the exit time;
    - ``persist_dir``: also gets ``exit`` and, after an OOM kill, ``oom`` (default: the
      container's directory under the monitor's run dir);
    - ``log_path``: the CRI log (None: output is read and dropped); ``log_size_max``:
      past this many bytes the log is truncated and started again (<= 0: no limit);
      ``log_max_line``: longer lines become partial records (criolib's monitor only;
      conmon splits at its 8 KiB buffer);
    - ``terminal``: a pseudo-terminal through the runtime's console socket instead of
      pipes (config.json's ``process.terminal`` must agree); ``stdin``: keep a stdin
      the caller can attach to; ``stdin_once``: close the container's stdin when any
      attach client disconnects, whether or not it wrote (CRI ``stdin_once``; conmon
      without ``--leave-stdin-open`` behaves so);
    - ``group``: containers with the same group share one criolib monitor process (a
      pod); None gives the container a monitor of its own. conmon ignores it.
    - ``create_timeout`` bounds the runtime's create; ``no_pivot``/``no_new_keyring``
      are passed to it.
    """

    container_id: str = attrs.field(validator=lambda _, __, v: check_container_id(v))
    bundle: Path = attrs.field(converter=Path, validator=_abs_path("bundle"))
    runtime: RuntimeClient
    exit_dir: Path = attrs.field(converter=Path, validator=_abs_path("exit_dir"))
    log_path: Path | None = attrs.field(default=None, converter=_opt_path,
                                        validator=_abs_path("log_path"))
    persist_dir: Path | None = attrs.field(default=None, converter=_opt_path,
                                           validator=_abs_path("persist_dir"))
    terminal: bool = False
    stdin: bool = False
    stdin_once: bool = False
    log_size_max: int = -1
    log_max_line: int = DEFAULT_LOG_MAX_LINE
    group: str | None = None
    create_timeout: float = DEFAULT_CREATE_TIMEOUT
    no_pivot: bool = False
    no_new_keyring: bool = False

    def __attrs_post_init__(self) -> None:
        if isinstance(self.log_size_max, bool) or not isinstance(self.log_size_max, int):
            raise InvalidMonitorConfig(
                f"container {self.container_id!r}: log_size_max must be an integer, "
                f"not {self.log_size_max!r}")
        if (isinstance(self.log_max_line, bool) or not isinstance(self.log_max_line, int)
                or self.log_max_line < 1):
            raise InvalidMonitorConfig(
                f"container {self.container_id!r}: log_max_line must be an integer >= 1, "
                f"not {self.log_max_line!r}")
        if not isinstance(self.create_timeout, (int, float)) or self.create_timeout <= 0:
            raise InvalidMonitorConfig(
                f"container {self.container_id!r}: create_timeout must be a number of "
                f"seconds > 0, not {self.create_timeout!r}")
        if self.group is not None:
            try:
                check_container_id(self.group)
            except InvalidMonitorConfig:
                raise InvalidMonitorConfig(
                    f"container {self.container_id!r}: group {self.group!r} must be an "
                    "id-like name (letters, digits, '_+.-')") from None
        if self.stdin_once and not self.stdin:
            raise InvalidMonitorConfig(
                f"container {self.container_id!r}: stdin_once needs stdin=True")


@attrs.frozen
class Created:
    """A container created under a monitor: its init's host pid and the monitor's pid."""

    container_id: str
    pid: int
    monitor_pid: int


@attrs.frozen
class ExitStatus:
    """How a container ended, from its exit file.

    ``exit_code`` is the shell-style code (128+N when killed by signal N, 137 for
    SIGKILL); ``finished_at`` the exit time in seconds since the epoch (the exit file's
    mtime, nanosecond precision); ``oom_killed`` whether the kernel's OOM killer killed a
    process of the container's cgroup.
    """

    exit_code: int
    finished_at: float
    oom_killed: bool = False


@attrs.frozen
class ContainerStatus:
    """What a monitor knows of a container.

    ``creating`` while the monitor runs the runtime's ``create`` for it (criolib's
    monitor only; no pid yet); ``running`` while its init is alive (created or
    started: ask the runtime which); ``exit`` once it exited; none of them when the
    monitor died without recording an exit (``lost``: the caller should ask the
    runtime). ``pid`` is the init's host pid, ``monitor_pid`` the monitor's (None when
    unknown). ``log_error`` is the last error writing the CRI log (a full disk, a
    removed directory; None when the last write worked) and ``log_dropped`` how many
    bytes of output the monitor could not write to it (criolib's monitor; conmon
    reports neither: None and 0).
    """

    container_id: str
    backend: str
    pid: int | None
    monitor_pid: int | None
    running: bool
    exit: ExitStatus | None
    log_path: Path | None
    creating: bool = False
    log_error: str | None = None
    log_dropped: int = 0

    @property
    def lost(self) -> bool:
        """Neither creating, running nor exited: the monitor is gone without a record."""
        return not self.running and not self.creating and self.exit is None


@attrs.frozen
class ExecResult:
    """The outcome of an exec sync.

    ``exit_code`` (128+N for signal N; 137 after a timeout kill), the captured
    ``stdout``/``stderr`` (each at most the output limit; ``truncated`` says whether
    more was produced and dropped), and ``timed_out`` when the process ran past the
    timeout and was killed.
    """

    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    truncated: bool = False


@runtime_checkable
class Monitor(Protocol):
    """A container monitor backend (criolib's monitor process, or the conmon binary).

    Everything a backend knows of a container lives under ``run_dir`` (and the exit
    and persist dirs), so a new process, made with the same ``run_dir``, finds the
    containers an earlier one created: still running, or their exit recorded.
    """

    @property
    def name(self) -> str: ...

    @property
    def run_dir(self) -> Path: ...

    def create(self, config: ContainerConfig) -> Created: ...

    def status(self, container_id: str) -> ContainerStatus: ...

    def wait(self, container_id: str, timeout: float | None = None) -> ExitStatus | None: ...

    def attach(self, container_id: str) -> Attachment: ...

    def resize(self, container_id: str, rows: int, cols: int) -> None: ...

    def reopen_log(self, container_id: str) -> None: ...

    def exec_sync(
        self,
        container_id: str,
        command: Sequence[str] | Mapping[str, Any],
        *,
        timeout: float | None = None,
        output_limit: int = DEFAULT_EXEC_OUTPUT_LIMIT,
    ) -> ExecResult: ...

    def exec_stream(
        self,
        container_id: str,
        command: Sequence[str] | Mapping[str, Any],
        *,
        tty: bool = False,
        stdin: bool = False,
    ) -> ExecProcess: ...

    def containers(self) -> list[str]: ...

    def forget(self, container_id: str) -> None: ...
