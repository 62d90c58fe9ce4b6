"""Semantic rules of config.json that are not Linux-specific, and their helpers.

runtime-spec v1.2, config.md: specification version, root, mounts (with the
Linux mount options and idmapped mounts), process (POSIX rlimits, Linux
capabilities, scheduler, CPU affinity), hostname and domainname, hooks. The
JSON Schema has already reported wrong types; every rule here looks only at the
parts that have the right shape, so any input, however broken, is safe.

Two deliberate warnings rather than errors:

- A relative mount ``destination`` on Linux. v1.0 said it MUST be absolute; since
  v1.1 config.md lets Linux take it as relative to ``/`` (deprecated; runc and crun
  do so), so it loads and runs. On other POSIX platforms it is still an error.
- A ``CAP_`` name outside linux/capability.h as this validator knows it. Since v1.1
  config.md says a runtime MUST log capabilities it cannot map or grant and SHOULD
  NOT fail (a newer kernel's capability on an older host); a name not shaped like
  ``CAP_...`` is an error.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

from criolib.runtime_spec._defaults import ALL_CAPABILITIES

__all__ = [
    "CAPABILITIES",
    "HOOK_KINDS",
    "RLIMITS",
    "Ctx",
    "Loc",
    "array",
    "check_all",
    "check_cpu_list",
    "check_env",
    "check_id_mappings",
    "integer",
    "items",
    "obj",
    "pairs",
    "show",
    "string",
    "strings",
    "type_name",
]

Loc = tuple[str | int, ...]

#: linux/capability.h, CAP_CHOWN (0) to CAP_CHECKPOINT_RESTORE (40): one list, in _defaults.
CAPABILITIES = frozenset(ALL_CAPABILITIES)
#: getrlimit(2) resources (asm-generic/resource.h).
RLIMITS = frozenset({
    "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE", "RLIMIT_RSS",
    "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS", "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_RTPRIO", "RLIMIT_RTTIME",
})
HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop")

_SEMVER = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
    r"(?:\.(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*)?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?\Z")
_CAP_SHAPE = re.compile(r"CAP_[A-Z0-9_]+\Z")
_CPU_LIST = re.compile(r"[0-9]+(?:-[0-9]+)?(?:,[0-9]+(?:-[0-9]+)?)*\Z")
#: What this validator implements; a newer minor version may use fields it skips.
_SPEC_MINOR = 2
#: HOST_NAME_MAX: sethostname(2) and setdomainname(2) refuse longer names.
_HOST_NAME_MAX = 64
_UINT32_END = 1 << 32
#: user_namespaces(7): at most 340 lines in uid_map and gid_map (Linux 4.15+).
_MAX_ID_MAPPINGS = 340


class Ctx:
    """The document under validation and the problems found so far."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc
        self.found: list[tuple[Loc, Literal["error", "warning"], str]] = []
        self.linux = obj(doc.get("linux"))
        # config.md, Platform-specific configuration: the platform is named by its
        # object; with none, the config is POSIX and criolib's platform is Linux.
        self.platform = next(
            (p for p in ("windows", "solaris", "zos", "freebsd") if p in doc), "linux")
        self.namespaces: dict[str, str | None] = {}
        for _, entry in items(self.linux.get("namespaces") if self.linux else None):
            kind = string(entry.get("type"))
            if kind and kind not in self.namespaces:
                self.namespaces[kind] = string(entry.get("path"))

    def error(self, loc: Loc, message: str) -> None:
        self.found.append((loc, "error", message))

    def warn(self, loc: Loc, message: str) -> None:
        self.found.append((loc, "warning", message))

    @property
    def is_linux(self) -> bool:
        return self.platform == "linux"

    def new_namespace(self, kind: str) -> bool:
        """Whether the container gets a namespace of its own of ``kind``."""
        return kind in self.namespaces and not self.namespaces[kind]


# --- shape helpers: each returns None (or empty) when the node has the wrong shape ---


def obj(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def array(value: object) -> Sequence[Any]:
    return value if isinstance(value, list | tuple) else ()


def string(value: object) -> str | None:
    return value if isinstance(value, str) else None


def integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def type_name(value: object) -> str:
    """The JSON name of ``value``'s type."""
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "number"),
                       (str, "string"), (Mapping, "object"), (list | tuple, "array")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def show(value: object) -> str:
    """``value`` short enough for a message."""
    if isinstance(value, str):
        return repr(value if len(value) <= 80 else value[:77] + "...")
    if isinstance(value, int | float) or value is None:
        return repr(value)  # huge ints arrive wrapped, with a short repr
    return f"<{type_name(value)}>"


