"""Pod sandboxes (RunPodSandbox, Stop, Remove, Status, List) with the real CNI plugins.

Each test gets a conflist of its own (loopback, bridge on a bridge of its own name,
host-local on a private 10.253.x.0/24 with its dataDir in tmp, portmap), every
service path under tmp (``Config.for_root``), and a fixture that removes whatever a
failing test left: sandboxes, the bridge, new iptables chains, ``ip_forward``.
Namespaces are pinned in the tmp run dir (``<run>/{net,ipc,uts}ns/<id>``, the
config's ``namespaces_dir``); nsenter reaches a pod. The fixture unmounts those
directories, which pinning makes shared bind mounts of themselves (as ``ip netns``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import pytest

from criolib.cni import NetNS, PinnedNamespace, PluginError, PodNamespaces, RawExecutor
from criolib.service import (
    AlreadyExists,
    Config,
    FailedPrecondition,
    InvalidRequest,
    NotFound,
    ServiceError,
)
from criolib.service import _cri_types as cri
from criolib.service._sandbox import RWLock, SandboxManager
from criolib.service._sandbox_files import is_mountpoint, mount_shm, unmount
from criolib.service._sandbox_net import SHARED_CACHE_DIR, PodNetwork
from criolib.service._sandbox_pid import holder_alive, kill_pid_holder, start_time
from criolib.service._sandbox_plan import (
    namespace_options,
    normalize_sysctl_name,
    plan_pod,
)
from criolib.service._state import NameRegistry, SandboxRecord, StateStore
from criolib.testing import (
    drop_new_iptables_chains,
    iptables_chains,
    require_binaries,
    require_cni_plugins,
    require_root,
)

FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
NODE = cri.NamespaceMode.NODE
POD = cri.NamespaceMode.POD
CONTAINER = cri.NamespaceMode.CONTAINER
READY = cri.PodSandboxState.SANDBOX_READY
NOTREADY = cri.PodSandboxState.SANDBOX_NOTREADY


def sh(*argv: str, check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv}: {proc.returncode}: {proc.stderr}")
    return proc.stdout


def pod_config(name: str = "web", *, uid: str = "uid-1", namespace: str = "default",
               host_network: bool = False, **changes: Any) -> cri.PodSandboxConfig:
    mode = NODE if host_network else cri.NamespaceMode.POD
    options = cri.NamespaceOption(network=mode, pid=CONTAINER, ipc=mode)
    config = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0),
        linux=cri.LinuxPodSandboxConfig(security_context=cri.LinuxSandboxSecurityContext(
            namespace_options=options)))
    return attrs.evolve(config, **changes)


def request(config: cri.PodSandboxConfig, handler: str = "") -> cri.RunPodSandboxRequest:
    return cri.RunPodSandboxRequest(config=config, runtime_handler=handler)


@attrs.define
class FakeContainers:
    """The container side's hooks, recorded."""

    calls: list[tuple[str, str, int | None]] = attrs.field(factory=list)

    def stop_all(self, sandbox_id: str, timeout: int) -> None:
        self.calls.append(("stop_all", sandbox_id, timeout))

    def remove_all(self, sandbox_id: str) -> None:
        self.calls.append(("remove_all", sandbox_id, None))


class HoldingExecutor:
    """The real plugins, with the first ADD of ``bridge`` held until :attr:`go` is set
    (or failed, with ``fail``)."""

    def __init__(self, fail: bool = False) -> None:
        self.inner = RawExecutor()
        self.entered = threading.Event()
        self.go = threading.Event()
        self.fail = fail
        self.adds = 0
        self.sandbox_ids: list[str] = []

    def find_plugin(self, plugin_type: str, dirs: Sequence[str | os.PathLike[str]]) -> Path:
        return self.inner.find_plugin(plugin_type, dirs)

    def exec_plugin(self, path: Path, env: Mapping[str, str], stdin: bytes, *,
                    timeout: float, what: str) -> bytes:
        if env["CNI_COMMAND"] == "ADD" and path.name == "bridge":
            self.sandbox_ids.append(env["CNI_CONTAINERID"])
            self.adds += 1
            self.entered.set()
            if self.fail:
                raise PluginError(f"{what}: refused by the test", code=11, msg="test")
            assert self.go.wait(20), "the test never let the ADD go on"
        return self.inner.exec_plugin(path, env, stdin, timeout=timeout, what=what)


