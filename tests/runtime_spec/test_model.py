"""The typed model of config.json, state and features, and its converter.

Round trips of documents other tools wrote (runc, crun), of a hand-written config
using every field, and of hypothesis-generated documents; unknown properties kept at
every depth. Structural faults are in test_model_errors, key order and the bytes
of other tools' files in test_model_layout.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings

from criolib.runtime_spec import (
    OCI_RUNTIME_SPEC_VERSION,
    OCI_RUNTIME_SPEC_VERSIONS,
    STATUS_CREATED,
    Features,
    Linux,
    LinuxIDMapping,
    LinuxIntelRdt,
    LinuxIOPriority,
    Mount,
    Process,
    Spec,
    SpecFormatError,
    State,
    User,
    dump_spec,
    features_to_dict,
    load_features,
    load_spec,
    load_state,
    spec_from_dict,
    spec_to_dict,
    state_to_dict,
)
from criolib.testing import require_binaries, require_root
from criolib.testing.strategies import (
    features,
    features_dicts,
    spec_dicts,
    specs,
    state_dicts,
    states,
)

_SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


def _walk(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every model object under ``obj`` with its path (attribute names)."""
    if attrs.has(type(obj)):
        yield path, obj
        for field in _wire_fields(type(obj)):
            yield from _walk(getattr(obj, field.name), f"{path}.{field.name}")
    elif isinstance(obj, tuple):
        for i, item in enumerate(obj):
            yield from _walk(item, f"{path}[{i}]")
    elif isinstance(obj, dict):
        for key, item in obj.items():
            yield from _walk(item, f"{path}[{key!r}]")


def _wire_fields(cls: type) -> list[Any]:
    """The attrs fields of a model class that are properties (not extra, not _order)."""
    return [f for f in attrs.fields(cls) if f.name != "extra" and not f.name.startswith("_")]


def _extras(obj: Any) -> dict[str, Any]:
    return {path: o.extra for path, o in _walk(obj) if o.extra}


# -- a hand-written v1.2 config with every field ------------------------------------

_IDMAP = {"containerID": 0, "hostID": 100000, "size": 65536}
_HOOK = {"path": "/usr/bin/hook", "args": ["hook", "-v"], "env": ["A=1"], "timeout": 5}

