"""Process plumbing for the OCI runtime client: logs, diagnosis, spawning, waiting.

The runtime client (:mod:`criolib.runtime_spec._runtime`) runs two kinds of command:

- control commands (state, start, kill, delete, pause, resume, update, ps, list,
  features) go through :func:`criolib._exec.run`, which captures stdout and stderr;
- commands whose stdio *is the container's* (create, exec) cannot have stdout or
  stderr captured: :func:`spawn_and_wait` hands the caller's descriptors to the
  runtime and waits for it on a pidfd.

Either way the runtime writes its own messages to a ``--log`` file in JSON lines
(runc: ``{"level", "msg", "time", ...}``; crun: ``{"msg", "level", "time"}``);
:func:`parse_log` reads both, and :func:`diagnose` turns a failure into the right
exception, explaining the failures this machine is known for (MACHINE-NOTES.md:
no CAP_SYS_RESOURCE, so no negative ``oomScoreAdj`` and no rlimit above the hard
limit).

Waiting for a container's init (:func:`wait_for_exit`) needs it to be our child;
:func:`set_child_subreaper` arranges that (see its docstring for why).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import re
import resource
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import attrs

from criolib.runtime_spec._errors import (
    ContainerExists,
    ContainerNotFound,
    ExitStatusUnavailable,
    PrivilegeError,
    RuntimeCommandError,
)

__all__ = [
    "LogRecord",
    "Stdio",
    "diagnose",
    "exit_code",
    "parse_log",
    "set_child_subreaper",
    "spawn_and_wait",
    "wait_for_exit",
]

log = logging.getLogger("criolib.runtime_spec")

#: A container stdio stream: a file descriptor, a file object, or None for /dev/null.
Stdio = int | IO[Any] | None

_ERROR_LEVELS = frozenset({"error", "fatal", "panic"})
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
_CAP_SYS_RESOURCE = 24


@attrs.frozen
class LogRecord:
    """One line of a runtime's log: its level (lower case) and message."""

    level: str
    msg: str


def parse_log(data: bytes, *, default_level: str = "error") -> list[LogRecord]:
    """Read a runtime's ``--log-format json`` output (runc's or crun's), line by line.

    Lines that are not JSON objects (a runtime's plain stderr, a truncated last line)
    become records of ``default_level``, so nothing the runtime said is lost.
    """
    records = []
    for raw in data.decode(errors="replace").splitlines():
        line = raw.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and "msg" in obj:
            records.append(LogRecord(str(obj.get("level", default_level)).lower(),
                                     str(obj["msg"])))
        else:
            records.append(LogRecord(default_level, line))
    return records


def error_messages(records: Sequence[LogRecord]) -> list[str]:
    """The distinct error-level messages of ``records``, in order."""
    seen: dict[str, None] = {}
    for r in records:
        if r.level in _ERROR_LEVELS:
            seen.setdefault(r.msg, None)
    return list(seen)


# runc: "container does not exist"; crun names the state file or directory it could
# not open under its --root (the id is the last path component).
_NOT_FOUND = re.compile(
    r"container does not exist"
    r"|error opening file `[^`]*/status`: No such file or directory"
    r"|cannot open directory '[^']*': No such file or directory"
)
# runc: "container with given ID already exists"; crun: "container `ID` already exists".
_EXISTS = re.compile(r"container with given ID already exists|container `[^`]*` already exists")
_OOM_SCORE = re.compile(r"oom_score_adj.*Permission denied", re.IGNORECASE)
# runc: "error setting rlimit type 7: operation not permitted";
# crun: "setrlimit `RLIMIT_NOFILE`: Operation not permitted".
_RLIMIT_RUNC = re.compile(r"rlimit type (\d+): operation not permitted", re.IGNORECASE)
_RLIMIT_CRUN = re.compile(r"setrlimit `?(RLIMIT_[A-Z_]+)`?: Operation not permitted")


def _has_cap_sys_resource() -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> _CAP_SYS_RESOURCE & 1)
    except (OSError, ValueError):
        pass
    return False


def _rlimit_names() -> dict[int, str]:
    return {getattr(resource, n): n for n in dir(resource) if n.startswith("RLIMIT_")}


def _config_process(bundle: Path | None) -> Mapping[str, Any]:
    """The bundle's ``process`` object, read only to explain a failure."""
    if bundle is None:
        return {}
    try:
        doc = json.loads((bundle / "config.json").read_bytes())
    except (OSError, ValueError):
        return {}
    process = doc.get("process") if isinstance(doc, dict) else None
    return process if isinstance(process, dict) else {}


