"""The Linux half of :class:`~criolib.runtime_spec.Generator`.

Mounts, namespaces, id mappings, devices, cgroup resources, sysctls, seccomp,
masked and read-only paths, hooks (runtime-spec v1.2 config.md "Mounts" and
"POSIX-platform Hooks", config-linux.md).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self

from criolib.runtime_spec._errors import RuntimeSpecError

__all__ = ["LinuxSetters", "host_devices"]

_NAMESPACES = ("pid", "network", "ipc", "uts", "mount", "user", "cgroup", "time")
_HOOK_STAGES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
                "poststop")
_PERSONALITY_DOMAINS = ("LINUX", "LINUX32")
_TIME_CLOCKS = ("monotonic", "boottime")
#: What CRI-O leaves out when it hands a privileged container the host's /dev.
_SKIP_HOST_DEVICES = ("/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/console",  # noqa: S108
                      "/dev/ptmx")


def host_devices(root: str = "/dev") -> list[dict[str, Any]]:
    """This machine's device nodes as ``linux.devices`` entries (for privileged)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames
                       if os.path.join(dirpath, d) not in _SKIP_HOST_DEVICES]
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if path in _SKIP_HOST_DEVICES:
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode):
                kind = "c"
            elif stat.S_ISBLK(st.st_mode):
                kind = "b"
            else:
                continue
            found.append({"path": path, "type": kind, "major": os.major(st.st_rdev),
                          "minor": os.minor(st.st_rdev), "fileMode": stat.S_IMODE(st.st_mode),
                          "uid": st.st_uid, "gid": st.st_gid})
    return sorted(found, key=lambda d: d["path"])


