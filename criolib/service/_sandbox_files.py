"""A sandbox's files: hostname, resolv.conf, hosts, and the pod's /dev/shm tmpfs.

They live in the sandbox directory (``state_dir/sandboxes/<id>/``) and are
bind-mounted into every container of the pod (CRI-O's sandbox_run_linux.go writes
hostname and resolv.conf and mounts shm the same way; the hosts file is
containerd's). All writes are atomic: a container never sees half a file.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from criolib import _mount
from criolib._atomic import atomic_write_bytes
from criolib.service import _cri_types as cri
from criolib.service._errors import ServiceError

__all__ = [
    "HOST_HOSTS",
    "HOST_RESOLV_CONF",
    "SHM_SIZE",
    "hosts_text",
    "is_mountpoint",
    "mount_shm",
    "remove_tree",
    "resolv_conf_text",
    "unmount",
    "write_file",
]

log = logging.getLogger("criolib.service")

HOST_RESOLV_CONF = Path("/etc/resolv.conf")
HOST_HOSTS = Path("/etc/hosts")
#: The pod's /dev/shm (CRI-O's and docker's default shm_size).
SHM_SIZE = 64 * 1024 * 1024

#: The localhost lines of a pod's hosts file (what docker and containerd write).
_HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


def write_file(path: Path, text: str | bytes, what: str) -> None:
    """Write one of the pod's files atomically (mode 0644); failures name the pod."""
    data = text.encode() if isinstance(text, str) else text
    try:
        atomic_write_bytes(path, data, mode=0o644, durable=False)
    except OSError as exc:
        raise ServiceError(f"{what}: cannot write {path}: {exc.strerror or exc}") from exc


def resolv_conf_text(dns: cri.DNSConfig | None, what: str) -> bytes:
    """resolv.conf(5) from the CRI DNSConfig; with none given, the host's file.

    ``search`` then ``nameserver`` lines then ``options``, as CRI-O's
    parseDNSOptions; an empty DNSConfig also means the host's resolv.conf.
    """
    if dns is None or not (dns.servers or dns.searches or dns.options):
        try:
            return HOST_RESOLV_CONF.read_bytes()
        except FileNotFoundError:
            log.warning("%s: the host has no %s; the pod gets an empty one", what,
                        HOST_RESOLV_CONF)
            return b""
        except OSError as exc:
            raise ServiceError(f"{what}: cannot read the host's {HOST_RESOLV_CONF}: "
                               f"{exc.strerror}") from exc
    lines = []
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    lines.extend(f"nameserver {server}" for server in dns.servers)
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return ("\n".join(lines) + "\n").encode()


def hosts_text(hostname: str, ips: Sequence[str], *, host_network: bool, what: str) -> bytes:
    """The pod's hosts file: the host's for host-network pods; else the localhost
    lines and one line per pod IP naming the hostname."""
    if host_network:
        try:
            return HOST_HOSTS.read_bytes()
        except OSError as exc:
            log.warning("%s: cannot read the host's %s (%s); writing a fresh one", what,
                        HOST_HOSTS, exc.strerror)
    text = _HOSTS_HEADER + "".join(f"{ip}\t{hostname}\n" for ip in ips)
    return text.encode()


def is_mountpoint(path: Path) -> bool:
    """Whether something is mounted on ``path`` (per /proc/self/mountinfo)."""
    try:
        return _mount.is_mountpoint(path)
    except (OSError, ValueError):
        return os.path.ismount(path)


def mount_shm(path: Path, what: str, size: int = SHM_SIZE) -> None:
    """Mount the pod's shm tmpfs (mode 1777, nosuid, nodev, noexec) on ``path``."""
    try:
        path.mkdir(mode=0o755, exist_ok=True)
    except OSError as exc:
        raise ServiceError(f"{what}: cannot create the shm directory {path}: "
                           f"{exc.strerror}") from exc
    try:
        _mount.mount("shm", path, "tmpfs", _mount.MS_NOSUID | _mount.MS_NODEV
                     | _mount.MS_NOEXEC, f"mode=1777,size={size}")
    except OSError as exc:
        raise ServiceError(f"{what}: cannot mount the pod's shm tmpfs on {path}: "
                           f"{os.strerror(exc.errno or 0)}") from exc


def unmount(path: Path, what: str) -> None:
    """Unmount ``path`` (lazily, as CRI-O); not mounted or absent is fine."""
    while True:  # mounted more than once (a retry after a crash): take them all off
        try:
            _mount.umount(path, _mount.MNT_DETACH)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT):
                return
            raise ServiceError(f"{what}: cannot unmount {path}: "
                               f"{os.strerror(exc.errno or 0)}") from exc


def remove_tree(path: Path, what: str) -> None:
    """Remove a directory the service made; absent is fine. Refuses to cross a mount."""
    if not path.exists():
        return
    for sub in [path, *(p for p in path.rglob("*") if p.is_dir() and not p.is_symlink())]:
        if is_mountpoint(sub):
            raise ServiceError(f"{what}: {sub} is still a mount point; not removing {path}")
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ServiceError(f"{what}: cannot remove {path}: {exc.strerror or exc}") from exc