FULL_CONFIG: dict[str, Any] = {
    "ociVersion": "1.2.0",
    "process": {
        "terminal": True,
        "consoleSize": {"height": 25, "width": 80},
        "user": {"uid": 1, "gid": 1, "umask": 18, "additionalGids": [5, 6],
                 "username": "containeradministrator"},
        "args": ["sh"],
        "commandLine": "cmd.exe /c dir",
        "env": ["PATH=/usr/bin:/bin", "TERM=xterm"],
        "cwd": "/root",
        "capabilities": {
            "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL"],
            "effective": ["CAP_KILL"],
            "inheritable": [],
            "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL"],
            "ambient": ["CAP_KILL"],
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
        "apparmorProfile": "acme_secure_profile",
        "oomScoreAdj": -500,
        "scheduler": {"policy": "SCHED_DEADLINE", "nice": -5, "priority": 10,
                      "flags": ["SCHED_FLAG_RESET_ON_FORK"], "runtime": 10000000,
                      "deadline": 20000000, "period": 30000000},
        "selinuxLabel": "system_u:system_r:svirt_lxc_net_t:s0:c124,c675",
        "ioPriority": {"class": "IOPRIO_CLASS_IDLE", "priority": 4},
        "execCPUAffinity": {"initial": "7", "final": "0-3,7"},
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "slartibartfast",
    "domainname": "foobarbaz.test",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/data", "type": "none", "source": "/volumes/testing",
         "options": ["rbind", "rw", "idmap"], "uidMappings": [_IDMAP], "gidMappings": [_IDMAP]},
    ],
    "hooks": {
        "prestart": [_HOOK],
        "createRuntime": [_HOOK],
        "createContainer": [_HOOK],
        "startContainer": [_HOOK],
        "poststart": [_HOOK],
        "poststop": [{"path": "/usr/bin/cleanup"}],
    },
    "annotations": {"com.example.key1": "value1", "key2": ""},
    "linux": {
        "namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/neta"},
                       {"type": "time"}],
        "uidMappings": [_IDMAP],
        "gidMappings": [_IDMAP],
        "timeOffsets": {"monotonic": {"secs": 172800, "nanosecs": 0},
                        "boottime": {"secs": -3600}},
        "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                     "fileMode": 438, "uid": 0, "gid": 0}],
        "netDevices": {"eth0": {"name": "container_eth0"}, "ens4": {}},
        "cgroupsPath": "/myRuntime/myContainer",
        "resources": {
            "devices": [{"allow": False, "access": "rwm"},
                        {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"}],
            "memory": {"limit": 536870912, "reservation": 536870912, "swap": -1, "kernel": -1,
                       "kernelTCP": -1, "swappiness": 0, "disableOOMKiller": False,
                       "useHierarchy": True, "checkBeforeUpdate": True},
            "cpu": {"shares": 1024, "quota": 1000000, "burst": 1000000, "period": 500000,
                    "realtimeRuntime": 950000, "realtimePeriod": 1000000, "cpus": "2-3",
                    "mems": "0-7", "idle": 0},
            "pids": {"limit": 32771},
            "blockIO": {
                "weight": 10, "leafWeight": 10,
                "weightDevice": [{"major": 8, "minor": 0, "weight": 500, "leafWeight": 300}],
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 600}],
                "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 700}],
                "throttleReadIOPSDevice": [{"major": 8, "minor": 16, "rate": 300}],
                "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 400}],
            },
            "hugepageLimits": [{"pageSize": "2MB", "limit": 18446744073709551615}],
            "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 500}]},
            "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}},
            "unified": {"io.max": "259:0 rbps=2097152 wiops=120", "hugetlb.1GB.max": "1073741824"},
        },
        "intelRdt": {"closID": "guaranteed_group", "l3CacheSchema": "L3:0=7f0;1=1f",
                     "memBwSchema": "MB:0=20;1=70", "schemata": "L2:0=f;1=f",
                     "enableCMT": True, "enableMBM": True, "enableMonitoring": True},
        "memoryPolicy": {"mode": "MPOL_INTERLEAVE", "nodes": "2-3",
                         "flags": ["MPOL_F_STATIC_NODES"]},
        "sysctl": {"net.ipv4.ip_forward": "1", "net.core.somaxconn": "256"},
        "seccomp": {
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "listenerPath": "/run/seccomp-agent.socket",
            "listenerMetadata": "MKNOD=/dev/null",
            "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ALLOW", "errnoRet": 38,
                          "args": [{"index": 0, "value": 8, "valueTwo": 0,
                                    "op": "SCMP_CMP_EQ"}]}],
        },
        "rootfsPropagation": "slave",
        "maskedPaths": ["/proc/kcore"],
        "readonlyPaths": ["/proc/sys"],
        "mountLabel": "system_u:object_r:svirt_sandbox_file_t:s0:c715,c811",
        "personality": {"domain": "LINUX32", "flags": []},
    },
    "solaris": {"milestone": "svc:/milestone/container:default", "limitpriv": "default"},
    "windows": {"layerFolders": ["C:\\layers\\1"], "servicing": False},
    "vm": {"kernel": {"path": "/boot/vmlinuz"}},
    "zos": {"devices": []},
    "freebsd": {"jail": {"vnet": "new"}},
}


def _fresh() -> dict[str, Any]:
    """A private copy of FULL_CONFIG with no shared sub-objects (deepcopy keeps sharing)."""
    doc: dict[str, Any] = json.loads(json.dumps(FULL_CONFIG))
    return doc


def _all_fields_reachable_from(cls: type) -> set[tuple[str, str]]:
    """(class, attribute) for every field of every model class under ``cls``."""
    import typing

    found: set[tuple[str, str]] = set()
    todo, seen = [cls], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        hints = typing.get_type_hints(current)
        for field in _wire_fields(current):
            found.add((current.__name__, field.name))
            stack = [hints[field.name]]
            while stack:
                tp = stack.pop()
                if attrs.has(tp):
                    todo.append(tp)
                stack.extend(typing.get_args(tp))
    return found


def _fields_set(obj: Any) -> set[tuple[str, str]]:
    return {
        (type(o).__name__, field.name)
        for _, o in _walk(obj)
        for field in _wire_fields(type(o))
        if getattr(o, field.name) is not None
    }


