"""Reading an OCI runtime's log, and explaining its failures.

runc and crun both write JSON lines when given ``--log-format json``, to the
``--log`` file or, without one, to stderr (runc: ``{"level", "msg", "time", ...}``;
crun: ``{"msg", "level", "time"}``). :func:`parse_log` reads both (and plain text),
and :func:`diagnose` turns a failed command into the exception a caller can act on,
with the runtime's own words and the cause of the failures this machine is known
for (MACHINE-NOTES.md: no CAP_SYS_RESOURCE, so no negative ``oomScoreAdj`` and no
rlimit above the caller's hard limit).
"""

from __future__ import annotations

import contextlib
import json
import re
import resource
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from criolib.runtime_spec._errors import (
    ContainerExists,
    ContainerNotFound,
    PrivilegeError,
    RuntimeCommandError,
)
from criolib.runtime_spec._hostcaps import has_cap_sys_resource

__all__ = ["LogRecord", "LogTap", "diagnose", "error_messages", "parse_log"]

_ERROR_LEVELS = frozenset({"error", "fatal", "panic"})


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

# runc: "systemd not running on this host, cannot use systemd cgroups manager";
# crun: "cannot open sd-bus: No such file or directory".
_NO_SYSTEMD = re.compile(r"systemd not running|cannot open sd-bus")
_SYSTEMD_HINT = (
    "the systemd cgroup manager (--systemd-cgroup) needs a running systemd to talk to "
    "over D-Bus, and this host runs none; use the cgroupfs manager instead "
    "(RuntimeClient(systemd_cgroup=False), the default, with a cgroupsPath like "
    "/criolib/<id> rather than slice:prefix:name)")

_OOM_SCORE = re.compile(r"oom_score_adj.*Permission denied", re.IGNORECASE)
# runc: "error setting rlimit type 7: operation not permitted";
# crun: "setrlimit `RLIMIT_NOFILE`: Operation not permitted".
_RLIMIT_RUNC = re.compile(r"rlimit type (\d+): operation not permitted", re.IGNORECASE)
_RLIMIT_CRUN = re.compile(r"setrlimit `?(RLIMIT_[A-Z_]+)`?: Operation not permitted")


def _rlimit_names() -> dict[int, str]:
    names: dict[int, str] = {}
    for n in sorted(dir(resource)):
        if n.startswith("RLIMIT_") and n != "RLIMIT_OFILE":  # BSD's alias of NOFILE
            names.setdefault(getattr(resource, n), n)
    return names


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
    if has_cap_sys_resource():
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
    cap = ("which this process holds, yet the kernel refused" if has_cap_sys_resource()
           else "which this process lacks")
    return (f"the runtime could not set {name}{asked}: an rlimit cannot be raised above "
            f"the caller's hard limit{held} without CAP_SYS_RESOURCE, {cap}; lower "
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
    elif _NO_SYSTEMD.search(said) and "--systemd-cgroup" in argv:
        hint = _SYSTEMD_HINT
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


class LogTap:
    """The ``--log`` destination of one command, and what the runtime wrote there."""

    def __init__(self, path: Path, *, owned: bool) -> None:
        self.path = path
        self.owned = owned
        # The caller's own log file is shared by every command: read only our part.
        self.offset = 0 if owned else _size(path)

    def read(self) -> list[LogRecord]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                return parse_log(f.read())
        except FileNotFoundError:
            return []

    def close(self) -> None:
        if self.owned:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
