"""The container side of the CRI RuntimeService with real runc, crun and both monitors.

One test bed per monitor backend for the module: an overlay store under a tmp dir with
the test bed's busybox imported from its OCI layout, the service's records, and sandboxes
written by the tests themselves (pinned net/ipc/uts namespaces from
``criolib.cni.PodNamespaces``, a sandbox dir with hostname, resolv.conf and hosts, a shm
dir), so nothing here depends on the sandbox manager. Every container is removed through
the manager and each test checks what removal must leave: no storage container, no
mount, no runtime state, no monitor record or process.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from criolib.cni import PodNamespaces
from criolib.conmon import join_partial, read_cri_log
from criolib.image import Policy, SystemContext, copy_image
from criolib.runtime_spec import RuntimeClient
from criolib.service import _cri_types as cri
from criolib.service._config import Config
from criolib.service._container import ContainerManager
from criolib.service._errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidRequest,
    NotFound,
    ServiceError,
)
from criolib.service._images import ImageService
from criolib.service._spec import cgroups_path
from criolib.service._state import NameRegistry, SandboxRecord, StateStore
from criolib.storage import Store
from criolib.testing import TestImages, require_binaries, require_root

pytestmark = pytest.mark.integration

IMAGE = "localhost/testbed/busybox:latest"
State = cri.ContainerState
Ctx = cri.LinuxContainerSecurityContext


@attrs.define
class Bed:
    root: Path
    config: Config
    store: Store
    state: StateStore
    names: NameRegistry
    images: ImageService
    manager: ContainerManager
    pods: list[PodNamespaces] = attrs.field(factory=list)

    def new_manager(self) -> ContainerManager:
        """A manager as a restarted service builds it: fresh records and names."""
        state = StateStore(self.config.state_dir)
        names = NameRegistry("container")
        return ContainerManager(config=self.config, state=state, names=names,
                                store=self.store, images=self.images, sandboxes=state)

    def sandbox(self, handler: str = "crun", *, ready: bool = True) -> SandboxRecord:
        sid = secrets.token_hex(32)
        uid = secrets.token_hex(8)
        pod = PodNamespaces.create(sid[:16], hostname="pod-host", base=self.root / "ns")
        self.pods.append(pod)
        sdir = self.root / "sandboxes" / sid
        (sdir / "shm").mkdir(parents=True)
        (sdir / "hostname").write_text("pod-host\n")
        (sdir / "resolv.conf").write_text("nameserver 192.0.2.53\nsearch pod.test\n")
        (sdir / "hosts").write_text("127.0.0.1 localhost\n192.0.2.7 pod-host\n")
        logs = self.root / "logs" / sid
        logs.mkdir(parents=True)
        record = SandboxRecord(
            id=sid, name=f"k8s_pod_default_{uid}_0",
            config=cri.PodSandboxConfig(
                metadata=cri.PodSandboxMetadata(name="pod", uid=uid, namespace="default"),
                hostname="pod-host", log_directory=str(logs)),
            state=(cri.PodSandboxState.SANDBOX_READY if ready
                   else cri.PodSandboxState.SANDBOX_NOTREADY),
            runtime_handler=handler, hostname="pod-host", sandbox_dir=str(sdir),
            log_directory=str(logs), shm_path=str(sdir / "shm"),
            namespaces={k: str(pod.path(k)) for k in ("net", "ipc", "uts")})
        self.manager.state.put(record)  # the records of the manager in use (after a restart)
        return record


def _build_bed(root: Path, images: TestImages, monitor: str) -> Bed:
    config = Config.for_root(root / "svc")
    config = attrs.evolve(config, runtime=attrs.evolve(config.runtime, monitor=monitor))
    store = Store(config.root, config.runroot, config.storage_driver)
    copy_image(f"oci:{images.layout}:busybox", f"containers-storage:{IMAGE}",
               policy=Policy.insecure_accept_anything(), ctx=SystemContext(store=store))
    state = StateStore(config.state_dir)
    names = NameRegistry("container")
    image_service = ImageService(config, store)
    manager = ContainerManager(config=config, state=state, names=names, store=store,
                               images=image_service, sandboxes=state)
    return Bed(root, config, store, state, names, image_service, manager)


def _processes_naming(*words: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            if any(w.encode() in cmdline for w in words):
                found.append(int(entry.name))
    return found


def _teardown(bed: Bed) -> None:
    for record in bed.manager.state.containers():
        with contextlib.suppress(Exception):
            bed.manager.remove_container(cri.RemoveContainerRequest(container_id=record.id))
    bed.manager.close()
    deadline = time.monotonic() + 10
    while _processes_naming(str(bed.root)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _processes_naming(str(bed.root))
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, 9)
    for pod in bed.pods:
        pod.remove()
    with contextlib.suppress(Exception):
        bed.store.shutdown(force=True)
    bed.store.close()
    # PodNamespaces makes its pin directories shared bind mounts (as `ip netns` does).
    pin_dirs = [str(bed.root / "ns" / f"{kind}ns") for kind in ("net", "ipc", "uts")]
    for directory in pin_dirs:
        subprocess.run(["umount", directory], check=False, capture_output=True)
    mounts = [line for line in Path("/proc/self/mounts").read_text().splitlines()
              if str(bed.root) in line]
    for line in mounts:
        subprocess.run(["umount", "-l", line.split()[1]], check=False)
    assert not left, f"monitor processes left running: {left}"
    assert not mounts, f"mounts left: {mounts}"


class Beds:
    """The module's beds, one per monitor backend, made on first use."""

    def __init__(self, images: TestImages, factory: pytest.TempPathFactory) -> None:
        self.images = images
        self.factory = factory
        self.made: dict[str, Bed] = {}

    def get(self, backend: str) -> Bed:
        if backend not in self.made:
            require_root()
            require_binaries("runc", "crun", *(["conmon"] if backend == "conmon" else []))
            self.made[backend] = _build_bed(self.factory.mktemp(f"ctr-{backend}"),
                                            self.images, backend)
        return self.made[backend]