@attrs.define
class Bed:
    tmp: Path
    config: Config
    manager: SandboxManager
    state: StateStore
    names: NameRegistry
    bridge: str
    prefix: str
    ipam_dir: Path

    def run(self, config: cri.PodSandboxConfig) -> str:
        return self.manager.run_pod_sandbox(request(config)).pod_sandbox_id

    def status(self, sandbox_id: str, verbose: bool = False) -> cri.PodSandboxStatus:
        response = self.manager.pod_sandbox_status(
            cri.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=verbose))
        assert response.status is not None
        return response.status

    def stop(self, sandbox_id: str) -> None:
        self.manager.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))

    def remove(self, sandbox_id: str) -> None:
        self.manager.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))

    def settled_leftovers(self, ids: Sequence[str]) -> list[str]:
        """:meth:`leftovers` once the kernel is done: it destroys a namespace deleted by
        hand (and the host end of its veth) in a work queue, a moment later."""
        deadline = time.monotonic() + 5
        while (left := self.leftovers(ids)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left

    def reservations(self) -> list[str]:
        """host-local's reserved addresses (one file per IP)."""
        return sorted(p.name for p in self.ipam_dir.rglob("*") if p.is_file()
                      and p.name not in {"lock", "last_reserved_ip.0"})

    def leftovers(self, ids: Sequence[str], *, network: bool = True) -> list[str]:
        """Anything of these sandboxes still on the machine (``network``: and any veth,
        IP reservation or CNI cache entry of the test's network)."""
        found = []
        mounts = Path("/proc/self/mountinfo").read_text()
        for sandbox_id in ids:
            for kind in ("net", "ipc", "uts"):
                if (self.manager.namespaces_dir / f"{kind}ns" / sandbox_id).exists():
                    found.append(f"{kind} pin of {sandbox_id}")
            if sandbox_id in mounts:
                found.append(f"a mount of {sandbox_id}")
            if self.state.sandbox_dir(sandbox_id).exists():
                found.append(f"sandbox dir of {sandbox_id}")
        if not network:
            return found
        veths = sh("ip", "-o", "link", "show", "master", self.bridge, check=False)
        found += [f"veth {line.split(':')[1].strip()}" for line in veths.splitlines()]
        found += [f"IP reservation {r}" for r in self.reservations()]
        results = self.config.network.cache_dir / "results"
        if results.exists():
            found += [f"CNI cache {p.name}" for p in results.iterdir()]
        return found


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    require_root()
    plugin_dir = require_cni_plugins("bridge", "host-local", "loopback", "portmap")
    tag = secrets.token_hex(3)
    saved_forward = FORWARD.read_text()
    chains = iptables_chains()
    prefix = f"10.253.{1 + secrets.randbelow(250)}."
    base = Config.for_root(tmp_path / "root")
    config = attrs.evolve(base, network=attrs.evolve(base.network,
                                                     plugin_dirs=(str(plugin_dir),)))
    ipam_dir = tmp_path / "ipam"
    bridge = f"cni-sbx{tag}"
    config.network.network_dir.mkdir(parents=True)
    (config.network.network_dir / "10-test.conflist").write_text(f"""{{
      "cniVersion": "1.0.0", "name": "sbxtest-{tag}",
      "plugins": [
        {{"type": "loopback"}},
        {{"type": "bridge", "bridge": "{bridge}", "isGateway": true, "ipMasq": false,
          "ipam": {{"type": "host-local", "dataDir": "{ipam_dir}",
                    "ranges": [[{{"subnet": "{prefix}0/24"}}]]}}}},
        {{"type": "portmap", "capabilities": {{"portMappings": true}}}}
      ]}}""")
    state = StateStore(config.state_dir)
    names = NameRegistry("sandbox")
    manager = SandboxManager(config=config, state=state, names=names)
    b = Bed(tmp=tmp_path, config=config, manager=manager, state=state, names=names,
            bridge=bridge, prefix=prefix, ipam_dir=ipam_dir)
    try:
        yield b
    finally:
        manager.network.cni.executor = RawExecutor()
        for record in state.sandboxes():
            try:
                b.remove(record.id)
            except ServiceError:
                for kind in ("net", "ipc", "uts"):
                    PinnedNamespace(manager.namespaces_dir / f"{kind}ns" / record.id).remove()
        for kind in ("net", "ipc", "uts"):
            unmount(manager.namespaces_dir / f"{kind}ns", "test")
        assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()
        sh("ip", "link", "del", bridge, check=False)
        drop_new_iptables_chains(chains)
        FORWARD.write_text(saved_forward)


# -- the request checks (no root needed) -------------------------------------------------


def test_plan_checks_the_request(tmp_path: Path) -> None:
    config = Config.for_root(tmp_path)
    plan = plan_pod(request(pod_config(hostname="h1", linux=cri.LinuxPodSandboxConfig(
        sysctls={"net/ipv4/conf/eth0.1/forwarding": "1", "kernel.shm_rmid_forced": "1"}))),
        config)
    assert plan.name == "k8s_web_default_uid-1_0"
    assert plan.sysctls == {"net.ipv4.conf.eth0/1.forwarding": "1",
                            "kernel.shm_rmid_forced": "1"}
    assert plan.cgroup_parent == "/criolib" and plan.hostname == "h1"
    assert plan.namespace_kinds == ("net", "ipc", "uts")
    assert normalize_sysctl_name("net.ipv4.ip_forward") == "net.ipv4.ip_forward"
    # crictl's minimal config (no namespace options): pod network and IPC, PID per container
    bare = cri.PodSandboxConfig(metadata=cri.PodSandboxMetadata(name="a", uid="u", namespace="n"))
    assert namespace_options(bare) == cri.NamespaceOption(pid=CONTAINER)
    assert plan_pod(request(bare), config).hostname == "a"
    # the same request digests the same; another one not
    assert plan_pod(request(pod_config()), config).key == plan_pod(
        request(pod_config()), config).key
    assert plan_pod(request(pod_config()), config).key != plan_pod(
        request(pod_config(hostname="other")), config).key


def test_default_sysctls_apply_where_they_can(tmp_path: Path) -> None:
    base = Config.for_root(tmp_path)
    config = attrs.evolve(base, runtime=attrs.evolve(base.runtime, default_sysctls=(
        "net.core.somaxconn=1024", "kernel.panic=1", "kernel.msgmax = 9000")))
    pod = pod_config(linux=cri.LinuxPodSandboxConfig(sysctls={"net.core.somaxconn": "64"}))
    assert plan_pod(request(pod), config).sysctls == {"net.core.somaxconn": "64",
                                                      "kernel.msgmax": "9000"}
    host = plan_pod(request(pod_config(host_network=True)), config)
    assert host.sysctls == {} and host.namespace_kinds == ()


@pytest.mark.parametrize("req, error, words", [
    (cri.RunPodSandboxRequest(), InvalidRequest, "metadata"),
    (request(pod_config(uid="")), InvalidRequest, "metadata.uid"),
    (request(pod_config(), handler="nope"), InvalidRequest, "'nope'"),
    (request(pod_config(linux=cri.LinuxPodSandboxConfig(sysctls={"kernel.panic": "1"}))),
     InvalidRequest, "kernel.panic"),
    (request(pod_config(host_network=True, linux=cri.LinuxPodSandboxConfig(
        security_context=cri.LinuxSandboxSecurityContext(namespace_options=cri.NamespaceOption(
            network=NODE, ipc=NODE, pid=CONTAINER)),
        sysctls={"net.ipv4.ip_forward": "1"}))), InvalidRequest, "host's network"),
    (request(pod_config(linux=cri.LinuxPodSandboxConfig(
        security_context=cri.LinuxSandboxSecurityContext(
            namespace_options=cri.NamespaceOption(pid=cri.NamespaceMode.TARGET))))),
     InvalidRequest, "pid TARGET"),
    (request(pod_config(linux=cri.LinuxPodSandboxConfig(
        security_context=cri.LinuxSandboxSecurityContext(
            namespace_options=cri.NamespaceOption(userns_options=cri.UserNamespace(
                mode=cri.NamespaceMode.POD)))))),
     FailedPrecondition, "user namespaces"),
    (request(pod_config(linux=cri.LinuxPodSandboxConfig(cgroup_parent="kubepods.slice"))),
     InvalidRequest, "systemd slice"),
    (request(pod_config(dns_config=cri.DNSConfig(servers=["not an ip"]))), InvalidRequest,
     "dns_config"),
    (request(pod_config(hostname="x" * 65)), InvalidRequest, "hostname"),
    (request(pod_config(port_mappings=[cri.PortMapping(container_port=0, host_port=80)])),
     InvalidRequest, "port_mappings[0]"),
])
def test_bad_requests_are_refused_naming_the_field(
        tmp_path: Path, req: cri.RunPodSandboxRequest, error: type[Exception],
        words: str) -> None:
    with pytest.raises(error) as info:
        plan_pod(req, Config.for_root(tmp_path))
    assert words in str(info.value)


# -- with the real plugins ----------------------------------------------------------------


def test_run_makes_namespaces_files_and_network_then_stop_and_remove(bed: Bed) -> None:
    dns = cri.DNSConfig(servers=["10.96.0.10"], searches=["default.svc.cluster.local"],
                        options=["ndots:5"])
    config = pod_config(hostname="web-0", dns_config=dns, labels={"app": "web"},
                        annotations={"note": "x"},
                        linux=cri.LinuxPodSandboxConfig(
                            cgroup_parent="/kubepods/pod1",
                            sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
                            security_context=cri.LinuxSandboxSecurityContext(
                                namespace_options=cri.NamespaceOption(pid=CONTAINER))))
    sandbox_id = bed.run(config)
    assert len(sandbox_id) == 64 and int(sandbox_id, 16) >= 0
    record = bed.manager.sandbox(sandbox_id[:12])
    assert record.id == sandbox_id and record.state == READY
    assert record.ip.startswith(bed.prefix) and record.cgroup_parent == "/kubepods/pod1"
    assert record.extra["sysctls"] == {"net.ipv4.ip_unprivileged_port_start": "0"}
    for kind in ("net", "ipc", "uts"):
        assert PinnedNamespace.open(record.namespaces[kind], kind).exists()
    assert f"inet {record.ip}/24" in sh("nsenter", f"--net={record.namespaces['net']}", "ip",
                                         "-4", "addr", "show", "eth0")
    assert sh("nsenter", f"--uts={record.namespaces['uts']}", "hostname").strip() == "web-0"
    sandbox_dir = Path(record.sandbox_dir)
    assert (sandbox_dir / "hostname").read_text() == "web-0\n"
    assert (sandbox_dir / "resolv.conf").read_text() == (
        "search default.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n")
    hosts = (sandbox_dir / "hosts").read_text()
    assert "127.0.0.1\tlocalhost\n" in hosts and f"{record.ip}\tweb-0\n" in hosts
    shm = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
           if f" {record.shm_path} " in line]
    assert len(shm) == 1 and "nosuid,nodev,noexec" in shm[0] and "tmpfs" in shm[0]
    assert "size=65536k" in shm[0]
    assert os.stat(record.shm_path).st_mode & 0o7777 == 0o1777
    assert Path(record.log_directory).is_dir()
    assert record.log_directory == str(bed.config.runtime.log_dir / sandbox_id)

    status = bed.status(sandbox_id, verbose=True)
    assert (status.id, status.state, status.labels, status.annotations) == (
        sandbox_id, READY, {"app": "web"}, {"note": "x"})
    assert status.metadata == config.metadata and status.created_at > 0
    assert status.network == cri.PodSandboxNetworkStatus(ip=record.ip)
    assert status.linux is not None and status.linux.namespaces is not None
    assert status.linux.namespaces.options == cri.NamespaceOption(pid=CONTAINER)
    assert f'"{sandbox_id}"' in bed.manager.pod_sandbox_status(cri.PodSandboxStatusRequest(
        pod_sandbox_id=sandbox_id, verbose=True)).info["info"]
    assert bed.reservations() == [record.ip]

    hooks = FakeContainers()
    bed.manager.containers = hooks
    bed.stop(sandbox_id)
    bed.stop(sandbox_id)  # idempotent
    timeout = bed.config.runtime.ctr_stop_timeout
    assert hooks.calls == [("stop_all", sandbox_id, timeout)] * 2
    assert bed.status(sandbox_id).state == NOTREADY
    assert bed.status(sandbox_id).network == cri.PodSandboxNetworkStatus()
    assert bed.reservations() == []  # CNI DEL at stop
    assert not Path(record.namespaces["net"]).exists()  # CRI-O removes them at stop
    assert not is_mountpoint(Path(record.shm_path))
    bed.remove(sandbox_id)
    assert hooks.calls[-1] == ("remove_all", sandbox_id, None)
    bed.remove(sandbox_id)  # idempotent
    bed.stop(sandbox_id)  # unknown: fine, as CRI-O
    with pytest.raises(NotFound, match=sandbox_id):
        bed.status(sandbox_id)
    assert bed.leftovers([sandbox_id]) == []
    assert not Path(record.log_directory).exists()
    # the name is free again
    again = bed.run(config)
    assert again != sandbox_id
    bed.remove(again)
    assert bed.leftovers([again]) == []


