"""End to end over gRPC with the real parts: what a kubelet does to run two pods.

``criolib serve`` runs as a subprocess on a socket under a tmpfs; the client is the
cri-api stubs (crictl's wire protocol). The image is pulled by a name whose registry
does not exist (``example.test``), through a registries.conf mirror: the test bed's
registry behind a recording proxy. Two pods on the test's own CNI bridge, a busybox
container in each writing a line every 100 ms; pod A pings pod B by the IP
PodSandboxStatus reports; the log file is read in the kubelet's format; then
everything is stopped and removed, and nothing may be left: mounts, namespace pins,
veths, host-local reservations, monitor processes, runtime state, storage containers,
images or layers, port-mapping rules. Last, SIGTERM stops the server with status 0.
"""

from __future__ import annotations

import datetime
import re
import secrets
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import attrs
import pytest

from criolib.service import Config, load_config
from criolib.testing import RegistryServer, TestbedError, service_config_toml, start_service
from tests.service.conftest import (
    MIRRORED_IMAGE,
    ServiceBed,
    api_pb2,
    container_config,
    grpc,
    pod_config,
    wait_for,
)

pytestmark = pytest.mark.integration

#: A line every 100 ms on stdout, numbered; "trap" makes pod A's container leave with 7
#: on SIGTERM (pod B's has none: as PID 1 it ignores SIGTERM and is killed).
LOOP = 'i=0; while true; do echo "line $i"; i=$((i+1)); sleep 0.1; done'
TRAPPED_LOOP = f"trap 'exit 7' TERM; {LOOP}"
#: A TCP server on pod A's port 80 (a second container: it shares the pod's network).
WEB = "exec nc -ll -p 80 -e echo hello-from-a"
#: The kubelet's CRI log line: RFC 3339 nano timestamp, stream, P(artial)/F(ull), text.
CRI_LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) "
    r"(stdout|stderr) ([PF]) (.*)$")
DNS = api_pb2.DNSConfig(servers=["10.96.0.10"], searches=["ns1.svc.cluster.local"],
                        options=["ndots:5"])


def _nat_rules() -> str:
    return subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True,
                          timeout=30, check=True).stdout


def _log_lines(path: Path) -> list[tuple[datetime.datetime, str, str, str]]:
    """(time, stream, tag, text) of each line of a CRI log file."""
    parsed = []
    for line in path.read_text().splitlines():
        match = CRI_LOG_LINE.match(line)
        assert match, f"{path}: not a CRI log line: {line!r}"
        seconds, fraction, zone, stream, tag, text = match.groups()
        micros = (fraction or "0")[:6].ljust(6, "0")
        when = datetime.datetime.fromisoformat(
            f"{seconds}.{micros}{'+00:00' if zone == 'Z' else zone}")
        parsed.append((when, stream, tag, text))
    return parsed


def _code(call: Any) -> Any:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


@pytest.mark.parametrize("runtime, monitor", [
    ("crun", "criolib"), ("crun", "conmon"), ("runc", "criolib")])
