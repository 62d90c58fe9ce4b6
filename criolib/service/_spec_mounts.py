"""A container's mounts: its sandbox's files and the CRI mounts.

The sandbox's ``hostname``, ``resolv.conf`` and ``hosts`` (in ``sandbox_dir``) are
bound over the image's /etc files and its shm over /dev/shm, unless a CRI mount has
the same destination (the kubelet brings its own /etc/hosts). CRI mounts (kubernetes
cri-api ``Mount``) follow CRI-O: a host path that does not exist is created as a
directory, symlinks in it are resolved, mounts are ordered parents first, and
propagation is ``rprivate`` / ``rslave`` / ``rshared`` with the root's propagation made
to match; a host-to-container mount needs a shared or slave source mount and a
bidirectional one a shared source (mountinfo(5) optional fields), as CRI-O checks.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence

from criolib._mount import MountInfo, mountinfo
from criolib.runtime_spec import Generator
from criolib.service import _cri_types as cri
from criolib.service._errors import InvalidRequest
from criolib.service._state import SandboxRecord

__all__ = ["add_cri_mounts", "add_sandbox_mounts", "mount_propagation_of"]

_PROPAGATION = {
    cri.MountPropagation.PROPAGATION_PRIVATE: "rprivate",
    cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    cri.MountPropagation.PROPAGATION_BIDIRECTIONAL: "rshared",
}
_FILE_OPTIONS = ("rbind", "rprivate", "nosuid", "nodev", "noexec")


def add_sandbox_mounts(gen: Generator, sandbox: SandboxRecord, *, readonly: bool) -> None:
    """Bind the sandbox's hostname, resolv.conf, hosts and shm into the container."""
    mode = "ro" if readonly else "rw"
    if sandbox.sandbox_dir:
        for name in ("hostname", "resolv.conf", "hosts"):
            source = os.path.join(sandbox.sandbox_dir, name)
            if os.path.isfile(source):
                gen.add_mount(f"/etc/{name}", source=source, type="bind",
                              options=[*_FILE_OPTIONS, mode])
    if sandbox.shm_path:
        gen.add_mount("/dev/shm", source=sandbox.shm_path, type="bind",  # noqa: S108
                      options=["rbind", "rprivate", "nosuid", "nodev", "noexec", "rw"])


def mount_propagation_of(path: str) -> set[str]:
    """The propagation of the mount holding ``path``: ``{"shared"}``, ``{"master"}``
    (a slave), both, or empty (private), from /proc/self/mountinfo's optional fields."""
    try:
        mounts = mountinfo()
    except (OSError, ValueError):
        return set()
    best: MountInfo | None = None
    for entry in mounts:
        point = entry.mount_point
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.mount_point)):
            best = entry
    if best is None:
        return set()
    return {name for name in ("shared", "master") if best.tag(name) is not None}


def _host_path(mount: cri.Mount) -> str:
    source = mount.host_path
    if not source or not os.path.isabs(source):
        raise InvalidRequest(f"mount {mount.container_path!r}: host_path {source!r} must be "
                             "an absolute path")
    if not os.path.lexists(source):
        try:
            os.makedirs(source, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise InvalidRequest(f"mount {mount.container_path!r}: cannot create the missing "
                                 f"host path {source}: {exc.strerror or exc}") from exc
    return os.path.realpath(source)


def add_cri_mounts(gen: Generator, mounts: Sequence[cri.Mount]) -> list[cri.Mount]:
    """Add the CRI mounts (parents first); the mounts as made (host paths resolved)."""
    made: list[cri.Mount] = []
    root_propagation = ""
    ordered = sorted(mounts, key=lambda m: posixpath.normpath(
        posixpath.join("/", m.container_path)).count("/"))
    for mount in ordered:
        if not mount.container_path:
            raise InvalidRequest(f"mount of {mount.host_path!r}: container_path is empty")
        if mount.image is not None and mount.image.image:
            raise InvalidRequest(f"mount {mount.container_path}: image volumes are not "
                                 "supported by criolib")
        if mount.uidMappings or mount.gidMappings:
            raise InvalidRequest(f"mount {mount.container_path}: id-mapped mounts are not "
                                 "supported by criolib")
        if mount.recursive_read_only:
            raise InvalidRequest(f"mount {mount.container_path}: recursive read-only mounts "
                                 "need runc 1.2 / crun 1.9 (Debian 12 has runc 1.1.5, crun "
                                 "1.8.1)")
        dest = posixpath.normpath(posixpath.join("/", mount.container_path))
        source = _host_path(mount)
        propagation = _PROPAGATION.get(mount.propagation)
        if propagation is None:
            raise InvalidRequest(f"mount {dest}: unknown propagation {mount.propagation!r}")
        found = mount_propagation_of(source)
        if propagation == "rshared":
            if "shared" not in found:
                raise InvalidRequest(f"mount {dest}: bidirectional propagation needs "
                                     f"{source} on a shared mount (mount --make-rshared)")
            root_propagation = "rshared"
        elif propagation == "rslave":
            if not found:
                raise InvalidRequest(f"mount {dest}: host-to-container propagation needs "
                                     f"{source} on a shared or slave mount")
            root_propagation = root_propagation or "rslave"
        gen.add_bind_mount(source, dest, readonly=mount.readonly, propagation=propagation)
        made.append(cri.Mount(container_path=dest, host_path=source, readonly=mount.readonly,
                              selinux_relabel=mount.selinux_relabel,
                              propagation=mount.propagation))
    if root_propagation:
        gen.set_rootfs_propagation(root_propagation)
    return made
