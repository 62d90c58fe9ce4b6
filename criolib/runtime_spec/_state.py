"""The runtime's documents about itself: a container's state and the features document.

OCI runtime-spec v1.2 runtime.md "State" (what ``runc state`` prints and hooks read
on stdin) and features.md with features-linux.md (what ``runc features`` prints),
including the v1.3 features ``memoryPolicy``, ``netDevices`` and
``intelRdt.schemata``/``monitoring``. The model's conventions (``None`` for absent,
tuples for arrays, ``extra`` for unknown properties) are those of :mod:`._model_linux`.

features.md gives JSON ``null`` a meaning of its own ("unknown"), distinct from an
empty value; a ``null`` property loads as ``None`` with the ``null`` itself kept in
``extra``, so it is written back as ``null``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from criolib.runtime_spec._model_linux import extra_field, order_field

__all__ = [
    "STATUS_CREATED",
    "STATUS_CREATING",
    "STATUS_RUNNING",
    "STATUS_STOPPED",
    "AppArmorFeatures",
    "CgroupFeatures",
    "Features",
    "IDMapFeatures",
    "IntelRdtFeatures",
    "LinuxFeatures",
    "MemoryPolicyFeatures",
    "MountExtensionsFeatures",
    "NetDevicesFeatures",
    "SELinuxFeatures",
    "SeccompFeatures",
    "State",
]

#: The container statuses runtime.md defines; a runtime MAY report others.
STATUS_CREATING = "creating"
STATUS_CREATED = "created"
STATUS_RUNNING = "running"
STATUS_STOPPED = "stopped"


@attrs.frozen(kw_only=True)
class State:
    """The state of a container as a runtime reports it.

    runtime-spec v1.2 runtime.md "State": ``status`` is one of the ``STATUS_*`` values
    (or a runtime's own); ``pid`` is REQUIRED on Linux while created or running, which
    :func:`validate` checks; ``bundle`` is the absolute bundle path.
    """

    oci_version: str
    id: str
    status: str
    pid: int | None = None
    bundle: str
    annotations: Mapping[str, str] | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


# -- features.md ------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class CgroupFeatures:
    """Which cgroup managers the runtime implements (``linux.cgroup``).

    runtime-spec v1.2 features-linux.md "Cgroup".
    """

    v1: bool | None = None
    v2: bool | None = None
    systemd: bool | None = None
    systemd_user: bool | None = None
    rdma: bool | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class SeccompFeatures:
    """What the runtime's seccomp support recognizes (``linux.seccomp``).

    runtime-spec v1.2 features-linux.md "Seccomp".
    """

    enabled: bool | None = None
    actions: tuple[str, ...] | None = None
    operators: tuple[str, ...] | None = None
    archs: tuple[str, ...] | None = None
    known_flags: tuple[str, ...] | None = None
    supported_flags: tuple[str, ...] | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class AppArmorFeatures:
    """Whether the runtime implements AppArmor (``linux.apparmor``).

    runtime-spec v1.2 features-linux.md "AppArmor".
    """

    enabled: bool | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class SELinuxFeatures:
    """Whether the runtime implements SELinux (``linux.selinux``).

    runtime-spec v1.2 features-linux.md "SELinux".
    """

    enabled: bool | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class IntelRdtFeatures:
    """What the runtime implements of Intel RDT (``linux.intelRdt``).

    runtime-spec v1.2 features-linux.md "Intel RDT"; ``schemata`` and ``monitoring``
    are v1.3.
    """

    enabled: bool | None = None
    schemata: bool | None = None
    monitoring: bool | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class MemoryPolicyFeatures:
    """The memory policy modes and flags the runtime recognizes (``linux.memoryPolicy``).

    runtime-spec v1.3 features-linux.md "MemoryPolicy".
    """

    modes: tuple[str, ...] | None = None
    flags: tuple[str, ...] | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class IDMapFeatures:
    """Whether the runtime implements idmapped mounts (``mountExtensions.idmap``).

    runtime-spec v1.2 features-linux.md "MountExtensions".
    """

    enabled: bool | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class MountExtensionsFeatures:
    """The mount features the runtime implements (``linux.mountExtensions``).

    runtime-spec v1.2 features-linux.md "MountExtensions".
    """

    idmap: IDMapFeatures | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class NetDevicesFeatures:
    """Whether the runtime can move network devices in (``linux.netDevices``).

    runtime-spec v1.3 features-linux.md "NetDevices".
    """

    enabled: bool | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxFeatures:
    """The Linux-specific part of the features document (``linux``).

    runtime-spec v1.2 features-linux.md, plus v1.3's ``memoryPolicy`` and ``netDevices``.
    """

    namespaces: tuple[str, ...] | None = None
    capabilities: tuple[str, ...] | None = None
    cgroup: CgroupFeatures | None = None
    seccomp: SeccompFeatures | None = None
    apparmor: AppArmorFeatures | None = None
    selinux: SELinuxFeatures | None = None
    intel_rdt: IntelRdtFeatures | None = None
    memory_policy: MemoryPolicyFeatures | None = None
    mount_extensions: MountExtensionsFeatures | None = None
    net_devices: NetDevicesFeatures | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class Features:
    """A runtime's features document: what it recognizes, fixed when it was built.

    runtime-spec v1.2 features.md. ``potentially_unsafe_config_annotations`` lists
    annotations (or prefixes ending in ``.``) that change the runtime's behaviour.
    """

    oci_version_min: str
    oci_version_max: str
    hooks: tuple[str, ...] | None = None
    mount_options: tuple[str, ...] | None = None
    linux: LinuxFeatures | None = None
    annotations: Mapping[str, str] | None = None
    potentially_unsafe_config_annotations: tuple[str, ...] | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()