@pytest.fixture(scope="module")
def beds(criolib_test_images: TestImages,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Beds]:
    made = Beds(criolib_test_images, tmp_path_factory)
    try:
        yield made
    finally:
        for b in made.made.values():
            _teardown(b)


@pytest.fixture(params=["criolib", "conmon"])
def bed(request: pytest.FixtureRequest, beds: Beds) -> Bed:
    """A bed per monitor backend (tests that must pass under both)."""
    return beds.get(request.param)


@pytest.fixture
def crio_bed(beds: Beds) -> Bed:
    """The criolib-monitor bed alone (tests where the backend does not matter)."""
    return beds.get("criolib")


def ctr_config(script: str | None = None, *, name: str = "c", attempt: int = 0,
               log: str | None = None, sc: cri.LinuxContainerSecurityContext | None = None,
               resources: cri.LinuxContainerResources | None = None,
               **fields: Any) -> cri.ContainerConfig:
    if script is not None:
        fields.setdefault("command", ["/bin/sh", "-c", script])
    linux = cri.LinuxContainerConfig(security_context=sc, resources=resources)
    return cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name=name, attempt=attempt),
        image=cri.ImageSpec(image=IMAGE), log_path=log or f"{name}/{attempt}.log", linux=linux,
        labels={"app": name}, **fields)


def create(bed: Bed, sandbox: SandboxRecord, config: cri.ContainerConfig) -> str:
    return bed.manager.create_container(cri.CreateContainerRequest(
        pod_sandbox_id=sandbox.id, config=config)).container_id


def status(bed: Bed, cid: str) -> cri.ContainerStatus:
    st = bed.manager.container_status(cri.ContainerStatusRequest(container_id=cid)).status
    assert st is not None
    return st


def wait_exited(bed: Bed, cid: str, timeout: float = 20) -> cri.ContainerStatus:
    deadline = time.monotonic() + timeout
    while True:
        st = status(bed, cid)
        if st.state == State.CONTAINER_EXITED:
            return st
        assert time.monotonic() < deadline, f"container {cid} did not exit"
        time.sleep(0.05)


def log_lines(path: str) -> list[tuple[str, str]]:
    return [(stream, msg.decode()) for stream, msg in join_partial(read_cri_log(path))]


def remove(bed: Bed, cid: str) -> None:
    bed.manager.remove_container(cri.RemoveContainerRequest(container_id=cid))


def run(bed: Bed, sandbox: SandboxRecord, config: cri.ContainerConfig
        ) -> tuple[cri.ContainerStatus, str]:
    """Create, start, wait for the exit, read stdout+stderr, remove."""
    cid = create(bed, sandbox, config)
    try:
        bed.manager.start_container(cri.StartContainerRequest(container_id=cid))
        st = wait_exited(bed, cid)
        text = "\n".join(m for _, m in log_lines(st.log_path)) if st.log_path else ""
        return st, text
    finally:
        remove(bed, cid)


def assert_gone(bed: Bed, cid: str, runtime: RuntimeClient) -> None:
    with pytest.raises(NotFound):
        bed.manager.state.container(cid)
    assert cid not in [c.id for c in bed.store.containers()]
    assert cid not in Path("/proc/self/mounts").read_text()
    assert cid not in [s.id for s in runtime.list()]
    assert not (bed.config.runtime.container_attach_socket_dir / cid).exists()
    assert not (bed.config.runtime.container_exits_dir / cid).exists()


def proc_status(text: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in
            (line.partition(":") for line in text.splitlines()) if v}


# -- lifecycle under both runtimes and both monitors ---------------------------------------


@pytest.mark.parametrize("handler", ["runc", "crun"])
def test_lifecycle(bed: Bed, handler: str) -> None:
    sandbox = bed.sandbox(handler)
    script = ("echo hello; echo oops >&2; hostname; cat /etc/resolv.conf; "
              "trap 'echo bye; exit 3' TERM; sleep 1000 & wait")
    cid = create(bed, sandbox, ctr_config(script, name=f"life-{handler}"))
    st = status(bed, cid)
    assert st.state == State.CONTAINER_CREATED and st.created_at > 0 and st.started_at == 0
    bed.manager.start_container(cri.StartContainerRequest(container_id=cid))
    with pytest.raises(FailedPrecondition):
        bed.manager.start_container(cri.StartContainerRequest(container_id=cid))
    deadline = time.monotonic() + 10
    while len(log_lines(st.log_path)) < 4:
        assert time.monotonic() < deadline, log_lines(st.log_path)
        time.sleep(0.05)
    lines = log_lines(st.log_path)
    assert ("stdout", "hello") in lines and ("stderr", "oops") in lines
    assert ("stdout", "pod-host") in lines and ("stdout", "nameserver 192.0.2.53") in lines
    st = status(bed, cid)
    assert st.state == State.CONTAINER_RUNNING and st.started_at >= st.created_at
    assert st.log_path == os.path.join(sandbox.log_directory, f"life-{handler}/0.log")
    assert st.image is not None and st.image.image == IMAGE
    assert st.image_id and st.image_ref.startswith("localhost/testbed/busybox@sha256:")
    assert st.metadata == cri.ContainerMetadata(name=f"life-{handler}")
    verbose = bed.manager.container_status(
        cri.ContainerStatusRequest(container_id=cid, verbose=True)).info
    spec = json.loads(verbose["info"])["runtimeSpec"]
    assert spec["linux"]["cgroupsPath"] == cgroups_path("", cid)
    bed.manager.stop_container(cri.StopContainerRequest(container_id=cid, timeout=10))
    st = status(bed, cid)
    assert (st.state, st.exit_code, st.reason) == (State.CONTAINER_EXITED, 3, "Error")
    assert st.finished_at >= st.started_at > 0
    assert ("stdout", "bye") in log_lines(st.log_path)
    bed.manager.stop_container(cri.StopContainerRequest(container_id=cid, timeout=10))
    runtime = bed.manager.runtime(handler)
    remove(bed, cid)
    assert_gone(bed, cid, runtime)
    remove(bed, cid)  # idempotent
    # The pod's monitor (criolib: one per sandbox, idle 1 s; conmon: one per container)
    # is gone too.
    deadline = time.monotonic() + 10
    while _processes_naming(sandbox.id, cid):
        assert time.monotonic() < deadline, _processes_naming(sandbox.id, cid)
        time.sleep(0.1)
    # The name is free again.
    cid2 = create(bed, sandbox, ctr_config("true", name=f"life-{handler}"))
    remove(bed, cid2)
    assert_gone(bed, cid2, runtime)


