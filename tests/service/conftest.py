"""Shared fixtures of the service tests: ``criolib serve`` as a subprocess, and a client.

:class:`CRIClient` is what the kubelet (or crictl) sends: the cri-api stubs over
``unix://<socket>``, with a default deadline. :class:`ServiceBed` is one service's
world on the machine, all of it under a private tmpfs: the config (``Config.for_root``
written out as crio.conf-shaped TOML), a CNI conflist (loopback, bridge on a bridge of
its own name, host-local on a private ``10.254.N.0/24`` with its dataDir on the tmpfs,
portmap), a registries.conf that sends ``example.test/testbed`` to a mirror (the test
bed's registry, behind a recording proxy) and an accept-anything policy. It starts
``criolib serve`` as a subprocess (:meth:`ServiceBed.serve`), kills it when a test
says so, lists what the service left behind (:meth:`ServiceBed.leftovers`) and
removes everything at the end, even after a failed test: pods through the server when
it still answers, then monitor processes, runtime state, mounts, the bridge, new
iptables chains, ``ip_forward`` and the tmpfs.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from criolib import testing
from criolib.service import Config
from criolib.storage import Store
from criolib.testing import (
    RegistryServer,
    ServiceProcess,
    TestbedError,
    drop_new_iptables_chains,
    iptables_chains,
    require_binaries,
    require_cni_plugins,
    require_root,
    start_service,
)
from criolib.testing._faultproxy import FaultProxy

grpc: Any = importlib.import_module("grpc")
api_pb2: Any = importlib.import_module("cri_api.v1.api_pb2")

FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
#: The image as pods name it: a registry that does not exist, reached through its mirror.
MIRRORED_IMAGE = "example.test/testbed/busybox:latest"
#: How long a server may take to answer after it is started.
START_TIMEOUT = 30.0


class CRIClient(testing.CRIClient):
    """:class:`criolib.testing.CRIClient` with the calls the tests make most."""

    def run_pod(self, config: Any, handler: str = "") -> str:
        response = self.call("RunPodSandbox", api_pb2.RunPodSandboxRequest(
            config=config, runtime_handler=handler))
        return str(response.pod_sandbox_id)

    def pod_status(self, pod_id: str) -> Any:
        return self.call("PodSandboxStatus",
                         api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id)).status

    def create(self, pod_id: str, config: Any, pod_config: Any) -> str:
        response = self.call("CreateContainer", api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=config, sandbox_config=pod_config))
        return str(response.container_id)

    def start(self, container_id: str) -> None:
        self.call("StartContainer", api_pb2.StartContainerRequest(container_id=container_id))

    def status(self, container_id: str) -> Any:
        return self.call("ContainerStatus",
                         api_pb2.ContainerStatusRequest(container_id=container_id)).status

    def stop_pod(self, pod_id: str) -> None:
        self.call("StopPodSandbox", api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id))

    def remove_pod(self, pod_id: str) -> None:
        self.call("RemovePodSandbox", api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))

    def pull(self, image: str) -> str:
        response = self.call("PullImage", api_pb2.PullImageRequest(
            image=api_pb2.ImageSpec(image=image)))
        return str(response.image_ref)


def pod_config(name: str, *, uid: str | None = None, namespace: str = "default",
               log_directory: str = "", host_network: bool = False, **fields: Any) -> Any:
    """A PodSandboxConfig as the kubelet sends it (pod network and IPC, PID per container)."""
    mode = api_pb2.NODE if host_network else api_pb2.POD
    options = api_pb2.NamespaceOption(network=mode, ipc=mode, pid=api_pb2.CONTAINER)
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, uid=uid or f"uid-{name}",
                                            namespace=namespace, attempt=0),
        hostname=name, log_directory=log_directory,
        linux=api_pb2.LinuxPodSandboxConfig(
            security_context=api_pb2.LinuxSandboxSecurityContext(namespace_options=options)),
        **fields)


def container_config(name: str, script: str, *, image: str = MIRRORED_IMAGE,
                     add_caps: tuple[str, ...] = (), **fields: Any) -> Any:
    """A ContainerConfig running ``sh -c script``, logging to ``<name>/0.log``."""
    security = api_pb2.LinuxContainerSecurityContext(
        capabilities=api_pb2.Capability(add_capabilities=list(add_caps)))
    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name, attempt=0),
        image=api_pb2.ImageSpec(image=image), command=["/bin/sh", "-c", script],
        log_path=f"{name}/0.log",
        linux=api_pb2.LinuxContainerConfig(security_context=security), **fields)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0,
             step: float = 0.05) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} "
                                 f"(last: {result!r})")
        time.sleep(step)


def _sh(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    return proc.stdout


def _cmdline_pids(needle: str) -> list[int]:
    """Processes (not this one) whose command line mentions ``needle``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