def test_two_pods_ping_each_other_and_ports_map(bed: Bed) -> None:
    require_binaries("ping", "iptables-save")
    gateway = f"{bed.prefix}1"
    port = 41000 + secrets.randbelow(1000)
    a = bed.run(pod_config("a", uid="ua", port_mappings=[
        cri.PortMapping(container_port=8080, host_port=port, host_ip=gateway),
        cri.PortMapping(container_port=9090)]))  # host_port 0: no mapping
    b = bed.run(pod_config("b", uid="ub"))
    ip_a, ip_b = bed.manager.sandbox(a).ip, bed.manager.sandbox(b).ip
    assert ip_a != ip_b
    net_a = bed.manager.sandbox(a).namespaces["net"]
    out = sh("nsenter", f"--net={net_a}", "ping", "-c", "1", "-W", "2", ip_b)
    assert "1 received" in out
    with NetNS.open(bed.manager.sandbox(b).namespaces["net"]).enter():
        assert ip_b in sh("ip", "-4", "-o", "addr", "show", "eth0")
    nat = sh("iptables-save", "-t", "nat")
    dnat = [line for line in nat.splitlines() if f"--dport {port}" in line and "DNAT" in line]
    assert dnat and f"{ip_a}:8080" in " ".join(dnat)
    assert "9090" not in nat
    bed.remove(a)
    bed.remove(b)
    assert f"--dport {port}" not in sh("iptables-save", "-t", "nat")
    assert bed.leftovers([a, b]) == []


