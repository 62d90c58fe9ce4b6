"""Restart: ``kill -9`` the server with pods running, start it again, the state is right.

Containers keep running while the service is down (their monitors own them); an exit
that happens meanwhile is recorded by the monitor and the restarted service reports
it (state EXITED, the exit code, the time it exited); the socket the killed server
left does not block the new one; a clean stop (SIGTERM) leaves the containers running
as well; stop and remove then work and leave nothing. Once per monitor backend.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from typing import Any

import pytest

from criolib.testing import RegistryServer
from tests.service.conftest import (
    MIRRORED_IMAGE,
    ServiceBed,
    api_pb2,
    container_config,
    pod_config,
    wait_for,
)

pytestmark = pytest.mark.integration

#: A line every 100 ms; leaves at once on SIGTERM (as PID 1, sh would ignore it).
LOOP = "trap 'exit 0' TERM; i=0; while true; do echo \"line $i\"; i=$((i+1)); sleep 0.1; done"
#: Leaves with 3 about 2 s after it starts (after the server is killed).
EXITS_LATER = "echo started; sleep 2; echo leaving; exit 3"


def _runtime_status(bed: ServiceBed, container_id: str) -> str:
    handler = bed.config.runtime.handler()
    proc = subprocess.run([handler.resolved_path(), "--root", str(handler.runtime_root),
                           "state", container_id], capture_output=True, text=True,
                          timeout=30, check=False)
    if proc.returncode != 0:
        return f"gone ({proc.stderr.strip()})"
    return str(json.loads(proc.stdout)["status"])


@pytest.mark.parametrize("runtime, monitor", [("crun", "criolib"), ("runc", "conmon")])
def test_kill_9_then_restart_reports_the_right_states(
        service_beds: Any, criolib_registry: RegistryServer, runtime: str,
        monitor: str) -> None:
    bed: ServiceBed = service_beds(runtime, monitor, criolib_registry)
    client = bed.serve()
    client.pull(MIRRORED_IMAGE)
    pods = {name: pod_config(name, log_directory=str(bed.base / "pods" / name))
            for name in ("running", "exiting")}
    pod_ids = {name: client.run_pod(config) for name, config in pods.items()}
    ctr_ids = {
        "running": client.create(pod_ids["running"], container_config("c", LOOP),
                                  pods["running"]),
        "exiting": client.create(pod_ids["exiting"], container_config("c", EXITS_LATER),
                                 pods["exiting"]),
    }
    for cid in ctr_ids.values():
        client.start(cid)
    before = {name: client.status(cid) for name, cid in ctr_ids.items()}
    assert all(s.state == api_pb2.CONTAINER_RUNNING for s in before.values()), before
    ips = {name: client.pod_status(pod_id).network.ip for name, pod_id in pod_ids.items()}

    # -- an unclean stop; the second container exits while the service is down ---------
    assert bed.kill(signal.SIGKILL) == -signal.SIGKILL
    assert bed.socket.exists(), "the killed server's socket should still be there"
    killed_at = time.time_ns()
    wait_for("the exiting container to exit while the server is down",
             lambda: _runtime_status(bed, ctr_ids["exiting"]) == "stopped", timeout=15)
    assert _runtime_status(bed, ctr_ids["running"]) == "running"
    time.sleep(0.5)  # the monitor records the exit a moment after the runtime sees it

    # -- the new server ------------------------------------------------------------------
    restarted_at = time.time_ns()
    client = bed.serve()
    listed = client.call("ListPodSandbox", api_pb2.ListPodSandboxRequest()).items
    assert sorted((p.id, p.state) for p in listed) == sorted(
        (pod_id, api_pb2.SANDBOX_READY) for pod_id in pod_ids.values())
    for name, pod_id in pod_ids.items():
        status = client.pod_status(pod_id)
        assert status.network.ip == ips[name]
        assert status.state == api_pb2.SANDBOX_READY

    containers = client.call("ListContainers", api_pb2.ListContainersRequest()).containers
    assert sorted((c.id, c.state) for c in containers) == sorted(
        [(ctr_ids["running"], api_pb2.CONTAINER_RUNNING),
         (ctr_ids["exiting"], api_pb2.CONTAINER_EXITED)])
    running = client.status(ctr_ids["running"])
    assert running.state == api_pb2.CONTAINER_RUNNING
    assert running.started_at == before["running"].started_at
    exited = client.status(ctr_ids["exiting"])
    assert exited.state == api_pb2.CONTAINER_EXITED
    assert (exited.exit_code, exited.reason) == (3, "Error"), exited
    # when it exited, not when the new server noticed
    assert killed_at < exited.finished_at < restarted_at, (
        killed_at, exited.finished_at, restarted_at)
    log = (bed.base / "pods" / "exiting" / "c" / "0.log").read_text()
    assert log.splitlines()[-1].endswith(" stdout F leaving"), log

    # the running container is still reachable through its monitor
    echo = client.call("ExecSync", api_pb2.ExecSyncRequest(
        container_id=ctr_ids["running"], cmd=["echo", "still here"], timeout=10))
    assert (echo.exit_code, echo.stdout) == (0, b"still here\n")

    # -- a clean stop leaves the containers running too ----------------------------------
    assert bed.kill(signal.SIGTERM) == 0, bed.log_text
    assert not bed.socket.exists()
    assert _runtime_status(bed, ctr_ids["running"]) == "running"
    client = bed.serve()
    assert client.status(ctr_ids["running"]).state == api_pb2.CONTAINER_RUNNING
    assert client.status(ctr_ids["exiting"]).exit_code == 3

    # -- stop and remove (the kubelet's order), nothing left -----------------------------
    for pod_id in pod_ids.values():
        client.stop_pod(pod_id)
    assert client.status(ctr_ids["running"]).state == api_pb2.CONTAINER_EXITED
    for pod_id in pod_ids.values():
        client.remove_pod(pod_id)
    assert not client.call("ListContainers", api_pb2.ListContainersRequest()).containers
    assert not client.call("ListPodSandbox", api_pb2.ListPodSandboxRequest()).items
    assert bed.settled_leftovers() == []
    assert bed.kill(signal.SIGTERM) == 0, bed.log_text
    assert bed.leftovers() == []
    assert bed.storage_leftovers(keep_images=True) == []