@attrs.define(eq=False)
class ServiceBed:
    """One service's configuration, server process and host footprint (see the module)."""

    base: Path
    config: Config
    config_path: Path
    bridge: str
    subnet: str
    ipam_dir: Path
    mirror: FaultProxy | None
    server: ServiceProcess | None = None
    client: CRIClient | None = None

    # -- the server ---------------------------------------------------------------------

    @property
    def socket(self) -> Path:
        return self.config.api.listen

    @property
    def log_text(self) -> str:
        return self.server.log_tail() if self.server is not None else ""

    def serve(self, timeout: float = START_TIMEOUT) -> CRIClient:
        """Start ``criolib serve --config <toml>`` and return a client once it answers."""
        assert not self.serving, "already serving"
        self.close_client()
        self.server = start_service(self.config, self.config_path, timeout=timeout)
        self.client = CRIClient(self.server.client.address)
        return self.client

    def close_client(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> int:
        """Send ``sig`` to the server and wait for it; its exit status."""
        assert self.server is not None
        self.close_client()
        return self.server.stop(sig, timeout)

    @property
    def serving(self) -> bool:
        return self.server is not None and self.server.running

    # -- what is left -------------------------------------------------------------------

    @property
    def namespace_pins(self) -> list[Path]:
        run = self.config.runtime.namespaces_dir
        return [p for kind in ("netns", "ipcns", "utsns") if (run / kind).is_dir()
                for p in (run / kind).iterdir()]

    def mounts(self) -> list[str]:
        """Mount points under the bed (but the bed's tmpfs and the namespace pin
        directories, which ``ip netns`` makes shared bind mounts of themselves)."""
        run = self.config.runtime.namespaces_dir
        allowed = {str(self.base), *(str(run / k) for k in ("netns", "ipcns", "utsns"))}
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4]
            if point.startswith(f"{self.base}/") and point not in allowed:
                points.append(point)
        return points

    def reservations(self) -> list[str]:
        """host-local's reserved addresses (a file per IP)."""
        if not self.ipam_dir.exists():
            return []
        return sorted(p.name for p in self.ipam_dir.rglob("*") if p.is_file()
                      and p.name != "lock" and not p.name.startswith("last_reserved_ip"))

    def veths(self) -> list[str]:
        out = _sh("ip", "-o", "link", "show", "master", self.bridge)
        return [line.split(":")[1].strip() for line in out.splitlines()]

    def monitor_pids(self) -> list[int]:
        """Processes mentioning the bed's path, but the server itself."""
        server = self.server.process.pid if self.server is not None and self.serving else None
        return [pid for pid in _cmdline_pids(str(self.base)) if pid != server]

    def runtime_state(self) -> list[str]:
        """Containers the OCI runtimes still know (``<runtime> --root <root> list``)."""
        found = []
        for name, handler in self.config.runtime.runtimes.items():
            if not handler.runtime_root.exists():
                continue
            out = _sh(handler.resolved_path(), "--root", str(handler.runtime_root), "list",
                      "-q")
            found += [f"{name} {line}" for line in out.split() if line]
        return found

    def leftovers(self) -> list[str]:
        """Everything of pods and containers still on the machine (but storage)."""
        found = [f"mount {p}" for p in self.mounts()]
        found += [f"namespace pin {p}" for p in self.namespace_pins]
        found += [f"veth {v}" for v in self.veths()]
        found += [f"IP reservation {r}" for r in self.reservations()]
        found += [f"process {pid}: {_cmdline(pid)}" for pid in self.monitor_pids()]
        found += [f"runtime state {s}" for s in self.runtime_state()]
        results = self.config.network.cache_dir / "results"
        if results.is_dir():
            found += [f"CNI cache {p.name}" for p in results.iterdir()]
        sandboxes = self.config.state_dir / "sandboxes"
        if sandboxes.is_dir():
            found += [f"sandbox dir {p.name}" for p in sandboxes.iterdir()]
        return found

    def settled_leftovers(self, timeout: float = 5.0) -> list[str]:
        """:meth:`leftovers` once the kernel is done (it tears a namespace's veth down
        in a work queue, a moment after its last reference goes)."""
        deadline = time.monotonic() + timeout
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left

    def storage_leftovers(self, keep_images: bool = False) -> list[str]:
        """Containers (and, unless ``keep_images``, images and layers) in the service's
        store; open it only while no server runs (one opener per graphroot)."""
        assert not self.serving, "the storage is the server's while it runs"
        with Store(self.config.root, self.config.runroot, self.config.storage_driver) as store:
            found = [f"storage container {c.id} {c.names}" for c in store.containers()]
            if not keep_images:
                found += [f"image {i.id} {i.names}" for i in store.images()]
                found += [f"layer {layer.id}" for layer in store.layers()]
        return found

    # -- cleanup ---------------------------------------------------------------------

    def remove_everything(self) -> None:
        """Best effort, for a failed test: pods through the server, then by hand."""
        if self.serving:
            with contextlib.suppress(Exception):
                client = self.client or CRIClient(f"unix://{self.socket}", timeout=30)
                self.client = client
                pods = client.call("ListPodSandbox", api_pb2.ListPodSandboxRequest()).items
                for pod in pods:
                    client.stop_pod(pod.id)
                    client.remove_pod(pod.id)
        if self.serving:
            with contextlib.suppress(TestbedError):
                self.kill(signal.SIGTERM, timeout=15)
        self.close_client()
        for pid in _cmdline_pids(str(self.base)):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for name, handler in self.config.runtime.runtimes.items():
            with contextlib.suppress(Exception):
                for ctr in self.runtime_state():
                    runtime, _, cid = ctr.partition(" ")
                    if runtime == name:
                        subprocess.run([handler.resolved_path(), "--root",
                                        str(handler.runtime_root), "delete", "-f", cid],
                                       capture_output=True, timeout=30, check=False)
        points = sorted(self.mounts(), key=len, reverse=True)
        run = self.config.runtime.namespaces_dir
        points += [str(run / k) for k in ("netns", "ipcns", "utsns")]
        for point in points:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    return "?"


