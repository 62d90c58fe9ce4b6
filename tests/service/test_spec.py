"""The CRI ContainerConfig -> config.json mapping (criolib.service._spec), no containers.

A fake root filesystem under ``tmp_path`` (an /etc/passwd and /etc/group, an executable
/bin/sh for the validator) and a SandboxRecord with made-up namespace paths.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs
import pytest

from criolib.runtime_spec import (
    ALL_CAPABILITIES,
    STOP_SIGNAL_ANNOTATION,
    host_capabilities,
    load_seccomp_profile,
)
from criolib.service import _cri_types as cri
from criolib.service._config import Config
from criolib.service._errors import InvalidRequest
from criolib.service._spec import BuiltSpec, build_spec, cgroups_path, resources_to_wire
from criolib.service._spec_mounts import mount_propagation_of
from criolib.service._spec_security import user_spec
from criolib.service._state import SandboxRecord

Ctx = cri.LinuxContainerSecurityContext
Profile = cri.SecurityProfile.ProfileType
IMAGE_CONFIG: dict[str, Any] = {"config": {
    "Env": ["PATH=/usr/bin:/bin", "FROM_IMAGE=1", "FOO=image"], "Cmd": ["sh"],
    "WorkingDir": "/srv", "StopSignal": "quit", "Labels": {"org.example": "yes"}}}


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "bin" / "sh").write_text("")
    (root / "bin" / "sh").chmod(0o755)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                         "tester:x:1000:1000::/home/tester:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\ntester:x:1000:\nwheel:x:10:tester\n")
    return root


@pytest.fixture
def sandbox(tmp_path: Path) -> SandboxRecord:
    sdir = tmp_path / "sandbox"
    (sdir / "shm").mkdir(parents=True)
    for name in ("hostname", "resolv.conf", "hosts"):
        (sdir / name).write_text(f"{name}\n")
    return SandboxRecord(
        id="a" * 64, name="k8s_pod_ns_uid_0",
        config=cri.PodSandboxConfig(
            metadata=cri.PodSandboxMetadata(name="pod", uid="uid-1", namespace="ns"),
            hostname="pod-host",
            linux=cri.LinuxPodSandboxConfig(sysctls={"net.ipv4.ip_forward": "1",
                                                     "kernel.shm_rmid_forced": "1"})),
        namespaces={"net": "/run/netns/p", "ipc": "/run/ipcns/p", "uts": "/run/utsns/p"},
        hostname="pod-host", sandbox_dir=str(sdir), shm_path=str(sdir / "shm"),
        cgroup_parent="/kubepods/pod-uid-1")


def spec_of(rootfs: Path, sandbox: SandboxRecord, *, config: Config | None = None,
            sc: Ctx | None = None, resources: cri.LinuxContainerResources | None = None,
            image: dict[str, Any] | None = None, **fields: Any) -> tuple[dict[str, Any],
                                                                         BuiltSpec]:
    fields.setdefault("command", ["/bin/sh", "-c", "true"])
    request = cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name="ctr"), image=cri.ImageSpec(image="x"),
        linux=cri.LinuxContainerConfig(security_context=sc, resources=resources), **fields)
    built = build_spec(container_id="c" * 64, config=config or Config(), request=request,
                       sandbox=sandbox, image_config=image or IMAGE_CONFIG, rootfs=rootfs,
                       log_path="/logs/ctr.log")
    return built.generator.config(), built


def mount_at(doc: dict[str, Any], dest: str) -> dict[str, Any]:
    found = [m for m in doc["mounts"] if m["destination"] == dest]
    assert len(found) == 1, doc["mounts"]
    return dict(found[0])


def test_defaults(rootfs: Path, sandbox: SandboxRecord) -> None:
    doc, built = spec_of(rootfs, sandbox, envs=[cri.KeyValue(key="FOO", value="cri")])
    process = doc["process"]
    assert process["args"] == ["/bin/sh", "-c", "true"]
    env = dict(e.split("=", 1) for e in process["env"])
    assert env["FOO"] == "cri" and env["FROM_IMAGE"] == "1" and env["HOSTNAME"] == "pod-host"
    assert process["cwd"] == "/srv" and (rootfs / "srv").is_dir()
    defaults = sorted(f"CAP_{c}" for c in Config().runtime.default_capabilities)
    assert process["capabilities"]["bounding"] == defaults
    assert process["capabilities"]["effective"] == defaults
    assert process["noNewPrivileges"] is True  # no security context: the secure default
    # No seccomp asked for at all: unconfined (critest "should support nil profile,
    # which is unconfined"; CRI-O's seccomp_use_default_when_empty = false).
    assert "seccomp" not in doc["linux"]
    assert doc["hostname"] == "pod-host"
    namespaces = {ns["type"]: ns.get("path") for ns in doc["linux"]["namespaces"]}
    assert namespaces == {"network": "/run/netns/p", "ipc": "/run/ipcns/p",
                          "uts": "/run/utsns/p", "pid": None, "mount": None}
    assert doc["linux"]["cgroupsPath"] == "/kubepods/pod-uid-1/criolib-" + "c" * 64
    assert doc["linux"]["resources"]["pids"] == {"limit": 1024}
    assert doc["linux"]["sysctl"] == {"net.ipv4.ip_forward": "1",
                                      "kernel.shm_rmid_forced": "1"}
    for name in ("hostname", "resolv.conf", "hosts"):
        mount = mount_at(doc, f"/etc/{name}")
        assert mount["source"] == os.path.join(sandbox.sandbox_dir, name)
        assert "rw" in mount["options"] and mount["type"] == "bind"
    assert mount_at(doc, "/dev/shm")["source"] == sandbox.shm_path
    notes = doc["annotations"]
    assert notes["io.kubernetes.pod.name"] == "pod"
    assert notes["io.kubernetes.container.name"] == "ctr"
    assert notes["io.kubernetes.cri-o.SandboxID"] == sandbox.id
    assert notes["org.example"] == "yes" and notes[STOP_SIGNAL_ANNOTATION] == "SIGQUIT"
    assert built.stop_signal == "SIGQUIT" and not built.privileged and not built.pid_host
    assert doc["root"] == {"path": str(rootfs), "readonly": False}


def test_stop_signal_and_tty(rootfs: Path, sandbox: SandboxRecord) -> None:
    doc, built = spec_of(rootfs, sandbox, stop_signal=cri.Signal.SIGINT, tty=True)
    assert built.stop_signal == "SIGINT" and doc["process"]["terminal"] is True
    _, built = spec_of(rootfs, sandbox, image={"config": {"Cmd": ["sh"]}})
    assert built.stop_signal == "SIGTERM"


def test_capabilities(rootfs: Path, sandbox: SandboxRecord) -> None:
    def caps(**kw: Any) -> dict[str, list[str]]:
        doc, _ = spec_of(rootfs, sandbox, sc=Ctx(capabilities=cri.Capability(**kw)))
        return dict(doc["process"]["capabilities"])

    got = caps(drop_capabilities=["ALL"], add_capabilities=["net_admin"])
    assert got["bounding"] == got["effective"] == got["permitted"] == ["CAP_NET_ADMIN"]
    got = caps(add_capabilities=["ALL"], drop_capabilities=["CAP_SYS_ADMIN"])
    assert set(got["bounding"]) == set(host_capabilities()) - {"CAP_SYS_ADMIN"}
    got = caps(drop_capabilities=["KILL"], add_capabilities=["NET_RAW"])
    assert "CAP_KILL" not in got["bounding"] and {"CAP_NET_RAW", "CAP_CHOWN"} <= set(
        got["bounding"])
    got = caps(add_ambient_capabilities=["NET_BIND_SERVICE"])
    assert got["ambient"] == ["CAP_NET_BIND_SERVICE"]
    assert "CAP_NET_BIND_SERVICE" in got["inheritable"]
    with pytest.raises(InvalidRequest, match="NOPE"):
        caps(add_capabilities=["NOPE"])
    config = Config()
    config = attrs.evolve(config, runtime=attrs.evolve(
        config.runtime, default_capabilities=("CHOWN",)))
    doc, _ = spec_of(rootfs, sandbox, config=config)
    assert doc["process"]["capabilities"]["bounding"] == ["CAP_CHOWN"]


def test_user(rootfs: Path, sandbox: SandboxRecord) -> None:
    def user(sc: Ctx, image_user: str = "") -> dict[str, Any]:
        image = {"config": {"Cmd": ["sh"], "User": image_user}}
        doc, _ = spec_of(rootfs, sandbox, sc=sc, image=image)
        result: dict[str, Any] = doc["process"]["user"]
        return result

    assert user(Ctx(run_as_user=cri.Int64Value(value=1000))) == {
        "uid": 1000, "gid": 1000, "additionalGids": [10]}
    assert user(Ctx(run_as_username="tester", supplemental_groups=[5, 7])) == {
        "uid": 1000, "gid": 1000, "additionalGids": [5, 7, 10]}
    assert user(Ctx(run_as_user=cri.Int64Value(value=4000),
                    run_as_group=cri.Int64Value(value=44))) == {"uid": 4000, "gid": 44}
    # critest "should return error if RunAsGroup is set without RunAsUser" (CRI-O's and
    # containerd's "user group is specified without user or username").
    with pytest.raises(InvalidRequest, match=r"run_as_group .*without run_as_user"):
        user(Ctx(run_as_group=cri.Int64Value(value=44)), image_user="tester")
    with pytest.raises(InvalidRequest, match="run_as_group"):
        user_spec(Ctx(run_as_group=cri.Int64Value(value=44)))
    assert user(Ctx(run_as_username="tester", run_as_group=cri.Int64Value(value=44))) == {
        "uid": 1000, "gid": 44}
    assert user(Ctx(), image_user="tester")["uid"] == 1000
    with pytest.raises(InvalidRequest, match="nobody-here"):
        user(Ctx(run_as_username="nobody-here"))
    assert user_spec(None) is None
    with pytest.raises(InvalidRequest, match="negative"):
        user_spec(Ctx(run_as_user=cri.Int64Value(value=-1)))


def test_seccomp(rootfs: Path, sandbox: SandboxRecord, tmp_path: Path) -> None:
    def seccomp(sc: Ctx | None, config: Config | None = None) -> Any:
        doc, _ = spec_of(rootfs, sandbox, sc=sc, config=config)
        return doc["linux"].get("seccomp")

    default = seccomp(Ctx(seccomp=cri.SecurityProfile()))
    assert default["defaultAction"] == "SCMP_ACT_ERRNO"
    # Nothing asked (no context, or neither seccomp nor seccomp_profile_path): unconfined,
    # unless seccomp_use_default_when_empty says RuntimeDefault.
    assert seccomp(None) is None and seccomp(Ctx()) is None
    when_empty = Config()
    when_empty = attrs.evolve(when_empty, runtime=attrs.evolve(
        when_empty.runtime, seccomp_use_default_when_empty=True))
    assert seccomp(None, when_empty) == default and seccomp(Ctx(), when_empty) == default
    assert seccomp(Ctx(seccomp_profile_path="unconfined"), when_empty) is None
    assert seccomp(Ctx(seccomp_profile_path="runtime/default")) == default
    assert seccomp(Ctx(seccomp=cri.SecurityProfile(profile_type=Profile.Unconfined))) is None
    assert seccomp(Ctx(seccomp_profile_path="unconfined")) is None

    docker = tmp_path / "docker.json"
    docker.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": []}],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"name": "reboot", "action": "SCMP_ACT_ALLOW",
             "includes": {"caps": ["CAP_SYS_BOOT"]}},
            {"names": ["chown"], "action": "SCMP_ACT_ALLOW",
             "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW",
             "includes": {"arches": ["amd64"]}}]}))
    local = Ctx(seccomp=cri.SecurityProfile(profile_type=Profile.Localhost,
                                            localhost_ref=str(docker)))
    got = seccomp(local)
    names = [s["names"] for s in got["syscalls"]]
    assert ["read", "write"] in names and ["chown"] in names and ["reboot"] not in names
    assert got["defaultErrnoRet"] == 1
    if os.uname().machine == "x86_64":
        assert got["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
        assert ["arch_prctl"] in names
    assert seccomp(Ctx(seccomp_profile_path=f"localhost/{docker}")) == got
    oci = tmp_path / "oci.json"
    oci.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "architectures": [],
                               "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}))
    assert load_seccomp_profile(str(oci)) == {
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": [],
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}
    config = Config()
    config = attrs.evolve(config, runtime=attrs.evolve(config.runtime,
                                                       seccomp_profile=str(oci)))
    assert seccomp(Ctx(seccomp=cri.SecurityProfile()), config)["defaultAction"] == (
        "SCMP_ACT_ALLOW")
    assert seccomp(None, config) is None
    for bad, match in ((tmp_path / "absent.json", "cannot read"), (rootfs / "etc" / "passwd",
                                                                  "not JSON")):
        with pytest.raises(InvalidRequest, match=match):
            seccomp(Ctx(seccomp=cri.SecurityProfile(profile_type=Profile.Localhost,
                                                    localhost_ref=str(bad))))
    with pytest.raises(InvalidRequest, match="localhost_ref"):
        seccomp(Ctx(seccomp=cri.SecurityProfile(profile_type=Profile.Localhost)))
    with pytest.raises(InvalidRequest, match="absolute"):
        seccomp(Ctx(seccomp=cri.SecurityProfile(profile_type=Profile.Localhost,
                                                localhost_ref="relative.json")))


def test_privileged_nnp_paths_readonly(rootfs: Path, sandbox: SandboxRecord) -> None:
    doc, built = spec_of(rootfs, sandbox, sc=Ctx(privileged=True, no_new_privs=True,
                                                 masked_paths=["/proc/x"]))
    assert built.privileged and "seccomp" not in doc["linux"]
    assert doc["process"]["noNewPrivileges"] is False
    assert "maskedPaths" not in doc["linux"]
    assert set(doc["process"]["capabilities"]["bounding"]) == set(host_capabilities())
    doc, _ = spec_of(rootfs, sandbox, sc=Ctx(no_new_privs=False, readonly_rootfs=True,
                                             masked_paths=["/proc/a"],
                                             readonly_paths=["/proc/b"]))
    assert doc["process"]["noNewPrivileges"] is False
    assert doc["linux"]["maskedPaths"] == ["/proc/a"]
    assert doc["linux"]["readonlyPaths"] == ["/proc/b"]
    assert doc["root"]["readonly"] is True
    assert "ro" in mount_at(doc, "/etc/hosts")["options"]
    doc, _ = spec_of(rootfs, sandbox, sc=Ctx(no_new_privs=True))
    assert doc["process"]["noNewPrivileges"] is True
    assert "/proc/kcore" in doc["linux"]["maskedPaths"]  # the defaults when none given


def test_namespaces(rootfs: Path, sandbox: SandboxRecord) -> None:
    host = attrs.evolve(sandbox, namespaces={}, config=cri.PodSandboxConfig(
        linux=cri.LinuxPodSandboxConfig(sysctls={"net.core.somaxconn": "1024",
                                                 "kernel.msgmax": "9000"})))
    doc, built = spec_of(rootfs, host, sc=Ctx(namespace_options=cri.NamespaceOption(
        pid=cri.NamespaceMode.NODE)))
    assert {ns["type"] for ns in doc["linux"]["namespaces"]} == {"mount"}
    assert built.pid_host and "hostname" not in doc
    assert "sysctl" not in doc["linux"]  # net.* and IPC sysctls need the pod's own
    checked = attrs.evolve(sandbox, extra={"sysctls": {"net.core.somaxconn": "7"}})
    doc, _ = spec_of(rootfs, checked)
    assert doc["linux"]["sysctl"] == {"net.core.somaxconn": "7"}  # the sandbox's, as is
    shared = attrs.evolve(sandbox, namespaces={**sandbox.namespaces, "pid": "/run/pidns/p"})
    doc, _ = spec_of(rootfs, shared, sc=Ctx(namespace_options=cri.NamespaceOption(
        pid=cri.NamespaceMode.POD)))
    assert {"type": "pid", "path": "/run/pidns/p"} in doc["linux"]["namespaces"]
    with pytest.raises(InvalidRequest, match="TARGET"):
        spec_of(rootfs, sandbox, sc=Ctx(namespace_options=cri.NamespaceOption(
            pid=cri.NamespaceMode.TARGET)))
    assert cgroups_path("", "x") == "/criolib-x"
    assert cgroups_path("kubepods/", "x") == "/kubepods/criolib-x"


def test_mounts(rootfs: Path, sandbox: SandboxRecord, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "link").symlink_to(data)
    missing = tmp_path / "will" / "exist"
    doc, built = spec_of(rootfs, sandbox, mounts=[
        cri.Mount(container_path="/data/sub", host_path=str(missing)),
        cri.Mount(container_path="data", host_path=str(tmp_path / "link"), readonly=True),
        cri.Mount(container_path="/etc/hosts", host_path=str(data))])
    assert missing.is_dir()
    dests = [m["destination"] for m in doc["mounts"]]
    assert dests.index("/data") < dests.index("/data/sub")
    assert mount_at(doc, "/data") == {"destination": "/data", "type": "bind",
                                      "source": str(data),
                                      "options": ["rbind", "ro", "rprivate"]}
    assert mount_at(doc, "/etc/hosts")["source"] == str(data)  # the CRI's wins
    assert [m.container_path for m in built.mounts] == ["/data", "/data/sub", "/etc/hosts"]
    assert built.mounts[0].host_path == str(data) and built.mounts[0].readonly
    for mount, match in (
            (cri.Mount(container_path="/x", host_path="relative"), "absolute"),
            (cri.Mount(container_path="", host_path=str(data)), "container_path"),
            (cri.Mount(container_path="/x", host_path=str(data), recursive_read_only=True),
             "recursive read-only"),
            (cri.Mount(container_path="/x", host_path=str(data),
                       image=cri.ImageSpec(image="busybox")), "image volumes"),
            (cri.Mount(container_path="/x", host_path=str(data),
                       propagation=cri.MountPropagation.PROPAGATION_BIDIRECTIONAL),
             "shared"),
            (cri.Mount(container_path="/x", host_path=str(data),
                       propagation=cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER),
             "shared or slave")):
        if mount.propagation and mount_propagation_of(str(data)):
            continue  # a host whose / is shared lets it through, as it should
        with pytest.raises(InvalidRequest, match=match):
            spec_of(rootfs, sandbox, mounts=[mount])


def test_devices(rootfs: Path, sandbox: SandboxRecord) -> None:
    doc, _ = spec_of(rootfs, sandbox, devices=[
        cri.Device(host_path="/dev/null", container_path="/dev/mynull", permissions="rw")])
    assert {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3}.items() <= \
        doc["linux"]["devices"][-1].items()
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"} in \
        doc["linux"]["resources"]["devices"]
    with pytest.raises(InvalidRequest, match="permissions"):
        spec_of(rootfs, sandbox, devices=[cri.Device(host_path="/dev/null", permissions="x")])
    with pytest.raises(InvalidRequest, match="/dev/nope"):
        spec_of(rootfs, sandbox, devices=[cri.Device(host_path="/dev/nope")])


def test_resources(rootfs: Path, sandbox: SandboxRecord) -> None:
    res = cri.LinuxContainerResources(
        cpu_period=100000, cpu_quota=50000, cpu_shares=256, memory_limit_in_bytes=1 << 26,
        cpuset_cpus="0", cpuset_mems="0", oom_score_adj=-998,
        hugepage_limits=[cri.HugepageLimit(page_size="2MB", limit=0)])
    assert resources_to_wire(res, swap_supported=True) == {
        "cpu": {"shares": 256, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        "memory": {"limit": 1 << 26, "swap": 1 << 26},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 0}]}
    assert resources_to_wire(attrs.evolve(res, memory_swap_limit_in_bytes=1 << 27),
                             swap_supported=False)["memory"] == {"limit": 1 << 26}
    assert resources_to_wire(cri.LinuxContainerResources()) == {}
    with pytest.raises(InvalidRequest, match="below"):
        resources_to_wire(attrs.evolve(res, memory_swap_limit_in_bytes=1 << 20),
                          swap_supported=True)
    doc, _ = spec_of(rootfs, sandbox, resources=res)
    assert doc["linux"]["resources"]["memory"]["limit"] == 1 << 26
    assert doc["linux"]["resources"]["cpu"]["shares"] == 256
    own = int(Path("/proc/self/oom_score_adj").read_text())
    assert doc["process"]["oomScoreAdj"] == max(-998, own)  # clamped: no CAP_SYS_RESOURCE


def test_bad_image_settings(rootfs: Path, sandbox: SandboxRecord) -> None:
    with pytest.raises(InvalidRequest, match="no command"):
        spec_of(rootfs, sandbox, image={"config": {}}, command=[])
    with pytest.raises(InvalidRequest, match="not valid"):
        spec_of(rootfs, sandbox, command=["/no/such/program"])
    with pytest.raises(InvalidRequest, match="empty key"):
        spec_of(rootfs, sandbox, envs=[cri.KeyValue(key="", value="x")])
    assert "CAP_CHOWN" in ALL_CAPABILITIES