def items(value: object) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """``(index, entry)`` for the object entries of an array."""
    for index, entry in enumerate(array(value)):
        if isinstance(entry, Mapping):
            yield index, entry


def pairs(value: object) -> Iterator[tuple[str, Any]]:
    """``(key, value)`` of an object, for its string keys (a Mapping may hold others)."""
    if isinstance(value, Mapping):
        for key, member in value.items():
            if isinstance(key, str):
                yield key, member


def strings(value: object) -> Iterator[tuple[int, str]]:
    for index, entry in enumerate(array(value)):
        if isinstance(entry, str):
            yield index, entry


# --- the rules ----------------------------------------------------------------------


def check_all(ctx: Ctx) -> None:
    """Every rule of config.md (v1.2) on ``ctx.doc``."""
    _version(ctx)
    _root(ctx)
    _process(ctx)
    _names(ctx)
    _mounts(ctx)
    _hooks(ctx)


def _version(ctx: Ctx) -> None:
    version = string(ctx.doc.get("ociVersion"))
    if version is None:
        return
    match = _SEMVER.match(version)
    if not match:
        ctx.error(("ociVersion",), f"{show(version)} is not a SemVer 2.0.0 version")
    elif match[1] != "1":
        ctx.error(("ociVersion",), f"major version {show(match[1])} is not supported: "
                  "this validator implements runtime-spec 1.x")
    elif _digits_key(match[2]) > _digits_key(str(_SPEC_MINOR)):
        ctx.warn(("ociVersion",), f"{show(version)} is newer than runtime-spec 1.{_SPEC_MINOR}, "
                 "which this validator implements; newer fields are not checked")


def _root(ctx: Ctx) -> None:
    root = obj(ctx.doc.get("root"))
    if root and ctx.platform != "windows" and root.get("path") == "":
        ctx.error(("root", "path"), "must not be empty")


def _process(ctx: Ctx) -> None:
    proc = obj(ctx.doc.get("process"))
    if proc is None:
        return
    cwd = string(proc.get("cwd"))
    if cwd is not None and ctx.platform != "windows" and not cwd.startswith("/"):
        ctx.error(("process", "cwd"), f"{show(cwd)} is not an absolute path")
    args = proc.get("args")
    if ctx.platform == "windows":
        if not array(args) and not string(proc.get("commandLine")):
            ctx.error(("process", "args"), "args or commandLine is required")
    elif args is None or (isinstance(args, list | tuple) and not args):
        ctx.error(("process", "args"),
                  "at least one entry is required: the program to run")
    elif array(args) and array(args)[0] == "":
        ctx.error(("process", "args", 0), "the program to run must not be empty")
    check_env(ctx, ("process", "env"), proc.get("env"))
    _rlimits(ctx, proc)
    _capabilities(ctx, obj(proc.get("capabilities")))
    _scheduler(ctx, obj(proc.get("scheduler")))
    affinity = obj(proc.get("execCPUAffinity"))
    for key in ("initial", "final"):
        value = string(affinity.get(key)) if affinity else None
        if value:  # empty "final" means the container's default (config.md)
            check_cpu_list(ctx, ("process", "execCPUAffinity", key), value)


def check_env(ctx: Ctx, loc: Loc, env: object) -> None:
    """Entries are NAME=value with a non-empty NAME (environ, IEEE Std 1003.1-2008)."""
    seen: dict[str, int] = {}
    for index, entry in strings(env):
        name, sep, _ = entry.partition("=")
        if not sep or not name:
            ctx.error((*loc, index), f"{show(entry)} is not of the form NAME=value")
        elif "\0" in entry:
            ctx.error((*loc, index), f"{show(entry)} contains a NUL byte")
        elif name in seen:
            ctx.warn((*loc, index), f"{name} is already set at [{seen[name]}]; "
                     "this later value wins")
        else:
            seen[name] = index


def check_cpu_list(ctx: Ctx, loc: Loc, value: str) -> None:
    """A list like ``0-3,7`` (config-linux.md, CPU)."""
    if not _CPU_LIST.match(value):
        ctx.error(loc, f"{show(value)} is not a list of numbers and ranges like '0-3,7'")
        return
    for part in value.split(","):
        low, _, high = part.partition("-")
        if high and _digits_key(low) > _digits_key(high):
            ctx.error(loc, f"range {part} in {show(value)} runs backwards")


def _digits_key(digits: str) -> tuple[int, str]:
    """A sort key for a decimal string, for any length: int() refuses 4300 digits."""
    digits = digits.lstrip("0") or "0"
    return len(digits), digits