def _conflist(name: str, bridge: str, subnet: str, ipam_dir: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0", "name": name,
        "plugins": [
            {"type": "loopback"},
            {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(ipam_dir),
                      "ranges": [[{"subnet": subnet}]]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def _registries_conf(mirror: str) -> str:
    return f"""unqualified-search-registries = []

[[registry]]
location = "example.test/testbed"

[[registry.mirror]]
location = "{mirror}/testbed"
insecure = true
"""


_POLICY = {"default": [{"type": "insecureAcceptAnything"}]}
_USED_SUBNETS: set[int] = set()


def _subnet_index() -> int:
    """A third octet for 10.254.N.0/24 that no bridge of this machine routes yet."""
    routes = _sh("ip", "-4", "route", "show")
    for _ in range(200):
        n = 1 + secrets.randbelow(250)
        if n not in _USED_SUBNETS and f"10.254.{n}." not in routes:
            _USED_SUBNETS.add(n)
            return n
    raise AssertionError("no free 10.254.N.0/24 subnet")


@attrs.define
class _Host:
    """The host settings a bed changes, to put back."""

    forward: str
    chains: dict[str, set[str]]


def make_bed(runtime: str = "crun", monitor: str = "criolib",
             registry: RegistryServer | None = None) -> ServiceBed:
    """A :class:`ServiceBed` (not serving yet) on a fresh tmpfs under /tmp.

    The pods get no default route: test traffic stays on the bridge.
    """
    plugin_dir = require_cni_plugins("bridge", "host-local", "loopback", "portmap")
    base = Path(tempfile.mkdtemp(prefix="cri-", dir="/tmp"))  # a socket path is ≤ 107 bytes
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700,size=2g", "tmpfs", str(base)],
                   check=True, capture_output=True)
    tag = secrets.token_hex(3)
    n = _subnet_index()
    defaults = Config.for_root(base)
    mirror = None
    image = defaults.image
    if registry is not None:
        mirror = FaultProxy(registry.url).start()
        (base / "registries.conf").write_text(_registries_conf(mirror.host))
        (base / "policy.json").write_text(json.dumps(_POLICY))
        image = attrs.evolve(image, registries_conf=str(base / "registries.conf"),
                             signature_policy=str(base / "policy.json"))
    config = attrs.evolve(
        defaults, image=image,
        runtime=attrs.evolve(defaults.runtime, default_runtime=runtime, monitor=monitor,
                             ctr_stop_timeout=5),
        network=attrs.evolve(defaults.network, plugin_dirs=(str(plugin_dir),)))
    bridge = f"crie2e{tag}"
    ipam_dir = base / "ipam"
    config.network.network_dir.mkdir(parents=True)
    (config.network.network_dir / "10-e2e.conflist").write_text(json.dumps(
        _conflist(f"e2e-{tag}", bridge, f"10.254.{n}.0/24", ipam_dir)))
    return ServiceBed(base=base, config=config, config_path=base / "criolib.toml",
                      bridge=bridge, subnet=f"10.254.{n}.", ipam_dir=ipam_dir, mirror=mirror)


def _destroy(bed: ServiceBed) -> None:
    try:
        bed.remove_everything()
    finally:
        subprocess.run(["ip", "link", "del", bed.bridge], capture_output=True, check=False)
        if bed.mirror is not None:
            bed.mirror.stop()
        subprocess.run(["umount", "-l", str(bed.base)], capture_output=True, check=False)
        shutil.rmtree(bed.base, ignore_errors=True)


@pytest.fixture
def service_beds() -> Iterator[Callable[..., ServiceBed]]:
    """``make(runtime="crun", monitor="criolib", registry=None)`` -> a :class:`ServiceBed`;
    every bed made is torn down at the end, and the host's ``ip_forward`` and iptables
    chains put back."""
    require_root()
    require_binaries("runc", "crun", "conmon", "iptables-save")
    host = _Host(forward=FORWARD.read_text(), chains=iptables_chains())
    made: list[ServiceBed] = []

    def make(runtime: str = "crun", monitor: str = "criolib",
             registry: RegistryServer | None = None) -> ServiceBed:
        bed = make_bed(runtime, monitor, registry)
        made.append(bed)
        return bed

    try:
        yield make
    finally:
        for bed in made:
            _destroy(bed)
        drop_new_iptables_chains(host.chains)
        FORWARD.write_text(host.forward)