def test_stop_escalates_to_sigkill(bed: Bed) -> None:
    sandbox = bed.sandbox("crun")
    cid = create(bed, sandbox, ctr_config("trap '' TERM; echo ready; sleep 1000 & wait; "
                                          "sleep 1000"))
    bed.manager.start_container(cri.StartContainerRequest(container_id=cid))
    st = status(bed, cid)
    deadline = time.monotonic() + 10
    while ("stdout", "ready") not in log_lines(st.log_path):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    t0 = time.monotonic()
    bed.manager.stop_container(cri.StopContainerRequest(container_id=cid, timeout=1))
    assert 0.9 < time.monotonic() - t0 < 10
    st = status(bed, cid)
    assert (st.exit_code, st.reason) == (137, "Error")
    remove(bed, cid)


# -- exits -----------------------------------------------------------------------------------


def test_exit_codes_and_oom(crio_bed: Bed) -> None:
    bed = crio_bed
    sandbox = bed.sandbox("crun")
    st, _ = run(bed, sandbox, ctr_config("exit 7", name="seven"))
    assert (st.exit_code, st.reason) == (7, "Error")
    st, _ = run(bed, sandbox, ctr_config("true", name="zero"))
    assert (st.exit_code, st.reason) == (0, "Completed")
    limit = cri.LinuxContainerResources(memory_limit_in_bytes=8 << 20)
    st, _ = run(bed, sandbox, ctr_config("head -c 64m /dev/zero | tail -c 60m >/dev/null",
                                         name="oom", resources=limit))
    assert (st.exit_code, st.reason) == (137, "OOMKilled")
    assert st.resources is not None and st.resources.linux == limit


# -- the spec, observed from inside ---------------------------------------------------------


def test_security_context_from_inside(crio_bed: Bed, tmp_path: Path) -> None:
    bed = crio_bed
    sandbox = bed.sandbox("crun")
    show = "cat /proc/self/status; id"

    _, text = run(bed, sandbox, ctr_config(show, name="user", sc=Ctx(
        run_as_user=cri.Int64Value(value=1000), run_as_group=cri.Int64Value(value=1000),
        supplemental_groups=[4242])))
    fields = proc_status(text)
    assert fields["Uid"].split()[0] == "1000" and fields["Gid"].split()[0] == "1000"
    assert "4242" in fields["Groups"].split()
    _, text = run(bed, sandbox, ctr_config(show, name="uname", sc=Ctx(
        run_as_username="tester")))
    assert "uid=1000(tester)" in text

    _, text = run(bed, sandbox, ctr_config(show, name="caps", sc=Ctx(
        capabilities=cri.Capability(drop_capabilities=["ALL"],
                                    add_capabilities=["NET_BIND_SERVICE"]))))
    assert proc_status(text)["CapEff"] == f"{1 << 10:016x}"
    _, text = run(bed, sandbox, ctr_config(show, name="defcaps", sc=Ctx(
        capabilities=cri.Capability(drop_capabilities=["KILL"]))))
    assert int(proc_status(text)["CapBnd"], 16) & (1 << 5) == 0  # KILL dropped
    assert int(proc_status(text)["CapBnd"], 16) & 1 == 1  # CHOWN: a default

    _, text = run(bed, sandbox, ctr_config(show, name="priv", sc=Ctx(privileged=True)))
    fields = proc_status(text)
    assert fields["Seccomp"] == "0" and fields["NoNewPrivs"] == "0"
    assert int(fields["CapEff"], 16) & (1 << 21)  # SYS_ADMIN

    _, text = run(bed, sandbox, ctr_config(show, name="default", sc=Ctx(
        no_new_privs=True, seccomp=cri.SecurityProfile())))
    fields = proc_status(text)
    assert (fields["Seccomp"], fields["NoNewPrivs"]) == ("2", "1")
    # No profile named at all: unconfined (critest "should support nil profile").
    _, text = run(bed, sandbox, ctr_config(show, name="nilprof", sc=Ctx(no_new_privs=True)))
    assert (proc_status(text)["Seccomp"], proc_status(text)["NoNewPrivs"]) == ("0", "1")
    unconfined = cri.SecurityProfile(profile_type=cri.SecurityProfile.ProfileType.Unconfined)
    _, text = run(bed, sandbox, ctr_config(show, name="unconf", sc=Ctx(seccomp=unconfined)))
    assert (proc_status(text)["Seccomp"], proc_status(text)["NoNewPrivs"]) == ("0", "0")

    profile = tmp_path / "no-mkdir.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "archMap": [{"architecture": "SCMP_ARCH_X86_64",
                     "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": []}],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": 1}]}))
    local = cri.SecurityProfile(profile_type=cri.SecurityProfile.ProfileType.Localhost,
                                localhost_ref=str(profile))
    st, text = run(bed, sandbox, ctr_config("grep Seccomp: /proc/self/status; mkdir /tmp/x",
                                            name="local", sc=Ctx(seccomp=local)))
    assert "Seccomp:\t2" in text and "Operation not permitted" in text and st.exit_code == 1

    st, text = run(bed, sandbox, ctr_config("touch /tmp/x", name="ro",
                                            sc=Ctx(readonly_rootfs=True)))
    assert st.exit_code == 1 and "Read-only file system" in text
    # Given masked paths replace the defaults (the kubelet sends the whole list).
    _, text = run(bed, sandbox, ctr_config(
        "grep -c ' /proc/cpuinfo ' /proc/self/mountinfo; "
        "grep -c ' /proc/kcore ' /proc/self/mountinfo; wc -c < /proc/cpuinfo",
        name="masked", sc=Ctx(masked_paths=["/proc/cpuinfo"])))
    assert text.split() == ["1", "0", "0"]


