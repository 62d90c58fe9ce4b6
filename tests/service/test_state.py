"""Records on disk (StateStore) and name reservations (NameRegistry)."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs
import pytest

from criolib.service import (
    AlreadyExists,
    DeadlineExceeded,
    InvalidRequest,
    NotFound,
)
from criolib.service import _cri_types as cri
from criolib.service._state import (
    RESERVE_TIMEOUT,
    ContainerRecord,
    NameRegistry,
    SandboxRecord,
    StateStore,
    cri_from_json,
    cri_to_json,
)

SB_ID = "a" * 64
CT_ID = "b" * 64


def _sandbox(id_: str = SB_ID, name: str = "k8s_web_default_uid1_0") -> SandboxRecord:
    config = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name="web", uid="uid1", namespace="default"),
        hostname="web", log_directory="/var/log/pods/x",
        dns_config=cri.DNSConfig(servers=["10.0.0.10"], searches=["svc.local"]),
        port_mappings=[cri.PortMapping(protocol=cri.Protocol.UDP, container_port=53,
                                       host_port=5353)],
        labels={"app": "web"}, annotations={"a": "1"},
        linux=cri.LinuxPodSandboxConfig(
            cgroup_parent="/kubepods", sysctls={"net.ipv4.ip_forward": "1"},
            security_context=cri.LinuxSandboxSecurityContext(
                namespace_options=cri.NamespaceOption(network=cri.NamespaceMode.NODE),
                seccomp=cri.SecurityProfile(
                    profile_type=cri.SecurityProfile.ProfileType.Localhost,
                    localhost_ref="/p.json"))))
    return SandboxRecord(id=id_, name=name, config=config, created_at=time.time_ns(),
                         runtime_handler="crun", namespaces={"net": "/run/netns/x"},
                         network_name="bridge", ip="10.1.0.2", additional_ips=["fd00::2"],
                         hostname="web", sandbox_dir="/s", extra={"k": [1, {"x": None}]})


def _container(id_: str = CT_ID, sandbox_id: str = SB_ID) -> ContainerRecord:
    config = cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name="app", attempt=2),
        image=cri.ImageSpec(image="busybox:latest", annotations={"x": "y"}),
        command=["sh"], args=["-c", "sleep 1"], envs=[cri.KeyValue(key="A", value="b")],
        mounts=[cri.Mount(container_path="/data", host_path="/tmp/d", readonly=True,
                          propagation=cri.MountPropagation.PROPAGATION_BIDIRECTIONAL)],
        labels={"l": "v"}, log_path="app/2.log")
    return ContainerRecord(id=id_, name="k8s_app_web_default_uid1_2", sandbox_id=sandbox_id,
                           config=config, created_at=time.time_ns(),
                           state=cri.ContainerState.CONTAINER_EXITED, exit_code=137,
                           reason="OOMKilled", image_ref="busybox", image_id="c" * 64,
                           log_path="/var/log/pods/x/app/2.log", mounts=config.mounts,
                           monitor_backend="criolib", pid=1234)


def test_records_round_trip_across_a_reopen(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    sandbox, container = _sandbox(), _container()
    store.put(sandbox)
    store.put(container)
    again = StateStore(tmp_path / "state")
    assert again.sandboxes() == [sandbox] and again.containers() == [container]
    assert again.damaged == []
    loaded = again.sandbox(SB_ID)
    assert loaded.metadata.name == "web" and loaded.labels == {"app": "web"}
    assert loaded.annotations == {"a": "1"}
    assert isinstance(loaded.state, cri.PodSandboxState)
    seccomp = loaded.config.linux.security_context.seccomp  # type: ignore[union-attr]
    assert seccomp is not None
    assert seccomp.profile_type is cri.SecurityProfile.ProfileType.Localhost
    assert again.container(CT_ID).metadata.attempt == 2
    assert again.containers(sandbox_id=SB_ID) == [container]
    assert again.containers(sandbox_id="other") == []
    for kind, id_ in (("sandboxes", SB_ID), ("containers", CT_ID)):
        path = tmp_path / "state" / kind / f"{id_}.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert json.loads(path.read_text())["version"] == 1
    assert store.sandbox_dir(SB_ID) == tmp_path / "state" / "sandboxes" / SB_ID


def test_update_delete_and_lookups(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.put(_sandbox())
    store.put(_sandbox("ab" + "0" * 62, name="other"))
    updated = store.update_sandbox(SB_ID, state=cri.PodSandboxState.SANDBOX_NOTREADY)
    assert updated.state is cri.PodSandboxState.SANDBOX_NOTREADY
    assert StateStore(tmp_path).sandbox(SB_ID).state is cri.PodSandboxState.SANDBOX_NOTREADY
    assert store.sandbox("aaaa").id == SB_ID  # unique prefix (crictl's short ids)
    with pytest.raises(InvalidRequest, match="'a' is ambiguous"):
        store.sandbox("a")
    with pytest.raises(NotFound, match="sandbox 'ffff' not found"):
        store.sandbox("ffff")
    with pytest.raises(NotFound, match="container '' not found"):
        store.container("")
    with pytest.raises(NotFound):
        store.update_container(CT_ID, exit_code=1)
    store.put(_container())
    assert store.update_container(CT_ID, exit_code=1, reason="Error").reason == "Error"
    store.delete_container(CT_ID)
    store.delete_container(CT_ID)  # idempotent
    store.delete_sandbox(SB_ID)
    assert [r.name for r in StateStore(tmp_path).sandboxes()] == ["other"]
    assert StateStore(tmp_path).containers() == []


@pytest.mark.parametrize("bad", ["", "../x", ".hidden", "a/b"])
def test_ids_that_cannot_name_a_file_are_refused(tmp_path: Path, bad: str) -> None:
    store = StateStore(tmp_path)
    with pytest.raises(InvalidRequest, match="cannot name a record file"):
        store.put(_sandbox(bad))
    with pytest.raises(InvalidRequest):
        store.delete_container(bad)


def test_damaged_files_are_set_aside_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                               ) -> None:
    store = StateStore(tmp_path)
    store.put(_sandbox())
    store.put(_container())
    sandboxes, containers = tmp_path / "sandboxes", tmp_path / "containers"
    (sandboxes / ("1" * 64 + ".json")).write_text("{not json")
    (sandboxes / ("2" * 64 + ".json")).write_text(json.dumps({"version": 99, "record": {}}))
    wrong_id = cri_to_json(_sandbox("3" * 64))
    (sandboxes / ("4" * 64 + ".json")).write_text(json.dumps({"version": 1,
                                                              "record": wrong_id}))
    (containers / ("5" * 64 + ".json")).write_text(json.dumps(
        {"version": 1, "record": {"id": "5" * 64, "name": 3, "sandbox_id": SB_ID,
                                  "state": 42}}))
    os.mkdir(sandboxes / SB_ID)  # a sandbox's own directory is not a record
    again = StateStore(tmp_path)
    assert [r.id for r in again.sandboxes()] == [SB_ID]
    assert [r.id for r in again.containers()] == [CT_ID]
    reasons = {d.path.name[:1]: d.reason for d in again.damaged}
    assert set(reasons) == {"1", "2", "4", "5"}
    assert "version 1" in reasons["2"] and "not its file name" in reasons["4"]
    for damaged in again.damaged:
        assert damaged.moved_to is not None and damaged.moved_to.is_file()
        assert damaged.moved_to.parent == tmp_path / "damaged"
        assert not damaged.path.exists()
    assert "damaged sandbox record" in caplog.text
    assert StateStore(tmp_path).damaged == []  # set aside once


def test_an_unusable_state_dir_is_a_service_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    from criolib.service import ServiceError
    with pytest.raises(ServiceError, match=r"cannot use .*file/x as the service's state"):
        StateStore(tmp_path / "file" / "x")


def test_concurrent_puts_all_land(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    ids = [f"{i:064x}" for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.put(_container(i)), ids))
        list(pool.map(lambda i: store.update_container(i, exit_code=int(i, 16)), ids))
    loaded = StateStore(tmp_path).containers()
    assert sorted(r.id for r in loaded) == ids
    assert all(r.exit_code == int(r.id, 16) for r in loaded)


def test_cri_json_helpers() -> None:
    obj = cri.ExecSyncResponse(stdout=b"\x00\xff", stderr=b"", exit_code=2)
    data = cri_to_json(obj)
    assert json.loads(json.dumps(data)) == data
    assert cri_from_json(cri.ExecSyncResponse, data) == obj
    record = _sandbox()
    assert cri_from_json(SandboxRecord, json.loads(json.dumps(cri_to_json(record)))) == record
    with pytest.raises(InvalidRequest, match="cannot read PodSandboxConfig"):
        cri_from_json(cri.PodSandboxConfig, {"port_mappings": 3})


# -- NameRegistry --------------------------------------------------------------------


def test_reserve_complete_and_the_finished_holder() -> None:
    names = NameRegistry("sandbox")
    with names.reserve("pod", "k1") as first:
        assert first.owner
        first.complete("id-1", result="response-1")
    assert names.holder("pod") == "id-1"
    # A retry of the finished request (same key) gets the object, not AlreadyExists:
    # the kubelet retries the same attempt when its first call timed out.
    retry = names.reserve("pod", "k1")
    assert (retry.owner, retry.holder, retry.result) == (False, "id-1", "response-1")
    retry.release()  # a non-owner's release is a no-op
    assert names.holder("pod") == "id-1"
    # Another key: AlreadyExists naming the holder.
    with pytest.raises(AlreadyExists, match="sandbox name 'pod' is reserved by "
                       "sandbox id-1"):
        names.reserve("pod", "k2")
    names.release("pod", "someone-else")  # not the holder: no-op
    assert names.holder("pod") == "id-1"
    names.release("pod", "id-1")
    names.release("pod", "id-1")  # idempotent
    assert names.holder("pod") is None
    assert names.reserve("pod", "k2").owner
    with pytest.raises(InvalidRequest):
        names.reserve("", "k")


def test_restore_marks_names_held() -> None:
    names = NameRegistry("container")
    names.restore([("a", "id-a"), ("b", "id-b")])
    assert names.holder("b") == "id-b"
    for key in ("k", ""):  # the key of a restored name is unknown: no retry matches
        with pytest.raises(AlreadyExists, match="id-a"):
            names.reserve("a", key)
    names.release("a")
    assert names.reserve("a", "k").owner


def test_a_retry_waits_for_the_first_request_and_gets_its_result() -> None:
    names = NameRegistry("sandbox")
    first = names.reserve("pod", "same")
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(names.reserve("pod", "same")))
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive() and not got  # still waiting for the first
    # Another configuration for the same name is refused at once, not made to wait.
    with pytest.raises(AlreadyExists, match="in flight with a different configuration"):
        names.reserve("pod", "other")
    first.complete("id-1", {"pod_sandbox_id": "id-1"})
    waiter.join(5)
    (second,) = got
    assert not second.owner  # type: ignore[attr-defined]
    assert second.holder == "id-1"  # type: ignore[attr-defined]
    assert second.result == {"pod_sandbox_id": "id-1"}  # type: ignore[attr-defined]


def test_when_the_first_request_fails_the_retry_takes_over() -> None:
    names = NameRegistry("container")
    first = names.reserve("c", "k")
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(names.reserve("c", "k")))
    waiter.start()
    time.sleep(0.1)
    with pytest.raises(RuntimeError), first:
        raise RuntimeError("create failed")
    waiter.join(5)
    (second,) = got
    assert second.owner  # type: ignore[attr-defined]
    second.complete("id-2")  # type: ignore[attr-defined]
    assert names.holder("c") == "id-2"


def test_waiting_has_a_deadline() -> None:
    names = NameRegistry("sandbox")
    first = names.reserve("pod", "k")
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"did not finish within 0\.2 s"):
        names.reserve("pod", "k", timeout=0.2)
    assert 0.15 < time.monotonic() - started < 2
    first.release()
    assert names.reserve("pod", "k", timeout=0.2).owner


def test_waiting_is_capped_by_default() -> None:
    # a retry of a hung first request does not wait forever: the registry's max_wait
    assert NameRegistry().max_wait == RESERVE_TIMEOUT == 120
    names = NameRegistry("container", max_wait=0.2)
    names.reserve("c", "k")
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"container name 'c'.*within 0\.2 s"):
        names.reserve("c", "k")  # no timeout given
    assert time.monotonic() - started < 2


def test_many_threads_one_name_the_work_is_done_once() -> None:
    names = NameRegistry("sandbox")
    done: list[str] = []
    lock = threading.Lock()

    def request(n: int) -> str:
        with names.reserve("pod", "same-config") as r:
            if not r.owner:
                return str(r.result)
            time.sleep(0.2)  # the slow first RunPodSandbox
            with lock:
                done.append(f"id-{n}")
            r.complete(f"id-{n}", f"response-{n}")
            return f"response-{n}"

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(request, range(12)))
    assert len(done) == 1
    assert set(results) == {f"response-{done[0][3:]}"}
    assert names.holder("pod") == done[0]


def test_reservation_complete_twice_is_a_bug() -> None:
    from criolib.service import Internal

    names = NameRegistry()
    r = names.reserve("x", "k")
    r.complete("id")
    with pytest.raises(Internal):
        r.complete("id")
    assert attrs.has(SandboxRecord) and attrs.has(ContainerRecord)