def _rlimits(ctx: Ctx, proc: Mapping[str, Any]) -> None:
    seen: dict[str, int] = {}
    for index, rlimit in items(proc.get("rlimits")):
        loc: Loc = ("process", "rlimits", index)
        kind = string(rlimit.get("type"))
        if kind is not None and ctx.is_linux and kind not in RLIMITS:
            ctx.error((*loc, "type"), f"{show(kind)} is not a Linux rlimit (getrlimit(2))")
        if kind is not None and kind in seen:
            ctx.error((*loc, "type"), f"{kind} is already limited at [{seen[kind]}]")
        elif kind is not None:
            seen[kind] = index
        soft, hard = integer(rlimit.get("soft")), integer(rlimit.get("hard"))
        if soft is not None and hard is not None and soft > hard:
            ctx.error((*loc, "soft"), f"soft limit {soft} is above the hard limit {hard}")


def _capabilities(ctx: Ctx, caps: Mapping[str, Any] | None) -> None:
    if caps is None or not ctx.is_linux:
        return
    sets: dict[str, set[str]] = {}
    for name in ("bounding", "effective", "inheritable", "permitted", "ambient"):
        sets[name] = set()
        for index, cap in strings(caps.get(name)):
            sets[name].add(cap)
            loc: Loc = ("process", "capabilities", name, index)
            if cap in CAPABILITIES:
                continue
            if _CAP_SHAPE.match(cap):
                # config.md: runtimes log capabilities they cannot map and go on.
                ctx.warn(loc, f"{cap} is not a capability known up to "
                         "CAP_CHECKPOINT_RESTORE; runtimes warn and ignore it")
            else:
                ctx.error(loc, f"{show(cap)} is not a capability name (CAP_...)")
    allowed = sets["permitted"] & sets["inheritable"]
    for index, cap in strings(caps.get("ambient")):
        if cap not in allowed:
            # capabilities(7): PR_CAP_AMBIENT_RAISE needs the capability in both sets.
            ctx.warn(("process", "capabilities", "ambient", index),
                     f"{cap} is not in both permitted and inheritable, "
                     "so the kernel will not raise it")
    for index, cap in strings(caps.get("effective")):
        if cap not in sets["permitted"]:
            # capset(2) refuses it: runc fails with "unable to apply caps".
            ctx.error(("process", "capabilities", "effective", index),
                      f"{cap} is not in permitted, so it cannot be effective")


def _scheduler(ctx: Ctx, sched: Mapping[str, Any] | None) -> None:
    if sched is None:
        return
    loc: Loc = ("process", "scheduler")
    policy = string(sched.get("policy"))
    priority = integer(sched.get("priority"))
    if policy in ("SCHED_FIFO", "SCHED_RR"):
        if priority is None or not 1 <= priority <= 99:
            # sched(7): real-time policies take a static priority of 1 to 99.
            ctx.error((*loc, "priority"), f"{policy} needs a priority from 1 to 99")
    elif policy is not None and priority:
        ctx.error((*loc, "priority"), f"{policy} takes priority 0, not {priority}")
    if policy == "SCHED_DEADLINE":
        runtime, deadline, period = (integer(sched.get(k)) for k in
                                     ("runtime", "deadline", "period"))
        # sched(7): runtime <= deadline <= period (a period of 0 means the deadline).
        if runtime is not None and deadline is not None and runtime > deadline:
            ctx.error((*loc, "runtime"), "SCHED_DEADLINE needs runtime <= deadline")
        if deadline is not None and period and deadline > period:
            ctx.error((*loc, "deadline"), "SCHED_DEADLINE needs deadline <= period")


def _names(ctx: Ctx) -> None:
    for key in ("hostname", "domainname"):
        name = string(ctx.doc.get(key))
        if not name or not ctx.is_linux:
            continue
        if "uts" not in ctx.namespaces:
            ctx.error((key,), f"setting the {key} needs a uts namespace "
                      "(linux.namespaces has none, so it would change the host's)")
        if len(name.encode()) > _HOST_NAME_MAX:
            ctx.error((key,), f"is longer than {_HOST_NAME_MAX} bytes")