def test_two_pods_on_the_bridge_from_pull_to_nothing_left(
        service_beds: Any, criolib_registry: RegistryServer, runtime: str,
        monitor: str) -> None:
    bed: ServiceBed = service_beds(runtime, monitor, criolib_registry)
    client = bed.serve()

    version = client.call("Version", api_pb2.VersionRequest(version="v1"))
    assert (version.runtime_name, version.runtime_api_version) == ("criolib", "v1")
    conditions = {c.type: c for c in client.call(
        "Status", api_pb2.StatusRequest()).status.conditions}
    assert conditions["RuntimeReady"].status, conditions["RuntimeReady"].message
    assert conditions["NetworkReady"].status, conditions["NetworkReady"].message

    # -- the image, through the mirror ---------------------------------------------------
    image_ref = client.pull(MIRRORED_IMAGE)
    assert bed.mirror is not None
    paths = [r.path for r in bed.mirror.requests]
    assert any(p.startswith("/v2/testbed/busybox/manifests/") for p in paths), paths
    images = client.call("ListImages", api_pb2.ListImagesRequest()).images
    assert [list(i.repo_tags) for i in images] == [[MIRRORED_IMAGE]]
    assert image_ref.removeprefix("sha256:") == images[0].id.removeprefix("sha256:")

    # -- two pods, a container in each --------------------------------------------------
    host_port = 30000 + secrets.randbelow(20000)
    logs = {name: bed.base / "pods" / f"default_{name}_uid-{name}" for name in "ab"}
    pods = {
        "a": pod_config("a", log_directory=str(logs["a"]), dns_config=DNS,
                        port_mappings=[api_pb2.PortMapping(
                            protocol=api_pb2.TCP, container_port=80, host_port=host_port)]),
        "b": pod_config("b", log_directory=str(logs["b"]), dns_config=DNS),
    }
    pod_ids = {name: client.run_pod(config) for name, config in pods.items()}
    assert len(set(pod_ids.values())) == 2
    ips = {}
    for name, pod_id in pod_ids.items():
        status = client.pod_status(pod_id)
        assert status.state == api_pb2.SANDBOX_READY
        assert status.metadata.name == name
        ips[name] = status.network.ip
        assert ips[name].startswith(bed.subnet), (name, ips[name], bed.subnet)
    assert ips["a"] != ips["b"]
    assert len(bed.veths()) == 2
    assert f"--dport {host_port}" in _nat_rules()

    ctr_ids = {
        "a": client.create(pod_ids["a"], container_config(
            "a", TRAPPED_LOOP, add_caps=("NET_RAW",)), pods["a"]),
        "b": client.create(pod_ids["b"], container_config("b", LOOP), pods["b"]),
    }
    web = client.create(pod_ids["a"], container_config("web", WEB), pods["a"])
    for cid in [*ctr_ids.values(), web]:
        assert client.status(cid).state == api_pb2.CONTAINER_CREATED
        client.start(cid)
    for name, cid in ctr_ids.items():
        status = client.status(cid)
        assert status.state == api_pb2.CONTAINER_RUNNING, (name, status)
        assert status.started_at > 0 and status.image.image
        assert status.log_path == str(logs[name] / name / "0.log")
    listed = client.call("ListContainers", api_pb2.ListContainersRequest()).containers
    assert sorted((c.id, c.pod_sandbox_id) for c in listed) == sorted(
        [(ctr_ids["a"], pod_ids["a"]), (ctr_ids["b"], pod_ids["b"]), (web, pod_ids["a"])])
    in_a = client.call("ListContainers", api_pb2.ListContainersRequest(
        filter=api_pb2.ContainerFilter(pod_sandbox_id=pod_ids["a"]))).containers
    assert sorted(c.id for c in in_a) == sorted([ctr_ids["a"], web])

    # -- exec: A reaches B; the DNS config is A's resolv.conf ------------------------------
    ping = client.call("ExecSync", api_pb2.ExecSyncRequest(
        container_id=ctr_ids["a"], cmd=["ping", "-c", "1", "-W", "5", ips["b"]], timeout=20))
    assert ping.exit_code == 0, (ping.stdout, ping.stderr)
    assert b"1 packets received" in ping.stdout, ping.stdout
    resolv = client.call("ExecSync", api_pb2.ExecSyncRequest(
        container_id=ctr_ids["a"], cmd=["cat", "/etc/resolv.conf"], timeout=10))
    assert resolv.exit_code == 0
    assert b"nameserver 10.96.0.10" in resolv.stdout
    assert b"ndots:5" in resolv.stdout and b"ns1.svc.cluster.local" in resolv.stdout
    # B reaches A's server; the host reaches it through the port mapping
    fetch = client.call("ExecSync", api_pb2.ExecSyncRequest(
        container_id=ctr_ids["b"], cmd=["nc", "-w", "5", ips["a"], "80"], timeout=20))
    assert (fetch.exit_code, fetch.stdout) == (0, b"hello-from-a\n"), fetch
    gateway = f"{bed.subnet}1"  # the bridge's address (isGateway)
    with socket.create_connection((gateway, host_port), timeout=5) as conn:
        conn.settimeout(5)
        assert conn.recv(100) == b"hello-from-a\n"
    hostname = client.call("ExecSync", api_pb2.ExecSyncRequest(
        container_id=ctr_ids["b"], cmd=["hostname"], timeout=10))
    assert hostname.stdout == b"b\n"
    failed = client.call("ExecSync", api_pb2.ExecSyncRequest(
        container_id=ctr_ids["b"], cmd=["sh", "-c", "exit 4"], timeout=10))
    assert failed.exit_code == 4

    # -- the log, in the kubelet's format --------------------------------------------------
    log_a = logs["a"] / "a" / "0.log"
    wait_for("5 lines in pod A's log", lambda: log_a.exists()
             and len(log_a.read_text().splitlines()) >= 5)
    entries = _log_lines(log_a)
    assert [(s, t) for _, s, t, _ in entries] == [("stdout", "F")] * len(entries)
    assert [m for *_, m in entries] == [f"line {i}" for i in range(len(entries))]
    times = [when for when, *_ in entries]
    assert times == sorted(times)
    assert abs((datetime.datetime.now(datetime.UTC) - times[0]).total_seconds()) < 120

    # -- stop and remove ---------------------------------------------------------------
    client.call("StopContainer", api_pb2.StopContainerRequest(container_id=web, timeout=1))
    client.call("StopContainer", api_pb2.StopContainerRequest(container_id=ctr_ids["a"],
                                                              timeout=10))
    client.call("StopContainer", api_pb2.StopContainerRequest(container_id=ctr_ids["b"],
                                                              timeout=1))
    for name, cid, code in (("a", ctr_ids["a"], 7), ("b", ctr_ids["b"], 137),
                            ("web", web, 137)):
        status = client.status(cid)
        assert status.state == api_pb2.CONTAINER_EXITED, (name, status)
        assert (status.exit_code, status.reason) == (code, "Error"), (name, status)
        assert status.finished_at >= status.started_at > 0
    assert len(_log_lines(log_a)) >= 5  # the log stays for the kubelet
    for cid in [*ctr_ids.values(), web]:
        client.call("RemoveContainer", api_pb2.RemoveContainerRequest(container_id=cid))
        assert _code(lambda cid=cid: client.status(cid)) == grpc.StatusCode.NOT_FOUND
    assert not client.call("ListContainers", api_pb2.ListContainersRequest()).containers

    for pod_id in pod_ids.values():
        client.stop_pod(pod_id)
        assert client.pod_status(pod_id).state == api_pb2.SANDBOX_NOTREADY
        client.remove_pod(pod_id)
        assert _code(lambda pod_id=pod_id: client.pod_status(pod_id)) == \
            grpc.StatusCode.NOT_FOUND
    assert not client.call("ListPodSandbox", api_pb2.ListPodSandboxRequest()).items
    assert f"--dport {host_port}" not in _nat_rules()

    client.call("RemoveImage", api_pb2.RemoveImageRequest(
        image=api_pb2.ImageSpec(image=MIRRORED_IMAGE)))
    assert not client.call("ListImages", api_pb2.ListImagesRequest()).images
    assert not client.call("ImageStatus", api_pb2.ImageStatusRequest(
        image=api_pb2.ImageSpec(image=MIRRORED_IMAGE))).HasField("image")

    # -- nothing left; the server stops cleanly ---------------------------------------------
    assert bed.settled_leftovers() == []
    assert bed.kill(signal.SIGTERM) == 0, bed.log_text
    assert not bed.socket.exists()
    assert bed.leftovers() == []
    assert bed.storage_leftovers() == []


# -- the helpers the tests above stand on (criolib.testing's service process) ----------


def test_service_config_toml_reads_back_as_the_same_config(tmp_path: Path) -> None:
    base = Config.for_root(tmp_path)
    config = attrs.evolve(
        base, storage_option=("overlay.mountopt=nodev",),
        runtime=attrs.evolve(base.runtime, default_runtime="crun", monitor="conmon",
                             default_sysctls=("net.core.somaxconn=1024",), pids_limit=-1,
                             no_pivot=True),
        image=attrs.evolve(base.image, registries_conf="/x/registries.conf",
                           insecure_registries=("127.0.0.1:5000",)))
    path = tmp_path / "criolib.toml"
    path.write_text(service_config_toml(config))
    assert load_config(path) == config


def test_a_server_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    config = Config.for_root(tmp_path)
    # a storage root that is a file: the service cannot open its storage
    (tmp_path / "storage").write_text("not a directory")
    with pytest.raises(TestbedError) as info:
        start_service(config, tmp_path / "criolib.toml", timeout=20)
    message = str(info.value)
    assert "exited with status" in message and "storage" in message, message
    assert not config.api.listen.exists()