def test_full_config_uses_every_field_and_round_trips() -> None:
    spec = spec_from_dict(FULL_CONFIG)
    # Every property is known to the model (no wire name misspelt) ...
    assert _extras(spec) == {}
    # ... every field of every class was filled from it ...
    assert _all_fields_reachable_from(Spec) - _fields_set(spec) == set()
    # ... and it comes back exactly, through the dict and through the bytes.
    assert spec_to_dict(spec) == FULL_CONFIG
    assert load_spec(dump_spec(spec)) == spec
    assert json.loads(dump_spec(spec, indent=4)) == FULL_CONFIG


def test_irregular_wire_names_land_on_snake_case_attributes() -> None:
    spec = spec_from_dict(FULL_CONFIG)
    assert spec.oci_version == "1.2.0"
    assert spec.process is not None and spec.linux is not None
    assert spec.process.no_new_privileges is True
    assert spec.process.oom_score_adj == -500
    assert spec.process.apparmor_profile == "acme_secure_profile"
    assert spec.process.io_priority == LinuxIOPriority(class_="IOPRIO_CLASS_IDLE", priority=4)
    assert spec.process.exec_cpu_affinity is not None
    assert spec.linux.cgroups_path == "/myRuntime/myContainer"
    assert spec.linux.uid_mappings == (LinuxIDMapping(container_id=0, host_id=100000,
                                                      size=65536),)
    assert spec.linux.mount_label is not None and spec.linux.rootfs_propagation == "slave"
    resources = spec.linux.resources
    assert resources is not None and resources.memory is not None
    assert resources.memory.disable_oom_killer is False
    assert resources.memory.kernel_tcp == -1
    assert resources.memory.swap == -1
    assert resources.network is not None and resources.network.class_id == 1048577
    assert resources.block_io is not None
    assert resources.block_io.leaf_weight == 10
    assert resources.block_io.throttle_read_iops_device is not None
    assert resources.cpu is not None and resources.cpu.realtime_runtime == 950000
    assert resources.hugepage_limits is not None
    assert resources.hugepage_limits[0].limit == 2**64 - 1  # uint64 max stays an int
    assert spec.linux.intel_rdt is not None and spec.linux.intel_rdt.clos_id == "guaranteed_group"
    assert spec.linux.net_devices is not None
    assert spec.linux.net_devices["eth0"].name == "container_eth0"
    assert spec.annotations == {"com.example.key1": "value1", "key2": ""}


def test_intel_rdt_schemata_keeps_its_v1_2_string_or_v1_3_array_form() -> None:
    for schemata in ("L3:0=7f0\nMB:0=20", ["L3:0=7f0", "MB:0=20"], []):
        doc = {"ociVersion": "1.3.0", "linux": {"intelRdt": {"schemata": schemata}}}
        spec = spec_from_dict(doc)
        assert spec.linux is not None and spec.linux.intel_rdt is not None
        expected = schemata if isinstance(schemata, str) else tuple(schemata)
        assert spec.linux.intel_rdt.schemata == expected
        assert spec_to_dict(spec) == doc
    with pytest.raises(SpecFormatError, match=r"intelRdt\.schemata: expected a string or an "
                                              r"array, got 5"):
        spec_from_dict({"ociVersion": "1.3.0", "linux": {"intelRdt": {"schemata": 5}}})


# -- documents written by real tools ------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["runc", "spec"], ["runc", "spec", "--rootless"], ["crun", "spec"],
     ["crun", "spec", "--rootless"]],
    ids=" ".join,
)
def test_runtime_generated_spec_round_trips(argv: list[str], tmp_path: Path) -> None:
    require_binaries(argv[0])
    subprocess.run(argv, cwd=tmp_path, check=True, capture_output=True, timeout=30)
    raw = (tmp_path / "config.json").read_bytes()
    spec = load_spec(raw, source=str(tmp_path / "config.json"))
    assert spec_to_dict(spec) == json.loads(raw)
    assert _extras(spec) == {}, "a property the runtime writes is unknown to the model"
    assert load_spec(dump_spec(spec)) == spec
    assert spec.process is not None and spec.process.args


def test_runc_features_round_trip() -> None:
    # crun 1.8.1 has no "features" command (crun added it later), runc 1.1 has.
    require_binaries("runc")
    raw = subprocess.run(["runc", "features"], check=True, capture_output=True,
                         timeout=30).stdout
    feats = load_features(raw)
    assert features_to_dict(feats) == json.loads(raw)
    assert _extras(feats) == {}
    assert feats.linux is not None and feats.linux.seccomp is not None
    assert "SCMP_ACT_ALLOW" in (feats.linux.seccomp.actions or ())


