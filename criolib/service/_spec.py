"""A container's config.json from its image, the CRI ContainerConfig and its sandbox.

CRI v1 ``CreateContainer`` (kubernetes/cri-api api.proto) onto runtime-spec v1.1/1.2,
as CRI-O's ``server/container_create_linux.go`` does it, through criolib.runtime_spec's
public :class:`~criolib.runtime_spec.Generator` (CRI-O's secure defaults) and
:func:`~criolib.runtime_spec.apply_image_config`:

- the image config with the CRI ``command`` / ``args`` / ``working_dir`` / env (CRI env
  over image env) and the security context's user;
- the sandbox: hostname, its hostname / resolv.conf / hosts files and /dev/shm, its
  pinned net / ipc / uts namespaces (absent = the host's), its sysctls, cgroupfs
  ``cgroupsPath`` ``<cgroup_parent>/criolib-<id>``;
- CRI mounts (propagation, read-only; a missing host path is made a directory),
  devices, the security context (:mod:`criolib.service._spec_security`), resources
  (``oomScoreAdj`` clamped to what this process may set), the configured pids limit,
  annotations, and the stop signal.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from criolib.runtime_spec import (
    Generator,
    InvalidSpec,
    RuntimeSpecError,
    apply_image_config,
    check,
    normalize_stop_signal,
)
from criolib.service import _cri_types as cri
from criolib.service._config import Config
from criolib.service._errors import InvalidRequest
from criolib.service._spec_mounts import add_cri_mounts, add_sandbox_mounts
from criolib.service._spec_security import apply_capabilities, apply_seccomp, user_spec
from criolib.service._state import SandboxRecord

__all__ = [
    "BuiltSpec",
    "build_spec",
    "cgroups_path",
    "memsw_supported",
    "resources_to_wire",
]

_NS_KINDS = {"net": "network", "ipc": "ipc", "uts": "uts", "pid": "pid"}
_MEMSW = Path("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")


@attrs.frozen
class BuiltSpec:
    """A generated spec and what the service remembers of it.

    ``mounts`` are the CRI mounts as made (host paths resolved); ``stop_signal`` the
    signal StopContainer sends first; ``user`` the process's ids; ``pid_host`` whether
    the container shares the host's pid namespace (SIGKILL then goes to every process).
    """

    generator: Generator
    mounts: list[cri.Mount]
    stop_signal: str
    user: cri.LinuxContainerUser
    privileged: bool
    pid_host: bool


def memsw_supported() -> bool:
    """Whether cgroup v1 swap accounting (``memory.memsw.*``) is there to limit swap."""
    return _MEMSW.exists()


def cgroups_path(cgroup_parent: str, container_id: str) -> str:
    """cgroupfs ``cgroupsPath``: ``<cgroup_parent>/criolib-<id>`` (absolute)."""
    return posixpath.join("/", cgroup_parent.strip("/"), f"criolib-{container_id}")


def resources_to_wire(res: cri.LinuxContainerResources, *,
                      swap_supported: bool | None = None) -> dict[str, Any]:
    """CRI LinuxContainerResources as runtime-spec ``linux.resources`` (wire form).

    Zero fields are left out (CRI's "unset"). Without a swap limit, one equal to the
    memory limit is set where swap accounting exists (no swap, as CRI-O does); a swap
    limit where it does not is dropped (runc would fail writing it).
    """
    out: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    if res.cpu_shares > 0:
        cpu["shares"] = res.cpu_shares
    if res.cpu_quota != 0:
        cpu["quota"] = res.cpu_quota
    if res.cpu_period > 0:
        cpu["period"] = res.cpu_period
    if res.cpuset_cpus:
        cpu["cpus"] = res.cpuset_cpus
    if res.cpuset_mems:
        cpu["mems"] = res.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    if res.memory_limit_in_bytes < 0 or res.memory_swap_limit_in_bytes < -1:
        raise InvalidRequest("resources: memory_limit_in_bytes and "
                             "memory_swap_limit_in_bytes must not be negative")
    if res.memory_limit_in_bytes > 0:
        memory: dict[str, Any] = {"limit": res.memory_limit_in_bytes}
        swap_ok = memsw_supported() if swap_supported is None else swap_supported
        if swap_ok:
            swap = res.memory_swap_limit_in_bytes or res.memory_limit_in_bytes
            if 0 < swap < res.memory_limit_in_bytes:
                raise InvalidRequest(
                    f"resources: memory_swap_limit_in_bytes {swap} is below "
                    f"memory_limit_in_bytes {res.memory_limit_in_bytes} (it counts memory "
                    "plus swap)")
            memory["swap"] = swap
        out["memory"] = memory
    if res.hugepage_limits:
        out["hugepageLimits"] = [{"pageSize": h.page_size, "limit": h.limit}
                                 for h in res.hugepage_limits]
    if res.unified:
        out["unified"] = dict(res.unified)
    return out


def _image_user(image_config: Mapping[str, Any]) -> str:
    inner = image_config.get("config", image_config)
    user = inner.get("User") if isinstance(inner, Mapping) else None
    return user if isinstance(user, str) else ""


def _env(config: cri.ContainerConfig) -> dict[str, str]:
    env: dict[str, str] = {}
    for kv in config.envs:
        if not kv.key:
            raise InvalidRequest("config.envs: an entry has an empty key")
        env[kv.key] = kv.value
    return env


def _stop_signal(config: cri.ContainerConfig, image_signal: str | None) -> str:
    if config.stop_signal != cri.Signal.RUNTIME_DEFAULT:
        return normalize_stop_signal(config.stop_signal.name)
    return image_signal or "SIGTERM"


def _namespaces(gen: Generator, sandbox: SandboxRecord,
                sc: cri.LinuxContainerSecurityContext | None) -> bool:
    """Join the sandbox's pinned namespaces; the pid mode; whether pid is the host's."""
    for kind in ("net", "ipc", "uts"):
        path = sandbox.namespaces.get(kind)
        if path:
            gen.add_namespace(_NS_KINDS[kind], path)
        else:
            gen.remove_namespace(_NS_KINDS[kind])
    opts = sc.namespace_options if sc is not None else None
    pid_mode = opts.pid if opts is not None else cri.NamespaceMode.CONTAINER
    if pid_mode == cri.NamespaceMode.NODE:
        gen.remove_namespace("pid")
        return True
    if pid_mode == cri.NamespaceMode.TARGET:
        raise InvalidRequest("namespace_options.pid TARGET is not supported by criolib")
    pod_pid = sandbox.namespaces.get("pid")
    if pid_mode == cri.NamespaceMode.POD and pod_pid:
        gen.add_namespace("pid", pod_pid)
    else:
        gen.add_namespace("pid")
    return False


def _sysctls(gen: Generator, config: Config, sandbox: SandboxRecord) -> None:
    checked = sandbox.extra.get("sysctls")
    wanted: dict[str, str] = {}
    if isinstance(checked, dict):
        # The sandbox manager's: default_sysctls and the pod's, checked and normalised.
        wanted.update({str(k): str(v) for k, v in checked.items()})
    else:
        for item in config.runtime.default_sysctls:
            key, _, value = item.partition("=")
            wanted[key.strip().replace("/", ".")] = value.strip()
        linux = sandbox.config.linux
        if linux is not None:
            wanted.update({k.replace("/", "."): v for k, v in linux.sysctls.items()})
    for key, value in wanted.items():
        # Namespaced sysctls can only be set in a namespace of the container's own.
        if key.startswith("net.") and "net" not in sandbox.namespaces:
            continue
        if (key.startswith(("kernel.shm", "kernel.msg", "fs.mqueue.")) or key == "kernel.sem"
                ) and "ipc" not in sandbox.namespaces:
            continue
        gen.set_sysctl(key, value)


def _annotations(gen: Generator, container_id: str, config: cri.ContainerConfig,
                 sandbox: SandboxRecord, log_path: str) -> None:
    for key, value in config.annotations.items():
        gen.add_annotation(key, value)
    meta = sandbox.metadata
    name = config.metadata.name if config.metadata is not None else ""
    for key, value in {
        "io.kubernetes.container.name": name,
        "io.kubernetes.pod.name": meta.name,
        "io.kubernetes.pod.namespace": meta.namespace,
        "io.kubernetes.pod.uid": meta.uid,
        "io.kubernetes.cri-o.ContainerType": "container",
        "io.kubernetes.cri-o.ContainerID": container_id,
        "io.kubernetes.cri-o.SandboxID": sandbox.id,
        "io.kubernetes.cri-o.LogPath": log_path,
        "io.kubernetes.cri-o.TTY": str(config.tty).lower(),
    }.items():
        gen.add_annotation(key, value)


def _device_entries(device: cri.Device) -> list[tuple[str, str]]:
    """(host path, container path) of each device node a CRI Device names (a dir: all)."""
    host = device.host_path
    dest = device.container_path or host
    if not host or not os.path.isabs(host) or not os.path.isabs(dest):
        raise InvalidRequest(f"device {host!r} -> {dest!r}: host_path and container_path "
                             "must be absolute")
    try:
        st = os.stat(host)
    except OSError as exc:
        raise InvalidRequest(f"device {host}: {exc.strerror or exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        return [(host, dest)]
    found = []
    for dirpath, _, files in os.walk(host):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            mode = os.stat(path).st_mode
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                found.append((path, posixpath.join(dest, os.path.relpath(path, host))))
    return found


def _devices(gen: Generator, devices: list[cri.Device]) -> None:
    for device in devices:
        access = device.permissions or "rwm"
        if not set(access) <= set("rwm"):
            raise InvalidRequest(f"device {device.host_path}: permissions {access!r} must "
                                 "be letters of 'rwm'")
        for host, dest in _device_entries(device):
            try:
                gen.add_host_device(host, dest, access=access)
            except RuntimeSpecError as exc:
                raise InvalidRequest(str(exc)) from exc


def _security(gen: Generator, sc: cri.LinuxContainerSecurityContext | None, config: Config,
              *, privileged: bool) -> None:
    """Capabilities, seccomp, masked and read-only paths (CRI-O leaves a privileged
    container the generator's privileged profile), and no_new_privs as asked."""
    if not privileged:
        apply_capabilities(gen, sc.capabilities if sc is not None else None,
                           config.runtime.default_capabilities)
        apply_seccomp(gen, sc, default_profile=config.runtime.seccomp_profile,
                      default_when_empty=config.runtime.seccomp_use_default_when_empty)
        if sc is not None and sc.masked_paths:
            gen.set_masked_paths(sc.masked_paths)
        if sc is not None and sc.readonly_paths:
            gen.set_readonly_paths(sc.readonly_paths)
    if sc is not None:
        gen.set_no_new_privileges(sc.no_new_privs and not privileged)


def build_spec(*, container_id: str, config: Config, request: cri.ContainerConfig,
               sandbox: SandboxRecord, image_config: Mapping[str, Any], rootfs: Path,
               log_path: str = "") -> BuiltSpec:
    """The container's spec (not yet saved), checked against runtime-spec.

    Raises :class:`InvalidRequest` naming the field for anything the request asks that
    cannot be made (an unknown capability, a bad mount, an image user that is not in
    the image, a spec the validator refuses).
    """
    linux = request.linux or cri.LinuxContainerConfig()
    sc = linux.security_context
    privileged = bool(sc is not None and sc.privileged)
    gen = Generator(privileged=privileged)
    gen.set_root(str(rootfs), readonly=bool(sc is not None and sc.readonly_rootfs))
    hostname = sandbox.hostname or sandbox.config.hostname
    env = _env(request)
    if hostname and "HOSTNAME" not in env:
        env = {"HOSTNAME": hostname, **env}
    try:
        settings = apply_image_config(
            gen, image_config, rootfs=rootfs, command=request.command or None,
            args=request.args or None, env=env, working_dir=request.working_dir or None,
            user=user_spec(sc, _image_user(image_config)))
    except (RuntimeSpecError, ValueError) as exc:
        raise InvalidRequest(f"image config with the container's settings: {exc}") from exc
    user = settings.user
    groups = sorted({*user.additional_gids, *(sc.supplemental_groups if sc else ())})
    gen.set_user(user.uid, user.gid, additional_gids=groups)
    if request.tty:
        gen.set_terminal(True)

    _security(gen, sc, config, privileged=privileged)

    pid_host = _namespaces(gen, sandbox, sc)
    if hostname and "uts" in sandbox.namespaces:
        gen.set_hostname(hostname)
    readonly = bool(sc is not None and sc.readonly_rootfs)
    add_sandbox_mounts(gen, sandbox, readonly=readonly)
    mounts = add_cri_mounts(gen, request.mounts)
    _devices(gen, request.devices)

    if linux.resources is not None:
        gen.set_resources(resources_to_wire(linux.resources))
        gen.set_oom_score_adj(linux.resources.oom_score_adj)
    if config.runtime.pids_limit > 0:
        gen.set_pids_limit(config.runtime.pids_limit)
    gen.set_cgroups_path(cgroups_path(sandbox.cgroup_parent, container_id))
    _sysctls(gen, config, sandbox)
    _annotations(gen, container_id, request, sandbox, log_path)
    try:
        stop_signal = _stop_signal(request, settings.stop_signal)
    except RuntimeSpecError as exc:
        raise InvalidRequest(f"config.stop_signal: {exc}") from exc
    try:
        check(gen.config(), rootfs=rootfs)
    except InvalidSpec as exc:
        raise InvalidRequest(f"the container's config.json is not valid: {exc}") from exc
    return BuiltSpec(
        generator=gen, mounts=mounts, stop_signal=stop_signal, privileged=privileged,
        user=cri.LinuxContainerUser(uid=user.uid, gid=user.gid, supplemental_groups=groups),
        pid_host=pid_host)
