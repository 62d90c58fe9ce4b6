"""Checking a RunPodSandbox request before anything is made: the pod's plan.

CRI v1 (kubernetes/cri-api api.proto ``PodSandboxConfig``) and what the kubelet
sends. :func:`plan_pod` turns a request into a :class:`PodPlan` or raises
:class:`InvalidRequest` / :class:`FailedPrecondition` naming the pod and the field;
nothing on the machine is touched. The rules follow CRI-O (server/sandbox_run_linux.go,
pkg/config/sysctl.go) and the kubelet's sysctl allowlist.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from criolib.service import _cri_types as cri
from criolib.service._config import Config
from criolib.service._errors import ConfigError, FailedPrecondition, InvalidRequest
from criolib.service._state import SandboxRecord, cri_to_json

__all__ = [
    "DEFAULT_CGROUP_PARENT",
    "HOST_NAME_MAX",
    "PodPlan",
    "check_sysctls",
    "namespace_options",
    "normalize_sysctl_name",
    "plan_pod",
    "request_digest",
    "sandbox_name",
]

log = logging.getLogger("criolib.service")

#: cgroup parent of pods whose config names none (cgroupfs).
DEFAULT_CGROUP_PARENT = "/criolib"
#: Linux's limit on a hostname (sethostname(2)).
HOST_NAME_MAX = 64

_POD = cri.NamespaceMode.POD
_NODE = cri.NamespaceMode.NODE
_CONTAINER = cri.NamespaceMode.CONTAINER
#: Sysctls the kernel namespaces (the kubelet's allowlist; CRI-O's sysctl.go):
#: exact names and prefixes, with the namespace they live in.
_NAMESPACED: dict[str, str] = {
    "kernel.sem": "ipc", "kernel.hostname": "uts", "kernel.domainname": "uts",
}
_NAMESPACED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("kernel.shm", "ipc"), ("kernel.msg", "ipc"), ("fs.mqueue.", "ipc"), ("net.", "net"),
)
_PROTOCOLS = {cri.Protocol.TCP: "tcp", cri.Protocol.UDP: "udp", cri.Protocol.SCTP: "sctp"}


def sandbox_name(metadata: cri.PodSandboxMetadata) -> str:
    """CRI-O's sandbox name: ``k8s_<name>_<namespace>_<uid>_<attempt>``."""
    return (f"k8s_{metadata.name}_{metadata.namespace}_{metadata.uid}_"
            f"{metadata.attempt}")


