"""validate(): the semantic rules of config.md and config-linux.md (runtime-spec v1.2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.runtime_spec.test_validate import (
    MAP,
    E,
    W,
    changed,
    found,
)


def _ns(doc: dict[str, Any], *types: str, **paths: str) -> None:
    doc["linux"]["namespaces"] = [{"type": t} for t in types] + [
        {"type": t, "path": p} for t, p in paths.items()]


def _seccomp(default: str = "SCMP_ACT_ALLOW", **more: Any) -> Callable[[Any], object]:
    return lambda d: d["linux"].update(seccomp={"defaultAction": default, **more})


def _rule(names: list[str], action: str = "SCMP_ACT_ERRNO", **more: Any) -> dict[str, Any]:
    return {"names": names, "action": action, **more}


def _resources(**parts: Any) -> Callable[[Any], object]:
    return lambda d: d["linux"]["resources"].update(parts)


RULE_CASES: list[tuple[str, Callable[[Any], object], list[tuple[str, str, str]]]] = [
    # config.md: specification version
    ("version not semver", lambda d: d.update(ociVersion="1.2"),
     [("$.ociVersion", E, "'1.2' is not a SemVer 2.0.0 version")]),
    ("version major 2", lambda d: d.update(ociVersion="2.0.0"),
     [("$.ociVersion", E, "major version '2' is not supported: this validator implements "
       "runtime-spec 1.x")]),
    ("version of 5000 digits", lambda d: d.update(ociVersion="1." + "9" * 5000 + ".0"),
     [("$.ociVersion", W, "'1." + "9" * 75 + "...' is newer than runtime-spec 1.2, which "
       "this validator implements; newer fields are not checked")]),
    ("cpu list of 5000 digits", lambda d: d["process"].update(
        execCPUAffinity={"final": "1-" + "9" * 5000}), []),
    ("version newer minor", lambda d: d.update(ociVersion="1.3.0"),
     [("$.ociVersion", W, "'1.3.0' is newer than runtime-spec 1.2, which this validator "
       "implements; newer fields are not checked")]),
    # root
    ("root path empty", lambda d: d["root"].update(path=""),
     [("$.root.path", E, "must not be empty")]),
    # process
    ("cwd relative", lambda d: d["process"].update(cwd="tmp"),
     [("$.process.cwd", E, "'tmp' is not an absolute path")]),
    ("args empty", lambda d: d["process"].update(args=[]),
     [("$.process.args", E, "at least one entry is required: the program to run")]),
    ("args missing", lambda d: d["process"].pop("args"),
     [("$.process.args", E, "at least one entry is required: the program to run")]),
    ("args[0] empty", lambda d: d["process"].update(args=[""]),
     [("$.process.args[0]", E, "the program to run must not be empty")]),
    ("windows needs args or commandLine",
     lambda d: (d.update(windows={}), d["process"].pop("args"), d.pop("linux"),
                d.pop("hostname")),
     [("$.process.args", E, "args or commandLine is required")]),
    ("env without =", lambda d: d["process"]["env"].append("FOO"),
     [("$.process.env[2]", E, "'FOO' is not of the form NAME=value")]),
    ("env without name", lambda d: d["process"]["env"].append("=x"),
     [("$.process.env[2]", E, "'=x' is not of the form NAME=value")]),
    ("env with NUL", lambda d: d["process"]["env"].append("A=\0"),
     [("$.process.env[2]", E, "'A=\\x00' contains a NUL byte")]),
    ("env twice", lambda d: d["process"]["env"].append("TERM=dumb"),
     [("$.process.env[2]", W, "TERM is already set at [1]; this later value wins")]),
    ("rlimit unknown", lambda d: d["process"]["rlimits"][0].update(type="RLIMIT_FOO"),
     [("$.process.rlimits[0].type", E, "'RLIMIT_FOO' is not a Linux rlimit (getrlimit(2))")]),
    ("rlimit twice", lambda d: d["process"]["rlimits"].append(
        {"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1}),
     [("$.process.rlimits[1].type", E, "RLIMIT_NOFILE is already limited at [0]")]),
    ("rlimit soft above hard", lambda d: d["process"]["rlimits"][0].update(soft=2048),
     [("$.process.rlimits[0].soft", E, "soft limit 2048 is above the hard limit 1024")]),
    ("capability unknown", lambda d: d["process"]["capabilities"]["bounding"].append(
        "CAP_FUTURE"),
     [("$.process.capabilities.bounding[3]", W, "CAP_FUTURE is not a capability known up "
       "to CAP_CHECKPOINT_RESTORE; runtimes warn and ignore it")]),
    ("capability malformed", lambda d: d["process"]["capabilities"].update(
        inheritable=["chown"]),
     [("$.process.capabilities.inheritable[0]", E,
       "'chown' is not a capability name (CAP_...)")]),
    ("ambient not inheritable", lambda d: d["process"]["capabilities"].update(
        ambient=["CAP_KILL"]),
     [("$.process.capabilities.ambient[0]", W, "CAP_KILL is not in both permitted and "
       "inheritable, so the kernel will not raise it")]),
    ("ambient allowed", lambda d: d["process"]["capabilities"].update(
        ambient=["CAP_KILL"], inheritable=["CAP_KILL"]), []),
    ("effective not permitted", lambda d: d["process"]["capabilities"]["effective"].append(
        "CAP_CHOWN"),
     [("$.process.capabilities.effective[3]", E,
       "CAP_CHOWN is not in permitted, so it cannot be effective")]),
    ("realtime priority", lambda d: d["process"].update(
        scheduler={"policy": "SCHED_FIFO"}),
     [("$.process.scheduler.priority", E, "SCHED_FIFO needs a priority from 1 to 99")]),
    ("other priority", lambda d: d["process"].update(
        scheduler={"policy": "SCHED_OTHER", "priority": 5}),
     [("$.process.scheduler.priority", E, "SCHED_OTHER takes priority 0, not 5")]),
    ("deadline order", lambda d: d["process"].update(scheduler={
        "policy": "SCHED_DEADLINE", "runtime": 20, "deadline": 10, "period": 5}),
     [("$.process.scheduler.deadline", E, "SCHED_DEADLINE needs deadline <= period"),
      ("$.process.scheduler.runtime", E, "SCHED_DEADLINE needs runtime <= deadline")]),
    ("cpu affinity format", lambda d: d["process"].update(
        execCPUAffinity={"initial": "0-3,x", "final": "5-2"}),
     [("$.process.execCPUAffinity.final", E, "range 5-2 in '5-2' runs backwards"),
      ("$.process.execCPUAffinity.initial", E,
       "'0-3,x' is not a list of numbers and ranges like '0-3,7'")]),
    # hostname and domainname
    ("hostname without uts", lambda d: _ns(d, "pid", "mount"),
     [("$.hostname", E, "setting the hostname needs a uts namespace (linux.namespaces has "
       "none, so it would change the host's)")]),
    ("domainname without uts", lambda d: (_ns(d, "mount"), d.pop("hostname"),
                                          d.update(domainname="example.org")),
     [("$.domainname", E, "setting the domainname needs a uts namespace (linux.namespaces "
       "has none, so it would change the host's)")]),
    ("hostname too long", lambda d: d.update(hostname="h" * 65),
     [("$.hostname", E, "is longer than 64 bytes")]),
    # mounts
    ("mount destination relative", lambda d: d["mounts"][0].update(destination="proc"),
     [("$.mounts[0].destination", W, "'proc' is relative: deprecated, and taken as "
       "relative to /")]),
    ("mount destination twice", lambda d: d["mounts"].append(
        {"destination": "/dev/shm/", "type": "tmpfs", "source": "tmpfs"}),
     [("$.mounts[7].destination", W, "/dev/shm is also mounted at mounts[3]; this later "
       "mount hides it")]),
    ("mount destination empty", lambda d: d["mounts"][0].update(destination=""),
     [("$.mounts[0].destination", E, "must not be empty")]),
    ("mount option empty", lambda d: d["mounts"][1]["options"].append(""),
     [("$.mounts[1].options[4]", E, "an option must not be empty")]),
    ("mount option with comma", lambda d: d["mounts"][1]["options"].append("uid=0,gid=0"),
     [("$.mounts[1].options[4]", W, "'uid=0,gid=0' holds a comma: give each option as its "
       "own entry")]),
    ("mount ro and rw", lambda d: d["mounts"][5]["options"].append("rw"),
     [("$.mounts[5].options", W, "both ro and rw are given; the last one wins")]),
    ("bind mount without source", lambda d: d["mounts"].append(
        {"destination": "/data", "type": "none", "options": ["rbind"]}),
     [("$.mounts[7].source", E, "a bind mount needs a source")]),
    ("idmap uid without gid", lambda d: d["mounts"].append(
        {"destination": "/data", "source": "/srv", "options": ["bind", "idmap"],
         "uidMappings": MAP}),
     [("$.mounts[7].uidMappings", E, "uidMappings must be given together with "
       "gidMappings")]),
    ("idmap without option", lambda d: d["mounts"].append(
        {"destination": "/data", "source": "/srv", "options": ["bind"],
         "uidMappings": MAP, "gidMappings": MAP}),
     [("$.mounts[7].options", W, "id mappings are given without the idmap or ridmap option; "
       "runtimes that predate idmapped mounts ignore them silently")]),
    ("idmap without mappings or userns", lambda d: d["mounts"].append(
        {"destination": "/data", "source": "/srv", "options": ["rbind", "ridmap"]}),
     [("$.mounts[7].options", E, "idmap needs uidMappings and gidMappings on the mount, "
       "or a user namespace for the container")]),
    ("idmapped mount", lambda d: d["mounts"].append(
        {"destination": "/data", "source": "/srv", "options": ["bind", "idmap"],
         "uidMappings": MAP, "gidMappings": MAP}), []),
    # hooks
    ("hook path relative", lambda d: d.update(hooks={"createRuntime": [{"path": "hook"}]}),
     [("$.hooks.createRuntime[0].path", E, "'hook' is not an absolute path")]),
    ("hook timeout", lambda d: d.update(hooks={"poststop": [{"path": "/h", "timeout": 0}]}),
     [("$.hooks.poststop[0].timeout", E, "must be greater than 0, not 0")]),
    ("hook env", lambda d: d.update(hooks={"poststart": [{"path": "/h", "env": ["X"]}]}),
     [("$.hooks.poststart[0].env[0]", E, "'X' is not of the form NAME=value")]),
    ("prestart deprecated", lambda d: d.update(hooks={"prestart": [{"path": "/h"}]}),
     [("$.hooks.prestart", W, "prestart hooks are deprecated in favour of createRuntime, "
       "createContainer and startContainer")]),
    # namespaces and user namespace mappings
    ("namespace twice", lambda d: d["linux"]["namespaces"].append({"type": "pid"}),
     [("$.linux.namespaces[5].type", E, "namespace pid is already at [0]")]),
    ("namespace path relative", lambda d: d["linux"]["namespaces"][1].update(
        path="run/netns/x"),
     [("$.linux.namespaces[1].path", E, "'run/netns/x' is not an absolute path")]),
    ("userns without mappings", lambda d: d["linux"]["namespaces"].append({"type": "user"}),
     [("$.linux.gidMappings", E, "a new user namespace needs gidMappings"),
      ("$.linux.uidMappings", E, "a new user namespace needs uidMappings")]),
    ("mappings without userns", lambda d: d["linux"].update(uidMappings=MAP,
                                                             gidMappings=MAP),
     [("$.linux.gidMappings", E, "gidMappings need a user namespace in linux.namespaces"),
      ("$.linux.uidMappings", E, "uidMappings need a user namespace in linux.namespaces")]),
    ("mappings for a joined userns", lambda d: (
        d["linux"]["namespaces"].append({"type": "user", "path": "/proc/1/ns/user"}),
        d["linux"].update(uidMappings=MAP)),
     [("$.linux.uidMappings", W, "the container joins an existing user namespace, whose "
       "mappings are already set; these are not applied")]),
    ("mapping size 0", lambda d: (
        d["linux"]["namespaces"].append({"type": "user"}),
        d["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1, "size": 0}],
                          gidMappings=MAP)),
     [("$.linux.uidMappings[0].size", E, "must be greater than 0")]),
    ("mapping past 2^32", lambda d: (
        d["linux"]["namespaces"].append({"type": "user"}),
        d["linux"].update(uidMappings=[{"containerID": 0, "hostID": 2**32 - 10,
                                        "size": 65536}], gidMappings=MAP)),
     [("$.linux.uidMappings[0]", E, "hostID 4294967286 + size 65536 runs past 2^32")]),
    ("mappings overlap", lambda d: (
        d["linux"]["namespaces"].append({"type": "user"}),
        d["linux"].update(uidMappings=[
            {"containerID": 0, "hostID": 100000, "size": 1000},
            {"containerID": 1000, "hostID": 100500, "size": 10}], gidMappings=MAP)),
     [("$.linux.uidMappings[1]", E, "its hostID range overlaps entry [0]")]),
    ("too many mappings", lambda d: (
        d["linux"]["namespaces"].append({"type": "user"}),
        d["linux"].update(uidMappings=[{"containerID": i, "hostID": 1000 + i, "size": 1}
                                       for i in range(341)], gidMappings=MAP)),
     [("$.linux.uidMappings", E, "has more than the kernel's 340 entries")]),
    # time namespace
    ("time offsets without timens", lambda d: d["linux"].update(
        timeOffsets={"monotonic": {"secs": 10}}),
     [("$.linux.timeOffsets", E, "time offsets need a new time namespace in "
       "linux.namespaces")]),
    ("time offsets clock", lambda d: (
        d["linux"]["namespaces"].append({"type": "time"}),
        d["linux"].update(timeOffsets={"realtime": {"secs": 1},
                                       "boottime": {"nanosecs": 10**9}})),
     [("$.linux.timeOffsets.boottime.nanosecs", E, "must be less than 1000000000"),
      ("$.linux.timeOffsets.realtime", E, "a time namespace offsets only the boottime and "
       "monotonic clocks")]),
    # devices
    ("device path relative", lambda d: d["linux"].update(
        devices=[{"type": "p", "path": "dev/fifo"}]),
     [("$.linux.devices[0].path", E, "'dev/fifo' is not an absolute path")]),
    ("device numbers missing", lambda d: d["linux"].update(
        devices=[{"type": "c", "path": "/dev/fuse", "minor": 229}]),
     [("$.linux.devices[0].major", E, "is required for device type 'c'")]),
    ("device twice", lambda d: d["linux"].update(devices=[
        {"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229},
        {"type": "u", "path": "/dev/fuse2", "major": 10, "minor": 229},
        {"type": "p", "path": "/dev/fuse"}]),
     [("$.linux.devices[1]", W, "same type, major and minor as devices[0] (the spec says "
       "SHOULD NOT)"),
      ("$.linux.devices[2].path", E, "/dev/fuse is already created by devices[0]")]),
    # cgroups
    ("cgroupsPath systemd parts", lambda d: d["linux"].update(cgroupsPath="a:b"),
     [("$.linux.cgroupsPath", E, "'a:b' is neither a path nor systemd's slice:prefix:name")]),
    ("cgroupsPath systemd slice", lambda d: d["linux"].update(cgroupsPath="system:crio:1"),
     [("$.linux.cgroupsPath", E, "systemd slice 'system' must end in .slice")]),
    ("cgroupsPath systemd", lambda d: d["linux"].update(
        cgroupsPath="kubepods-besteffort.slice:crio:abc"), []),
    ("cgroupsPath dotdot", lambda d: d["linux"].update(cgroupsPath="/a/../../b"),
     [("$.linux.cgroupsPath", E, "'/a/../../b' must not contain '..'")]),
    ("cgroupsPath relative", lambda d: d["linux"].update(cgroupsPath="mine/c1"),
     [("$.linux.cgroupsPath", W, "'mine/c1' is relative: the runtime decides where it "
       "starts")]),
    ("device access", lambda d: d["linux"]["resources"]["devices"][0].update(access="rx"),
     [("$.linux.resources.devices[0].access", E, "'rx' may hold only r, w and m")]),
    ("memory below -1", _resources(memory={"limit": -2}),
     [("$.linux.resources.memory.limit", E, "-2 is neither -1 (unlimited) nor a size in "
       "bytes")]),
    ("memory swap below limit", _resources(memory={"limit": 2048, "swap": 1024}),
     [("$.linux.resources.memory.swap", E, "memory+swap 1024 is below the memory limit "
       "2048")]),
    ("memory reservation above limit", _resources(memory={"limit": 1024,
                                                          "reservation": 2048}),
     [("$.linux.resources.memory.reservation", E, "2048 is above the memory limit 1024")]),
    ("memory unlimited swap", _resources(memory={"limit": 1024, "swap": -1}), []),
    ("memory swappiness", _resources(memory={"swappiness": 101}),
     [("$.linux.resources.memory.swappiness", E, "101 is above 100")]),
    ("memory kernel", _resources(memory={"kernelTCP": -1}),
     [("$.linux.resources.memory.kernelTCP", W, "NOT RECOMMENDED by the spec: cgroup v2 "
       "and recent kernels have no separate kernel memory limit")]),
    ("cpu shares 0", _resources(cpu={"shares": 0}),
     [("$.linux.resources.cpu.shares", E, "must be greater than 0")]),
    ("cpu shares 1", _resources(cpu={"shares": 1}),
     [("$.linux.resources.cpu.shares", W, "1 is outside 2 to 262144; the kernel clamps it")]),
    ("cpu quota small", _resources(cpu={"quota": 500, "period": 100000}),
     [("$.linux.resources.cpu.quota", E, "500 is neither -1 (unlimited) nor at least "
       "1000 µs")]),
    ("cpu quota without period", _resources(cpu={"quota": 50000}),
     [("$.linux.resources.cpu.quota", W, "quota without period: the kernel's default "
       "period of 100000 µs applies")]),
    ("cpu period", _resources(cpu={"period": 100}),
     [("$.linux.resources.cpu.period", E, "100 is outside the kernel's 1000 to 1000000 µs")]),
    ("cpu burst", _resources(cpu={"quota": 50000, "period": 100000, "burst": 60000}),
     [("$.linux.resources.cpu.burst", E, "burst 60000 is larger than quota 50000")]),
    ("cpu realtime", _resources(cpu={"realtimeRuntime": 2000, "realtimePeriod": 1000}),
     [("$.linux.resources.cpu.realtimeRuntime", E, "2000 is longer than realtimePeriod "
       "1000")]),
    ("cpu cpus", _resources(cpu={"cpus": "0-3,7", "mems": "zero"}),
     [("$.linux.resources.cpu.mems", E, "'zero' is not a list of numbers and ranges like "
       "'0-3,7'")]),
    ("blkio weight device", _resources(blockIO={"weightDevice": [{"major": 8, "minor": 0}]}),
     [("$.linux.resources.blockIO.weightDevice[0]", E, "needs weight or leafWeight (or "
       "both)")]),
    ("hugepage size", _resources(hugepageLimits=[{"pageSize": "2M", "limit": 1},
                                                 {"pageSize": "1GB", "limit": 1},
                                                 {"pageSize": "1GB", "limit": 2}]),
     [("$.linux.resources.hugepageLimits[0].pageSize", E, "'2M' is not a page size like "
       "64KB, 2MB or 1GB"),
      ("$.linux.resources.hugepageLimits[2].pageSize", E, "1GB is already limited at "
       "hugepageLimits[1]")]),
    ("pids 0", _resources(pids={"limit": 0}),
     [("$.linux.resources.pids.limit", W, "0 is read as 'no limit set' by runc and crun; "
       "use -1 for unlimited or a positive limit")]),
    ("rdma", _resources(rdma={"mlx5_1": {}}),
     [("$.linux.resources.rdma.mlx5_1", E, "needs hcaHandles or hcaObjects (or both)")]),
    ("unified", _resources(unified={"memory": "1", "a/memory.max": "2", "io.max": "x"}),
     [('$.linux.resources.unified["a/memory.max"]', E, "is not a cgroup v2 file name like "
       "memory.max"),
      ("$.linux.resources.unified.memory", E, "is not a cgroup v2 file name like "
       "memory.max")]),
    ("intel rdt", lambda d: d["linux"].update(intelRdt={"memBwSchema": "L3:0=7f",
                                                        "l3CacheSchema": "0=7f"}),
     [("$.linux.intelRdt.l3CacheSchema", W, "should start with 'L3:' and be one line"),
      ("$.linux.intelRdt.memBwSchema", E, "must start with 'MB:' and be one line")]),
    # sysctl
    ("sysctl net without netns", lambda d: (
        _ns(d, "pid", "ipc", "uts", "mount"),
        d["linux"].update(sysctl={"net.ipv4.ip_forward": "1"})),
     [('$.linux.sysctl["net.ipv4.ip_forward"]', E, "needs a network namespace in "
       "linux.namespaces; without one it would change the host's value")]),
    ("sysctl ipc without ipcns", lambda d: (
        _ns(d, "pid", "network", "uts", "mount"),
        d["linux"].update(sysctl={"kernel.shmmax": "1", "fs.mqueue.msg_max": "10"})),
     [('$.linux.sysctl["fs.mqueue.msg_max"]', E, "needs a ipc namespace in "
       "linux.namespaces; without one it would change the host's value"),
      ('$.linux.sysctl["kernel.shmmax"]', E, "needs a ipc namespace in linux.namespaces; "
       "without one it would change the host's value")]),
    ("sysctl uts without utsns", lambda d: (
        _ns(d, "mount"), d.pop("hostname"),
        d["linux"].update(sysctl={"kernel.domainname": "x"})),
     [('$.linux.sysctl["kernel.domainname"]', E, "needs a uts namespace in "
       "linux.namespaces; without one it would change the host's value")]),
    ("sysctl not namespaced", lambda d: d["linux"].update(sysctl={"vm.swappiness": "10"}),
     [('$.linux.sysctl["vm.swappiness"]', E, "is not namespaced: setting it would change "
       "it for the whole host")]),
    ("sysctl namespaced", lambda d: d["linux"].update(sysctl={
        "net/ipv4/ip_forward": "1", "kernel.msgmax": "8192", "kernel.hostname": "x"}), []),
    # seccomp
    ("seccomp defaultErrnoRet", _seccomp(defaultErrnoRet=1),
     [("$.linux.seccomp.defaultErrnoRet", E, "defaultAction SCMP_ACT_ALLOW returns no "
       "errno; only SCMP_ACT_ERRNO and SCMP_ACT_TRACE do")]),
    ("seccomp errnoRet", _seccomp(syscalls=[_rule(["ptrace"], "SCMP_ACT_KILL", errnoRet=1)]),
     [("$.linux.seccomp.syscalls[0].errnoRet", E, "action SCMP_ACT_KILL returns no errno; "
       "only SCMP_ACT_ERRNO and SCMP_ACT_TRACE do")]),
    ("seccomp metadata", _seccomp(listenerMetadata="x"),
     [("$.linux.seccomp.listenerMetadata", E, "must not be set without listenerPath")]),
    ("seccomp notify", _seccomp(syscalls=[_rule(["write", "mount"], "SCMP_ACT_NOTIFY")]),
     [("$.linux.seccomp.listenerPath", W, "SCMP_ACT_NOTIFY is used but no listenerPath is "
       "set: nothing will answer the notifications"),
      ("$.linux.seccomp.syscalls[0].names", W, "runc refuses SCMP_ACT_NOTIFY for write, "
       "which it needs itself")]),
    ("seccomp notify default", _seccomp("SCMP_ACT_NOTIFY", listenerPath="/run/agent.sock"),
     [("$.linux.seccomp.defaultAction", W, "runc refuses SCMP_ACT_NOTIFY as the default "
       "action")]),
    ("seccomp arg index", _seccomp(syscalls=[_rule(
        ["clone"], args=[{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}])]),
     [("$.linux.seccomp.syscalls[0].args[0].index", E, "6 is out of range: a system call "
       "has 6 arguments (0 to 5)")]),
    ("seccomp denies all", _seccomp("SCMP_ACT_ERRNO"),
     [("$.linux.seccomp.syscalls", W, "no syscalls: SCMP_ACT_ERRNO applies to every system "
       "call, so the process cannot even start")]),
    # paths, personality
    ("maskedPaths relative", lambda d: d["linux"]["maskedPaths"].append("proc/kcore"),
     [("$.linux.maskedPaths[4]", E, "'proc/kcore' is not an absolute path")]),
    ("readonlyPaths relative", lambda d: d["linux"]["readonlyPaths"].insert(0, "sys"),
     [("$.linux.readonlyPaths[0]", E, "'sys' is not an absolute path")]),
    ("personality flags", lambda d: d["linux"].update(
        personality={"domain": "LINUX32", "flags": ["ADDR_NO_RANDOMIZE"]}),
     [("$.linux.personality.flags", W, "the spec defines no personality flags; runtimes "
       "ignore or refuse them")]),
]


@pytest.mark.parametrize(("edit", "expected"), [c[1:] for c in RULE_CASES],
                         ids=[c[0] for c in RULE_CASES])
def test_semantic_rule(edit: Callable[[dict[str, Any]], object],
                       expected: list[tuple[str, str, str]]) -> None:
    assert found(changed(edit)) == expected