class LinuxSetters:
    """Setters for the Linux parts; mixed into the Generator."""

    _doc: dict[str, Any]
    #: Whether linux.seccomp is the RuntimeDefault profile, resolved anew for the
    #: final capabilities whenever the document is handed out (see Generator).
    _auto_seccomp: bool

    # The document's sections, created on first use (shared by every setter).

    def _section(self, *keys: str) -> dict[str, Any]:
        node = self._doc
        for key in keys:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        return node

    def _list(self, *keys: str) -> list[Any]:
        parent = self._section(*keys[:-1])
        value = parent.get(keys[-1])
        if not isinstance(value, list):
            value = parent[keys[-1]] = []
        return value

    # -- mounts -----------------------------------------------------------------------

    def mounts(self) -> list[dict[str, Any]]:
        return [dict(m) for m in self._doc.get("mounts", []) or []]

    def add_mount(
        self,
        destination: str,
        *,
        source: str | None = None,
        type: str | None = None,
        options: Sequence[str] = (),
    ) -> Self:
        """Add a mount, replacing any earlier mount on the same destination."""
        mount: dict[str, Any] = {"destination": destination}
        if type is not None:
            mount["type"] = type
        if source is not None:
            mount["source"] = source
        if options:
            mount["options"] = list(options)
        mounts = self._list("mounts")
        mounts[:] = [m for m in mounts if m.get("destination") != destination]
        mounts.append(mount)
        return self

    def add_bind_mount(self, source: str, destination: str, *, readonly: bool = False,
                       propagation: str | None = None) -> Self:
        options = ["rbind", "ro" if readonly else "rw"]
        if propagation:
            options.append(propagation)
        return self.add_mount(destination, source=source, type="bind", options=options)

    def remove_mount(self, destination: str) -> Self:
        mounts = self._list("mounts")
        mounts[:] = [m for m in mounts if m.get("destination") != destination]
        return self

    # -- namespaces and id mappings ---------------------------------------------------------

    def namespaces(self) -> dict[str, str | None]:
        return {ns.get("type"): ns.get("path")
                for ns in self._doc.get("linux", {}).get("namespaces", []) or []}

    def add_namespace(self, kind: str, path: str | None = None) -> Self:
        """Add (or re-point) namespace ``kind``; ``path`` joins an existing one."""
        if kind not in _NAMESPACES:
            raise RuntimeSpecError(f"unknown namespace type {kind!r} (known: "
                                   f"{', '.join(_NAMESPACES)})")
        entries = self._list("linux", "namespaces")
        entry: dict[str, Any] = {"type": kind}
        if path is not None:
            entry["path"] = path
        for i, ns in enumerate(entries):
            if ns.get("type") == kind:
                entries[i] = entry
                return self
        entries.append(entry)
        return self

    def remove_namespace(self, kind: str) -> Self:
        entries = self._list("linux", "namespaces")
        entries[:] = [ns for ns in entries if ns.get("type") != kind]
        return self

    def add_uid_mapping(self, container_id: int, host_id: int, size: int) -> Self:
        self._list("linux", "uidMappings").append(
            {"containerID": container_id, "hostID": host_id, "size": size})
        return self

    def add_gid_mapping(self, container_id: int, host_id: int, size: int) -> Self:
        self._list("linux", "gidMappings").append(
            {"containerID": container_id, "hostID": host_id, "size": size})
        return self

    # -- devices ----------------------------------------------------------------------------

    def add_device(self, path: str, kind: str, major: int, minor: int, *,
                   file_mode: int = 0o666, uid: int = 0, gid: int = 0,
                   access: str = "rwm") -> Self:
        """Create device ``path`` in the container and allow it in the device cgroup."""
        devices = self._list("linux", "devices")
        devices[:] = [d for d in devices if d.get("path") != path]
        devices.append({"path": path, "type": kind, "major": major, "minor": minor,
                        "fileMode": file_mode, "uid": uid, "gid": gid})
        return self.allow_device(kind, major, minor, access)

    def add_host_device(self, host_path: str, container_path: str | None = None,
                        access: str = "rwm") -> Self:
        """Add the host's device node ``host_path`` (CRI ``Device``)."""
        try:
            st = os.stat(host_path)
        except OSError as exc:
            raise RuntimeSpecError(f"device {host_path}: {exc.strerror or exc}") from exc
        if stat.S_ISCHR(st.st_mode):
            kind = "c"
        elif stat.S_ISBLK(st.st_mode):
            kind = "b"
        else:
            raise RuntimeSpecError(f"device {host_path}: not a character or block device")
        return self.add_device(container_path or host_path, kind, os.major(st.st_rdev),
                               os.minor(st.st_rdev), file_mode=stat.S_IMODE(st.st_mode),
                               uid=st.st_uid, gid=st.st_gid, access=access)

    def allow_device(self, kind: str = "a", major: int | None = None, minor: int | None = None,
                     access: str = "rwm", *, allow: bool = True) -> Self:
        rule: dict[str, Any] = {"allow": allow, "type": kind, "access": access}
        if major is not None:
            rule["major"] = major
        if minor is not None:
            rule["minor"] = minor
        self._list("linux", "resources", "devices").append(rule)
        return self

    # -- cgroups and resources -------------------------------------------------------------

    def set_cgroups_path(self, path: str) -> Self:
        self._section("linux")["cgroupsPath"] = path
        return self

    def set_memory_limit(self, limit: int, *, swap: int | None = None,
                         reservation: int | None = None) -> Self:
        memory = self._section("linux", "resources", "memory")
        memory["limit"] = limit
        if swap is not None:
            memory["swap"] = swap
        if reservation is not None:
            memory["reservation"] = reservation
        return self

    def set_cpu(self, *, shares: int | None = None, quota: int | None = None,
                period: int | None = None, cpus: str | None = None,
                mems: str | None = None) -> Self:
        cpu = self._section("linux", "resources", "cpu")
        for key, value in (("shares", shares), ("quota", quota), ("period", period),
                           ("cpus", cpus), ("mems", mems)):
            if value is not None:
                cpu[key] = value
        return self

    def set_pids_limit(self, limit: int) -> Self:
        self._section("linux", "resources", "pids")["limit"] = limit
        return self

    def add_hugepage_limit(self, page_size: str, limit: int) -> Self:
        limits = self._list("linux", "resources", "hugepageLimits")
        limits[:] = [h for h in limits if h.get("pageSize") != page_size]
        limits.append({"pageSize": page_size, "limit": limit})
        return self

    def set_blkio_weight(self, weight: int) -> Self:
        self._section("linux", "resources", "blockIO")["weight"] = weight
        return self

    def set_unified(self, values: Mapping[str, str]) -> Self:
        self._section("linux", "resources", "unified").update(values)
        return self

    def set_resources(self, resources: Mapping[str, Any]) -> Self:
        """Merge a ``linux.resources`` wire-form mapping (CRI LinuxContainerResources)."""
        section = self._section("linux", "resources")
        for key, value in resources.items():
            if isinstance(value, Mapping) and isinstance(section.get(key), dict):
                section[key].update(value)
            else:
                section[key] = value
        return self

    # -- sysctls, seccomp, paths, propagation ---------------------------------------------

    def set_sysctl(self, key: str, value: str) -> Self:
        self._section("linux", "sysctl")[key] = value
        return self

    def set_seccomp(self, profile: Mapping[str, Any] | None) -> Self:
        """Use ``profile`` (a ``linux.seccomp`` mapping); ``None`` means unconfined.

        The profile is then the caller's and stays as given whatever the
        capabilities become; :meth:`~Generator.set_default_seccomp` goes back to the
        RuntimeDefault profile resolved for them. runtime-spec v1.2 config-linux.md
        "Seccomp".
        """
        self._auto_seccomp = False
        linux = self._section("linux")
        if profile is None:
            linux.pop("seccomp", None)
        else:
            linux["seccomp"] = dict(profile)
        return self

    def set_masked_paths(self, paths: Iterable[str]) -> Self:
        self._section("linux")["maskedPaths"] = list(paths)
        return self

    def add_masked_path(self, path: str) -> Self:
        paths = self._list("linux", "maskedPaths")
        if path not in paths:
            paths.append(path)
        return self

    def set_readonly_paths(self, paths: Iterable[str]) -> Self:
        self._section("linux")["readonlyPaths"] = list(paths)
        return self

    def add_readonly_path(self, path: str) -> Self:
        paths = self._list("linux", "readonlyPaths")
        if path not in paths:
            paths.append(path)
        return self

    def set_rootfs_propagation(self, propagation: str) -> Self:
        self._section("linux")["rootfsPropagation"] = propagation
        return self

    def set_mount_label(self, label: str) -> Self:
        self._section("linux")["mountLabel"] = label
        return self

    def set_personality(self, domain: str = "LINUX", flags: Iterable[str] = ()) -> Self:
        """Set ``linux.personality``: execution domain ``LINUX`` or ``LINUX32``.

        runtime-spec v1.2 config-linux.md "Personality" (which defines no flags yet).
        crun 1.8.1 applies it (``uname -m`` says i686 under LINUX32); runc 1.1.5
        ignores it.
        """
        if domain not in _PERSONALITY_DOMAINS:
            raise RuntimeSpecError(f"unknown personality domain {domain!r} (known: "
                                   f"{', '.join(_PERSONALITY_DOMAINS)})")
        personality: dict[str, Any] = {"domain": domain}
        if flags:
            personality["flags"] = list(flags)
        self._section("linux")["personality"] = personality
        return self

    def add_time_offset(self, clock: str, secs: int = 0, nanosecs: int = 0) -> Self:
        """Offset ``clock`` (``monotonic`` or ``boottime``) in a new time namespace.

        runtime-spec v1.2 config-linux.md "Offset for Time Namespace" (time_namespaces(7)):
        offsets apply only to a time namespace the container creates, so one is added
        to ``linux.namespaces`` when there is no time entry yet. Debian 12's runtimes
        cannot run it: runc 1.1.5 knows no time namespace, and crun 1.8.1 fails to
        create one on these machines ("write to sync socket").
        """
        if clock not in _TIME_CLOCKS:
            raise RuntimeSpecError(f"a time namespace offsets only the "
                                   f"{' and '.join(_TIME_CLOCKS)} clocks, not {clock!r}")
        if not 0 <= nanosecs < 1_000_000_000:
            raise RuntimeSpecError(f"nanosecs must be from 0 to 999999999, not {nanosecs}")
        self._section("linux", "timeOffsets")[clock] = {"secs": secs, "nanosecs": nanosecs}
        if "time" not in self.namespaces():
            self.add_namespace("time")
        return self

    # -- hooks ----------------------------------------------------------------------------

    def add_hook(self, stage: str, path: str, *, args: Sequence[str] = (),
                 env: Sequence[str] = (), timeout: int | None = None) -> Self:
        if stage not in _HOOK_STAGES:
            raise RuntimeSpecError(f"unknown hook stage {stage!r} (known: "
                                   f"{', '.join(_HOOK_STAGES)})")
        hook: dict[str, Any] = {"path": path}
        if args:
            hook["args"] = list(args)
        if env:
            hook["env"] = list(env)
        if timeout is not None:
            hook["timeout"] = timeout
        self._list("hooks", stage).append(hook)
        return self
