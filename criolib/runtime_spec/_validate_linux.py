"""Semantic rules of the ``linux`` object of config.json.

runtime-spec v1.2, config-linux.md: namespaces, user namespace mappings, time
offsets, devices, cgroups path and resources, Intel RDT, sysctl, seccomp,
masked and read-only paths, personality. Like ``_validate_rules``, every rule
looks only at nodes of the right shape: the schema has reported the others.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Any

from criolib.runtime_spec._validate_rules import (
    Ctx,
    Loc,
    array,
    check_cpu_list,
    check_id_mappings,
    integer,
    items,
    obj,
    pairs,
    show,
    string,
    strings,
)

__all__ = ["check_all", "sysctl_namespace"]

_L: Loc = ("linux",)
_IPC_SYSCTL = re.compile(r"kernel\.(?:msg|sem|shm)|fs\.mqueue\.")
_PAGE_SIZE = re.compile(r"[1-9][0-9]*[KMGTPE]B\Z")
_ERRNO_ACTIONS = frozenset({"SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"})
_DENYING_ACTIONS = frozenset({"SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                              "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"})
_MEMORY_LIMITS = ("limit", "reservation", "swap", "kernel", "kernelTCP")
#: cgroup v1 cpu.shares is clamped to this range by the kernel.
_SHARES = (2, 262144)
#: cpu.cfs_period_us: the kernel refuses periods outside 1 ms to 1 s.
_CFS_PERIOD = (1000, 1000000)
_NSEC_PER_SEC = 1_000_000_000


def check_all(ctx: Ctx) -> None:
    """Every rule of config-linux.md (v1.2) on ``ctx.doc["linux"]``."""
    linux = ctx.linux
    if linux is None:
        return
    _namespaces(ctx, linux)
    _user_mappings(ctx, linux)
    _time_offsets(ctx, obj(linux.get("timeOffsets")))
    _devices(ctx, linux)
    _cgroups_path(ctx, string(linux.get("cgroupsPath")))
    resources = obj(linux.get("resources"))
    if resources is not None:
        _device_allowlist(ctx, resources)
        _memory(ctx, obj(resources.get("memory")))
        _cpu(ctx, obj(resources.get("cpu")))
        _other_resources(ctx, resources)
    _intel_rdt(ctx, obj(linux.get("intelRdt")))
    _sysctl(ctx, obj(linux.get("sysctl")))
    _seccomp(ctx, obj(linux.get("seccomp")))
    for key in ("maskedPaths", "readonlyPaths"):
        for index, path in strings(linux.get(key)):
            if not path.startswith("/"):
                ctx.error((*_L, key, index), f"{show(path)} is not an absolute path")
    personality = obj(linux.get("personality"))
    if personality and array(personality.get("flags")):
        ctx.warn((*_L, "personality", "flags"),
                 "the spec defines no personality flags; runtimes ignore or refuse them")


def _namespaces(ctx: Ctx, linux: Mapping[str, Any]) -> None:
    seen: dict[str, int] = {}
    for index, ns in items(linux.get("namespaces")):
        loc: Loc = (*_L, "namespaces", index)
        kind, path = string(ns.get("type")), string(ns.get("path"))
        if kind is not None and kind in seen:
            ctx.error((*loc, "type"), f"namespace {kind} is already at [{seen[kind]}]")
        elif kind is not None:
            seen[kind] = index
        if path and not path.startswith("/"):
            ctx.error((*loc, "path"), f"{show(path)} is not an absolute path")


def _user_mappings(ctx: Ctx, linux: Mapping[str, Any]) -> None:
    for key in ("uidMappings", "gidMappings"):
        value = linux.get(key)
        given = bool(array(value))
        if ctx.new_namespace("user"):
            if value is None or (isinstance(value, list | tuple) and not value):
                ctx.error((*_L, key), f"a new user namespace needs {key}")
        elif "user" in ctx.namespaces:
            if given:
                ctx.warn((*_L, key), "the container joins an existing user namespace, "
                         "whose mappings are already set; these are not applied")
        elif given:
            ctx.error((*_L, key), f"{key} need a user namespace in linux.namespaces")
        check_id_mappings(ctx, (*_L, key), value)


def _time_offsets(ctx: Ctx, offsets: Mapping[str, Any] | None) -> None:
    if not offsets:
        return
    loc: Loc = (*_L, "timeOffsets")
    if not ctx.new_namespace("time"):
        # time_namespaces(7): offsets can be set only before a new namespace is entered.
        ctx.error(loc, "time offsets need a new time namespace in linux.namespaces")
    for clock, offset in pairs(offsets):
        if clock not in ("boottime", "monotonic"):
            ctx.error((*loc, clock), "a time namespace offsets only the boottime "
                      "and monotonic clocks")
        fields = obj(offset)
        nanos = integer(fields.get("nanosecs")) if fields else None
        if nanos is not None and nanos >= _NSEC_PER_SEC:
            ctx.error((*loc, clock, "nanosecs"), "must be less than 1000000000")


def _devices(ctx: Ctx, linux: Mapping[str, Any]) -> None:
    paths: dict[str, int] = {}
    numbers: dict[tuple[str, int, int], int] = {}
    for index, dev in items(linux.get("devices")):
        loc: Loc = (*_L, "devices", index)
        path, kind = string(dev.get("path")), string(dev.get("type"))
        if path is not None and not path.startswith("/"):
            ctx.error((*loc, "path"), f"{show(path)} is not an absolute path")
        elif path:
            key = posixpath.normpath(path)
            if key in paths:
                ctx.error((*loc, "path"), f"{key} is already created by devices[{paths[key]}]")
            paths[key] = index
        if kind not in ("c", "b", "u"):
            continue
        for member in ("major", "minor"):
            if member not in dev:
                ctx.error((*loc, member), f"is required for device type {kind!r}")
        major, minor = integer(dev.get("major")), integer(dev.get("minor"))
        if major is not None and minor is not None:
            ident = ("c" if kind == "u" else kind, major, minor)  # u is unbuffered c
            if ident in numbers:
                ctx.warn(loc, f"same type, major and minor as devices[{numbers[ident]}] "
                         "(the spec says SHOULD NOT)")
            numbers.setdefault(ident, index)


def _cgroups_path(ctx: Ctx, path: str | None) -> None:
    if not path:
        return  # unset or empty: the runtime picks one
    loc: Loc = (*_L, "cgroupsPath")
    if ":" in path:
        parts = path.split(":")
        slice_, name = parts[0], parts[-1]
        if len(parts) != 3 or not name or any("/" in p for p in parts):
            ctx.error(loc, f"{show(path)} is neither a path nor systemd's slice:prefix:name")
        elif slice_ and not slice_.endswith(".slice"):
            ctx.error(loc, f"systemd slice {show(slice_)} must end in .slice")
        return
    if ".." in path.split("/"):
        ctx.error(loc, f"{show(path)} must not contain '..'")
    elif not path.startswith("/"):
        ctx.warn(loc, f"{show(path)} is relative: the runtime decides where it starts")


def _device_allowlist(ctx: Ctx, resources: Mapping[str, Any]) -> None:
    for index, entry in items(resources.get("devices")):
        access = string(entry.get("access"))
        if access is not None and set(access) - set("rwm"):
            ctx.error((*_L, "resources", "devices", index, "access"),
                      f"{show(access)} may hold only r, w and m")


def _memory(ctx: Ctx, memory: Mapping[str, Any] | None) -> None:
    if memory is None:
        return
    loc: Loc = (*_L, "resources", "memory")
    values = {k: integer(memory.get(k)) for k in _MEMORY_LIMITS}
    for key, value in values.items():
        if value is not None and value < -1:
            ctx.error((*loc, key), f"{value} is neither -1 (unlimited) nor a size in bytes")
    limit, swap, reservation = values["limit"], values["swap"], values["reservation"]
    if limit and swap and limit > 0 and swap > 0 and swap < limit:
        ctx.error((*loc, "swap"), f"memory+swap {swap} is below the memory limit {limit}")
    if limit and reservation and limit > 0 and reservation > limit:
        ctx.error((*loc, "reservation"), f"{reservation} is above the memory limit {limit}")
    swappiness = integer(memory.get("swappiness"))
    if swappiness is not None and swappiness > 100:
        ctx.error((*loc, "swappiness"), f"{swappiness} is above 100")
    for key in ("kernel", "kernelTCP"):
        if key in memory:
            ctx.warn((*loc, key), "NOT RECOMMENDED by the spec: cgroup v2 and recent "
                     "kernels have no separate kernel memory limit")


def _cpu(ctx: Ctx, cpu: Mapping[str, Any] | None) -> None:
    if cpu is None:
        return
    loc: Loc = (*_L, "resources", "cpu")
    shares = integer(cpu.get("shares"))
    if shares == 0:
        ctx.error((*loc, "shares"), "must be greater than 0")
    elif shares is not None and not _SHARES[0] <= shares <= _SHARES[1]:
        ctx.warn((*loc, "shares"), f"{shares} is outside {_SHARES[0]} to {_SHARES[1]}; "
                 "the kernel clamps it")
    quota, period, burst = (integer(cpu.get(k)) for k in ("quota", "period", "burst"))
    if quota is not None and (quota < -1 or 0 < quota < _CFS_PERIOD[0]):
        ctx.error((*loc, "quota"), f"{quota} is neither -1 (unlimited) nor at least 1000 µs")
    if quota and quota > 0 and not period:
        ctx.warn((*loc, "quota"), "quota without period: the kernel's default period "
                 "of 100000 µs applies")
    if period and not _CFS_PERIOD[0] <= period <= _CFS_PERIOD[1]:
        ctx.error((*loc, "period"), f"{period} is outside the kernel's 1000 to 1000000 µs")
    if burst and quota and quota > 0 and burst > quota:
        ctx.error((*loc, "burst"), f"burst {burst} is larger than quota {quota}")
    runtime, rt_period = integer(cpu.get("realtimeRuntime")), integer(cpu.get("realtimePeriod"))
    if runtime and rt_period and runtime > rt_period:
        ctx.error((*loc, "realtimeRuntime"), f"{runtime} is longer than realtimePeriod "
                  f"{rt_period}")
    for key in ("cpus", "mems"):
        value = string(cpu.get(key))
        if value:
            check_cpu_list(ctx, (*loc, key), value)


def _other_resources(ctx: Ctx, resources: Mapping[str, Any]) -> None:
    loc: Loc = (*_L, "resources")
    block = obj(resources.get("blockIO")) or {}
    for index, dev in items(block.get("weightDevice")):
        if "weight" not in dev and "leafWeight" not in dev:
            ctx.error((*loc, "blockIO", "weightDevice", index),
                      "needs weight or leafWeight (or both)")
    sizes: dict[str, int] = {}
    for index, entry in items(resources.get("hugepageLimits")):
        size = string(entry.get("pageSize"))
        where: Loc = (*loc, "hugepageLimits", index, "pageSize")
        if size is None:
            continue
        if not _PAGE_SIZE.match(size):
            ctx.error(where, f"{show(size)} is not a page size like 64KB, 2MB or 1GB")
        elif size in sizes:
            ctx.error(where, f"{size} is already limited at hugepageLimits[{sizes[size]}]")
        sizes.setdefault(size, index)
    pids = obj(resources.get("pids"))
    if pids is not None and integer(pids.get("limit")) == 0:
        ctx.warn((*loc, "pids", "limit"), "0 is read as 'no limit set' by runc and crun; "
                 "use -1 for unlimited or a positive limit")
    for device, limits in pairs(resources.get("rdma")):
        counts = obj(limits)
        if counts is not None and not ("hcaHandles" in counts or "hcaObjects" in counts):
            ctx.error((*loc, "rdma", device), "needs hcaHandles or hcaObjects (or both)")
    for key, _ in pairs(resources.get("unified")):
        if "/" in key or "." not in key.strip("."):
            ctx.error((*loc, "unified", key), "is not a cgroup v2 file name like memory.max")


def _intel_rdt(ctx: Ctx, rdt: Mapping[str, Any] | None) -> None:
    if rdt is None:
        return
    loc: Loc = (*_L, "intelRdt")
    mem_bw = string(rdt.get("memBwSchema"))
    if mem_bw is not None and (not mem_bw.startswith("MB:") or "\n" in mem_bw):
        ctx.error((*loc, "memBwSchema"), "must start with 'MB:' and be one line")
    l3 = string(rdt.get("l3CacheSchema"))
    if l3 is not None and (not l3.startswith("L3:") or "\n" in l3):
        ctx.warn((*loc, "l3CacheSchema"), "should start with 'L3:' and be one line")


def sysctl_namespace(name: str) -> str | None:
    """The namespace that scopes sysctl ``name``, or None when it is host-wide.

    The split runc enforces: IPC (System V IPC and POSIX message queues), network,
    and the two UTS names; every other sysctl would change the host.
    """
    name = name.replace("/", ".")  # sysctl(8) accepts either separator
    if _IPC_SYSCTL.match(name):
        return "ipc"
    if name.startswith("net."):
        return "network"
    if name in ("kernel.hostname", "kernel.domainname"):
        return "uts"
    return None


def _sysctl(ctx: Ctx, sysctl: Mapping[str, Any] | None) -> None:
    for key, _ in pairs(sysctl):
        loc: Loc = (*_L, "sysctl", key)
        kind = sysctl_namespace(key)
        if kind is None:
            ctx.error(loc, "is not namespaced: setting it would change it for the whole host")
        elif kind not in ctx.namespaces:
            ctx.error(loc, f"needs a {kind} namespace in linux.namespaces; without one it "
                      "would change the host's value")


def _seccomp(ctx: Ctx, seccomp: Mapping[str, Any] | None) -> None:
    if seccomp is None:
        return
    loc: Loc = (*_L, "seccomp")
    default = string(seccomp.get("defaultAction"))
    if "defaultErrnoRet" in seccomp and default and default not in _ERRNO_ACTIONS:
        ctx.error((*loc, "defaultErrnoRet"), f"defaultAction {default} returns no errno; "
                  "only SCMP_ACT_ERRNO and SCMP_ACT_TRACE do")
    listener = string(seccomp.get("listenerPath"))
    if "listenerMetadata" in seccomp and not listener:
        ctx.error((*loc, "listenerMetadata"), "must not be set without listenerPath")
    if default == "SCMP_ACT_NOTIFY":
        ctx.warn((*loc, "defaultAction"), "runc refuses SCMP_ACT_NOTIFY as the default action")
    syscalls = array(seccomp.get("syscalls"))
    if not syscalls and default in _DENYING_ACTIONS:
        ctx.warn((*loc, "syscalls"), f"no syscalls: {default} applies to every system call, "
                 "so the process cannot even start")
    notify = default == "SCMP_ACT_NOTIFY"
    for index, rule in items(syscalls):
        where: Loc = (*loc, "syscalls", index)
        action = string(rule.get("action"))
        notify = notify or action == "SCMP_ACT_NOTIFY"
        if "errnoRet" in rule and action and action not in _ERRNO_ACTIONS:
            ctx.error((*where, "errnoRet"), f"action {action} returns no errno; "
                      "only SCMP_ACT_ERRNO and SCMP_ACT_TRACE do")
        if action == "SCMP_ACT_NOTIFY" and "write" in array(rule.get("names")):
            ctx.warn((*where, "names"), "runc refuses SCMP_ACT_NOTIFY for write, "
                     "which it needs itself")
        for arg_index, arg in items(rule.get("args")):
            position = integer(arg.get("index"))
            if position is not None and position > 5:
                ctx.error((*where, "args", arg_index, "index"),
                          f"{position} is out of range: a system call has 6 arguments (0 to 5)")
    if notify and not listener:
        ctx.warn((*loc, "listenerPath"), "SCMP_ACT_NOTIFY is used but no listenerPath is "
                 "set: nothing will answer the notifications")
