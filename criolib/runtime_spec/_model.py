"""The typed model of config.json: the top level, the process, mounts and hooks.

OCI runtime-spec v1.2 config.md (with v1.3's ``process.execCPUAffinity`` and the
``freebsd`` platform object read as well). The ``linux`` object lives in
:mod:`._model_linux`; the conventions shared by every class (snake_case attributes,
``None`` for an absent OPTIONAL property, tuples for arrays, ``extra`` for unknown
properties) are described there.

The platform objects criolib does not run (``solaris``, ``windows``, ``vm``, ``zos``,
``freebsd``) are kept as plain JSON mappings: loaded, type-checked as objects and
written back unchanged, without a typed model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from criolib.runtime_spec._model_linux import Linux, LinuxIDMapping, extra_field, order_field

__all__ = [
    "OCI_RUNTIME_SPEC_VERSION",
    "OCI_RUNTIME_SPEC_VERSIONS",
    "Box",
    "ExecCPUAffinity",
    "Hook",
    "Hooks",
    "LinuxCapabilities",
    "LinuxIOPriority",
    "Mount",
    "POSIXRlimit",
    "Process",
    "Root",
    "Scheduler",
    "Spec",
    "User",
]

#: The runtime-spec version criolib writes into the ``ociVersion`` of the configs it makes.
OCI_RUNTIME_SPEC_VERSION = "1.2.0"
#: The released runtime-spec versions whose config.json this model reads in full.
OCI_RUNTIME_SPEC_VERSIONS = ("1.0.0", "1.0.1", "1.0.2", "1.1.0", "1.2.0", "1.2.1")


@attrs.frozen(kw_only=True)
class Root:
    """The container's root filesystem (``root``).

    runtime-spec v1.2 config.md "Root": ``path`` is absolute or relative to the bundle.
    """

    path: str
    readonly: bool | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class Mount:
    """One entry of ``mounts``, mounted in the listed order.

    runtime-spec v1.2 config.md "Mounts" and "POSIX-platform Mounts" (``type``, and
    ``uidMappings``/``gidMappings`` for idmapped mounts).
    """

    destination: str
    type: str | None = None
    source: str | None = None
    options: tuple[str, ...] | None = None
    uid_mappings: tuple[LinuxIDMapping, ...] | None = None
    gid_mappings: tuple[LinuxIDMapping, ...] | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class Box:
    """The console size in characters (``process.consoleSize``).

    runtime-spec v1.2 config.md "Process"; ignored unless ``terminal`` is true.
    """

    height: int
    width: int
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class User:
    """The user the process runs as (``process.user``).

    runtime-spec v1.2 config.md "POSIX-platform User" (``uid``, ``gid``, ``umask``,
    ``additionalGids``) and "Windows User" (``username``). Ids are in the container's
    user namespace.
    """

    uid: int
    gid: int
    umask: int | None = None
    additional_gids: tuple[int, ...] | None = None
    username: str | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxCapabilities:
    """The capability sets of the process (``process.capabilities``).

    runtime-spec v1.2 config.md "Linux Process": ``CAP_*`` names per set.
    """

    bounding: tuple[str, ...] | None = None
    effective: tuple[str, ...] | None = None
    inheritable: tuple[str, ...] | None = None
    permitted: tuple[str, ...] | None = None
    ambient: tuple[str, ...] | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class POSIXRlimit:
    """One resource limit of the process (an entry of ``process.rlimits``).

    runtime-spec v1.2 config.md "POSIX process": ``type`` like ``RLIMIT_NOFILE``.
    """

    type: str
    hard: int
    soft: int
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class Scheduler:
    """The process's scheduling attributes for sched_setattr(2) (``process.scheduler``).

    runtime-spec v1.2 config.md "Linux Process": ``policy`` like ``SCHED_FIFO``;
    ``runtime``, ``deadline`` and ``period`` (ns) are for SCHED_DEADLINE.
    """

    policy: str
    nice: int | None = None
    priority: int | None = None
    flags: tuple[str, ...] | None = None
    runtime: int | None = None
    deadline: int | None = None
    period: int | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class LinuxIOPriority:
    """The I/O priority of the container's process group (``process.ioPriority``).

    runtime-spec v1.2 config.md "Linux Process": ``class_`` is ``IOPRIO_CLASS_RT``,
    ``_BE`` or ``_IDLE`` (the wire name is ``class``, a Python keyword).
    """

    class_: str = attrs.field(metadata={"wire": "class"})
    priority: int
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class ExecCPUAffinity:
    """The CPUs an exec'd process runs on (``process.execCPUAffinity``).

    runtime-spec v1.3 config.md "Linux Process" (added after v1.2.0): ``initial`` before
    joining the container's cgroup, ``final`` after; lists like ``0-3,7``.
    """

    initial: str | None = None
    final: str | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class Process:
    """The container process (``process``).

    runtime-spec v1.2 config.md "Process", "POSIX process" and "Linux Process".
    ``command_line`` is Windows-only; ``args`` is REQUIRED on other platforms, which
    :func:`validate` checks.
    """

    terminal: bool | None = None
    console_size: Box | None = None
    user: User
    args: tuple[str, ...] | None = None
    command_line: str | None = None
    env: tuple[str, ...] | None = None
    cwd: str
    capabilities: LinuxCapabilities | None = None
    rlimits: tuple[POSIXRlimit, ...] | None = None
    no_new_privileges: bool | None = None
    apparmor_profile: str | None = None
    oom_score_adj: int | None = None
    scheduler: Scheduler | None = None
    selinux_label: str | None = None
    io_priority: LinuxIOPriority | None = None
    exec_cpu_affinity: ExecCPUAffinity | None = attrs.field(
        default=None, metadata={"wire": "execCPUAffinity"}
    )
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class Hook:
    """A program run at a point of the container's lifecycle (an entry of a hooks array).

    runtime-spec v1.2 config.md "POSIX-platform Hooks": ``timeout`` in seconds.
    """

    path: str
    args: tuple[str, ...] | None = None
    env: tuple[str, ...] | None = None
    timeout: int | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class Hooks:
    """The lifecycle hooks (``hooks``).

    runtime-spec v1.2 config.md "POSIX-platform Hooks"; ``prestart`` is DEPRECATED in
    favour of ``create_runtime``, ``create_container`` and ``start_container``.
    """

    prestart: tuple[Hook, ...] | None = None
    create_runtime: tuple[Hook, ...] | None = None
    create_container: tuple[Hook, ...] | None = None
    start_container: tuple[Hook, ...] | None = None
    poststart: tuple[Hook, ...] | None = None
    poststop: tuple[Hook, ...] | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()


@attrs.frozen(kw_only=True)
class Spec:
    """A container configuration: the content of a bundle's config.json.

    runtime-spec v1.2 config.md. Load and write it with :func:`load_spec` and
    :func:`dump_spec`; unknown properties at any depth are kept in ``extra`` and
    written back.
    """

    oci_version: str
    process: Process | None = None
    root: Root | None = None
    hostname: str | None = None
    domainname: str | None = None
    mounts: tuple[Mount, ...] | None = None
    hooks: Hooks | None = None
    annotations: Mapping[str, str] | None = None
    linux: Linux | None = None
    solaris: Mapping[str, Any] | None = None
    windows: Mapping[str, Any] | None = None
    vm: Mapping[str, Any] | None = None
    zos: Mapping[str, Any] | None = None
    freebsd: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = extra_field()
    _order: tuple[str, ...] = order_field()
