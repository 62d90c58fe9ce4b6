"""Pod start and teardown over the CRI: ``criolib serve`` against containerd's CRI plugin.

Both services are started here with their state on a tmpfs mounted for the run
(MACHINE-NOTES.md), and driven alternately by the same client, the cri-api stubs over
``grpc.insecure_channel("unix://…")``:

criolib
    ``criolib serve``: ``Config.for_root(tmp)`` as TOML, runtime runc, monitor
    ``criolib`` (one monitor process per pod), overlay; the test bed's registry marked
    insecure in a registries.conf.
containerd
    Debian's 1.6.20, config version 2: root, state, socket and runc root in the tmpfs;
    runc through ``io.containerd.runc.v2``, overlayfs, ``disable_apparmor``,
    ``restrict_oom_score_adj`` (no CAP_SYS_RESOURCE here), a plain-HTTP mirror for the
    registry, and as ``sandbox_image`` a "pause" image pushed here: busybox's layer with
    a config running ``sleep inf`` (there is no outside registry).

Both use the same CNI chain (loopback, bridge + host-local, portmap), each its own
bridge: ``crlbk-<tag>`` on 10.251.1.0/24 (criolib), ``crlbc-<tag>`` on 10.251.0.0/24.
Timed N times each (``--runs``, default 20), images present: start = RunPodSandbox +
CreateContainer + StartContainer (``sleep inf`` from busybox); teardown = StopContainer
(timeout 0) + RemoveContainer + StopPodSandbox + RemovePodSandbox. Then RSS and PSS with
M pods running (``--pods-for-rss``, default 50): criolib's service plus its monitors,
containerd plus its shims. Prints medians, p90s and the ratio criolib / containerd.

Needs root, runc, containerd, the CNI plugins in /usr/lib/cni and docker-registry.
Removes what it makes: pods, services, shims, monitors, mounts, bridges, the plugins'
iptables chains; restores ``net.ipv4.ip_forward``.

    .venv/bin/python bench/service_pods.py [--runs N] [--pods-for-rss M]
        [--only criolib|containerd] [--logs DIR]

``--only`` runs one service (no ratio); ``--logs`` copies the services' logs out.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
from cri_api.v1 import api_pb2, api_pb2_grpc

from criolib.service import Config, load_config
from criolib.testing import (
    RegistryServer,
    TestImages,
    build_test_images,
    drop_new_iptables_chains,
    iptables_chains,
    push_layout,
    push_test_images,
)

CACHE = Path.home() / ".cache" / "criolib" / "testbed"
PLUGIN_DIR = Path("/usr/lib/cni")
FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
CRIOLIB = Path(sys.executable).parent / "criolib"
CONTAINERD = "containerd"
SHIM_SOCKETS = Path("/run/containerd/s")
NAMESPACE_CONTAINER = api_pb2.NamespaceMode.Value("CONTAINER")


def sh(*argv: str, check: bool = True) -> str:
    return subprocess.run(argv, check=check, capture_output=True, text=True).stdout


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.4999)))
    return ordered[rank - 1]


# -- the test bed: registry, images, CNI ----------------------------------------------


def pause_layout(images: TestImages, dest: Path) -> Path:
    """An OCI layout holding ``pause``: busybox's layer, a config that runs ``sleep inf``."""
    src = images.layout / "blobs" / "sha256"
    busybox = images["busybox"]
    (dest / "blobs" / "sha256").mkdir(parents=True)

    def blob(data: bytes) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        (dest / "blobs" / "sha256" / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    manifest = json.loads((src / busybox.digest.split(":")[1]).read_bytes())
    config = json.loads((src / manifest["config"]["digest"].split(":")[1]).read_bytes())
    config["config"]["Cmd"] = ["sleep", "inf"]
    for layer in manifest["layers"]:
        shutil.copyfile(src / layer["digest"].split(":")[1],
                        dest / "blobs" / "sha256" / layer["digest"].split(":")[1])
    manifest["config"].update(blob(json.dumps(config).encode()))
    desc = {"mediaType": manifest["mediaType"], **blob(json.dumps(manifest).encode()),
            "annotations": {"org.opencontainers.image.ref.name": "pause"}}
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return dest


def conflist(directory: Path, bridge: str, subnet: str, data_dir: Path) -> None:
    directory.mkdir(parents=True)
    doc = {
        "cniVersion": "1.0.0",
        "name": bridge,
        "plugins": [
            {"type": "loopback"},
            {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(data_dir),
                      "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (directory / "10-bench.conflist").write_text(json.dumps(doc, indent=2))


def mounts_under(where: Path) -> list[str]:
    """Mount points at or below ``where``, deepest first."""
    found = []
    prefix = str(where)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (this process excluded)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in argv:
            pids.append(int(entry.name))
    return pids


def memory_kb(pids: list[int]) -> tuple[int, int]:
    """RSS and PSS summed over ``pids``, in kB."""
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return rss, pss


# -- one service under test -------------------------------------------------------------


class Service:
    """A CRI endpoint the benchmark started: its stubs, its image refs, its processes."""

    name = ""

    def __init__(self, base: Path, registry: str, tag: str) -> None:
        self.base = base
        self.registry = registry
        self.tag = tag
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None
        self.runtime_roots: list[Path] = []
        self.image = f"{registry}/testbed/busybox:latest"
        self.recording = False
        self.steps: dict[str, list[float]] = {}

    socket: Path

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        raise NotImplementedError

    def memory_pids(self) -> list[int]:
        raise NotImplementedError

    def start(self) -> None:
        self.prepare()
        log = open(self.base / "service.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start: {self.log_tail()}")
            time.sleep(0.05)
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.rt = api_pb2_grpc.RuntimeServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.img = api_pb2_grpc.ImageServiceStub(self.channel)  # type: ignore[no-untyped-call]
        version = self.rt.Version(api_pb2.VersionRequest())
        self.version = f"{version.runtime_name} {version.runtime_version}"

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.base / "service.log").read_text(errors="replace")[-3000:]
        return ""

    def pull(self, refs: list[str]) -> None:
        for ref in refs:
            self.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref)),
                               timeout=120)

    # -- one pod ---------------------------------------------------------------------

    def pod_config(self, index: int) -> api_pb2.PodSandboxConfig:
        name = f"bench-{index}"
        (self.base / "pods" / name).mkdir(parents=True, exist_ok=True)  # the kubelet's job
        ns = api_pb2.NamespaceOption(pid=NAMESPACE_CONTAINER)
        return api_pb2.PodSandboxConfig(
            metadata=api_pb2.PodSandboxMetadata(name=name, namespace="bench",
                                                uid=f"{self.tag}-{index}", attempt=0),
            hostname=name,
            log_directory=str(self.base / "pods" / name),
            linux=api_pb2.LinuxPodSandboxConfig(
                security_context=api_pb2.LinuxSandboxSecurityContext(namespace_options=ns)),
        )

    def start_pod(self, index: int) -> tuple[str, str]:
        """RunPodSandbox + CreateContainer + StartContainer; the two ids."""
        config = self.pod_config(index)
        pod = self.call("RunPodSandbox", api_pb2.RunPodSandboxRequest(config=config)
                        ).pod_sandbox_id
        ns = api_pb2.NamespaceOption(pid=NAMESPACE_CONTAINER)
        ctr_config = api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name="sleeper", attempt=0),
            image=api_pb2.ImageSpec(image=self.image),
            command=["sleep", "inf"],
            log_path="sleeper.log",
            linux=api_pb2.LinuxContainerConfig(
                security_context=api_pb2.LinuxContainerSecurityContext(namespace_options=ns)),
        )
        ctr = self.call("CreateContainer", api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod, config=ctr_config, sandbox_config=config)).container_id
        self.call("StartContainer", api_pb2.StartContainerRequest(container_id=ctr))
        return pod, ctr

    def stop_pod(self, pod: str, ctr: str) -> None:
        """StopContainer (timeout 0) + RemoveContainer + StopPodSandbox + RemovePodSandbox."""
        self.call("StopContainer", api_pb2.StopContainerRequest(container_id=ctr, timeout=0))
        self.call("RemoveContainer", api_pb2.RemoveContainerRequest(container_id=ctr))
        self.call("StopPodSandbox", api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))
        self.call("RemovePodSandbox", api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))

    def call(self, rpc: str, request: Any) -> Any:
        """One RuntimeService call, timed into ``steps[rpc]`` while ``recording``."""
        start = time.perf_counter()
        reply = getattr(self.rt, rpc)(request, timeout=60)
        if self.recording:
            self.steps.setdefault(rpc, []).append((time.perf_counter() - start) * 1000)
        return reply

    def check_running(self, ctr: str) -> None:
        status = self.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=ctr))
        if status.status.state != api_pb2.CONTAINER_RUNNING:
            raise RuntimeError(f"{self.name}: container {ctr[:12]} is not running: "
                               f"{status.status}")

    def remove_everything(self) -> None:
        """Stop and remove whatever pods are left (after a failure)."""
        if self.channel is None:
            return
        with contextlib.suppress(grpc.RpcError):
            for pod in self.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest(),
                                              timeout=30).items:
                with contextlib.suppress(grpc.RpcError):
                    self.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(
                        pod_sandbox_id=pod.id), timeout=60)
                    self.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(
                        pod_sandbox_id=pod.id), timeout=60)

    def leftovers(self) -> list[str]:
        left = [f"pod {p.id[:12]}" for p in self.rt.ListPodSandbox(
            api_pb2.ListPodSandboxRequest()).items]
        left += [f"container {c.id[:12]}" for c in self.rt.ListContainers(
            api_pb2.ListContainersRequest()).containers]
        return left

    def stop(self) -> None:
        self.remove_everything()
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Containers and their shims or monitors outlive the service by design.
        for root in self.runtime_roots:
            if root.is_dir():
                for cid in sh("runc", "--root", str(root), "list", "-q", check=False).split():
                    sh("runc", "--root", str(root), "delete", "-f", cid, check=False)
        for pid in processes_mentioning(str(self.base)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class Criolib(Service):
    name = "criolib"

    def prepare(self) -> None:
        cfg = Config.for_root(self.base)
        self.socket = cfg.api.listen
        self.cni_dir = cfg.network.network_dir
        self.runtime_roots = [cfg.runtime.runtimes["runc"].runtime_root]
        conflist(self.cni_dir, f"crlbk-{self.tag}", "10.251.1.0/24", self.base / "ipam")
        (self.base / "containers").mkdir()
        (self.base / "containers" / "policy.json").write_text(
            '{"default": [{"type": "insecureAcceptAnything"}]}')
        (self.base / "containers" / "registries.conf").write_text(
            f'unqualified-search-registries = []\n[[registry]]\nlocation = "{self.registry}"\n'
            "insecure = true\n")
        runtimes = "".join(
            f'[crio.runtime.runtimes.{n}]\nruntime_root = "{h.runtime_root}"\n'
            for n, h in cfg.runtime.runtimes.items())
        text = f"""\
[crio]
root = "{cfg.root}"
runroot = "{cfg.runroot}"
storage_driver = "overlay"
state_dir = "{cfg.state_dir}"
[crio.api]
listen = "{cfg.api.listen}"
[crio.runtime]
default_runtime = "runc"
monitor = "criolib"
container_exits_dir = "{cfg.runtime.container_exits_dir}"
container_attach_socket_dir = "{cfg.runtime.container_attach_socket_dir}"
log_dir = "{cfg.runtime.log_dir}"
namespaces_dir = "{cfg.runtime.namespaces_dir}"
{runtimes}
[crio.image]
signature_policy = "{self.base / 'containers' / 'policy.json'}"
registries_conf = "{self.base / 'containers' / 'registries.conf'}"
insecure_registries = ["{self.registry}"]
[crio.network]
network_dir = "{cfg.network.network_dir}"
plugin_dirs = ["{PLUGIN_DIR}"]
cache_dir = "{cfg.network.cache_dir}"
"""
        self.config_path = self.base / "criolib.conf"
        self.config_path.write_text(text)
        load_config(self.config_path)  # refuses a key it does not know

    def command(self) -> list[str]:
        return [str(CRIOLIB), "serve", "--config", str(self.config_path),
                "--log-level", "warning"]

    def memory_pids(self) -> list[int]:
        # The service and the monitors (their --socket is under base); runc has exited.
        assert self.proc is not None
        return sorted({self.proc.pid, *processes_mentioning(str(self.base))})


class Containerd(Service):
    name = "containerd"

    def __init__(self, base: Path, registry: str, tag: str) -> None:
        super().__init__(base, registry, tag)
        self.sandbox_image = f"{registry}/testbed/pause:latest"

    def prepare(self) -> None:
        self.socket = self.base / "containerd.sock"
        self.cni_dir = self.base / "net.d"
        runc_root = self.base / "runc"
        self.runtime_roots = [runc_root / "k8s.io"]
        conflist(self.cni_dir, f"crlbc-{self.tag}", "10.251.0.0/24", self.base / "ipam")
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        text = f"""\
version = 2
root = "{self.base / 'root'}"
state = "{self.base / 'state'}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.base / 'containerd.sock.ttrpc'}"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.base / 'opt'}"
[{cri}]
  sandbox_image = "{self.sandbox_image}"
  disable_apparmor = true
  restrict_oom_score_adj = true
  enable_selinux = false
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{shutil.which('runc')}"
  Root = "{runc_root}"
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{PLUGIN_DIR}"
  conf_dir = "{self.cni_dir}"
  max_conf_num = 1
[{cri}.registry.mirrors."{self.registry}"]
  endpoint = ["http://{self.registry}"]
"""
        self.config_path = self.base / "config.toml"
        self.config_path.write_text(text)

    def command(self) -> list[str]:
        return [CONTAINERD, "--config", str(self.config_path)]

    def memory_pids(self) -> list[int]:
        assert self.proc is not None
        return sorted({self.proc.pid, *processes_mentioning(str(self.socket))})


# -- the measurements -------------------------------------------------------------------


def latency(services: list[Service], runs: int) -> dict[str, dict[str, list[float]]]:
    """Start and teardown of one pod, ``runs`` times per service, alternating."""
    out: dict[str, dict[str, list[float]]] = {s.name: {"start": [], "teardown": []}
                                              for s in services}
    for s in services:  # one untimed round each: first-use costs (imports, caches)
        pod, ctr = s.start_pod(10_000)
        s.check_running(ctr)
        s.stop_pod(pod, ctr)
    for i in range(runs):
        order = services if i % 2 == 0 else services[::-1]
        for s in order:
            s.recording = True
            start = time.perf_counter()
            pod, ctr = s.start_pod(i)
            out[s.name]["start"].append((time.perf_counter() - start) * 1000)
            s.recording = False
            s.check_running(ctr)
            s.recording = True
            start = time.perf_counter()
            s.stop_pod(pod, ctr)
            out[s.name]["teardown"].append((time.perf_counter() - start) * 1000)
            s.recording = False
    for s in services:
        if left := s.leftovers():
            raise RuntimeError(f"{s.name}: left after the runs: {', '.join(left)}")
    return out


def memory(service: Service, pods: int) -> dict[str, float]:
    """Memory of the service's processes with ``pods`` pods running."""
    assert service.proc is not None
    before = memory_kb([service.proc.pid])
    with ThreadPoolExecutor(max_workers=4) as pool:
        started = list(pool.map(lambda i: service.start_pod(20_000 + i), range(pods)))
    time.sleep(2)  # let transient runc processes go and monitors settle
    pids = service.memory_pids()
    rss, pss = memory_kb(pids)
    main_rss, main_pss = memory_kb([service.proc.pid])
    running = sum(1 for _, ctr in started if service.rt.ContainerStatus(
        api_pb2.ContainerStatusRequest(container_id=ctr)).status.state
        == api_pb2.CONTAINER_RUNNING)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda pc: service.stop_pod(*pc), started))
    if running != pods:
        raise RuntimeError(f"{service.name}: {running} of {pods} containers running")
    return {"rss": rss, "pss": pss, "idle_rss": before[0], "idle_pss": before[1],
            "processes": len(pids), "main_rss": main_rss, "main_pss": main_pss,
            "helper_rss": (rss - main_rss) / max(1, len(pids) - 1),
            "helper_pss": (pss - main_pss) / max(1, len(pids) - 1)}