@pytest.mark.integration
@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_runtime_state_round_trips(runtime: str, tmp_path: Path) -> None:
    require_binaries(runtime, "busybox")
    require_root()
    rootfs = tmp_path / "bundle" / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "bin" / "sh").write_bytes(Path(_which("busybox")).read_bytes())
    (rootfs / "bin" / "sh").chmod(0o755)
    subprocess.run([runtime, "spec"], cwd=rootfs.parent, check=True, capture_output=True)
    config = json.loads((rootfs.parent / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["sh", "-c", "sleep 30"]
    (rootfs.parent / "config.json").write_text(json.dumps(config))
    base = [runtime, "--root", str(tmp_path / "state")]
    cid = f"criolib-model-{runtime}"
    try:
        # The container's init inherits stdio: pipes would never reach EOF.
        with open(tmp_path / "create.log", "wb") as log:
            subprocess.run([*base, "create", "--bundle", str(rootfs.parent), cid], check=True,
                           stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=60)
        raw = subprocess.run([*base, "state", cid], check=True, capture_output=True,
                             timeout=30).stdout
    finally:
        subprocess.run([*base, "delete", "--force", cid], capture_output=True, timeout=60)
    state = load_state(raw)
    assert state_to_dict(state) == json.loads(raw)
    assert state.id == cid and state.status == STATUS_CREATED
    assert state.bundle == str(rootfs.parent)
    assert isinstance(state.pid, int) and state.pid > 0
    # runc and crun add properties of their own (created, owner, rootfs): kept.
    assert "created" in state.extra


def _which(name: str) -> str:
    import shutil

    found = shutil.which(name)
    assert found is not None
    return found


# -- hypothesis round trips -----------------------------------------------------------


@_SETTINGS
@given(spec_dicts())
def test_generated_spec_dicts_round_trip(doc: dict[str, Any]) -> None:
    spec = spec_from_dict(doc)
    assert spec_to_dict(spec) == doc
    assert load_spec(dump_spec(spec)) == spec
    assert load_spec(dump_spec(spec, indent=2).decode()) == spec


@_SETTINGS
@given(specs())
def test_generated_specs_survive_json(spec: Spec) -> None:
    assert load_spec(json.loads(dump_spec(spec))) == spec


@_SETTINGS
@given(state_dicts(), states())
def test_generated_states_round_trip(doc: dict[str, Any], state: State) -> None:
    assert state_to_dict(load_state(doc)) == doc
    assert load_state(json.dumps(state_to_dict(state))) == state


@_SETTINGS
@given(features_dicts(), features())
def test_generated_features_round_trip(doc: dict[str, Any], feats: Features) -> None:
    assert features_to_dict(load_features(doc)) == doc
    assert load_features(json.dumps(features_to_dict(feats)).encode()) == feats


# -- what the round trip keeps ---------------------------------------------------------


def test_unknown_properties_survive_at_every_depth() -> None:
    doc = _fresh()
    doc["org.example.top"] = {"nested": [1, 2.5, None, {"deep": True}]}
    doc["process"]["user"]["x-user"] = "u"
    doc["mounts"][1]["uidMappings"][0]["x-map"] = 7
    doc["hooks"]["poststop"][0]["x-hook"] = []
    doc["linux"]["resources"]["memory"]["x-mem"] = {"a": {}}
    doc["linux"]["seccomp"]["syscalls"][0]["args"][0]["x-arg"] = -1
    doc["linux"]["netDevices"]["eth0"]["x-net"] = "n"
    doc["linux"]["resources"]["oomScoreAdj"] = 100  # a pre-1.0 location, unknown now
    spec = spec_from_dict(doc)
    assert _extras(spec) == {
        "": {"org.example.top": {"nested": [1, 2.5, None, {"deep": True}]}},
        ".process.user": {"x-user": "u"},
        ".mounts[1].uid_mappings[0]": {"x-map": 7},
        ".hooks.poststop[0]": {"x-hook": []},
        ".linux.net_devices['eth0']": {"x-net": "n"},
        ".linux.resources": {"oomScoreAdj": 100},
        ".linux.resources.memory": {"x-mem": {"a": {}}},
        ".linux.seccomp.syscalls[0].args[0]": {"x-arg": -1},
    }
    assert spec_to_dict(spec) == doc
    assert json.loads(dump_spec(spec)) == doc


def test_absent_stays_absent_and_empty_stays_empty() -> None:
    doc = {"ociVersion": "1.2.0", "mounts": [], "annotations": {},
           "linux": {"maskedPaths": [], "resources": {}, "sysctl": {}}}
    spec = spec_from_dict(doc)
    assert spec.mounts == () and spec.annotations == {} and spec.process is None
    assert spec_to_dict(spec) == doc
    assert spec_to_dict(spec_from_dict({"ociVersion": "1.2.0"})) == {"ociVersion": "1.2.0"}


def test_explicit_null_is_kept_and_a_later_value_wins() -> None:
    doc = {"ociVersionMin": "1.0.0", "ociVersionMax": "1.2.0", "hooks": None,
           "linux": {"cgroup": {"v1": None, "v2": True}, "selinux": None}}
    feats = load_features(doc)
    assert feats.hooks is None and feats.linux is not None and feats.linux.selinux is None
    assert features_to_dict(feats) == doc
    changed = attrs.evolve(feats, hooks=("prestart",))
    assert features_to_dict(changed)["hooks"] == ["prestart"]


def test_integers_stay_integers_and_numbers_keep_their_type() -> None:
    doc = {"ociVersion": "1.2.0",
           "linux": {"resources": {"memory": {"limit": -1, "swap": 9223372036854775807}}},
           "x-float": 1.0, "x-int": 1}
    out = spec_to_dict(spec_from_dict(doc))
    assert out == doc
    assert type(out["x-float"]) is float and type(out["x-int"]) is int
    assert b'"x-float":1.0' in dump_spec(spec_from_dict(doc))


def test_loading_and_dumping_share_no_state_with_the_caller() -> None:
    doc = _fresh()
    doc["x-vendor"] = {"list": [1]}
    spec = spec_from_dict(doc)
    doc["x-vendor"]["list"].append(2)
    doc["annotations"]["key2"] = "changed"
    assert spec.extra == {"x-vendor": {"list": [1]}}
    assert spec.annotations is not None and spec.annotations["key2"] == ""
    out = spec_to_dict(spec)
    out["x-vendor"]["list"].append(3)
    assert spec.extra == {"x-vendor": {"list": [1]}}


def test_a_spec_built_in_python_dumps_to_wire_names() -> None:
    spec = Spec(
        oci_version=OCI_RUNTIME_SPEC_VERSION,
        process=Process(user=User(uid=0, gid=0), cwd="/", args=("sh",),
                        no_new_privileges=True),
        mounts=(Mount(destination="/proc", type="proc", source="proc"),),
        linux=Linux(cgroups_path="/a", intel_rdt=LinuxIntelRdt(clos_id="c")),
    )
    assert json.loads(dump_spec(spec)) == {
        "ociVersion": "1.2.0",
        "process": {"user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/",
                    "noNewPrivileges": True},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"cgroupsPath": "/a", "intelRdt": {"closID": "c"}},
    }


def test_a_string_given_for_an_array_is_not_split_into_letters() -> None:
    spec = Spec(oci_version="1.2.0",
                process=Process(user=User(uid=0, gid=0), cwd="/", args="sh"))  # type: ignore[arg-type]
    with pytest.raises(SpecFormatError, match=r"^config\.json: process\.args: expected an "
                                              r"array, got 'sh'$"):
        dump_spec(spec)


def test_objects_without_maps_of_their_own_are_hashable() -> None:
    spec = spec_from_dict(FULL_CONFIG)
    assert spec.linux is not None and spec.linux.namespaces is not None
    assert len(set(spec.linux.namespaces + spec.linux.namespaces)) == 3
    assert spec.mounts is not None and len({*spec.mounts, *spec.mounts}) == 2


def test_version_constants() -> None:
    assert OCI_RUNTIME_SPEC_VERSION == "1.2.0"
    assert OCI_RUNTIME_SPEC_VERSION in OCI_RUNTIME_SPEC_VERSIONS
    assert list(OCI_RUNTIME_SPEC_VERSIONS) == sorted(OCI_RUNTIME_SPEC_VERSIONS)


def test_a_state_from_the_spec_example() -> None:
    doc = {"ociVersion": "0.2.0", "id": "oci-container1", "status": "running", "pid": 4422,
           "bundle": "/containers/redis", "annotations": {"myKey": "myValue"}}
    state = load_state(json.dumps(doc))
    assert state == State(oci_version="0.2.0", id="oci-container1", status="running",
                          pid=4422, bundle="/containers/redis",
                          annotations={"myKey": "myValue"})
    assert state_to_dict(state) == doc
