"""Checks of config.json against a root filesystem and against this host.

runtime-spec v1.2, config.md: "A directory MUST exist at the path declared by"
root.path; process.cwd is where the process starts; args[0] "MUST be available
at the given path inside of the rootfs", searched with execvp(3) semantics.
Paths are resolved inside the root filesystem as the runtime will after
pivot_root: symlinks are followed, but never out of it.

Host checks are the things that pass on paper and fail in the runtime: rlimits
above this process's hard limits and an oom_score_adj below its own need
CAP_SYS_RESOURCE (which this project's machines lack, see MACHINE-NOTES.md);
namespace and hook paths must exist here; runc refuses net.* sysctls in the
host's network namespace. An AppArmor profile (config.md, Linux Process
``apparmorProfile``) or SELinux labels (``process.selinuxLabel``,
config-linux.md ``mountLabel``) on a host without that security module are
warnings: depending on the runtime and the field, they fail the container or are
silently not applied, and neither is what the config asks for.
"""

from __future__ import annotations

import os
import posixpath
import resource
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from criolib._securejoin import secure_join
from criolib.runtime_spec._hostcaps import has_cap_sys_resource as _has_cap_sys_resource
from criolib.runtime_spec._validate_linux import sysctl_namespace
from criolib.runtime_spec._validate_rules import (
    HOOK_KINDS,
    RLIMITS,
    Ctx,
    Loc,
    integer,
    items,
    obj,
    pairs,
    show,
    string,
    strings,
)

__all__ = ["check_host", "check_rootfs"]

_UINT64_MAX = (1 << 64) - 1
#: Present when the kernel runs AppArmor (securityfs), as runc's apparmor.IsEnabled reads.
APPARMOR_DIR = "/sys/kernel/security/apparmor"
#: selinuxfs, mounted when the kernel runs SELinux.
SELINUX_DIR = "/sys/fs/selinux"


def check_rootfs(ctx: Ctx, rootfs: Path) -> None:
    """The root filesystem exists, holds process.cwd and the program to run."""
    try:
        info = os.stat(rootfs)
    except OSError as exc:
        ctx.error(("root", "path"), f"the root filesystem {rootfs} cannot be used: "
                  f"{exc.strerror or exc}")
        return
    if not stat.S_ISDIR(info.st_mode):
        ctx.error(("root", "path"), f"the root filesystem {rootfs} is not a directory")
        return
    proc = obj(ctx.doc.get("process"))
    if proc is None or ctx.platform == "windows":
        return
    cwd = string(proc.get("cwd"))
    if cwd is None or not cwd.startswith("/"):
        cwd = None  # reported by the rules; args[0] is then looked up from /
    else:
        _check_cwd(ctx, rootfs, cwd)
    args = proc.get("args")
    program = args[0] if isinstance(args, list | tuple) and args else None
    if isinstance(program, str) and program:
        _check_program(ctx, rootfs, proc, cwd or "/", program)


def _check_cwd(ctx: Ctx, rootfs: Path, cwd: str) -> None:
    kind = _kind(ctx, ("process", "cwd"), rootfs, cwd)
    if kind == "missing":
        # runc creates a missing cwd inside the container (and crun too).
        ctx.warn(("process", "cwd"), f"{cwd} does not exist in the root filesystem; "
                 "runc creates it")
    elif kind not in ("dir", "error") and not _under_mount(ctx, cwd):
        ctx.error(("process", "cwd"), f"{cwd} is not a directory in the root filesystem")


def _check_program(ctx: Ctx, rootfs: Path, proc: Mapping[str, Any], cwd: str,
                   program: str) -> None:
    loc: Loc = ("process", "args", 0)
    if "/" in program:
        # execvp(3): a name with a slash is a path, relative to the working directory.
        candidates = [posixpath.join(cwd, program)]
        searched = ""
    else:
        path_var = None
        for _, entry in strings(proc.get("env")):
            if entry.startswith("PATH="):
                path_var = entry[len("PATH="):]  # the last one wins, as in environ
        if path_var is None:
            ctx.error(loc, f"{show(program)} is not a path and process.env sets no PATH "
                      "to search")
            return
        candidates = [posixpath.join(cwd, d or ".", program) for d in path_var.split(":")]
        searched = f" (searched PATH={path_var})"
    kinds = [(c, _kind(ctx, loc, rootfs, c)) for c in candidates]
    if any(k == "exec" for _, k in kinds) or any(k == "error" for _, k in kinds):
        return
    found = [c for c, k in kinds if k in ("file", "dir", "other")]
    if any(_under_mount(ctx, c) for c in candidates):
        ctx.warn(loc, f"{show(program)} is not in the root filesystem{searched}; "
                 "a mount may provide it")
    elif found:
        ctx.error(loc, f"{posixpath.normpath(found[0])} in the root filesystem is not "
                  "an executable file")
    else:
        ctx.error(loc, f"{show(program)} was not found in the root filesystem{searched}")