def _oom_hint(bundle: Path | None) -> str:
    try:
        current = Path("/proc/self/oom_score_adj").read_text().strip()
    except OSError:
        current = "the current value"
    asked = _config_process(bundle).get("oomScoreAdj")
    asked_text = f" (the config asks for {asked})" if asked is not None else ""
    if _has_cap_sys_resource():
        who = ("this process holds CAP_SYS_RESOURCE, yet the kernel refused the runtime "
               "(a user namespace or security module may withhold it)")
    else:
        who = "this process lacks CAP_SYS_RESOURCE"
    return (f"the runtime could not set process.oomScoreAdj{asked_text}: {who}, so "
            f"oomScoreAdj must be >= {current}, the caller's /proc/self/oom_score_adj; "
            "clamp it to that value (containerd's restrict_oom_score_adj)")


def _rlimit_hint(name: str, bundle: Path | None) -> str:
    asked = ""
    for rl in _config_process(bundle).get("rlimits") or ():
        if isinstance(rl, dict) and rl.get("type") == name:
            asked = f" (the config asks for soft {rl.get('soft')}, hard {rl.get('hard')})"
    held = ""
    number = getattr(resource, name, None)
    if isinstance(number, int):
        hard = resource.getrlimit(number)[1]
        held = f" of {'unlimited' if hard == resource.RLIM_INFINITY else hard}"
    cap = ("" if _has_cap_sys_resource()
           else " and this process lacks CAP_SYS_RESOURCE")
    return (f"the runtime could not set {name}{asked}: an rlimit cannot be raised above "
            f"the caller's hard limit{held} without CAP_SYS_RESOURCE{cap}; lower "
            f"process.rlimits {name} to at most that, or raise the caller's hard limit")


def diagnose(
    *,
    runtime: str,
    operation: str,
    container_id: str | None,
    argv: Sequence[str],
    returncode: int | None,
    records: Sequence[LogRecord],
    stderr: str = "",
    bundle: Path | None = None,
    stderr_is_container: bool = False,
) -> RuntimeCommandError:
    """The exception for a failed runtime command, with the runtime's own words.

    ``records`` is what the runtime wrote to its ``--log``; ``stderr`` what it
    printed, when that was captured. The exception's class says what a caller can
    act on (:class:`ContainerNotFound`, :class:`ContainerExists`,
    :class:`PrivilegeError`); its message names the container, the operation, the
    runtime and the exit status, and explains known causes.
    """
    messages = error_messages(records)
    if not messages:
        messages = error_messages(parse_log(stderr.encode()))
    said = "; ".join(messages)
    what = f" of container {container_id!r}" if container_id else ""
    status = "no exit status" if returncode is None else _describe(returncode)
    if said:
        text = f"{runtime} {operation}{what} failed ({status}): {said}"
    elif stderr_is_container:
        text = (f"{runtime} {operation}{what} failed ({status}) and left no message in its "
                "log; anything it printed went to the container's stderr")
    else:
        text = f"{runtime} {operation}{what} failed ({status}) without a message"
    cls: type[RuntimeCommandError] = RuntimeCommandError
    hint = ""
    rlimit = _RLIMIT_CRUN.search(said)
    rlimit_runc = _RLIMIT_RUNC.search(said)
    if _NOT_FOUND.search(said):
        cls = ContainerNotFound
    elif _EXISTS.search(said):
        cls = ContainerExists
    elif _OOM_SCORE.search(said):
        cls, hint = PrivilegeError, _oom_hint(bundle)
    elif rlimit or rlimit_runc:
        name = (rlimit.group(1) if rlimit
                else _rlimit_names().get(int(rlimit_runc.group(1)) if rlimit_runc else -1,
                                         "an rlimit"))
        cls, hint = PrivilegeError, _rlimit_hint(name, bundle)
    if hint:
        text = f"{text}. Cause: {hint}"
    return cls(text, runtime=runtime, operation=operation, container_id=container_id,
               argv=argv, returncode=returncode, runtime_message=said, stderr=stderr)


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def exit_code(si_code: int, si_status: int) -> int:
    """A waitid result as a shell-style exit code: the status, or 128 + the signal.

    runc and crun report a container killed by a signal this way, and so does the
    CRI (137 for SIGKILL), so :meth:`RuntimeClient.run` and ``exec`` agree.
    """
    if si_code == os.CLD_EXITED:
        return si_status
    return 128 + si_status