def request_digest(request: cri.RunPodSandboxRequest) -> str:
    """sha256 of the request (config and runtime handler): a retry has the same one."""
    doc = json.dumps(cri_to_json(request), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(doc.encode()).hexdigest()


def namespace_options(pod: SandboxRecord | cri.PodSandboxConfig) -> cri.NamespaceOption:
    """The pod's namespace modes as criolib applies them.

    The request's ``linux.security_context.namespace_options``; when the request
    has none (crictl's and critest's minimal configs), network and IPC of the pod
    and a PID namespace per container (the kubelet's default). PID POD (the
    kubelet's ``shareProcessNamespace``) gets a holder process (:mod:`._sandbox_pid`).
    """
    config = pod.config if isinstance(pod, SandboxRecord) else pod
    context = config.linux.security_context if config.linux else None
    given = context.namespace_options if context else None
    if given is None:
        return cri.NamespaceOption(network=_POD, pid=_CONTAINER, ipc=_POD)
    return given


def normalize_sysctl_name(name: str) -> str:
    """A sysctl name with ``.`` separators (the kubelet's rule for ``/`` ones).

    When the first separator is ``/`` the name uses slashes (``net/ipv4/conf/eth0.1/x``):
    dots and slashes swap, so interface names with dots survive.
    """
    slash, dot = name.find("/"), name.find(".")
    if slash != -1 and (dot == -1 or slash < dot):
        return name.translate(str.maketrans("./", "/."))
    return name


def _sysctl_namespace(name: str) -> str | None:
    if name in _NAMESPACED:
        return _NAMESPACED[name]
    for prefix, kind in _NAMESPACED_PREFIXES:
        if name.startswith(prefix):
            return kind
    return None


def check_sysctls(sysctls: Mapping[str, str], *, host_network: bool, host_ipc: bool,
                  what: str) -> dict[str, str]:
    """The sysctls with normalised names; a name the kernel does not namespace, or one of
    a namespace shared with the host, is an :class:`InvalidRequest` naming it."""
    out: dict[str, str] = {}
    for raw, value in sysctls.items():
        name = normalize_sysctl_name(raw.strip())
        kind = _sysctl_namespace(name)
        if not name or kind is None:
            raise InvalidRequest(f"{what}: sysctl {raw!r} is not namespaced by the kernel, "
                                 "so a pod may not set it (allowed: net.*, kernel.shm*, "
                                 "kernel.msg*, kernel.sem, fs.mqueue.*, kernel.hostname, "
                                 "kernel.domainname)")
        if "\n" in value or "\0" in value:
            raise InvalidRequest(f"{what}: sysctl {raw!r} has a value with a newline or NUL")
        if kind == "ipc" and host_ipc:
            raise InvalidRequest(f"{what}: sysctl {raw!r} is not allowed with the host's IPC "
                                 "namespace (namespace_options.ipc NODE)")
        if kind in ("net", "uts") and host_network:
            raise InvalidRequest(f"{what}: sysctl {raw!r} is not allowed with the host's "
                                 "network (namespace_options.network NODE)")
        out[name] = value
    return out


def _default_sysctls(entries: Iterable[str], *, host_network: bool,
                     host_ipc: bool) -> dict[str, str]:
    """``default_sysctls`` that apply to this pod; the others are skipped (CRI-O's rule)."""
    out: dict[str, str] = {}
    for entry in entries:
        key, _, value = entry.partition("=")
        try:
            out.update(check_sysctls({key.strip(): value.strip()}, host_network=host_network,
                                     host_ipc=host_ipc, what="[crio.runtime] default_sysctls"))
        except InvalidRequest as exc:
            log.info("skipping a default sysctl for this pod: %s", exc)
    return out


@attrs.frozen(kw_only=True)
class PodPlan:
    """What RunPodSandbox will make, from a request that passed every check."""

    name: str
    key: str
    metadata: cri.PodSandboxMetadata
    config: cri.PodSandboxConfig
    runtime_handler: str
    options: cri.NamespaceOption
    hostname: str
    cgroup_parent: str
    sysctls: dict[str, str]
    port_mappings: list[dict[str, Any]]

    @property
    def host_network(self) -> bool:
        return self.options.network == _NODE

    @property
    def host_ipc(self) -> bool:
        return self.options.ipc == _NODE

    @property
    def shared_pid(self) -> bool:
        """Whether the pod's containers share one PID namespace (pid POD)."""
        return self.options.pid == _POD

    @property
    def namespace_kinds(self) -> tuple[str, ...]:
        """The namespaces to pin: net and uts unless host network, ipc unless host IPC."""
        kinds = [] if self.host_network else ["net"]
        if not self.host_ipc:
            kinds.append("ipc")
        if not self.host_network:
            kinds.append("uts")
        return tuple(kinds)


def _check_options(options: cri.NamespaceOption, what: str) -> None:
    for field in ("network", "ipc"):
        mode = getattr(options, field)
        if mode not in (_POD, _NODE):
            raise InvalidRequest(f"{what}: namespace_options.{field} {mode.name} is not a pod "
                                 "mode (POD or NODE)")
    if options.pid not in (_POD, _CONTAINER, _NODE):
        raise InvalidRequest(f"{what}: namespace_options.pid {options.pid.name} is not a "
                             "pod mode (POD, CONTAINER or NODE)")
    userns = options.userns_options
    if userns is not None and userns.mode != _NODE:
        raise FailedPrecondition(f"{what}: user namespaces (userns_options.mode "
                                 f"{userns.mode.name}) are not supported by criolib yet")


def _hostname(config: cri.PodSandboxConfig, metadata: cri.PodSandboxMetadata,
              host_network: bool, what: str) -> str:
    hostname = config.hostname
    if not hostname:
        hostname = os.uname().nodename if host_network else metadata.name
    if len(hostname.encode()) > HOST_NAME_MAX or any(c.isspace() or c in "\0/" for c in hostname):
        raise InvalidRequest(f"{what}: hostname {hostname!r} is not usable (at most "
                             f"{HOST_NAME_MAX} bytes, no spaces, NUL or '/')")
    return hostname


def _cgroup_parent(config: cri.PodSandboxConfig, what: str) -> str:
    parent = (config.linux.cgroup_parent if config.linux else "") or DEFAULT_CGROUP_PARENT
    if parent.endswith(".slice"):
        raise InvalidRequest(f"{what}: linux.cgroup_parent {parent!r} is a systemd slice, but "
                             "the cgroup manager is cgroupfs (give a path like /kubepods/x)")
    if "\0" in parent or ".." in parent.split("/"):
        raise InvalidRequest(f"{what}: linux.cgroup_parent {parent!r} is not a cgroup path")
    return posixpath.normpath("/" + parent.lstrip("/"))


def _check_dns(config: cri.PodSandboxConfig, what: str) -> None:
    dns = config.dns_config
    if dns is None:
        return
    for field in ("servers", "searches", "options"):
        for entry in getattr(dns, field):
            if not entry or any(c.isspace() or c == "\0" for c in entry):
                raise InvalidRequest(f"{what}: dns_config.{field} entry {entry!r} is empty "
                                     "or holds white space")
    for server in dns.servers:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise InvalidRequest(f"{what}: dns_config.servers entry {server!r} is not an IP "
                                 "address") from None


def _port_mappings(config: cri.PodSandboxConfig, what: str) -> list[dict[str, Any]]:
    """The CNI ``portMappings`` capability argument (CONVENTIONS.md); host_port 0 is
    no mapping (the kubelet sends those for containerPort-only ports, CRI-O skips them)."""
    out: list[dict[str, Any]] = []
    for i, pm in enumerate(config.port_mappings):
        where = f"{what}: port_mappings[{i}]"
        if not 0 < pm.container_port < 65536 or not 0 <= pm.host_port < 65536:
            raise InvalidRequest(f"{where}: container_port {pm.container_port} / host_port "
                                 f"{pm.host_port} out of range")
        if pm.host_ip:
            try:
                ipaddress.ip_address(pm.host_ip)
            except ValueError:
                raise InvalidRequest(f"{where}: host_ip {pm.host_ip!r} is not an IP "
                                     "address") from None
        if pm.host_port == 0:
            continue
        entry: dict[str, Any] = {"hostPort": pm.host_port, "containerPort": pm.container_port,
                                 "protocol": _PROTOCOLS.get(pm.protocol, "tcp")}
        if pm.host_ip:
            entry["hostIP"] = pm.host_ip
        out.append(entry)
    return out


def plan_pod(request: cri.RunPodSandboxRequest, config: Config) -> PodPlan:
    """Check a RunPodSandbox request against the CRI and the service's config."""
    pod = request.config
    metadata = pod.metadata if pod is not None else None
    if pod is None or metadata is None:
        raise InvalidRequest("RunPodSandbox: config.metadata is required")
    missing = [f for f in ("name", "namespace", "uid") if not getattr(metadata, f)]
    if missing:
        raise InvalidRequest(f"RunPodSandbox: config.metadata.{missing[0]} is required "
                             f"(pod {metadata.namespace}/{metadata.name})")
    name = sandbox_name(metadata)
    what = f"pod {metadata.namespace}/{metadata.name} ({name})"
    try:
        config.runtime.handler(request.runtime_handler)
    except ConfigError as exc:
        raise InvalidRequest(f"{what}: runtime_handler: {exc}") from None
    options = namespace_options(pod)
    _check_options(options, what)
    host_network, host_ipc = options.network == _NODE, options.ipc == _NODE
    hostname = _hostname(pod, metadata, host_network, what)
    _check_dns(pod, what)
    sysctls = _default_sysctls(config.runtime.default_sysctls, host_network=host_network,
                               host_ipc=host_ipc)
    sysctls.update(check_sysctls(pod.linux.sysctls if pod.linux else {},
                                 host_network=host_network, host_ipc=host_ipc, what=what))
    return PodPlan(name=name, key=request_digest(request), metadata=metadata, config=pod,
                   runtime_handler=request.runtime_handler,
                   options=options, hostname=hostname, cgroup_parent=_cgroup_parent(pod, what),
                   sysctls=sysctls, port_mappings=_port_mappings(pod, what))