def _kind(ctx: Ctx, loc: Loc, rootfs: Path, path: str) -> str:
    """What ``path`` is inside ``rootfs``: missing, dir, exec, file, other or error."""
    try:
        info = os.lstat(secure_join(rootfs, path))
    except FileNotFoundError:
        return "missing"
    except NotADirectoryError:
        return "missing"
    except OSError as exc:  # a symlink loop, a directory we may not read
        ctx.error(loc, f"cannot look up {path} in the root filesystem: {exc.strerror or exc}")
        return "error"
    if stat.S_ISDIR(info.st_mode):
        return "dir"
    if stat.S_ISREG(info.st_mode):
        return "exec" if info.st_mode & 0o111 else "file"
    # secure_join resolved every link it could: one left dangles.
    return "missing" if stat.S_ISLNK(info.st_mode) else "other"


def _under_mount(ctx: Ctx, path: str) -> bool:
    path = posixpath.normpath(path)
    for _, mount in items(ctx.doc.get("mounts")):
        dest = string(mount.get("destination"))
        if dest:
            dest = posixpath.normpath(posixpath.join("/", dest))
            if dest != "/" and (path == dest or path.startswith(dest + "/")):
                return True
    return False


def check_host(ctx: Ctx) -> None:
    """What this process can grant and what must exist on this host."""
    proc = obj(ctx.doc.get("process"))
    if proc is not None and ctx.is_linux and not _has_cap_sys_resource():
        _rlimits(ctx, proc)
        _oom_score_adj(ctx, integer(proc.get("oomScoreAdj")))
    linux = ctx.linux
    for index, ns in items(linux.get("namespaces") if linux else None):
        path = string(ns.get("path"))
        if path and path.startswith("/") and not os.path.exists(path):
            ctx.error(("linux", "namespaces", index, "path"),
                      f"{path} does not exist on this host")
    _host_netns_sysctls(ctx)
    if ctx.is_linux:
        _security_modules(ctx, proc)
    hooks = obj(ctx.doc.get("hooks"))
    for kind in HOOK_KINDS:
        if kind == "startContainer" or hooks is None:
            continue  # startContainer hooks resolve in the container, not here
        for index, hook in items(hooks.get(kind)):
            path = string(hook.get("path"))
            if not path or not path.startswith("/"):
                continue
            if not os.path.isfile(path):
                ctx.error(("hooks", kind, index, "path"), f"{path} does not exist on this host")
            elif not os.access(path, os.X_OK):
                ctx.error(("hooks", kind, index, "path"), f"{path} is not executable")


def _security_modules(ctx: Ctx, proc: Mapping[str, Any] | None) -> None:
    labels: list[tuple[Loc, str | None, str, str]] = [
        (("process", "apparmorProfile"), string(proc.get("apparmorProfile")) if proc else None,
         "AppArmor", APPARMOR_DIR),
        (("process", "selinuxLabel"), string(proc.get("selinuxLabel")) if proc else None,
         "SELinux", SELINUX_DIR),
        (("linux", "mountLabel"), string(ctx.linux.get("mountLabel")) if ctx.linux else None,
         "SELinux", SELINUX_DIR),
    ]
    for loc, value, module, marker in labels:
        if value and not os.path.isdir(marker):
            ctx.warn(loc, f"this host does not run {module} ({marker} is absent): the "
                     "runtime cannot apply it, and fails or goes on without it")


def _rlimits(ctx: Ctx, proc: Mapping[str, Any]) -> None:
    for index, rlimit in items(proc.get("rlimits")):
        kind, hard = string(rlimit.get("type")), integer(rlimit.get("hard"))
        if kind not in RLIMITS or hard is None or not hasattr(resource, kind):
            continue
        _, current = resource.getrlimit(getattr(resource, kind))
        if current == resource.RLIM_INFINITY:
            continue
        # On the wire, RLIM_INFINITY is the largest uint64.
        if hard >= _UINT64_MAX or hard > current:
            shown = "unlimited" if hard >= _UINT64_MAX else str(hard)
            ctx.warn(("process", "rlimits", index, "hard"),
                     f"{shown} is above this process's hard {kind} of {current}; without "
                     "CAP_SYS_RESOURCE the runtime cannot raise it and fails")


def _oom_score_adj(ctx: Ctx, value: int | None) -> None:
    if value is None:
        return
    try:
        with open("/proc/self/oom_score_adj") as source:
            current = int(source.read())
    except (OSError, ValueError):
        return
    if value < current:
        ctx.warn(("process", "oomScoreAdj"),
                 f"{value} is below this process's oom_score_adj of {current}; without "
                 "CAP_SYS_RESOURCE the runtime cannot lower it and fails")


def _host_netns_sysctls(ctx: Ctx) -> None:
    path = ctx.namespaces.get("network")
    sysctl = obj(ctx.linux.get("sysctl")) if ctx.linux else None
    if not path or not sysctl:
        return
    try:
        target, own = os.stat(path), os.stat("/proc/self/ns/net")
    except OSError:
        return  # a missing path is reported with the namespaces
    if (target.st_dev, target.st_ino) != (own.st_dev, own.st_ino):
        return
    for key, _ in pairs(sysctl):
        if sysctl_namespace(key) == "network":
            ctx.error(("linux", "sysctl", key), f"the network namespace {path} is this "
                      "host's own: net.* sysctls there would change the host")
