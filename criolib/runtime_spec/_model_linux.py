"""The ``linux`` object of config.json and everything under it.

OCI runtime-spec v1.2 config-linux.md, with the v1.3 additions (``netDevices``,
``memoryPolicy``, ``intelRdt.schemata`` as an array, ``intelRdt.enableMonitoring``)
read as well, so that documents written by newer tools load without loss.

Conventions shared by every class of the model (see also :mod:`._model`):

- Python attributes are snake_case; the converter maps them to the spec's camelCase
  names. Where the spec's spelling is not plain camelCase (``classID``, ``kernelTCP``,
  ``disableOOMKiller``, ``hostID``...) the field carries ``metadata={"wire": ...}``.
- An OPTIONAL property is ``None`` when absent and is not written back; a REQUIRED one
  has no default. Arrays are tuples, string maps are mappings.
- ``extra`` holds the object's properties this model does not know (the spec says
  implementations MUST ignore unknown properties; criolib keeps them so a document
  another tool wrote comes back unchanged) and explicit JSON ``null`` values of
  optional properties. It is never a property on the wire itself.
- ``_order`` (private, init name ``_order``) is the object's keys in the order the
  loaded document had them, so that it is written back in that order, unknown keys
  in place; properties set later come after them. An object built in code has
  none and is written in the model's field order. It takes no part in ``==``.
- ``extra_field()`` and ``order_field()`` below make the two for every class (of
  :mod:`._model` and :mod:`._state` too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "Linux",
    "LinuxBlockIO",
    "LinuxCPU",
    "LinuxDevice",
    "LinuxDeviceCgroup",
    "LinuxHugepageLimit",
    "LinuxIDMapping",
    "LinuxIntelRdt",
    "LinuxInterfacePriority",
    "LinuxMemory",
    "LinuxMemoryPolicy",
    "LinuxNamespace",
    "LinuxNetDevice",
    "LinuxNetwork",
    "LinuxPersonality",
    "LinuxPids",
    "LinuxRdma",
    "LinuxResources",
    "LinuxSeccomp",
    "LinuxSeccompArg",
    "LinuxSyscall",
    "LinuxThrottleDevice",
    "LinuxTimeOffset",
    "LinuxWeightDevice",
]


def extra_field() -> Any:
    """The ``extra`` field every model class ends with (a fresh dict per object).

    Left out of the hash (but not of ``==``) so that objects without maps of their own
    (a namespace, a mount, a hook) can go in sets.
    """
    return attrs.field(factory=dict, hash=False)


def order_field() -> Any:
    """The private ``_order`` field after ``extra``: the object's keys as the source had them.

    Only the converter reads and writes it; it takes no part in ``==``, the hash or
    the repr, and ``attrs.evolve`` carries it over (its init name is ``_order``).
    """
    return attrs.field(default=(), eq=False, hash=False, repr=False, alias="_order")


# -- namespaces, id mappings, devices -------------------------------------------


@attrs.frozen(kw_only=True)
class LinuxNamespace:
    """One entry of ``linux.namespaces``.

    runtime-spec v1.2 config-linux.md "Namespaces": ``type`` is one of pid, network,
    mount, ipc, uts, user, cgroup, time; ``path`` joins an existing namespace.
    """

    type: str
    path: str | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxIDMapping:
    """A uid or gid range mapped from the host into a user namespace (or an idmapped mount).

    runtime-spec v1.2 config-linux.md "User namespace mappings"; also the
    ``uidMappings``/``gidMappings`` of a mount (config.md "POSIX-platform Mounts").
    """

    container_id: int = attrs.field(metadata={"wire": "containerID"})
    host_id: int = attrs.field(metadata={"wire": "hostID"})
    size: int
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxTimeOffset:
    """The offset of one clock in a time namespace (a value of ``linux.timeOffsets``).

    runtime-spec v1.2 config-linux.md "Offset for Time Namespace".
    """

    secs: int | None = None
    nanosecs: int | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxDevice:
    """A device node that must exist in the container (an entry of ``linux.devices``).

    runtime-spec v1.2 config-linux.md "Devices". ``major`` and ``minor`` are required
    unless ``type`` is ``p`` (a fifo), so the model leaves them optional; ``file_mode``
    is the decimal ``fileMode`` number (e.g. 438 for 0o666).
    """

    path: str
    type: str
    major: int | None = None
    minor: int | None = None
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxNetDevice:
    """A host network device moved into the container (a value of ``linux.netDevices``).

    runtime-spec v1.3 config-linux.md "Network Devices": the map key is the host
    name; ``name`` renames it inside the container.
    """

    name: str | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


# -- cgroup resources ------------------------------------------------------------


@attrs.frozen(kw_only=True)
class LinuxDeviceCgroup:
    """One rule of the device cgroup allow list (an entry of ``linux.resources.devices``).

    runtime-spec v1.2 config-linux.md "Allowed Device list": unset ``type``, ``major``
    or ``minor`` mean "all"; ``access`` is a combination of r, w and m.
    """

    allow: bool
    type: str | None = None
    major: int | None = None
    minor: int | None = None
    access: str | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxMemory:
    """The memory cgroup settings (``linux.resources.memory``).

    runtime-spec v1.2 config-linux.md "Memory": limits are bytes, ``-1`` meaning
    unlimited; ``kernel`` and ``kernelTCP`` are NOT RECOMMENDED (cgroup v1 only).
    """

    limit: int | None = None
    reservation: int | None = None
    swap: int | None = None
    kernel: int | None = None
    kernel_tcp: int | None = attrs.field(default=None, metadata={"wire": "kernelTCP"})
    swappiness: int | None = None
    disable_oom_killer: bool | None = attrs.field(
        default=None, metadata={"wire": "disableOOMKiller"}
    )
    use_hierarchy: bool | None = None
    check_before_update: bool | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxCPU:
    """The cpu and cpuset cgroup settings (``linux.resources.cpu``).

    runtime-spec v1.2 config-linux.md "CPU": times in microseconds; ``cpus`` and
    ``mems`` are lists like ``0-3,7``; ``idle`` 1 means SCHED_IDLE weight.
    """

    shares: int | None = None
    quota: int | None = None
    burst: int | None = None
    period: int | None = None
    realtime_runtime: int | None = None
    realtime_period: int | None = None
    cpus: str | None = None
    mems: str | None = None
    idle: int | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxPids:
    """The pids cgroup limit (``linux.resources.pids``).

    runtime-spec v1.2 config-linux.md "PIDs" makes ``limit`` REQUIRED; v1.3 makes it
    OPTIONAL (with -1 meaning no limit), so the model accepts its absence.
    """

    limit: int | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxWeightDevice:
    """A per-device block IO weight (an entry of ``blockIO.weightDevice``).

    runtime-spec v1.2 config-linux.md "Block IO".
    """

    major: int
    minor: int
    weight: int | None = None
    leaf_weight: int | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxThrottleDevice:
    """A per-device block IO rate limit (an entry of the ``blockIO.throttle*`` arrays).

    runtime-spec v1.2 config-linux.md "Block IO": ``rate`` is bytes or IOs per second.
    """

    major: int
    minor: int
    rate: int
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxBlockIO:
    """The blkio (v1) / io (v2) cgroup settings (``linux.resources.blockIO``).

    runtime-spec v1.2 config-linux.md "Block IO".
    """

    weight: int | None = None
    leaf_weight: int | None = None
    weight_device: tuple[LinuxWeightDevice, ...] | None = None
    throttle_read_bps_device: tuple[LinuxThrottleDevice, ...] | None = None
    throttle_write_bps_device: tuple[LinuxThrottleDevice, ...] | None = None
    throttle_read_iops_device: tuple[LinuxThrottleDevice, ...] | None = attrs.field(
        default=None, metadata={"wire": "throttleReadIOPSDevice"}
    )
    throttle_write_iops_device: tuple[LinuxThrottleDevice, ...] | None = attrs.field(
        default=None, metadata={"wire": "throttleWriteIOPSDevice"}
    )
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxHugepageLimit:
    """A hugetlb limit for one page size (an entry of ``resources.hugepageLimits``).

    runtime-spec v1.2 config-linux.md "Huge page limits": ``page_size`` like ``2MB``.
    """

    page_size: str
    limit: int
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxInterfacePriority:
    """The net_prio priority of one interface (an entry of ``network.priorities``).

    runtime-spec v1.2 config-linux.md "Network".
    """

    name: str
    priority: int
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxNetwork:
    """The net_cls and net_prio cgroup settings (``linux.resources.network``).

    runtime-spec v1.2 config-linux.md "Network".
    """

    class_id: int | None = attrs.field(default=None, metadata={"wire": "classID"})
    priorities: tuple[LinuxInterfacePriority, ...] | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxRdma:
    """The rdma cgroup limits of one device (a value of ``linux.resources.rdma``).

    runtime-spec v1.2 config-linux.md "RDMA".
    """

    hca_handles: int | None = None
    hca_objects: int | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxResources:
    """The container's cgroup settings (``linux.resources``).

    runtime-spec v1.2 config-linux.md "Control groups" and "Unified" (cgroup v2 files
    written as they are).
    """

    devices: tuple[LinuxDeviceCgroup, ...] | None = None
    memory: LinuxMemory | None = None
    cpu: LinuxCPU | None = None
    pids: LinuxPids | None = None
    block_io: LinuxBlockIO | None = attrs.field(default=None, metadata={"wire": "blockIO"})
    hugepage_limits: tuple[LinuxHugepageLimit, ...] | None = None
    network: LinuxNetwork | None = None
    rdma: Mapping[str, LinuxRdma] | None = None
    unified: Mapping[str, str] | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


# -- seccomp ----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class LinuxSeccompArg:
    """A condition on one syscall argument (an entry of ``syscalls[].args``).

    runtime-spec v1.2 config-linux.md "Seccomp": ``op`` is an ``SCMP_CMP_*`` name.
    """

    index: int
    value: int
    value_two: int | None = None
    op: str
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxSyscall:
    """A seccomp rule for a set of syscalls (an entry of ``linux.seccomp.syscalls``).

    runtime-spec v1.2 config-linux.md "Seccomp": ``action`` is an ``SCMP_ACT_*`` name.
    """

    names: tuple[str, ...]
    action: str
    errno_ret: int | None = None
    args: tuple[LinuxSeccompArg, ...] | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxSeccomp:
    """The container's seccomp filter (``linux.seccomp``).

    runtime-spec v1.2 config-linux.md "Seccomp", including ``defaultErrnoRet``,
    ``flags`` and the ``SCMP_ACT_NOTIFY`` listener (``listenerPath``, ``listenerMetadata``).
    """

    default_action: str
    default_errno_ret: int | None = None
    architectures: tuple[str, ...] | None = None
    flags: tuple[str, ...] | None = None
    listener_path: str | None = None
    listener_metadata: str | None = None
    syscalls: tuple[LinuxSyscall, ...] | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


# -- other Linux settings ------------------------------------------------------------


@attrs.frozen(kw_only=True)
class LinuxIntelRdt:
    """Intel RDT (resctrl) settings (``linux.intelRdt``).

    runtime-spec v1.2 config-linux.md "IntelRdt". ``schemata`` is a string (one
    ``\\n``-separated block) in v1.2 and an array of lines in v1.3; the model keeps
    whichever form the document used. ``enable_cmt``/``enable_mbm`` (v1.1-v1.2) were
    replaced by ``enable_monitoring`` in v1.3; all three are read.
    """

    clos_id: str | None = attrs.field(default=None, metadata={"wire": "closID"})
    l3_cache_schema: str | None = None
    mem_bw_schema: str | None = None
    schemata: str | tuple[str, ...] | None = None
    enable_cmt: bool | None = attrs.field(default=None, metadata={"wire": "enableCMT"})
    enable_mbm: bool | None = attrs.field(default=None, metadata={"wire": "enableMBM"})
    enable_monitoring: bool | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxPersonality:
    """The execution domain for personality(2) (``linux.personality``).

    runtime-spec v1.2 config-linux.md "Personality": ``domain`` is LINUX or LINUX32.
    """

    domain: str
    flags: tuple[str, ...] | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxMemoryPolicy:
    """The NUMA memory policy for set_mempolicy(2) (``linux.memoryPolicy``).

    runtime-spec v1.3 config-linux.md "Memory policy": ``mode`` is an ``MPOL_*`` name,
    ``nodes`` a list like ``0-3,7``, ``flags`` ``MPOL_F_*`` names.
    """

    mode: str
    nodes: str | None = None
    flags: tuple[str, ...] | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class Linux:
    """The Linux-specific configuration (the ``linux`` object of config.json).

    runtime-spec v1.2 config-linux.md, plus v1.3's ``netDevices`` and ``memoryPolicy``.
    """

    namespaces: tuple[LinuxNamespace, ...] | None = None
    uid_mappings: tuple[LinuxIDMapping, ...] | None = None
    gid_mappings: tuple[LinuxIDMapping, ...] | None = None
    time_offsets: Mapping[str, LinuxTimeOffset] | None = None
    devices: tuple[LinuxDevice, ...] | None = None
    net_devices: Mapping[str, LinuxNetDevice] | None = None
    cgroups_path: str | None = None
    resources: LinuxResources | None = None
    intel_rdt: LinuxIntelRdt | None = None
    memory_policy: LinuxMemoryPolicy | None = None
    sysctl: Mapping[str, str] | None = None
    seccomp: LinuxSeccomp | None = None
    rootfs_propagation: str | None = None
    masked_paths: tuple[str, ...] | None = None
    readonly_paths: tuple[str, ...] | None = None
    mount_label: str | None = None
    personality: LinuxPersonality | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()
