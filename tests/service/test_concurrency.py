"""Requests at once, over gRPC: 20 pods in parallel; retried requests; one pull for many.

- 20 pods on the bridge, each with a container, made from 20 threads (RunPodSandbox,
  CreateContainer, StartContainer), all RUNNING with 20 distinct IPs, then stopped and
  removed from 20 threads in the kubelet's order; nothing is left.
- Two identical RunPodSandbox requests at once (the kubelet retrying a call that timed
  out) both get the same sandbox; likewise CreateContainer. A third one, after the
  first finished, gets it too (CRI-O's ResourceStore); the same name with another
  configuration is ALREADY_EXISTS ("name is reserved").
- Four PullImage requests for one image at once make one pull: the registry (behind a
  recording proxy that holds the first manifest request for a second) is asked for
  the manifest and each blob once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from criolib.testing import RegistryServer
from tests.service.conftest import (
    MIRRORED_IMAGE,
    CRIClient,
    ServiceBed,
    api_pb2,
    container_config,
    grpc,
    pod_config,
)

pytestmark = pytest.mark.integration

PODS = 20
#: Sleeps; leaves at once on SIGTERM (as PID 1, sh would ignore it).
IDLE = "trap 'exit 0' TERM; while true; do sleep 0.2; done"
T = TypeVar("T")


def _at_once(n: int, work: Callable[[int], T]) -> list[tuple[float, float, T]]:
    """``work(i)`` for i in range(n) from n threads released together; each call's
    (start, end, result)."""
    barrier = threading.Barrier(n)

    def one(i: int) -> tuple[float, float, T]:
        barrier.wait(timeout=30)
        start = time.monotonic()
        result = work(i)
        return start, time.monotonic(), result

    with ThreadPoolExecutor(max_workers=n) as pool:
        return [f.result() for f in [pool.submit(one, i) for i in range(n)]]


def _overlapped(calls: list[tuple[float, float, Any]]) -> bool:
    return max(start for start, _, _ in calls) < min(end for _, end, _ in calls)


def test_twenty_pods_in_parallel(service_beds: Any,
                                 criolib_registry: RegistryServer) -> None:
    bed: ServiceBed = service_beds("crun", "criolib", criolib_registry)
    client = bed.serve()
    client.pull(MIRRORED_IMAGE)

    def up(i: int) -> tuple[str, str]:
        config = pod_config(f"pod{i}", log_directory=str(bed.base / "pods" / f"pod{i}"))
        pod_id = client.run_pod(config)
        cid = client.create(pod_id, container_config("idle", IDLE), config)
        client.start(cid)
        return pod_id, cid

    made = [result for *_, result in _at_once(PODS, up)]
    assert len({pod_id for pod_id, _ in made}) == PODS
    assert len({cid for _, cid in made}) == PODS
    states = {cid: client.status(cid).state for _, cid in made}
    assert set(states.values()) == {api_pb2.CONTAINER_RUNNING}, states
    ips = {client.pod_status(pod_id).network.ip for pod_id, _ in made}
    assert len(ips) == PODS and all(ip.startswith(bed.subnet) for ip in ips), ips
    assert len(bed.veths()) == PODS
    assert len(client.call("ListPodSandbox", api_pb2.ListPodSandboxRequest()).items) == PODS

    def down(i: int) -> None:
        pod_id, cid = made[i]
        client.call("StopContainer", api_pb2.StopContainerRequest(container_id=cid,
                                                                  timeout=10))
        client.call("RemoveContainer", api_pb2.RemoveContainerRequest(container_id=cid))
        client.stop_pod(pod_id)
        client.remove_pod(pod_id)

    _at_once(PODS, down)
    assert not client.call("ListPodSandbox", api_pb2.ListPodSandboxRequest()).items
    assert not client.call("ListContainers", api_pb2.ListContainersRequest()).containers
    assert bed.settled_leftovers() == []
    assert bed.kill() == -9  # an unclean stop: the storage check needs the store
    assert bed.storage_leftovers(keep_images=True) == []


def _same_twice(client: CRIClient, rpc: str, request: Any) -> list[str]:
    """Send ``request`` twice at once; the ids answered (both calls must overlap)."""
    field = "pod_sandbox_id" if rpc == "RunPodSandbox" else "container_id"
    calls = _at_once(2, lambda _: getattr(client.call(rpc, request), field))
    assert _overlapped(calls), f"the two {rpc} calls did not overlap: {calls}"
    return [str(result) for *_, result in calls]


def test_a_retried_request_in_flight_gets_the_first_ones_result(
        service_beds: Any, criolib_registry: RegistryServer) -> None:
    bed: ServiceBed = service_beds("crun", "criolib", criolib_registry)
    client = bed.serve()
    client.pull(MIRRORED_IMAGE)
    config = pod_config("twice")
    run = api_pb2.RunPodSandboxRequest(config=config)
    first, second = _same_twice(client, "RunPodSandbox", run)
    assert first == second
    pods = client.call("ListPodSandbox", api_pb2.ListPodSandboxRequest()).items
    assert [p.id for p in pods] == [first]
    # a later retry of the same request gets the same sandbox (CRI-O's ResourceStore);
    # the same name with another configuration is refused
    assert client.run_pod(config) == first
    other = pod_config("twice", labels={"changed": "yes"})
    with pytest.raises(grpc.RpcError) as info:
        client.run_pod(other)
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "reserved" in info.value.details()

    create = api_pb2.CreateContainerRequest(
        pod_sandbox_id=first, config=container_config("idle", IDLE), sandbox_config=config)
    one, other = _same_twice(client, "CreateContainer", create)
    assert one == other
    listed = client.call("ListContainers", api_pb2.ListContainersRequest()).containers
    assert [c.id for c in listed] == [one]
    assert client.create(first, container_config("idle", IDLE), config) == one
    with pytest.raises(grpc.RpcError) as info:
        client.create(first, container_config("idle", "exec sleep 1000"), config)
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    client.start(one)
    assert client.status(one).state == api_pb2.CONTAINER_RUNNING

    client.stop_pod(first)
    client.remove_pod(first)
    assert bed.settled_leftovers() == []


def test_concurrent_pulls_of_one_image_are_done_once(
        service_beds: Any, criolib_registry: RegistryServer) -> None:
    bed: ServiceBed = service_beds("crun", "criolib", criolib_registry)
    client = bed.serve()
    mirror = bed.mirror
    assert mirror is not None
    # Hold the first manifest request: the other pulls arrive while it is in flight.
    mirror.delay(1.0, path="/manifests/", method="GET")
    calls = _at_once(4, lambda _: client.pull(MIRRORED_IMAGE))
    assert _overlapped(calls), calls
    assert len({ref for *_, ref in calls}) == 1
    requests = Counter((r.method, r.path) for r in mirror.requests if r.path != "/v2/")
    fetched = [key for key in requests if key[0] == "GET"]
    assert any("/manifests/" in path for _, path in fetched), requests
    assert any("/blobs/" in path for _, path in fetched), requests
    assert all(count == 1 for count in requests.values()), requests
    images = client.call("ListImages", api_pb2.ListImagesRequest()).images
    assert [list(i.repo_tags) for i in images] == [[MIRRORED_IMAGE]]
