"""What CRI-O puts in a container's spec when nobody asks for anything else.

Each constant names its source. Where CRI-O takes a value from elsewhere (the kubelet's
masked paths, runtime-tools' default mounts, its systemd unit's rlimits), the source given
is the one whose value reaches ``config.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

__all__ = [
    "ALL_CAPABILITIES",
    "CAPABILITY_BITS",
    "DEFAULT_CAPABILITIES",
    "DEFAULT_MOUNTS",
    "DEFAULT_PATH_ENV",
    "DEFAULT_RLIMITS",
    "MASKED_PATHS",
    "READONLY_PATHS",
    "RLIMIT_DEFAULT_VALUE",
    "default_mounts",
]

#: Every Linux capability, in bit order: CAP_CHOWN is bit 0, CAP_CHECKPOINT_RESTORE bit 40
#: (include/uapi/linux/capability.h, Linux 5.9+; CAP_LAST_CAP = 40 through Linux 6.x).
ALL_CAPABILITIES: Final[tuple[str, ...]] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)

#: Capability name -> bit number, for reading ``CapEff`` masks (same source).
CAPABILITY_BITS: Final[Mapping[str, int]] = MappingProxyType(
    {name: bit for bit, name in enumerate(ALL_CAPABILITIES)})

#: CRI-O's ``default_capabilities`` (crio.conf(5); internal/config/capabilities
#: ``Default()``), with the ``CAP_`` prefix the spec uses. Unlike Docker's and
#: runtime-tools' fourteen, no AUDIT_WRITE, MKNOD, NET_RAW, SETFCAP or SYS_CHROOT.
DEFAULT_CAPABILITIES: Final[tuple[str, ...]] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_SETGID", "CAP_SETUID",
    "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_KILL",
)

#: The kubelet's default masked paths, which it sends in every non-privileged container's
#: CRI security context and CRI-O copies into ``linux.maskedPaths`` (kubernetes
#: pkg/securitycontext/util.go ``defaultMaskedPaths``, kept in sync with moby's
#: oci/defaults.go; /sys/devices/virtual/powercap since CVE-2020-8694).
MASKED_PATHS: Final[tuple[str, ...]] = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)

#: The kubelet's default read-only paths, copied into ``linux.readonlyPaths`` the same way
#: (kubernetes pkg/securitycontext/util.go ``defaultReadonlyPaths``).
READONLY_PATHS: Final[tuple[str, ...]] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)

#: The PATH every default process gets (runtime-tools generate.New, which CRI-O starts from;
#: the same as ``runc spec``).
DEFAULT_PATH_ENV: Final = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: nofile and nproc, hard and soft, when nobody sets them: podman's
#: libpod/define/config.go ``RLimitDefaultValue``. CRI-O's own ``default_ulimits`` is empty
#: (crio.conf(5)): its containers inherit the daemon's limits, which its systemd unit sets
#: to the same 1048576 for nproc (contrib/systemd/crio.service ``LimitNPROC``).
RLIMIT_DEFAULT_VALUE: Final = 1048576

#: ``(type, hard, soft)`` rlimits for a default container (see RLIMIT_DEFAULT_VALUE). A
#: process can't raise a hard limit above its own without CAP_SYS_RESOURCE: clamp them.
DEFAULT_RLIMITS: Final[tuple[tuple[str, int, int], ...]] = (
    ("RLIMIT_NOFILE", RLIMIT_DEFAULT_VALUE, RLIMIT_DEFAULT_VALUE),
    ("RLIMIT_NPROC", RLIMIT_DEFAULT_VALUE, RLIMIT_DEFAULT_VALUE),
)


def _mount(destination: str, type_: str, source: str, *options: str) -> Mapping[str, Any]:
    return MappingProxyType(
        {"destination": destination, "type": type_, "source": source, "options": options})


#: The mounts of a default container, in order: runtime-tools generate.New's six (the
#: same as ``runc spec``, except that /proc gets nosuid,noexec,nodev there) and the
#: read-only cgroup mount CRI-O adds so a process can read its own limits (CRI-O
#: server/container_create_linux.go; ``runc spec`` has it too). Options are tuples; use
#: :func:`default_mounts` for wire-form copies with lists.
DEFAULT_MOUNTS: Final[tuple[Mapping[str, Any], ...]] = (
    _mount("/proc", "proc", "proc", "nosuid", "noexec", "nodev"),
    _mount("/dev", "tmpfs", "tmpfs", "nosuid", "strictatime", "mode=755", "size=65536k"),
    _mount("/dev/pts", "devpts", "devpts",
           "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"),
    _mount("/dev/shm", "tmpfs", "shm",  # noqa: S108 - a mount point in the container
           "nosuid", "noexec", "nodev", "mode=1777", "size=65536k"),
    _mount("/dev/mqueue", "mqueue", "mqueue", "nosuid", "noexec", "nodev"),
    _mount("/sys", "sysfs", "sysfs", "nosuid", "noexec", "nodev", "ro"),
    _mount("/sys/fs/cgroup", "cgroup", "cgroup", "nosuid", "noexec", "nodev", "relatime", "ro"),
)


def default_mounts() -> list[dict[str, Any]]:
    """Fresh wire-form copies of :data:`DEFAULT_MOUNTS` (runtime-spec config.md "Mounts")."""
    return [{**m, "options": list(m["options"])} for m in DEFAULT_MOUNTS]