# -- setup and teardown of the machine ---------------------------------------------------


@contextlib.contextmanager
def machine(tag: str) -> Iterator[Path]:
    """A tmpfs; on exit: unmount everything below it, bridges, iptables, ip_forward."""
    where = Path(tempfile.mkdtemp(prefix="criolib-bench-pods-"))
    saved_forward, saved_chains = FORWARD.read_text(), iptables_chains()
    existed = {p for p in (SHIM_SOCKETS, SHIM_SOCKETS.parent) if p.exists()}
    sh("mount", "-t", "tmpfs", "-o", "size=4g,mode=0755", "tmpfs", str(where))
    try:
        yield where
    finally:
        for point in mounts_under(where):
            if sh("umount", point, check=False) == "" and Path(point).is_mount():
                sh("umount", "-l", point, check=False)
        for bridge in (f"crlbk-{tag}", f"crlbc-{tag}"):
            sh("ip", "link", "del", bridge, check=False)
        drop_new_iptables_chains(saved_chains)
        FORWARD.write_text(saved_forward)
        with contextlib.suppress(OSError):
            where.rmdir()
        # containerd 1.6 puts its shims' sockets under /run/containerd/s whatever its state
        # dir; the shims remove their sockets, the directories are ours if we made them.
        for made in (SHIM_SOCKETS, SHIM_SOCKETS.parent):
            if made not in existed:
                with contextlib.suppress(OSError):
                    made.rmdir()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="pods started per service")
    parser.add_argument("--pods-for-rss", type=int, default=50,
                        help="pods running when memory is read")
    parser.add_argument("--only", choices=["criolib", "containerd"],
                        help="run one service alone (no ratio; for debugging)")
    parser.add_argument("--logs", type=Path, metavar="DIR",
                        help="copy the services' logs here at the end")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("service_pods.py needs root", file=sys.stderr)
        return 2
    for binary in ("runc", CONTAINERD, "containerd-shim-runc-v2", "docker-registry"):
        if shutil.which(binary) is None:
            print(f"service_pods.py needs {binary} (scripts/setup installs it)", file=sys.stderr)
            return 2
    tag = secrets.token_hex(3)
    images = build_test_images(CACHE)
    with machine(tag) as where, RegistryServer(auth="none") as registry:
        push_test_images(registry, images, ["busybox"])
        push_layout(registry, pause_layout(images, where / "pause"), "pause",
                    "testbed/pause", "latest")
        services: list[Service] = []
        try:
            kinds: list[tuple[type[Service], str]] = [(Criolib, "criolib"),
                                                      (Containerd, "containerd")]
            for cls, sub in kinds:
                if args.only not in (None, sub):
                    continue
                (where / sub).mkdir()
                s = cls(where / sub, registry.host, tag)
                services.append(s)
                s.start()
            for s in services:
                refs = [s.image] + ([s.sandbox_image] if isinstance(s, Containerd) else [])
                s.pull(refs)
            report(services, args)
        except grpc.RpcError as exc:
            print(f"a CRI call failed: {exc.code()}: {exc.details()}", file=sys.stderr)
            for s in services:
                print(f"--- {s.name} log tail:\n{s.log_tail()}", file=sys.stderr)
            return 1
        finally:
            for s in reversed(services):
                s.stop()
                if args.logs:
                    args.logs.mkdir(parents=True, exist_ok=True)
                    with contextlib.suppress(OSError):
                        shutil.copyfile(s.base / "service.log", args.logs / f"{s.name}.log")
    return 0


