"""CRI-O's RuntimeDefault seccomp profile, resolved for one container.

A profile in containers/common's format is a template: some rules apply only when the
container holds a capability, or lacks one, or runs on a given architecture. Before the
spec is written, CRI-O resolves it against the container (containers/common
``pkg/seccomp/seccomp_linux.go`` ``setupSeccomp``) and what reaches ``config.json`` is a
plain runtime-spec ``linux.seccomp`` object (runtime-spec v1.2 config-linux.md, "Seccomp").
:func:`default_seccomp_profile` does that resolution in Python; the rules themselves are in
:mod:`criolib.runtime_spec._seccomp_data`. :func:`resolve_seccomp_profile` and
:func:`load_seccomp_profile` do the same for a profile given as JSON (CRI-O's
``seccomp_profile`` and Localhost profiles), in either format.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from criolib.runtime_spec import _seccomp_data as data
from criolib.runtime_spec._errors import RuntimeSpecError

__all__ = [
    "SeccompProfileError",
    "default_seccomp_profile",
    "load_seccomp_profile",
    "normalize_capability",
    "resolve_seccomp_profile",
    "seccomp_arch",
]


class SeccompProfileError(ValueError, RuntimeSpecError):
    """A seccomp profile was asked for something it cannot describe (an unknown arch), or a
    profile file cannot be read or is not a profile."""


#: libseccomp's native architecture names (libseccomp-golang ``ScmpArch.String``), the
#: names the profile's ``arches`` filters use.
_SECCOMP_ARCHES = frozenset({
    "x86", "amd64", "x32", "arm", "arm64", "loong64", "m68k", "mips", "mips64", "mips64n32",
    "mipsel", "mipsel64", "mipsel64n32", "parisc", "parisc64", "ppc", "ppc64", "ppc64le",
    "riscv64", "s390", "s390x", "sh", "sheb",
})

#: Other spellings: Go's GOARCH (OCI image platforms) and the kernel's ``uname -m``.
_ARCH_ALIASES = {
    "386": "x86", "i386": "x86", "i486": "x86", "i586": "x86", "i686": "x86",
    "x86_64": "amd64", "aarch64": "arm64", "arm64be": "arm64", "armv6l": "arm",
    "armv7l": "arm", "armv8l": "arm", "mipsle": "mipsel", "mips64le": "mipsel64",
    "loongarch64": "loong64", "riscv": "riscv64",
}


def seccomp_arch(arch: str | None = None) -> str:
    """The libseccomp name of ``arch`` (Go/OCI or ``uname -m`` spelling), default this host's.

    ``"amd64"`` and ``"x86_64"`` both give ``"amd64"``; ``"386"`` gives ``"x86"``. Raises
    :class:`SeccompProfileError` for a name libseccomp has no architecture for.
    """
    name = (arch if arch is not None else platform.machine()).strip().lower()
    name = _ARCH_ALIASES.get(name, name)
    if name not in _SECCOMP_ARCHES:
        raise SeccompProfileError(
            f"unknown architecture {arch!r} for a seccomp profile; use a Go/OCI name such as "
            f"'amd64' or 'arm64' (libseccomp knows {', '.join(sorted(_SECCOMP_ARCHES))})"
        )
    return name


def normalize_capability(name: str) -> str:
    """``"sys_admin"``, ``"SYS_ADMIN"`` and ``"CAP_SYS_ADMIN"`` all become ``"CAP_SYS_ADMIN"``."""
    cap = name.strip().upper()
    return cap if cap.startswith("CAP_") else f"CAP_{cap}"


def _crio_rules() -> tuple[data.Rule, ...]:
    """containers/common's rules with CRI-O's change applied (see ``CRIO_RULES``)."""
    def unconditional_allow(rule: data.Rule) -> bool:
        return rule.action == "SCMP_ACT_ALLOW" and not (
            rule.args or rule.include_caps or rule.exclude_caps
            or rule.include_arches or rule.exclude_arches)

    removed = data.CRIO_REMOVED_FROM_ALLOW
    rules = [
        attrs.evolve(r, names=tuple(n for n in r.names if n not in removed))
        if unconditional_allow(r) else r
        for r in data.RULES
    ]
    return (*rules, *data.CRIO_RULES)


_RULES = _crio_rules()


def _applies(rule: data.Rule, caps: frozenset[str], arch: str) -> bool:
    # containers/common setupSeccomp: an excluded arch or any excluded capability drops
    # the rule; otherwise it needs the arch (if it names arches) and every included cap.
    if arch in rule.exclude_arches or any(c in caps for c in rule.exclude_caps):
        return False
    if rule.include_arches and arch not in rule.include_arches:
        return False
    return all(c in caps for c in rule.include_caps)


def _wire(rule: data.Rule) -> dict[str, Any]:
    entry: dict[str, Any] = {"names": list(rule.names), "action": rule.action}
    if rule.errno is not None:
        entry["errnoRet"] = rule.errno
    if rule.args:
        entry["args"] = []
        for a in rule.args:
            arg: dict[str, Any] = {"index": a.index, "value": a.value}
            if a.value_two:  # runtime-spec's Go binding omits a zero valueTwo
                arg["valueTwo"] = a.value_two
            arg["op"] = a.op
            entry["args"].append(arg)
    return entry


def default_seccomp_profile(
    *, capabilities: Iterable[str] = (), arch: str | None = None
) -> dict[str, Any]:
    """CRI-O's RuntimeDefault ``linux.seccomp`` for a container, in wire (JSON) form.

    ``capabilities`` is the container's bounding set (``CAP_`` prefix optional);
    ``arch`` its architecture as Go/OCI names it (default: this host). Unknown syscalls
    fail with ENOSYS, as containers/common's profile says; capability-gated syscalls
    are allowed only when the capability is in ``capabilities``, and EPERM otherwise.
    Source: containers/common ``DefaultProfile`` (container-libs main, 2025) with CRI-O's
    ``unshare`` change, resolved as ``setupSeccomp`` does (runtime-spec v1.2,
    config-linux.md "Seccomp").
    """
    caps = frozenset(normalize_capability(c) for c in capabilities)
    name = seccomp_arch(arch)
    profile: dict[str, Any] = {
        "defaultAction": data.DEFAULT_ACTION,
        "defaultErrnoRet": data.DEFAULT_ERRNO,
    }
    if name in data.ARCH_MAP:
        profile["architectures"] = list(data.ARCH_MAP[name])
    profile["syscalls"] = [_wire(r) for r in _RULES if _applies(r, caps, name)]
    return profile


#: Keys of a profile's ``syscalls`` entry that reach the runtime-spec entry as they are.
_SYSCALL_KEYS = ("action", "errnoRet", "args")
#: Top-level keys copied as they are.
_PROFILE_KEYS = ("defaultErrnoRet", "flags", "listenerPath", "listenerMetadata")


def _filters(rule: Mapping[str, Any]) -> data.Rule:
    """The include/exclude filters of one JSON ``syscalls`` entry, as a :class:`Rule`."""
    includes = rule.get("includes") or {}
    excludes = rule.get("excludes") or {}
    return data.Rule(
        names=(), include_caps=tuple(normalize_capability(c) for c in includes.get("caps") or ()),
        exclude_caps=tuple(normalize_capability(c) for c in excludes.get("caps") or ()),
        include_arches=tuple(includes.get("arches") or ()),
        exclude_arches=tuple(excludes.get("arches") or ()))


def resolve_seccomp_profile(
    profile: Mapping[str, Any], *, capabilities: Iterable[str] = (), arch: str | None = None
) -> dict[str, Any]:
    """A seccomp profile document as a runtime-spec ``linux.seccomp`` object.

    runtime-spec form (``architectures``, ``syscalls[].names``) is kept as it is;
    containers/common's (Docker's) form (``archMap``, ``syscalls[].name``, ``includes`` /
    ``excludes`` by ``caps`` and ``arches``) is resolved for ``capabilities`` (the
    bounding set, ``CAP_`` prefix optional) and ``arch`` (default this host), with the
    same rule :func:`default_seccomp_profile` applies (containers/common
    ``setupSeccomp``); ``comment`` entries go. Raises :class:`SeccompProfileError` for a
    document that is not a profile.
    """
    if not isinstance(profile, Mapping) or not isinstance(profile.get("defaultAction"), str):
        raise SeccompProfileError("not a seccomp profile: no defaultAction string")
    caps = frozenset(normalize_capability(c) for c in capabilities)
    name = seccomp_arch(arch)
    try:
        out: dict[str, Any] = {"defaultAction": profile["defaultAction"]}
        out.update({k: profile[k] for k in _PROFILE_KEYS[:1] if k in profile})
        if "architectures" in profile:
            out["architectures"] = list(profile["architectures"] or [])
        elif profile.get("archMap"):
            native = data.ARCH_MAP.get(name, (f"SCMP_ARCH_{name.upper()}",))[0]
            for entry in profile["archMap"]:
                if entry.get("architecture") == native:
                    out["architectures"] = [native, *(entry.get("subArchitectures") or [])]
        out.update({k: profile[k] for k in _PROFILE_KEYS[1:] if k in profile})
        syscalls = []
        for rule in profile.get("syscalls") or []:
            if not _applies(_filters(rule), caps, name):
                continue
            names = list(rule.get("names") or ([rule["name"]] if rule.get("name") else []))
            if names:
                syscalls.append({"names": names,
                                 **{k: rule[k] for k in _SYSCALL_KEYS if k in rule}})
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise SeccompProfileError(f"malformed seccomp profile: {exc!r}") from exc
    if syscalls:
        out["syscalls"] = syscalls
    return out


def load_seccomp_profile(
    path: str | os.PathLike[str], *, capabilities: Iterable[str] = (), arch: str | None = None
) -> dict[str, Any]:
    """A seccomp profile file (either format) resolved by :func:`resolve_seccomp_profile`.

    ``path`` must be absolute (CRI-O's rule for ``seccomp_profile`` and Localhost
    profiles). A relative path, a file that cannot be read, that is not JSON or not a
    profile raises :class:`SeccompProfileError` naming the file.
    """
    text = os.fspath(path)
    if not os.path.isabs(text):
        raise SeccompProfileError(f"seccomp profile {text!r}: the path must be absolute")
    try:
        with open(text, "rb") as f:
            doc = json.load(f)
    except OSError as exc:
        raise SeccompProfileError(f"seccomp profile {text}: cannot read it: "
                                  f"{exc.strerror or exc}") from exc
    except ValueError as exc:
        raise SeccompProfileError(f"seccomp profile {text}: not JSON: {exc}") from exc
    try:
        return resolve_seccomp_profile(doc, capabilities=capabilities, arch=arch)
    except SeccompProfileError as exc:
        raise SeccompProfileError(f"seccomp profile {text}: {exc}") from exc
