"""The CRI security context of a container, applied to its config.json.

CRI v1 ``LinuxContainerSecurityContext`` (kubernetes/cri-api api.proto) mapped the way
CRI-O's ``server/container_create_linux.go`` maps it: the user (``run_as_user`` /
``run_as_username`` / ``run_as_group``, supplemental groups), capabilities (the
configured defaults, then ``ALL`` and single adds and drops), ``privileged``,
``no_new_privs``, masked and read-only paths, and seccomp (RuntimeDefault, Unconfined,
Localhost; the deprecated ``seccomp_profile_path`` spellings too). Seccomp profiles
from a file may be in runtime-spec form or in containers/common's (Docker's) form,
resolved for the container's capabilities by ``criolib.runtime_spec.load_seccomp_profile``.
"""

from __future__ import annotations

from collections.abc import Iterable

from criolib.runtime_spec import (
    ALL_CAPABILITIES,
    Generator,
    SeccompProfileError,
    load_seccomp_profile,
)
from criolib.service import _cri_types as cri
from criolib.service._errors import InvalidRequest

__all__ = [
    "apply_capabilities",
    "apply_seccomp",
    "user_spec",
]


def user_spec(sc: cri.LinuxContainerSecurityContext | None,
              image_user: str = "") -> str | None:
    """The image-config style user (``uid``, ``name``, ``uid:gid``) the context asks for.

    None leaves the image's ``User`` (``image_user``). ``run_as_user`` wins over
    ``run_as_username``; ``run_as_group`` replaces the group of that user, and without
    either of them is :class:`InvalidRequest` (CRI-O's and containerd's rule).
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
        if user is None:
            # CRI-O and containerd: "user group is specified without user or username".
            raise InvalidRequest("security_context.run_as_group is set without "
                                 "run_as_user or run_as_username (user group is specified "
                                 "without user or username)")
        if sc.run_as_group.value < 0:
            raise InvalidRequest(f"security_context.run_as_group {sc.run_as_group.value} "
                                 "is negative")
        user = f"{user.partition(':')[0]}:{sc.run_as_group.value}"
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
                  default_profile: str = "", default_when_empty: bool = False) -> None:
    """Set ``linux.seccomp`` for the context (after the capabilities are final).

    RuntimeDefault is criolib's built-in profile, or ``default_profile`` (crio.conf's
    ``seccomp_profile``) when set; Unconfined is no filter; Localhost loads the file.
    A context that names no profile at all (neither ``seccomp`` nor
    ``seccomp_profile_path``) is Unconfined, or RuntimeDefault with
    ``default_when_empty`` (CRI-O's ``seccomp_use_default_when_empty``); the kubelet
    always names one.
    """
    if sc is None or (sc.seccomp is None and not sc.seccomp_profile_path):
        kind, path = ("runtime/default" if default_when_empty else "unconfined"), ""
    else:
        kind, path = _profile_of(sc)
    if kind == "unconfined":
        gen.set_seccomp(None)
        return
    if kind == "runtime/default" and not default_profile:
        gen.set_default_seccomp()
        return
    source = path if kind == "localhost" else default_profile
    try:
        profile = load_seccomp_profile(source, capabilities=gen.capabilities("bounding"))
    except SeccompProfileError as exc:
        raise InvalidRequest(str(exc)) from exc
    gen.set_seccomp(profile)