def ratio(a: float, b: float | None) -> str:
    return "" if b is None or b == 0 else f"{a / b:.2f}"


def report(services: list[Service], args: argparse.Namespace) -> None:
    names = [s.name for s in services]
    print("service_pods: " + " vs ".join(s.version for s in services)
          + f", runc {sh('runc', '--version').split()[2]}, {os.cpu_count()} cpus, "
          f"load {os.getloadavg()[0]:.2f}")
    times = latency(services, args.runs)
    print("\npod start (RunPodSandbox + CreateContainer + StartContainer) and teardown "
          "(StopContainer + RemoveContainer + StopPodSandbox + RemovePodSandbox), "
          f"N={args.runs}, ms")
    print(f"{'what':<10} " + " ".join(f"{n + ' median':>17} {'p90':>7}" for n in names)
          + f" {'ratio median':>13} {'ratio p90':>10}")
    for what in ("start", "teardown"):
        cells, figures = [], []
        for n in names:
            m, p = statistics.median(times[n][what]), percentile(times[n][what], 90)
            cells.append(f"{m:>17.1f} {p:>7.1f}")
            figures.append((m, p))
        line = f"{what:<10} " + " ".join(cells)
        if len(figures) == 2:
            line += f" {ratio(figures[0][0], figures[1][0]):>13} "
            line += f"{ratio(figures[0][1], figures[1][1]):>10}"
        print(line)
    print("\nthe same by call, median ms")
    for rpc in ("RunPodSandbox", "CreateContainer", "StartContainer", "StopContainer",
                "RemoveContainer", "StopPodSandbox", "RemovePodSandbox"):
        meds = [statistics.median(s.steps[rpc]) for s in services]
        line = f"  {rpc:<17} " + " ".join(f"{n}: {m:>6.1f}"
                                          for n, m in zip(names, meds, strict=True))
        if len(meds) == 2:
            line += f"   ratio {ratio(meds[0], meds[1])}"
        print(line)
    mem = {s.name: memory(s, args.pods_for_rss) for s in services}
    m = args.pods_for_rss
    print(f"\nmemory with {m} pods running (criolib: service + monitors; "
          "containerd: containerd + shims), kB")
    print(f"{'what':<30} " + " ".join(f"{n:>11}" for n in names) + f" {'ratio':>7}")
    rows = [("RSS, service alone, no pods", "idle_rss"), (f"RSS, service alone, {m} pods",
            "main_rss"), (f"RSS, all processes, {m} pods", "rss"),
            (f"PSS, service alone, {m} pods", "main_pss"),
            (f"PSS, all processes, {m} pods", "pss"),
            ("RSS per monitor / shim", "helper_rss"), ("PSS per monitor / shim", "helper_pss"),
            ("processes counted", "processes")]
    for label, key in rows:
        values = [mem[n][key] for n in names]
        line = f"{label:<30} " + " ".join(f"{v:>11,.0f}" for v in values)
        if len(values) == 2 and key != "processes":
            line += f" {ratio(values[0], values[1]):>7}"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