def test_env_args_workdir(crio_bed: Bed) -> None:
    sandbox = crio_bed.sandbox("crun")
    st, text = run(crio_bed, sandbox, ctr_config(
        None, name="env", command=["/bin/sh", "-c"],
        args=['pwd; echo "FOO=$FOO HOME=$HOME HOSTNAME=$HOSTNAME"; echo "$PATH"'],
        working_dir="/work/dir", envs=[cri.KeyValue(key="FOO", value="bar"),
                                       cri.KeyValue(key="FOO", value="baz")]))
    assert st.exit_code == 0
    lines = text.splitlines()
    assert lines[0] == "/work/dir"
    assert lines[1] == "FOO=baz HOME=/root HOSTNAME=pod-host"
    assert "/bin" in lines[2]


def test_mounts(crio_bed: Bed, tmp_path: Path) -> None:
    bed = crio_bed
    sandbox = bed.sandbox("crun")
    ro, rw, missing = tmp_path / "ro", tmp_path / "rw", tmp_path / "new" / "dir"
    ro.mkdir()
    rw.mkdir()
    (ro / "file").write_text("from the host\n")
    st, text = run(bed, sandbox, ctr_config(
        "cat /mnt/ro/file; touch /mnt/ro/x || echo ro-refused; echo hi > /mnt/rw/out; "
        "ls -d /mnt/new; cat /etc/hosts", name="mounts",
        mounts=[cri.Mount(container_path="/mnt/ro", host_path=str(ro), readonly=True),
                cri.Mount(container_path="/mnt/rw", host_path=str(rw)),
                cri.Mount(container_path="/mnt/new", host_path=str(missing))]))
    assert st.exit_code == 0, text
    assert "from the host" in text and "ro-refused" in text and "192.0.2.7 pod-host" in text
    assert (rw / "out").read_text() == "hi\n" and missing.is_dir()
    assert {m.container_path for m in st.mounts} == {"/mnt/ro", "/mnt/rw", "/mnt/new"}

    with pytest.raises(InvalidRequest, match="shared"):
        create(bed, sandbox, ctr_config("true", name="bidir", mounts=[cri.Mount(
            container_path="/mnt/b", host_path=str(rw),
            propagation=cri.MountPropagation.PROPAGATION_BIDIRECTIONAL)]))
    shared = tmp_path / "shared"
    shared.mkdir()
    subprocess.run(["mount", "--bind", str(shared), str(shared)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(shared)], check=True)
        st, text = run(bed, sandbox, ctr_config(
            "mkdir -p /mnt/s/sub && mount -t tmpfs none /mnt/s/sub && echo mounted",
            name="bidir", sc=cri.LinuxContainerSecurityContext(privileged=True),
            mounts=[cri.Mount(container_path="/mnt/s", host_path=str(shared),
                              propagation=cri.MountPropagation.PROPAGATION_BIDIRECTIONAL)]))
        assert "mounted" in text, text
        assert f" {shared}/sub " in Path("/proc/self/mounts").read_text()
    finally:
        subprocess.run(["umount", "-R", "-l", str(shared)], check=False)


# -- exec, update, logs, list -----------------------------------------------------------------


@pytest.mark.parametrize("handler", ["runc", "crun"])
def test_exec_sync(bed: Bed, handler: str) -> None:
    sandbox = bed.sandbox(handler)
    cid = create(bed, sandbox, ctr_config("sleep 1000", name=f"exec-{handler}"))
    bed.manager.start_container(cri.StartContainerRequest(container_id=cid))
    resp = bed.manager.exec_sync(cri.ExecSyncRequest(
        container_id=cid, cmd=["sh", "-c", "echo out; echo err >&2; exit 5"], timeout=10))
    assert (resp.stdout, resp.stderr, resp.exit_code) == (b"out\n", b"err\n", 5)
    t0 = time.monotonic()
    resp = bed.manager.exec_sync(cri.ExecSyncRequest(container_id=cid, cmd=["sleep", "30"],
                                                     timeout=1))
    assert time.monotonic() - t0 < 10
    assert (resp.exit_code, resp.stderr) == (-1, b"command timed out")
    # The timed-out command is gone (critest: exec sync timeout leaves nothing behind).
    ps = bed.manager.exec_sync(cri.ExecSyncRequest(container_id=cid, cmd=["ps", "-o",
                                                                       "pid,args"],
                                                   timeout=10))
    assert ps.exit_code == 0 and b"sleep 1000" in ps.stdout, ps
    assert b"sleep 30" not in ps.stdout, ps.stdout.decode()
    with pytest.raises(InvalidRequest):
        bed.manager.exec_sync(cri.ExecSyncRequest(container_id=cid, cmd=[]))
    bed.manager.stop_container(cri.StopContainerRequest(container_id=cid, timeout=0))
    with pytest.raises(NotFound, match="not created or running"):
        bed.manager.exec_sync(cri.ExecSyncRequest(container_id=cid, cmd=["true"]))
    remove(bed, cid)