def _mounts(ctx: Ctx) -> None:
    seen: dict[str, int] = {}
    for index, mount in items(ctx.doc.get("mounts")):
        loc: Loc = ("mounts", index)
        dest = string(mount.get("destination"))
        if dest == "":
            ctx.error((*loc, "destination"), "must not be empty")
        elif dest is not None and not dest.startswith("/"):
            if ctx.is_linux:
                # v1.2 allows it on Linux, "interpreted as relative to /", deprecated.
                ctx.warn((*loc, "destination"), f"{show(dest)} is relative: deprecated, "
                         "and taken as relative to /")
            elif ctx.platform != "windows":
                ctx.error((*loc, "destination"), f"{show(dest)} is not an absolute path")
        if dest:
            key = posixpath.normpath(posixpath.join("/", dest))
            if key in seen:
                ctx.warn((*loc, "destination"), f"{key} is also mounted at "
                         f"mounts[{seen[key]}]; this later mount hides it")
            seen[key] = index
        options = [o for _, o in strings(mount.get("options"))]
        _mount_options(ctx, loc, mount, options)
        _idmapped_mount(ctx, loc, mount, options)


def _mount_options(ctx: Ctx, loc: Loc, mount: Mapping[str, Any], options: list[str]) -> None:
    for index, option in strings(mount.get("options")):
        if not option.strip():
            ctx.error((*loc, "options", index), "an option must not be empty")
        elif "," in option:
            # Runtimes join unknown options with commas for mount(2)'s data.
            ctx.warn((*loc, "options", index), f"{show(option)} holds a comma: "
                     "give each option as its own entry")
    if "ro" in options and "rw" in options:
        ctx.warn((*loc, "options"), "both ro and rw are given; the last one wins")
    if ({"bind", "rbind"} & set(options)) and not string(mount.get("source")):
        ctx.error((*loc, "source"), "a bind mount needs a source")


def _idmapped_mount(ctx: Ctx, loc: Loc, mount: Mapping[str, Any], options: list[str]) -> None:
    """config.md (v1.2), the idmap and ridmap options and mounts' id mappings."""
    uids, gids = mount.get("uidMappings"), mount.get("gidMappings")
    for key, value, other in (("uidMappings", uids, gids), ("gidMappings", gids, uids)):
        if value is not None and other is None:
            ctx.error((*loc, key), f"{key} must be given together with "
                      f"{'gidMappings' if key == 'uidMappings' else 'uidMappings'}")
        check_id_mappings(ctx, (*loc, key), value)
    wants_idmap = bool({"idmap", "ridmap"} & set(options))
    if (uids is not None or gids is not None) and not wants_idmap:
        ctx.warn((*loc, "options"), "id mappings are given without the idmap or ridmap "
                 "option; runtimes that predate idmapped mounts ignore them silently")
    if wants_idmap and uids is None and gids is None and "user" not in ctx.namespaces:
        ctx.error((*loc, "options"), "idmap needs uidMappings and gidMappings on the "
                  "mount, or a user namespace for the container")


def check_id_mappings(ctx: Ctx, loc: Loc, mappings: object) -> None:
    """Entries map a non-empty range that fits in 32 bits and overlaps no other."""
    ranges: list[tuple[int, int, str, int]] = []
    for index, entry in items(mappings):
        size = integer(entry.get("size"))
        if size == 0:
            ctx.error((*loc, index, "size"), "must be greater than 0")
            continue
        for key in ("containerID", "hostID"):
            start = integer(entry.get(key))
            if start is None or size is None:
                continue
            if start + size > _UINT32_END:
                ctx.error((*loc, index), f"{key} {start} + size {size} runs past 2^32")
            ranges.append((start, start + size, key, index))
    # user_namespaces(7): the kernel refuses a map whose ranges overlap on either side.
    for key in ("containerID", "hostID"):
        reach, reacher = -1, -1
        for start, end, _, index in sorted(r for r in ranges if r[2] == key):
            if start < reach:
                ctx.error((*loc, index), f"its {key} range overlaps entry [{reacher}]")
            if end > reach:
                reach, reacher = end, index
    if len(array(mappings)) > _MAX_ID_MAPPINGS:
        ctx.error(loc, f"has more than the kernel's {_MAX_ID_MAPPINGS} entries")


def _hooks(ctx: Ctx) -> None:
    hooks = obj(ctx.doc.get("hooks"))
    if hooks is None:
        return
    if array(hooks.get("prestart")):
        ctx.warn(("hooks", "prestart"), "prestart hooks are deprecated in favour of "
                 "createRuntime, createContainer and startContainer")
    for kind in HOOK_KINDS:
        for index, hook in items(hooks.get(kind)):
            loc: Loc = ("hooks", kind, index)
            path = string(hook.get("path"))
            if path is not None and not path.startswith("/"):
                ctx.error((*loc, "path"), f"{show(path)} is not an absolute path")
            timeout = integer(hook.get("timeout"))
            if timeout is not None and timeout <= 0:
                ctx.error((*loc, "timeout"), f"must be greater than 0, not {timeout}")
            check_env(ctx, (*loc, "env"), hook.get("env"))
