"""The run directory both backends share: per-container records and their exits.

Layout and record fields: docs/conmon-design.md. The record (``monitor.json``) is what
lets a new process find a container an earlier one created: which backend, which
monitor process, where its log, exit file and attach socket are.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from criolib._atomic import atomic_write_bytes
from criolib.conmon._api import ContainerConfig, ExitStatus, check_container_id
from criolib.conmon._errors import InvalidMonitorConfig, MonitorError, UnknownContainer
from criolib.conmon._exitfile import read_exit_file

if TYPE_CHECKING:
    from criolib.runtime_spec import RuntimeClient

__all__ = [
    "RECORD",
    "RECORD_VERSION",
    "RuntimeClients",
    "check_exec_args",
    "clear_stale_exit",
    "container_dir",
    "list_containers",
    "make_container_dir",
    "new_record",
    "pid_alive",
    "read_exit",
    "read_record",
    "remove_container_dir",
    "write_record",
]

RECORD = "monitor.json"
RECORD_VERSION = 1


def container_dir(run_dir: Path, container_id: str) -> Path:
    """``run_dir/<container_id>``, the container's directory (the id is checked)."""
    return run_dir / check_container_id(container_id)


def make_container_dir(run_dir: Path, container_id: str) -> Path:
    """Create the container's directory (0700); parents as needed."""
    path = container_dir(run_dir, container_id)
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def new_record(backend: str, config: ContainerConfig, *, attach: Path | None,
               **extra: Any) -> dict[str, Any]:
    """The record of ``config`` before create (``pid`` None), plus backend fields."""
    runtime = config.runtime
    return {
        "version": RECORD_VERSION,
        "backend": backend,
        "container_id": config.container_id,
        "bundle": str(config.bundle),
        "runtime": {"path": str(runtime.path),
                    "root": None if runtime.root is None else str(runtime.root),
                    "systemd_cgroup": "--systemd-cgroup" in runtime.global_options()},
        "exit_file": str(config.exit_dir / config.container_id),
        "persist_dir": str(config.persist_dir) if config.persist_dir is not None else None,
        "log_path": None if config.log_path is None else str(config.log_path),
        "log_size_max": config.log_size_max,
        "terminal": config.terminal,
        "stdin": config.stdin,
        "stdin_once": config.stdin_once,
        "group": config.group,
        "attach": None if attach is None else str(attach),
        "monitor_pid": None,
        "pid": None,
        "created_at": time.time_ns(),
    } | extra


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Write ``record`` atomically into its container's directory."""
    path = container_dir(run_dir, record["container_id"]) / RECORD
    atomic_write_bytes(path, json.dumps(record, indent=1).encode(), mode=0o600)


def read_record(run_dir: Path, container_id: str) -> dict[str, Any]:
    """The record of ``container_id``; :class:`UnknownContainer` when there is none."""
    path = container_dir(run_dir, container_id) / RECORD
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UnknownContainer(
            f"container {container_id!r} is not monitored under {run_dir} "
            f"(no {path})") from None
    except OSError as exc:
        raise MonitorError(f"cannot read the monitor record {path}: {exc.strerror}") from exc
    try:
        record = json.loads(data)
        if not isinstance(record, dict) or record.get("container_id") != container_id:
            raise ValueError("not a record of this container")
    except ValueError as exc:
        raise MonitorError(f"monitor record {path} is damaged: {exc}") from exc
    return record


def list_containers(run_dir: Path) -> list[str]:
    """The ids with a record under ``run_dir``, sorted."""
    try:
        entries = sorted(os.listdir(run_dir))
    except FileNotFoundError:
        return []
    return [e for e in entries if (run_dir / e / RECORD).is_file()]


def remove_container_dir(run_dir: Path, container_id: str) -> None:
    """Remove the container's directory (record, sockets, scratch); fine if gone."""
    path = container_dir(run_dir, container_id)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)


def read_exit(record: dict[str, Any]) -> ExitStatus | None:
    """The exit the record's exit file (and persist dir's ``oom``) tell, or None yet."""
    exit_file = record["exit_file"]
    try:
        found = read_exit_file(exit_file)
    except ValueError as exc:
        raise MonitorError(f"container {record['container_id']!r}: {exc}") from exc
    except OSError as exc:
        raise MonitorError(f"container {record['container_id']!r}: cannot read exit file "
                           f"{exit_file}: {exc.strerror}") from exc
    if found is None:
        return None
    code, mtime_ns = found
    persist = record.get("persist_dir")
    oom = persist is not None and os.path.exists(os.path.join(persist, "oom"))
    return ExitStatus(exit_code=code, finished_at=mtime_ns / 1e9, oom_killed=oom)


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    if pid is None or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat.rsplit(b")", 1)[1].split()[0]
    return state not in (b"Z", b"X")


class RuntimeClients:
    """The runtime clients of containers, rebuilt from their records and shared.

    A record names the runtime binary, its ``--root`` and the cgroup manager; one
    :class:`~criolib.runtime_spec.RuntimeClient` serves every container with the same
    three, so exec does not build a client per call.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str | None, bool], RuntimeClient] = {}

    def for_record(self, record: dict[str, Any]) -> RuntimeClient:
        """The client for ``record``'s runtime; MonitorError when it cannot be used."""
        from criolib.runtime_spec import RuntimeClient, RuntimeSpecError

        spec = record["runtime"]
        key = (spec["path"], spec.get("root"), bool(spec.get("systemd_cgroup")))
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                try:
                    client = RuntimeClient(key[0], root=key[1], systemd_cgroup=key[2])
                except RuntimeSpecError as exc:
                    raise MonitorError(f"container {record['container_id']!r}: its "
                                       f"runtime {key[0]} cannot be used: {exc}") from exc
                self._clients[key] = client
        return client


def check_exec_args(container_id: str, output_limit: object, timeout: object) -> None:
    """Refuse an exec's ``output_limit`` (an int >= 0) or ``timeout`` (None or > 0 s)."""
    if isinstance(output_limit, bool) or not isinstance(output_limit, int) or \
            output_limit < 0:
        raise InvalidMonitorConfig(f"container {container_id!r}: output_limit must be "
                                   f"an integer >= 0, not {output_limit!r}")
    if timeout is not None and (isinstance(timeout, bool) or
                                not isinstance(timeout, (int, float)) or timeout <= 0):
        raise InvalidMonitorConfig(f"container {container_id!r}: exec timeout must be "
                                   f"a number of seconds > 0, not {timeout!r}")


def clear_stale_exit(config: ContainerConfig, persist: Path) -> None:
    """Remove an exit (and OOM) record left by an earlier container of this id, which
    would otherwise read as this one's exit at once. OSError goes to the caller."""
    for stale in (config.exit_dir / config.container_id, persist / "exit", persist / "oom"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