def spawn_and_wait(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
    pass_fds: Sequence[int] = (),
    timeout: float | None,
    on_timeout: Any = None,
) -> int | None:
    """Run a runtime command whose stdio is the container's, and wait for it.

    ``stdin``/``stdout``/``stderr`` go to the runtime untouched (None is
    /dev/null): runc and crun pass their own stdio on to the container process.
    The runtime starts a session of its own, so a Ctrl-C meant for the caller
    does not reach it or the container. Waiting blocks on a pidfd in a selector
    (no sleep-polling, MACHINE-NOTES.md). When ``timeout`` runs out,
    ``on_timeout(proc)`` is called (it must make the runtime exit, e.g. by
    killing its process group) and None is returned once the runtime is reaped;
    otherwise the runtime's return code (negative for a signal).
    """
    dev = subprocess.DEVNULL
    proc = subprocess.Popen(
        list(argv),
        stdin=dev if stdin is None else stdin,
        stdout=dev if stdout is None else stdout,
        stderr=dev if stderr is None else stderr,
        env=dict(env),
        pass_fds=tuple(pass_fds),
        start_new_session=True,
    )
    if timeout is None:
        return proc.wait()  # blocks in waitpid(2); no polling without a timeout
    pidfd = os.pidfd_open(proc.pid)
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(pidfd, selectors.EVENT_READ)
            if sel.select(timeout):
                return proc.wait()
        if on_timeout is not None:
            on_timeout(proc)
        else:
            _kill_group(proc.pid)
        proc.wait()
        return None
    finally:
        os.close(pidfd)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


_libc: ctypes.CDLL | None = None


def _prctl(option: int, arg: int | ctypes.c_void_p) -> int:
    global _libc  # noqa: PLW0603 - loaded once, on first use
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    result = int(_libc.prctl(ctypes.c_int(option), arg, ctypes.c_ulong(0), ctypes.c_ulong(0),
                             ctypes.c_ulong(0)))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def is_child_subreaper() -> bool:
    """Whether this process adopts its orphaned descendants (``PR_GET_CHILD_SUBREAPER``)."""
    value = ctypes.c_int(0)
    _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.cast(ctypes.pointer(value), ctypes.c_void_p))
    return bool(value.value)


def set_child_subreaper() -> None:
    """Make this process a child subreaper, so container inits become its children.

    ``runc create`` / ``crun create`` exit once the container exists; its init,
    orphaned, is re-parented to the nearest subreaper ancestor, or to PID 1. Only
    a parent can collect an exit status (``waitid``); a pidfd on a non-child tells
    *that* it exited, not *how*. With ``PR_SET_CHILD_SUBREAPER`` the init becomes
    our child, its PID cannot be reused until we reap it (so the pid from
    ``--pid-file`` stays valid), and ``waitid`` yields its status. This is how
    conmon and containerd-shim do it. The flag is process-wide and stays set:
    every orphaned descendant (e.g. detached exec processes) becomes this
    process's child, and the caller should reap what it starts.
    """
    if is_child_subreaper():
        return
    _prctl(_PR_SET_CHILD_SUBREAPER, ctypes.c_void_p(1))
    log.debug("this process (pid %d) is now a child subreaper", os.getpid())


def wait_for_exit(pid: int, pidfd: int, *, timeout: float | None = None) -> int | None:
    """Reap child ``pid`` (through ``pidfd``) and return its exit code (128+N for signal N).

    Blocks in ``waitid`` (or, with a timeout, in a selector on the pidfd first).
    Returns None when ``timeout`` runs out; the process is then left as it is.
    Raises :class:`ExitStatusUnavailable` when ``pid`` is not this process's child.
    """
    if timeout is not None:
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(pidfd, selectors.EVENT_READ)
            while not sel.select(max(0.0, deadline - time.monotonic())):
                if time.monotonic() >= deadline:
                    return None
    while True:
        try:
            info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        except ChildProcessError as exc:
            raise ExitStatusUnavailable(
                f"process {pid} is not a child of this process (pid {os.getpid()}), so its "
                "exit status cannot be collected; was this process a child subreaper when "
                "the container was created?"
            ) from exc
        except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
            continue
        if info is None:  # pragma: no cover - only with WNOHANG
            continue
        return exit_code(info.si_code, info.si_status)