def test_update_resources_and_reopen_log(crio_bed: Bed) -> None:
    bed = crio_bed
    sandbox = bed.sandbox("crun")
    cid = create(bed, sandbox, ctr_config(
        "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.05; done", name="upd",
        resources=cri.LinuxContainerResources(memory_limit_in_bytes=64 << 20)))
    bed.manager.start_container(cri.StartContainerRequest(container_id=cid))
    cgroup = Path("/sys/fs/cgroup/memory") / cgroups_path("", cid).lstrip("/")
    assert int((cgroup / "memory.limit_in_bytes").read_text()) == 64 << 20
    new = cri.LinuxContainerResources(memory_limit_in_bytes=96 << 20, cpu_shares=512)
    bed.manager.update_container_resources(cri.UpdateContainerResourcesRequest(
        container_id=cid, linux=new))
    assert int((cgroup / "memory.limit_in_bytes").read_text()) == 96 << 20
    cpu = Path("/sys/fs/cgroup/cpu") / cgroups_path("", cid).lstrip("/")
    assert int((cpu / "cpu.shares").read_text()) == 512
    st = status(bed, cid)
    assert st.resources is not None and st.resources.linux == new

    log = Path(st.log_path)
    rotated = log.with_name("0.log.1")
    time.sleep(0.2)
    log.rename(rotated)
    bed.manager.reopen_container_log(cri.ReopenContainerLogRequest(container_id=cid))
    deadline = time.monotonic() + 10
    while not log.exists() or not log_lines(str(log)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert log_lines(str(rotated)) and log_lines(str(log))[0][1].startswith("line")
    bed.manager.stop_container(cri.StopContainerRequest(container_id=cid, timeout=0))
    with pytest.raises(FailedPrecondition):
        bed.manager.reopen_container_log(cri.ReopenContainerLogRequest(container_id=cid))
    with pytest.raises(FailedPrecondition):
        bed.manager.update_container_resources(cri.UpdateContainerResourcesRequest(
            container_id=cid, linux=new))
    remove(bed, cid)
    assert not cgroup.exists()


def test_list_filters(crio_bed: Bed) -> None:
    bed = crio_bed
    one, two = bed.sandbox("crun"), bed.sandbox("crun")
    a = create(bed, one, ctr_config("sleep 1000", name="a"))
    b = create(bed, one, ctr_config("true", name="b"))
    c = create(bed, two, ctr_config("true", name="c"))
    try:
        bed.manager.start_container(cri.StartContainerRequest(container_id=a))
        bed.manager.start_container(cri.StartContainerRequest(container_id=b))
        wait_exited(bed, b)

        def ids(**flt: Any) -> set[str]:
            return {x.id for x in bed.manager.list_containers(cri.ListContainersRequest(
                filter=cri.ContainerFilter(**flt) if flt else None)).containers}

        assert {a, b, c} <= ids()
        assert ids(pod_sandbox_id=one.id) == {a, b}
        assert ids(pod_sandbox_id=two.id[:10]) == {c}
        assert ids(id=a[:12]) == {a}
        assert ids(label_selector={"app": "b"}) == {b}
        assert ids(pod_sandbox_id=one.id, label_selector={"app": "c"}) == set()
        state = cri.ContainerStateValue
        assert ids(pod_sandbox_id=one.id, state=state(state=State.CONTAINER_RUNNING)) == {a}
        assert ids(pod_sandbox_id=one.id, state=state(state=State.CONTAINER_EXITED)) == {b}
        assert ids(state=state(state=State.CONTAINER_CREATED)) >= {c}
        listed = bed.manager.list_containers(cri.ListContainersRequest(
            filter=cri.ContainerFilter(id=a))).containers[0]
        assert listed.pod_sandbox_id == one.id and listed.labels == {"app": "a"}
        assert listed.image_id and listed.metadata is not None
        bed.manager.stop_all(one.id, 0)
        assert ids(pod_sandbox_id=one.id, state=state(state=State.CONTAINER_EXITED)) == {a, b}
        bed.manager.remove_all(one.id)
        assert ids(pod_sandbox_id=one.id) == set()
    finally:
        for cid in (a, b, c):
            remove(bed, cid)


# -- names, errors, restarts -------------------------------------------------------------------


def test_retry_in_flight_gets_the_same_id(crio_bed: Bed,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    bed = crio_bed
    sandbox = bed.sandbox("crun")
    resolve = bed.images.resolve_image

    def slow_resolve(ref: str) -> Any:
        time.sleep(0.5)  # the first request is surely still in flight when the retries come
        return resolve(ref)

    monkeypatch.setattr(bed.images, "resolve_image", slow_resolve)
    calls_before = len(bed.manager.state.containers())
    request = cri.CreateContainerRequest(pod_sandbox_id=sandbox.id,
                                         config=ctr_config("true", name="twice"))
    results: list[str] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(bed.manager.create_container(request).container_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 3 and len(set(results)) == 1
    assert len(bed.manager.state.containers()) == calls_before + 1
    assert len([r for r in bed.manager.state.containers() if r.name.startswith("k8s_twice_")
                ]) == 1
    other = cri.CreateContainerRequest(pod_sandbox_id=sandbox.id,
                                       config=ctr_config("echo other", name="twice"))
    with pytest.raises(AlreadyExists, match=results[0]):
        bed.manager.create_container(other)
    remove(bed, results[0])


def test_bad_requests_and_unknown_ids(crio_bed: Bed) -> None:
    bed = crio_bed
    sandbox = bed.sandbox("crun")
    m = bed.manager
    with pytest.raises(InvalidRequest, match=r"metadata\.name"):
        m.create_container(cri.CreateContainerRequest(
            pod_sandbox_id=sandbox.id, config=attrs.evolve(ctr_config("true"), metadata=None)))
    with pytest.raises(InvalidRequest, match="image"):
        m.create_container(cri.CreateContainerRequest(
            pod_sandbox_id=sandbox.id, config=attrs.evolve(ctr_config("true"), image=None)))
    with pytest.raises(NotFound, match="nope"):
        m.create_container(cri.CreateContainerRequest(pod_sandbox_id="nope",
                                                      config=ctr_config("true")))
    with pytest.raises(FailedPrecondition, match="not ready"):
        m.create_container(cri.CreateContainerRequest(
            pod_sandbox_id=bed.sandbox(ready=False).id, config=ctr_config("true")))
    missing = attrs.evolve(ctr_config("true", name="noimg"),
                           image=cri.ImageSpec(image="localhost/absent:1"))
    with pytest.raises(NotFound, match="localhost/absent:1"):
        m.create_container(cri.CreateContainerRequest(pod_sandbox_id=sandbox.id,
                                                      config=missing))
    before = {c.id for c in bed.store.containers()}
    badcap = ctr_config("true", name="badcap", sc=cri.LinuxContainerSecurityContext(
        capabilities=cri.Capability(add_capabilities=["NOT_A_CAP"])))
    with pytest.raises(InvalidRequest, match=r"k8s_badcap_.*NOT_A_CAP"):
        m.create_container(cri.CreateContainerRequest(pod_sandbox_id=sandbox.id,
                                                      config=badcap))
    assert {c.id for c in bed.store.containers()} == before  # rolled back
    assert m.names.holder(f"k8s_badcap_pod_default_{sandbox.metadata.uid}_0") is None
    badcmd = ctr_config(None, name="badcmd", command=["/no/such/binary"])
    with pytest.raises(InvalidRequest, match="k8s_badcmd_"):
        m.create_container(cri.CreateContainerRequest(pod_sandbox_id=sandbox.id,
                                                      config=badcmd))
    assert {c.id for c in bed.store.containers()} == before

    # The runtime's create fails (a directory over a file): everything is undone.
    over_file = ctr_config("true", name="overfile", mounts=[cri.Mount(
        container_path="/etc/passwd", host_path=str(bed.root / "a-dir"))])
    t0 = time.monotonic()
    with pytest.raises(ServiceError, match="k8s_overfile_") as caught:
        m.create_container(cri.CreateContainerRequest(pod_sandbox_id=sandbox.id,
                                                      config=over_file))
    assert time.monotonic() - t0 < 10 and caught.type is ServiceError
    assert "could not create" in str(caught.value), caught.value
    assert {c.id for c in bed.store.containers()} == before
    assert not [r for r in m.state.containers() if r.name.startswith("k8s_overfile_")]
    assert not list(bed.config.runtime.container_attach_socket_dir.glob("*/monitor.json"))

    unknown = "0" * 64
    # StopContainer is idempotent (api.proto; cri-tools "StopContainer should not return
    # an error if not found"), as RemoveContainer is.
    assert m.stop_container(cri.StopContainerRequest(container_id=unknown)) == (
        cri.StopContainerResponse())
    with pytest.raises(InvalidRequest, match="container_id is empty"):
        m.stop_container(cri.StopContainerRequest(container_id=""))
    for call in (lambda: m.start_container(cri.StartContainerRequest(container_id=unknown)),
                 lambda: m.container_status(cri.ContainerStatusRequest(container_id=unknown)),
                 lambda: m.exec_sync(cri.ExecSyncRequest(container_id=unknown, cmd=["x"])),
                 lambda: m.reopen_container_log(
                     cri.ReopenContainerLogRequest(container_id=unknown)),
                 lambda: m.update_container_resources(
                     cri.UpdateContainerResourcesRequest(container_id=unknown))):
        with pytest.raises(NotFound, match=unknown):
            call()
    m.remove_container(cri.RemoveContainerRequest(container_id=unknown))


def test_recover_after_restart(bed: Bed) -> None:
    sandbox = bed.sandbox("runc")
    running = create(bed, sandbox, ctr_config("sleep 1000", name="keeps"))
    exits = create(bed, sandbox, ctr_config("sleep 1000", name="exits"))
    created = create(bed, sandbox, ctr_config("true", name="created"))
    done = create(bed, sandbox, ctr_config("exit 4", name="done"))
    for cid in (running, exits, done):
        bed.manager.start_container(cri.StartContainerRequest(container_id=cid))
    wait_exited(bed, done)
    # The service is "down": a container exits meanwhile, a rootfs mount is lost (as
    # after a reboot's fresh runroot), a crash left a half-made storage container.
    bed.manager.runtime("runc").kill(exits, "SIGKILL")
    bed.store.unmount(created, force=True)
    image_id = bed.store.image(IMAGE).id
    orphan = bed.store.create_container(image_id, names=["k8s_orphan_pod_ns_uid_0"]).id
    time.sleep(0.3)
    fresh = bed.new_manager()
    fresh.recover()
    assert bed.store.mounted(created) == 1
    assert orphan not in [c.id for c in bed.store.containers()]
    old, bed.manager = bed.manager, fresh
    try:
        assert status(bed, running).state == State.CONTAINER_RUNNING
        assert status(bed, created).state == State.CONTAINER_CREATED
        st = status(bed, exits)
        assert (st.state, st.exit_code, st.reason) == (State.CONTAINER_EXITED, 137, "Error")
        assert (status(bed, done).exit_code, status(bed, done).reason) == (4, "Error")
        with pytest.raises(AlreadyExists):
            create(bed, sandbox, ctr_config("echo again", name="keeps"))
        resp = fresh.exec_sync(cri.ExecSyncRequest(container_id=running, cmd=["echo", "x"]))
        assert resp.stdout == b"x\n"
        for cid in (running, exits, created, done):
            remove(bed, cid)
            assert_gone(bed, cid, fresh.runtime("runc"))
    finally:
        old.close()


def test_half_made_container_of_another_handler_is_cleaned(crio_bed: Bed) -> None:
    """A crash between the runtime's create and the record (no record names the
    handler): recovery asks every configured runtime, not only the default (runc)."""
    bed = crio_bed
    assert bed.config.runtime.default_runtime == "runc"
    sandbox = bed.sandbox("crun")
    cid = create(bed, sandbox, ctr_config("sleep 1000", name="halfmade"))
    record = bed.manager.state.container(cid)
    bed.manager.state.delete_container(cid)  # as if the record was never written
    assert cid in [s.id for s in bed.manager.runtime("crun").list()]
    fresh = bed.new_manager()
    try:
        fresh.recover()
        assert cid not in [s.id for s in fresh.runtime("crun").list()]
        assert cid not in [c.id for c in bed.store.containers()]
        assert cid not in Path("/proc/self/mounts").read_text()
        assert not (bed.config.runtime.container_attach_socket_dir / cid).exists()
    finally:
        fresh.close()
    bed.manager.names.release(record.name, cid)


def test_list_notices_a_dead_monitor(crio_bed: Bed) -> None:
    """The pod's monitor is SIGKILLed: ListContainers (which only looks at exit files
    and whether the monitor lives) no longer reports the container RUNNING."""
    bed = crio_bed
    sandbox = bed.sandbox("runc")
    cid = create(bed, sandbox, ctr_config("sleep 1000", name="orphaned"))
    bed.manager.start_container(cri.StartContainerRequest(container_id=cid))

    def listed() -> cri.Container:
        found = bed.manager.list_containers(cri.ListContainersRequest(
            filter=cri.ContainerFilter(id=cid))).containers
        assert len(found) == 1
        return found[0]

    assert listed().state == State.CONTAINER_RUNNING
    monitor_pid = bed.manager.state.container(cid).extra["monitor_pid"]
    assert isinstance(monitor_pid, int) and monitor_pid > 0
    os.kill(monitor_pid, 9)
    deadline = time.monotonic() + 20
    while Path(f"/proc/{monitor_pid}").exists():
        assert time.monotonic() < deadline, "the monitor did not die"
        time.sleep(0.05)
    deadline = time.monotonic() + 20
    while listed().state == State.CONTAINER_RUNNING:
        assert time.monotonic() < deadline, "ListContainers still says RUNNING"
        time.sleep(0.1)
    st = status(bed, cid)
    assert (st.state, st.reason) == (State.CONTAINER_EXITED, "Error"), st
    remove(bed, cid)
    assert_gone(bed, cid, bed.manager.runtime("runc"))


class _Guarded:
    """A sandbox side with SandboxManager's ``guard``: it records the holds, and can
    make the sandbox NOTREADY the moment the hold is taken (a Stop just before)."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        self.events: list[str] = []
        self.stop_on_enter = False

    def sandbox(self, ref: str) -> SandboxRecord:
        return self.state.sandbox(ref)

    @contextlib.contextmanager
    def guard(self, ref: str) -> Iterator[str]:
        self.events.append("enter")
        if self.stop_on_enter:
            self.state.update_sandbox(ref, state=cri.PodSandboxState.SANDBOX_NOTREADY)
        try:
            yield ref
        finally:
            self.events.append("exit:" + ",".join(
                r.name.split("_")[1] for r in self.state.containers(ref)))


def test_create_holds_the_sandbox_guard_and_rechecks_inside(crio_bed: Bed) -> None:
    bed = crio_bed
    sandbox = bed.sandbox("crun")
    side = _Guarded(bed.manager.state)
    manager = ContainerManager(config=bed.config, state=bed.manager.state,
                               names=bed.manager.names,
                               store=bed.store, images=bed.images, sandboxes=side)
    try:
        cid = manager.create_container(cri.CreateContainerRequest(
            pod_sandbox_id=sandbox.id, config=ctr_config("true", name="guarded"))).container_id
        # The record was written while the sandbox was held.
        assert side.events == ["enter", "exit:guarded"]
        side.stop_on_enter = True
        with pytest.raises(FailedPrecondition, match="not ready"):
            manager.create_container(cri.CreateContainerRequest(
                pod_sandbox_id=sandbox.id, config=ctr_config("true", name="late")))
        assert side.events[2:] == ["enter", "exit:guarded"]
        manager.remove_container(cri.RemoveContainerRequest(container_id=cid))
    finally:
        manager.close()


@contextlib.contextmanager
def _pid_holder() -> Iterator[int]:
    """A process holding a fresh pid namespace (as the sandbox side's holder does):
    yields the pid of its init (``sleep``), whose /proc/<pid>/ns/pid is the namespace."""
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "sleep", "infinity"])
    holder: int | None = None
    try:
        deadline = time.monotonic() + 10
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        while not children.read_text().split():
            assert time.monotonic() < deadline, "unshare did not start its child"
            time.sleep(0.02)
        holder = int(children.read_text().split()[0])
        yield holder
    finally:
        # The namespace's init first: killing unshare alone leaves it running.
        if holder is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(holder, signal.SIGKILL)
        proc.kill()
        proc.wait(10)


def test_pid_namespace_of_the_pod(crio_bed: Bed) -> None:
    """Containers with pid POD join the pod's namespace (the record's path) and see each
    other's processes; one with pid CONTAINER in the same pod has its own."""
    bed = crio_bed
    with _pid_holder() as holder:
        base = bed.sandbox("crun")
        sandbox = attrs.evolve(base, namespaces={**base.namespaces,
                                                 "pid": f"/proc/{holder}/ns/pid"})
        bed.manager.state.put(sandbox)

        def pid_mode(mode: cri.NamespaceMode) -> cri.LinuxContainerSecurityContext:
            return Ctx(namespace_options=cri.NamespaceOption(pid=mode))

        server = create(bed, sandbox, ctr_config("sleep 1001", name="pidsrv",
                                                 sc=pid_mode(cri.NamespaceMode.POD)))
        try:
            bed.manager.start_container(cri.StartContainerRequest(container_id=server))
            _, text = run(bed, sandbox, ctr_config("ps -o pid,args", name="pidpeer",
                                                   sc=pid_mode(cri.NamespaceMode.POD)))
            assert "sleep 1001" in text and "sleep infinity" in text, text
            _, text = run(bed, sandbox, ctr_config("ps -o pid,args", name="pidown",
                                                   sc=pid_mode(cri.NamespaceMode.CONTAINER)))
            assert "sleep 1001" not in text and "sleep infinity" not in text, text
            assert text.splitlines()[1].split()[0] == "1", text  # its own init is pid 1
        finally:
            remove(bed, server)
        assert_gone(bed, server, bed.manager.runtime("crun"))


def test_sysctl_is_seen_inside(crio_bed: Bed) -> None:
    """A pod sysctl (kernel.shm_rmid_forced, in the pod's own ipc namespace) is what a
    container of the pod reads; the host's stays as it was."""
    bed = crio_bed
    base = bed.sandbox("runc")
    host_value = Path("/proc/sys/kernel/shm_rmid_forced").read_text().strip()
    assert host_value == "0"
    assert base.config.linux is None
    sandbox = attrs.evolve(base, config=attrs.evolve(base.config, linux=cri.LinuxPodSandboxConfig(
        sysctls={"kernel.shm_rmid_forced": "1"})))
    bed.manager.state.put(sandbox)
    st, text = run(bed, sandbox, ctr_config("cat /proc/sys/kernel/shm_rmid_forced",
                                            name="sysctl"))
    assert st.exit_code == 0 and text.strip() == "1", text
    assert Path("/proc/sys/kernel/shm_rmid_forced").read_text().strip() == host_value


def test_host_to_container_and_private_propagation(crio_bed: Bed, tmp_path: Path) -> None:
    """A mount made on the host under a host-to-container (rslave) mount after the start
    is seen inside; under a private (rprivate) one it is not."""
    bed = crio_bed
    sandbox = bed.sandbox("crun")
    shared = tmp_path / "prop"
    shared.mkdir()
    subprocess.run(["mount", "--bind", str(shared), str(shared)], check=True)
    cids: list[str] = []
    try:
        subprocess.run(["mount", "--make-rshared", str(shared)], check=True)
        (shared / "sub").mkdir()
        for name, mode in (("slave", cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER),
                           ("private", cri.MountPropagation.PROPAGATION_PRIVATE)):
            cid = create(bed, sandbox, ctr_config("sleep 1000", name=f"prop-{name}", mounts=[
                cri.Mount(container_path="/mnt/p", host_path=str(shared), propagation=mode)]))
            cids.append(cid)
            bed.manager.start_container(cri.StartContainerRequest(container_id=cid))
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "late", str(shared / "sub")],
                       check=True)
        (shared / "sub" / "marker").write_text("late\n")

        def seen(cid: str) -> bytes:
            resp = bed.manager.exec_sync(cri.ExecSyncRequest(
                container_id=cid, cmd=["sh", "-c", "cat /mnt/p/sub/marker; "
                                                   "grep -c ' /mnt/p/sub ' /proc/self/mountinfo"],
                timeout=10))
            return resp.stdout

        assert seen(cids[0]) == b"late\n1\n"
        assert seen(cids[1]) == b"0\n"
        specs = [json.loads((Path(bed.manager.state.container(c).bundle) /
                             "config.json").read_text()) for c in cids]
        assert specs[0]["linux"]["rootfsPropagation"] == "rslave"
        assert "rslave" in next(m for m in specs[0]["mounts"]
                                if m["destination"] == "/mnt/p")["options"]
        assert "rprivate" in next(m for m in specs[1]["mounts"]
                                  if m["destination"] == "/mnt/p")["options"]
    finally:
        for cid in cids:
            with contextlib.suppress(Exception):
                remove(bed, cid)
        subprocess.run(["umount", "-R", "-l", str(shared)], check=False)


def test_stopping_a_created_container_does_not_sit_out_the_grace_period(
        crio_bed: Bed) -> None:
    """A container created but never started waits for start as pid 1 of its namespace,
    which ignores SIGTERM: StopContainer kills it at once instead of after the timeout."""
    bed = crio_bed
    sandbox = bed.sandbox("crun")
    cid = create(bed, sandbox, ctr_config("sleep 1000", name="never-started"))
    t0 = time.monotonic()
    bed.manager.stop_container(cri.StopContainerRequest(container_id=cid, timeout=10))
    assert time.monotonic() - t0 < 5
    status = bed.manager.container_status(
        cri.ContainerStatusRequest(container_id=cid)).status
    assert status is not None and status.state == cri.ContainerState.CONTAINER_EXITED
    bed.manager.remove_container(cri.RemoveContainerRequest(container_id=cid))