def test_host_network_pod_has_no_netns_and_no_cni(bed: Bed) -> None:
    sandbox_id = bed.run(pod_config(host_network=True))
    record = bed.manager.sandbox(sandbox_id)
    assert record.namespaces == {} and record.network_name == "" and record.ip == ""
    assert record.shm_path == "/dev/shm"
    assert not (bed.manager.namespaces_dir / "netns" / sandbox_id).exists()
    assert not (bed.config.network.cache_dir / "results").exists()
    assert (Path(record.sandbox_dir) / "hostname").read_text() == os.uname().nodename + "\n"
    assert (Path(record.sandbox_dir) / "hosts").read_bytes() == Path("/etc/hosts").read_bytes()
    assert (Path(record.sandbox_dir) / "resolv.conf").read_bytes() == \
        Path("/etc/resolv.conf").read_bytes()
    status = bed.status(sandbox_id)
    assert status.network == cri.PodSandboxNetworkStatus()
    assert status.linux is not None and status.linux.namespaces is not None
    assert status.linux.namespaces.options == cri.NamespaceOption(
        network=NODE, ipc=NODE, pid=CONTAINER)
    bed.stop(sandbox_id)
    bed.remove(sandbox_id)
    assert bed.leftovers([sandbox_id]) == []


def test_retry_in_flight_gets_the_same_sandbox(bed: Bed) -> None:
    hold = HoldingExecutor()
    bed.manager.network.cni.executor = hold
    config = pod_config("slow")
    results: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(bed.run(config))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    first = threading.Thread(target=run)
    first.start()
    assert hold.entered.wait(10)
    retry = threading.Thread(target=run)
    retry.start()
    time.sleep(0.2)
    assert retry.is_alive() and results == []  # the retry waits for the first
    with pytest.raises(AlreadyExists, match="different configuration"):
        bed.run(pod_config("slow", hostname="other"))
    assert bed.manager.list_pod_sandbox(cri.ListPodSandboxRequest()).items == []
    hold.go.set()
    first.join(20)
    retry.join(20)
    assert errors == [] and len(results) == 2 and results[0] == results[1]
    assert hold.adds == 1
    # a retry of the same request after the first finished (the kubelet's, after a
    # timeout) gets the sandbox; another configuration for the name is refused
    assert bed.run(config) == results[0]
    with pytest.raises(AlreadyExists, match=results[0]):
        bed.run(pod_config("slow", hostname="other"))
    bed.remove(results[0])
    assert bed.leftovers(results[:1]) == []


