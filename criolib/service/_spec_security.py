"""The CRI security context of a container, applied to its config.json.

CRI v1 ``LinuxContainerSecurityContext`` (kubernetes/cri-api api.proto) mapped the way
CRI-O's ``server/container_create_linux.go`` maps it: the user (``run_as_user`` /
``run_as_username`` / ``run_as_group``, supplemental groups), capabilities (the
configured defaults, then ``ALL`` and single adds and drops), ``privileged``,
``no_new_privs``, masked and read-only paths, and seccomp (RuntimeDefault, Unconfined,
Localhost; the deprecated ``seccomp_profile_path`` spellings too). Seccomp profiles
from a file may be in runtime-spec form or in containers/common's (Docker's) form,
which is resolved here for the container's capabilities and architecture.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from criolib.runtime_spec import ALL_CAPABILITIES, Generator, seccomp_arch
from criolib.service import _cri_types as cri
from criolib.service._errors import InvalidRequest

__all__ = [
    "apply_capabilities",
    "apply_seccomp",
    "load_seccomp_profile",
    "user_spec",
]

_SCMP_ARCH = {
    "amd64": "SCMP_ARCH_X86_64", "x86": "SCMP_ARCH_X86", "x32": "SCMP_ARCH_X32",
    "arm64": "SCMP_ARCH_AARCH64", "arm": "SCMP_ARCH_ARM", "ppc64le": "SCMP_ARCH_PPC64LE",
    "s390x": "SCMP_ARCH_S390X", "riscv64": "SCMP_ARCH_RISCV64",
}
_SYSCALL_KEYS = ("action", "errnoRet", "args", "comment")


def user_spec(sc: cri.LinuxContainerSecurityContext | None,
              image_user: str = "") -> str | None:
    """The image-config style user (``uid``, ``name``, ``uid:gid``) the context asks for.

    None leaves the image's ``User`` (``image_user``). ``run_as_user`` wins over
    ``run_as_username``; ``run_as_group`` replaces the group of whichever user applies,
    the image's included (CRI-O's rule).
    """
    if sc is None:
        return None
    user: str | None = None
    if sc.run_as_user is not None:
        if sc.run_as_user.value < 0:
            raise InvalidRequest(f"security_context.run_as_user {sc.run_as_user.value} is "
                                 "negative")
        user = str(sc.run_as_user.value)
    elif sc.run_as_username:
        user = sc.run_as_username
    if sc.run_as_group is not None:
        if sc.run_as_group.value < 0:
            raise InvalidRequest(f"security_context.run_as_group {sc.run_as_group.value} "
                                 "is negative")
        base = image_user if user is None else user
        user = f"{base.partition(':')[0]}:{sc.run_as_group.value}"
    return user


def _cap(name: str) -> str:
    upper = name.strip().upper()
    full = upper if upper.startswith("CAP_") else f"CAP_{upper}"
    if full not in ALL_CAPABILITIES:
        raise InvalidRequest(f"unknown capability {name!r} in the security context "
                             "(known: CAP_CHOWN, CAP_NET_ADMIN, ... or ALL)")
    return full


def apply_capabilities(gen: Generator, caps: cri.Capability | None,
                       defaults: Iterable[str]) -> None:
    """The container's capability sets, as CRI-O's ``setupCapabilities`` makes them.

    The configured ``default_capabilities`` unless ``ALL`` is added or dropped; ``ALL``
    added gives every capability this host has; ``ALL`` dropped empties the sets; then
    single adds, then single drops. Ambient capabilities asked for are also made
    inheritable, permitted and effective (the kernel needs them there).
    """
    adds = list(caps.add_capabilities) if caps is not None else []
    drops = list(caps.drop_capabilities) if caps is not None else []
    add_all = any(c.upper() == "ALL" for c in adds)
    drop_all = any(c.upper() == "ALL" for c in drops)
    base = [] if add_all or drop_all else [_cap(c) for c in defaults]
    gen.set_capabilities(base)
    gen.drop_capability("ALL", ("inheritable", "ambient"))
    if add_all:
        gen.add_capability("ALL")
    if drop_all:
        gen.drop_capability("ALL")
    for name in adds:
        if name.upper() != "ALL":
            gen.add_capability(_cap(name))
    for name in caps.add_ambient_capabilities if caps is not None else []:
        full = _cap(name)
        gen.add_capability(full, ("bounding", "effective", "permitted", "inheritable",
                                  "ambient"))
    for name in drops:
        if name.upper() != "ALL":
            gen.drop_capability(_cap(name))


def _profile_of(sc: cri.LinuxContainerSecurityContext) -> tuple[str, str]:
    """``(kind, path)``: kind ``runtime/default``, ``unconfined`` or ``localhost``."""
    if sc.seccomp is not None:
        kind = sc.seccomp.profile_type
        if kind == cri.SecurityProfile.ProfileType.Unconfined:
            return "unconfined", ""
        if kind == cri.SecurityProfile.ProfileType.Localhost:
            if not sc.seccomp.localhost_ref:
                raise InvalidRequest("security_context.seccomp: a Localhost profile needs "
                                     "localhost_ref (the profile's path)")
            return "localhost", sc.seccomp.localhost_ref
        return "runtime/default", ""
    path = sc.seccomp_profile_path
    if path in ("", "runtime/default", "docker/default"):
        return "runtime/default", ""
    if path == "unconfined":
        return "unconfined", ""
    if path.startswith("localhost/"):
        return "localhost", path[len("localhost"):]
    raise InvalidRequest(f"security_context.seccomp_profile_path {path!r} is none of "
                         "runtime/default, unconfined, localhost/<path>")


def apply_seccomp(gen: Generator, sc: cri.LinuxContainerSecurityContext | None, *,
                  default_profile: str = "") -> None:
    """Set ``linux.seccomp`` for the context (after the capabilities are final).

    RuntimeDefault (also when nothing is asked: CRI-O's ``seccomp_use_default_when_empty``)
    is criolib's built-in profile, or ``default_profile`` (crio.conf's
    ``seccomp_profile``) when set; Unconfined is no filter; Localhost loads the file.
    """
    kind, path = _profile_of(sc) if sc is not None else ("runtime/default", "")
    if kind == "unconfined":
        gen.set_seccomp(None)
        return
    if kind == "runtime/default" and not default_profile:
        gen.set_default_seccomp()
        return
    source = path if kind == "localhost" else default_profile
    gen.set_seccomp(load_seccomp_profile(source, capabilities=gen.capabilities("bounding")))


def load_seccomp_profile(path: str, *, capabilities: Iterable[str] = (),
                         arch: str | None = None) -> dict[str, Any]:
    """A seccomp profile file as a runtime-spec ``linux.seccomp`` object.

    runtime-spec form (``architectures``, ``syscalls[].names``) is taken as it is;
    containers/common's form (``archMap``, ``syscalls[].name``, ``includes`` /
    ``excludes`` by ``caps`` and ``arches``) is resolved for ``capabilities`` and
    ``arch`` (default this host). A file that is missing or not a profile raises
    :class:`InvalidRequest` naming it.
    """
    if not os.path.isabs(path):
        raise InvalidRequest(f"seccomp profile {path!r}: the path must be absolute")
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except OSError as exc:
        raise InvalidRequest(f"seccomp profile {path}: cannot read it: "
                             f"{exc.strerror or exc}") from exc
    except ValueError as exc:
        raise InvalidRequest(f"seccomp profile {path}: not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("defaultAction"), str):
        raise InvalidRequest(f"seccomp profile {path}: not a profile (no defaultAction)")
    try:
        return _resolve(doc, frozenset(_cap(c) for c in capabilities), seccomp_arch(arch))
    except (TypeError, KeyError, AttributeError) as exc:
        raise InvalidRequest(f"seccomp profile {path}: malformed: {exc!r}") from exc


def _applies(rule: Mapping[str, Any], caps: frozenset[str], arch: str) -> bool:
    includes = rule.get("includes") or {}
    excludes = rule.get("excludes") or {}
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if any(_cap(c) not in caps for c in includes.get("caps") or ()):
        return False
    if excludes.get("arches") and arch in excludes["arches"]:
        return False
    return not any(_cap(c) in caps for c in excludes.get("caps") or ())


def _resolve(doc: Mapping[str, Any], caps: frozenset[str], arch: str) -> dict[str, Any]:
    out: dict[str, Any] = {"defaultAction": doc["defaultAction"]}
    if "defaultErrnoRet" in doc:
        out["defaultErrnoRet"] = doc["defaultErrnoRet"]
    if "architectures" in doc:
        out["architectures"] = list(doc["architectures"] or [])
    elif doc.get("archMap"):
        native = _SCMP_ARCH.get(arch)
        for arch_entry in doc["archMap"]:
            if arch_entry.get("architecture") == native:
                subs = arch_entry.get("subArchitectures") or []
                out["architectures"] = [native, *subs]
    for key in ("flags", "listenerPath", "listenerMetadata"):
        if key in doc:
            out[key] = doc[key]
    syscalls = []
    for rule in doc.get("syscalls") or []:
        if not _applies(rule, caps, arch):
            continue
        names = list(rule.get("names") or ([rule["name"]] if rule.get("name") else []))
        if not names:
            continue
        entry: dict[str, Any] = {"names": names}
        entry.update({k: rule[k] for k in _SYSCALL_KEYS if k in rule and k != "comment"})
        syscalls.append(entry)
    if syscalls:
        out["syscalls"] = syscalls
    return out
