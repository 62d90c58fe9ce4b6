"""A pod's network through CNI: the network to use, ADD with port mappings, DEL.

CRI-O's server/sandbox_network.go over criolib.cni: the default network of
``[crio.network] network_dir`` (``cni_default_network``, or the first that loads),
``RuntimeConf.for_pod`` with the ``K8S_POD_*`` CNI_ARGS and the ``portMappings``
capability, results cached in ``[crio.network] cache_dir`` (libcni's layout). DEL
uses the network list the ADD used (kept in the sandbox record), so it works after
the configuration file changed or went away, and after the namespace is gone.

At start, :meth:`PodNetwork.gc` DELs cached attachments of sandboxes criolib no
longer knows (the state dir is on /run, the CNI cache under /var/lib survives a
reboot, and with it the IP reservations). Nothing in a cache entry tells criolib's
apart from CRI-O's or podman's (the same ``K8S_POD_*`` args, 64-hex ids, netns under
/var/run/netns), so GC runs only when ``[crio.network] cache_dir`` is not libcni's
shared default (:data:`SHARED_CACHE_DIR`), e.g. ``Config.for_root``'s.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from criolib.cni import (
    CNI,
    CNIError,
    NetworkConfigList,
    NetworkWatcher,
    Result,
    RuntimeConf,
    load_conf_bytes,
)
from criolib.service._config import Config
from criolib.service._errors import FailedPrecondition, ServiceError

__all__ = ["IFNAME", "SHARED_CACHE_DIR", "PodNetwork", "pod_ips"]

log = logging.getLogger("criolib.service")

#: The pod's interface (the kubelet's and CRI-O's).
IFNAME = "eth0"
#: libcni's default cache dir, shared by every runtime that keeps the default.
SHARED_CACHE_DIR = Path("/var/lib/cni")


def pod_ips(result: Result) -> list[str]:
    """The pod's addresses from an ADD result, without prefix lengths.

    Addresses of interfaces inside the sandbox (or of no named interface), in the
    result's order, IPv4 first (the kubelet takes the first as the pod IP).
    """
    found: list[str] = []
    for ip in result.ips:
        index = ip.interface
        if index is not None and 0 <= index < len(result.interfaces) \
                and not result.interfaces[index].sandbox:
            continue
        address = ip.address.split("/", 1)[0]
        if address not in found:
            found.append(address)
    return sorted(found, key=lambda a: ipaddress.ip_address(a).version)


class PodNetwork:
    """The CNI side of the sandboxes of one :class:`Config`; safe to share between threads."""

    def __init__(self, config: Config) -> None:
        net = config.network
        self.network_dir = net.network_dir
        self.default_name = net.cni_default_network
        self._watcher = NetworkWatcher(net.network_dir, default_name=net.cni_default_network
                                       or None)
        self._lock = threading.Lock()
        self.cache_dir = Path(net.cache_dir)
        self.cni = CNI(net.plugin_dirs, cache_dir=net.cache_dir)

    @property
    def owns_cache(self) -> bool:
        """Whether the CNI cache dir is criolib's alone (not libcni's shared default)."""
        return os.path.realpath(self.cache_dir) != os.path.realpath(SHARED_CACHE_DIR)

    def gc(self, keep: Iterable[str]) -> None:
        """DEL the cached attachments of every network in ``network_dir`` whose container
        id is not in ``keep`` (the sandboxes criolib knows); only when
        :attr:`owns_cache`. Failures are logged: a start must not fail on them."""
        if not self.owns_cache:
            log.info("CNI cache %s is shared with other runtimes: no GC of stale "
                     "attachments", self.cache_dir)
            return
        valid = [(sandbox_id, IFNAME) for sandbox_id in sorted(keep)]
        with self._lock:
            networks = list(self._watcher.networks().networks.values())
        for net in networks:
            try:
                self.cni.gc(net, valid)
            except CNIError as exc:
                log.warning("GC of CNI network %s: %s", net.name, exc)

    def network(self, what: str) -> NetworkConfigList:
        """The network pods attach to; none loadable is a :class:`FailedPrecondition`."""
        with self._lock:
            found = self._watcher.networks()
        if self.default_name:
            chosen = found.networks.get(self.default_name)
            if chosen is None:
                raise FailedPrecondition(f"{what}: CNI network {self.default_name!r} "
                                         f"([crio.network] cni_default_network) is not in "
                                         f"{self.network_dir}")
            return chosen
        chosen = found.default_network()
        if chosen is None:
            problems = "; ".join(str(e) for e in found.errors.values())
            raise FailedPrecondition(f"{what}: no CNI network configuration in "
                                     f"{self.network_dir}" + (f" ({problems})" if problems
                                                              else ""))
        return chosen

    def add(self, net: NetworkConfigList, sandbox_id: str, netns: str, *,
            metadata: Any, port_mappings: Sequence[Mapping[str, Any]],
            what: str) -> list[str]:
        """ADD the pod to ``net``; its IPs. Failure is a :class:`ServiceError`."""
        caps: dict[str, Any] = {"portMappings": list(port_mappings)} if port_mappings else {}
        rt = RuntimeConf.for_pod(sandbox_id, netns, pod_namespace=metadata.namespace,
                                 pod_name=metadata.name, pod_uid=metadata.uid, ifname=IFNAME,
                                 capability_args=caps)
        try:
            result = self.cni.add_network_list(net, rt)
        except CNIError as exc:
            raise ServiceError(f"{what}: CNI ADD to network {net.name!r} failed: {exc}") from exc
        ips = pod_ips(result)
        if not ips:
            log.warning("%s: CNI network %s gave the pod no IP address", what, net.name)
        return ips

    def delete(self, network_json: str, network_name: str, sandbox_id: str, netns: str, *,
               metadata: Any, what: str) -> None:
        """DEL the pod from the network list ``network_json`` (as ADD saw it); idempotent.

        Without a saved list (an old record) the current configuration of
        ``network_name`` is used. The cached capability args (port mappings) are
        reused, a vanished ``netns`` is passed as empty.
        """
        net: NetworkConfigList | None = None
        if network_json:
            try:
                net = load_conf_bytes(network_json)
            except CNIError as exc:
                log.warning("%s: saved CNI network %s unusable (%s); using the current one",
                            what, network_name, exc)
        if net is None:
            with self._lock:
                net = self._watcher.networks().networks.get(network_name)
            if net is None:
                raise ServiceError(f"{what}: cannot DEL from CNI network {network_name!r}: "
                                   f"its configuration is gone from {self.network_dir}")
        rt = RuntimeConf.for_pod(sandbox_id, netns, pod_namespace=metadata.namespace,
                                 pod_name=metadata.name, pod_uid=metadata.uid, ifname=IFNAME)
        try:
            self.cni.del_network_list(net, rt)
        except CNIError as exc:
            raise ServiceError(f"{what}: CNI DEL from network {net.name!r} failed: "
                               f"{exc}") from exc