def test_failed_run_undoes_everything_and_frees_the_name(bed: Bed) -> None:
    hold = HoldingExecutor(fail=True)
    bed.manager.network.cni.executor = hold
    with pytest.raises(ServiceError, match=r"pod default/broken .*CNI ADD.*refused"):
        bed.run(pod_config("broken"))
    assert bed.state.sandboxes() == []
    assert list((bed.config.state_dir / "sandboxes").iterdir()) == []
    assert str(bed.config.state_dir) not in Path("/proc/self/mountinfo").read_text()
    assert len(hold.sandbox_ids) == 1 and bed.leftovers(hold.sandbox_ids) == []
    assert bed.reservations() == []
    assert not bed.config.runtime.log_dir.exists() or not any(bed.config.runtime.log_dir.iterdir())
    assert bed.names.holder("k8s_broken_default_uid-1_0") is None
    bed.manager.network.cni.executor = RawExecutor()
    sandbox_id = bed.run(pod_config("broken"))  # the name was released
    bed.remove(sandbox_id)
    assert bed.leftovers([sandbox_id]) == []


def test_failure_after_add_dels_the_attachment(bed: Bed) -> None:
    blocker = bed.tmp / "a-file"
    blocker.write_text("")
    with pytest.raises(ServiceError, match="log directory"):
        bed.run(pod_config(log_directory=str(blocker / "logs")))
    assert bed.state.sandboxes() == [] and bed.reservations() == []
    assert not list((bed.config.network.cache_dir / "results").iterdir())
    assert list((bed.config.state_dir / "sandboxes").iterdir()) == []


def test_remove_after_the_netns_was_deleted_by_hand_still_dels(bed: Bed) -> None:
    sandbox_id = bed.run(pod_config())
    ip = bed.manager.sandbox(sandbox_id).ip
    assert bed.reservations() == [ip]
    PinnedNamespace(bed.manager.sandbox(sandbox_id).namespaces["net"]).remove()  # ip netns del
    bed.remove(sandbox_id)
    assert bed.reservations() == []
    assert bed.settled_leftovers([sandbox_id]) == []


