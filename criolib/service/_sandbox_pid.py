"""The holder of a pod's shared PID namespace (``namespace_options.pid`` POD).

The kubelet's ``shareProcessNamespace`` (and critest's pod specs) ask for one PID
namespace for every container of the pod. Something has to be its pid 1 and keep
it alive while containers come and go: CRI-O's infra (pause) process. criolib runs
``unshare --pid --fork sleep infinity`` (util-linux): the ``sleep`` child is pid 1 of
a new PID namespace, ``/proc/<holder>/ns/pid`` is what containers join (the OCI
spec's ``linux.namespaces`` path). It is started in a session of its own with no
parent-death signal, so it outlives the thread (and a restart of the service) that
made it.

A pid can be reused once its process is gone, so the holder is always named with
its start time (``/proc/<pid>/stat`` field 22): a process with another start time
is not ours and is never signalled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from criolib._exec import spawn, wait_exit
from criolib.errors import ExecError
from criolib.service._errors import ServiceError

__all__ = ["UNSHARE", "holder_alive", "kill_pid_holder", "start_pid_holder", "start_time"]

log = logging.getLogger("criolib.service")

#: util-linux's unshare(1) (Essential in Debian).
UNSHARE = "/usr/bin/unshare"
_SLEEP_CANDIDATES = ("/usr/bin/sleep", "/bin/sleep")
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
#: How long the holder gets to appear, and to go away after SIGKILL.
_WAIT = 5.0


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (after the comm), None when there is no such pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def start_time(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks after boot), None when it does not exist."""
    fields = _stat(pid)
    return int(fields[19]) if fields is not None else None


def holder_alive(info: dict[str, Any]) -> bool:
    """Whether the holder recorded in ``info`` still runs (not a zombie, same start)."""
    try:
        pid, started = int(info["pid"]), int(info["start_time"])
    except (KeyError, TypeError, ValueError):
        return False
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X") and int(fields[19]) == started


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def start_pid_holder(what: str) -> tuple[dict[str, Any], subprocess.Popen[bytes]]:
    """Start a PID namespace holder: its record (``pid``, ``unshare_pid``,
    ``start_time``, ``unshare_start_time``, ``ns``) and the unshare process."""
    sleep = next((p for p in _SLEEP_CANDIDATES if os.access(p, os.X_OK)),
                 shutil.which("sleep") or "sleep")
    try:
        proc = spawn([UNSHARE, "--pid", "--fork", sleep, "infinity"], env=_ENV, cwd="/",
                     pdeathsig=None, new_session=True, what=f"{what}: PID namespace holder")
    except ExecError as exc:
        raise ServiceError(f"{what}: cannot start the PID namespace holder ({UNSHARE}): "
                           f"{exc}") from exc
    deadline = time.monotonic() + _WAIT
    own_ns = os.stat("/proc/self/ns/pid").st_ino
    while True:
        for child in _children(proc.pid):
            try:
                ns = os.stat(f"/proc/{child}/ns/pid").st_ino
            except OSError:
                continue
            started = start_time(child)
            if ns != own_ns and started is not None:
                info = {"pid": child, "start_time": started, "unshare_pid": proc.pid,
                        "unshare_start_time": start_time(proc.pid),
                        "ns": f"/proc/{child}/ns/pid"}
                log.info("%s: PID namespace holder %d (unshare %d)", what, child, proc.pid)
                return info, proc
        if proc.poll() is not None or time.monotonic() > deadline:
            status = proc.poll()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            wait_exit(proc, _WAIT)
            raise ServiceError(f"{what}: the PID namespace holder ({UNSHARE} --pid --fork) "
                               + (f"exited with status {status}" if status is not None
                                  else f"made no process in a new PID namespace in {_WAIT} s"))
        time.sleep(0.005)


def _reap(pid: int, started: int | None, deadline: float) -> None:
    """Reap the unshare process ``pid`` if it is our child (not after a restart)."""
    if started is None or start_time(pid) != started:
        return  # gone (reaped), or the pid is another process now
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return  # not our child: its new parent reaps it
        if done or time.monotonic() > deadline:
            return
        time.sleep(0.005)


def kill_pid_holder(info: dict[str, Any], what: str,
                    proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGKILL the holder (which ends every process of its namespace) and reap the
    unshare process; a holder already gone, or a reused pid, is left alone."""
    deadline = time.monotonic() + _WAIT
    if holder_alive(info):
        try:
            os.kill(int(info["pid"]), signal.SIGKILL)
        except ProcessLookupError:
            pass
        except OSError as exc:
            raise ServiceError(f"{what}: cannot kill the PID namespace holder "
                               f"{info['pid']}: {exc.strerror}") from exc
        while holder_alive(info) and time.monotonic() < deadline:
            time.sleep(0.005)
        if holder_alive(info):
            raise ServiceError(f"{what}: the PID namespace holder {info['pid']} survived "
                               f"SIGKILL for {_WAIT} s")
    if proc is not None:
        wait_exit(proc, max(0.0, deadline - time.monotonic()))
        return
    raw_pid, raw_started = info.get("unshare_pid"), info.get("unshare_start_time")
    if isinstance(raw_pid, int):
        _reap(raw_pid, raw_started if isinstance(raw_started, int) else None, deadline)