def test_list_filters_by_id_state_and_labels(bed: Bed) -> None:
    ids = [bed.run(pod_config(f"p{i}", uid=f"u{i}", host_network=True,
                              labels={"app": "web" if i < 2 else "db", "i": str(i)}))
           for i in range(3)]
    bed.stop(ids[1])

    def listed(**filter_fields: Any) -> list[str]:
        wanted = cri.PodSandboxFilter(**filter_fields) if filter_fields else None
        return [p.id for p in bed.manager.list_pod_sandbox(
            cri.ListPodSandboxRequest(filter=wanted)).items]

    assert sorted(listed()) == sorted(ids)
    assert listed(id=ids[2][:10]) == [ids[2]]
    assert listed(id=ids[2]) == [ids[2]]
    assert sorted(listed(state=cri.PodSandboxStateValue(state=READY))) == sorted(
        [ids[0], ids[2]])
    assert listed(state=cri.PodSandboxStateValue(state=NOTREADY)) == [ids[1]]
    assert sorted(listed(label_selector={"app": "web"})) == sorted(ids[:2])
    assert listed(label_selector={"app": "web", "i": "1"}) == [ids[1]]
    assert listed(label_selector={"app": "web"},
                  state=cri.PodSandboxStateValue(state=READY)) == [ids[0]]
    assert listed(label_selector={"nope": "x"}) == []
    item = bed.manager.list_pod_sandbox(cri.ListPodSandboxRequest(
        filter=cri.PodSandboxFilter(id=ids[0]))).items[0]
    assert item.metadata is not None and item.metadata.name == "p0"
    assert item.labels == {"app": "web", "i": "0"} and item.created_at > 0
    for sandbox_id in ids:
        bed.remove(sandbox_id)
    assert listed() == []


def test_unknown_and_empty_ids(bed: Bed) -> None:
    with pytest.raises(NotFound, match="f" * 64):
        bed.status("f" * 64)
    with pytest.raises(NotFound):
        bed.manager.sandbox("f" * 64)
    bed.stop("f" * 64)
    bed.remove("f" * 64)
    for call in (bed.stop, bed.remove, bed.status):
        with pytest.raises(InvalidRequest, match="pod_sandbox_id"):
            call("")
    with pytest.raises(InvalidRequest, match=r"kernel\.panic"):
        bed.run(pod_config(linux=cri.LinuxPodSandboxConfig(sysctls={"kernel.panic": "1"})))
    assert bed.state.sandboxes() == [] and bed.names.holder("k8s_web_default_uid-1_0") is None


def test_recover_restores_names_marks_lost_pods_and_cleans_half_made_ones(bed: Bed) -> None:
    kept = bed.run(pod_config("kept", uid="k"))
    lost = bed.run(pod_config("lost", uid="l"))
    PinnedNamespace(bed.manager.sandbox(lost).namespaces["net"]).remove()
    # a RunPodSandbox cut short by a crash: its record says "creating"
    half_id = secrets.token_hex(32)
    half_dir = bed.state.sandbox_dir(half_id)
    half_dir.mkdir()
    mount_shm(half_dir / "shm", "test")
    pins = PodNamespaces.create(half_id, ("net", "uts"), base=bed.manager.namespaces_dir)
    bed.state.put(SandboxRecord(
        id=half_id, name="k8s_half_default_h_0", config=pod_config("half", uid="h"),
        state=NOTREADY, namespaces={k: str(pins.path(k)) for k in ("net", "uts")},
        sandbox_dir=str(half_dir), shm_path=str(half_dir / "shm"),
        extra={"creating": True, "network_down": True}))
    # a restart: new registry and manager over the same records
    names = NameRegistry("sandbox")
    manager = SandboxManager(config=bed.config, state=StateStore(bed.config.state_dir),
                             names=names)
    manager.recover()
    bed.manager, bed.state, bed.names = manager, manager.state, names
    assert names.holder(manager.sandbox(kept).name) == kept
    assert manager.sandbox(kept).state == READY
    assert manager.sandbox(lost).state == NOTREADY
    with pytest.raises(NotFound):
        manager.sandbox(half_id)
    assert bed.leftovers([half_id], network=False) == []
    with pytest.raises(AlreadyExists, match=kept):
        bed.run(pod_config("kept", uid="k"))
    bed.remove(kept)
    bed.remove(lost)
    assert bed.settled_leftovers([kept, lost]) == []


def test_pods_run_and_go_in_parallel(bed: Bed) -> None:
    count = 8
    with ThreadPoolExecutor(count) as pool:
        ids = list(pool.map(lambda i: bed.run(pod_config(f"par{i}", uid=f"p{i}")), range(count)))
        assert len(set(ids)) == count
        ips = {bed.manager.sandbox(i).ip for i in ids}
        assert len(ips) == count and len(bed.reservations()) == count
        list(pool.map(bed.remove, ids))
    assert bed.state.sandboxes() == []
    assert bed.leftovers(ids) == []


# -- shared PID namespace (pid POD) ------------------------------------------------------


def pid_pod_config(name: str, uid: str) -> cri.PodSandboxConfig:
    options = cri.NamespaceOption(network=POD, pid=POD, ipc=POD)
    return pod_config(name, uid=uid, linux=cri.LinuxPodSandboxConfig(
        security_context=cri.LinuxSandboxSecurityContext(namespace_options=options)))


def test_plan_of_a_pid_pod_pod(tmp_path: Path) -> None:
    plan = plan_pod(request(pid_pod_config("p", "u")), Config.for_root(tmp_path))
    assert plan.shared_pid and plan.namespace_kinds == ("net", "ipc", "uts")
    assert not plan_pod(request(pod_config()), Config.for_root(tmp_path)).shared_pid


def test_pid_pod_gets_a_holder_in_a_pid_namespace_of_its_own(bed: Bed) -> None:
    sandbox_id = bed.run(pid_pod_config("shared", "s"))
    record = bed.manager.sandbox(sandbox_id)
    holder = record.extra["pid_holder"]
    pid, ns = holder["pid"], record.namespaces["pid"]
    assert ns == f"/proc/{pid}/ns/pid" and holder_alive(holder)
    assert os.stat(ns).st_ino != os.stat("/proc/self/ns/pid").st_ino
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "sleep"
    nspid = [line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
             if line.startswith("NSpid:")]
    assert nspid == [f"NSpid:\t{pid}\t1"]  # pid 1 of its namespace
    # a process joining the namespace (as a container does) sees the holder as pid 1
    # and nothing of the host
    seen = sh("nsenter", f"--pid={ns}", "--", "unshare", "--mount", "--mount-proc", "sh",
              "-c", "cat /proc/1/comm; ls /proc | grep -c '^[0-9]'").split()
    assert seen[0] == "sleep" and int(seen[1]) < 10
    joined = subprocess.Popen(["nsenter", f"--pid={ns}", "--", "sleep", "60"])
    info = json.loads(bed.manager.pod_sandbox_status(
        cri.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True)).info["info"])
    assert info["infraProcess"]["pid"] == pid
    try:
        bed.stop(sandbox_id)
        # the holder is gone, and with it everything in its namespace; unshare reaped
        assert not holder_alive(holder)
        assert joined.wait(5) != 0
        assert not Path(f"/proc/{holder['unshare_pid']}").exists()
        assert start_time(pid) is None
        bed.stop(sandbox_id)  # idempotent
    finally:
        joined.kill()
        joined.wait()
    bed.remove(sandbox_id)
    assert bed.leftovers([sandbox_id]) == []


def test_recover_marks_a_pid_pod_whose_holder_died_notready(bed: Bed) -> None:
    alive = bed.run(pid_pod_config("alive", "a"))
    dead = bed.run(pid_pod_config("dead", "d"))
    holder = bed.manager.sandbox(dead).extra["pid_holder"]
    os.kill(holder["pid"], 9)
    deadline = time.monotonic() + 5
    while holder_alive(holder) and time.monotonic() < deadline:
        time.sleep(0.01)
    names = NameRegistry("sandbox")
    manager = SandboxManager(config=bed.config, state=StateStore(bed.config.state_dir),
                             names=names)
    manager.recover()
    bed.manager, bed.state, bed.names = manager, manager.state, names
    assert manager.sandbox(alive).state == READY
    assert manager.sandbox(dead).state == NOTREADY
    alive_holder = manager.sandbox(alive).extra["pid_holder"]
    bed.remove(alive)  # not this manager's child: killed by pid and start time
    bed.remove(dead)
    assert not holder_alive(alive_holder)
    for h in (holder, alive_holder):  # this process started them: reaped, no zombie
        assert start_time(h["unshare_pid"]) != h["unshare_start_time"]
    assert bed.settled_leftovers([alive, dead]) == []


def test_a_reused_pid_is_never_killed() -> None:
    # our own pid with a wrong start time: a holder whose pid now names another process
    me = {"pid": os.getpid(), "start_time": (start_time(os.getpid()) or 0) + 1,
          "unshare_pid": os.getpid(), "unshare_start_time": 1}
    assert not holder_alive(me)
    kill_pid_holder(me, "test")  # returns: neither signalled nor waited for


# -- stop timeout, the sandbox lock -----------------------------------------------------


def test_stop_gives_each_container_ctr_stop_timeout(bed: Bed) -> None:
    config = attrs.evolve(bed.config, runtime=attrs.evolve(bed.config.runtime,
                                                           ctr_stop_timeout=7))
    manager = SandboxManager(config=config, state=bed.state, names=bed.names)
    hooks = FakeContainers()
    manager.containers = hooks
    sandbox_id = manager.run_pod_sandbox(request(pod_config(host_network=True))).pod_sandbox_id
    manager.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))
    assert hooks.calls == [("stop_all", sandbox_id, 7)]
    manager.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))
    assert hooks.calls[-2:] == [("stop_all", sandbox_id, 7), ("remove_all", sandbox_id, None)]


def test_rwlock_shares_readers_and_excludes_writers() -> None:
    lock = RWLock()
    order: list[str] = []
    both_in = threading.Barrier(2, timeout=5)

    def reader(tag: str, meet: bool) -> None:
        with lock.shared():
            order.append(tag)
            if meet:
                both_in.wait()

    def writer() -> None:
        with lock.exclusive():
            order.append("w")

    with lock.shared():
        other = threading.Thread(target=reader, args=("r2", True))
        other.start()
        both_in.wait()  # two shared holders at once
        other.join(5)
        w = threading.Thread(target=writer)
        w.start()
        deadline = time.monotonic() + 5
        while not lock._writers_waiting:  # the writer is queued (even on a loaded machine)
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(0.05)
        assert order == ["r2"] and w.is_alive()  # the writer waits for the reader
        late = threading.Thread(target=reader, args=("r3", False))
        late.start()
        time.sleep(0.1)
        assert order == ["r2"]  # a writer waits: new readers wait behind it
    w.join(5)
    late.join(5)
    assert order == ["r2", "w", "r3"]
    with lock.exclusive():
        blocked = threading.Thread(target=reader, args=("r4", False))
        blocked.start()
        time.sleep(0.05)
        assert "r4" not in order
    blocked.join(5)
    assert order[-1] == "r4"


def test_remove_waits_for_a_guarded_create(bed: Bed) -> None:
    sandbox_id = bed.run(pod_config("guarded", host_network=True))
    inside, leave = threading.Event(), threading.Event()
    seen: list[object] = []

    def create() -> None:
        with bed.manager.guard(sandbox_id[:12]) as full:
            seen.append(full)
            inside.set()
            assert leave.wait(10)
            seen.append(bed.manager.sandbox(full).state)  # still there, still READY

    creator = threading.Thread(target=create)
    creator.start()
    assert inside.wait(5)
    remover = threading.Thread(target=bed.remove, args=(sandbox_id,))
    stopper = threading.Thread(target=bed.stop, args=(sandbox_id,))
    remover.start()
    stopper.start()
    time.sleep(0.2)
    assert remover.is_alive() and stopper.is_alive()
    assert bed.manager.sandbox(sandbox_id).state == READY
    leave.set()
    for t in (creator, remover, stopper):
        t.join(10)
    assert seen == [sandbox_id, READY]
    # a guard after the remove: the re-check inside finds no sandbox
    with bed.manager.guard(sandbox_id) as full, pytest.raises(NotFound):
        bed.manager.sandbox(full)
    assert bed.state.sandboxes() == []


# -- CNI GC at start ---------------------------------------------------------------------


def cache_entries(bed: Bed) -> list[str]:
    results = bed.config.network.cache_dir / "results"
    return sorted(p.name for p in results.iterdir()) if results.exists() else []


def test_recover_dels_attachments_of_sandboxes_no_longer_known(bed: Bed) -> None:
    kept = bed.run(pod_config("kept", uid="k"))
    gone = bed.run(pod_config("gone", uid="g"))
    record = bed.manager.sandbox(gone)
    assert len(bed.reservations()) == 2 and len(cache_entries(bed)) == 2
    # a reboot: /run (records, namespaces, shm) is wiped, the CNI cache and IPAM not
    for kind in ("net", "ipc", "uts"):
        PinnedNamespace(record.namespaces[kind]).remove()
    unmount(Path(record.shm_path), "test")
    shutil.rmtree(record.sandbox_dir)
    shutil.rmtree(record.log_directory)
    bed.state.delete_sandbox(gone)
    names = NameRegistry("sandbox")
    manager = SandboxManager(config=bed.config, state=StateStore(bed.config.state_dir),
                             names=names)
    manager.recover()
    bed.manager, bed.state, bed.names = manager, manager.state, names
    assert bed.reservations() == [manager.sandbox(kept).ip]
    assert [e for e in cache_entries(bed) if gone in e] == []
    assert [e for e in cache_entries(bed) if kept in e] != []
    bed.remove(kept)
    assert bed.settled_leftovers([kept, gone]) == []


def test_gc_only_on_a_cni_cache_of_criolib_own(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    own = Config.for_root(tmp_path)
    own.network.network_dir.mkdir(parents=True)
    (own.network.network_dir / "10-a.conflist").write_text(
        '{"cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "loopback"}]}')
    shared = attrs.evolve(own, network=attrs.evolve(own.network,
                                                    cache_dir=SHARED_CACHE_DIR))
    for config, expected in ((shared, []), (own, [("a", [("id1", "eth0")])])):
        network = PodNetwork(config)
        calls: list[tuple[str, list[tuple[str, str]]]] = []
        monkeypatch.setattr(network.cni, "gc",
                            lambda net, valid, calls=calls: calls.append((net.name, list(valid))))
        network.gc({"id1"})
        assert calls == expected
        assert network.owns_cache == bool(expected)
