"""validate(): criolib's own JSON Schemas and semantic rules for config.json (v1.2)."""

from __future__ import annotations

import copy
import json
import pickle
import resource
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource

from criolib.runtime_spec import RuntimeSpecError
from criolib.runtime_spec._errors import InvalidSpec
from criolib.runtime_spec._validate import Problem, _validator, check, validate
from criolib.testing import require_binaries
from criolib.testing.strategies_json import corrupted, json_paths, junk_values, non_objects

SCHEMA_DIR = Path(__file__).parents[2] / "criolib" / "runtime_spec" / "schema"
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def baseline() -> dict[str, Any]:
    """A valid config.json in the shape `runc spec` writes (written by hand)."""
    return {
        "ociVersion": "1.2.0",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [PATH, "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": list(CAPS), "effective": list(CAPS),
                             "permitted": list(CAPS)},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"],
        },
    }


def found(doc: Any, **kw: Any) -> list[tuple[str, str, str]]:
    return [(p.path, p.severity, p.message) for p in validate(doc, **kw)]


def changed(edit: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    doc = baseline()
    edit(doc)
    return doc


def test_baseline_is_clean() -> None:
    assert validate(baseline()) == []
    check(baseline())


def test_runc_spec_output_has_no_errors(tmp_path: Path) -> None:
    require_binaries("runc")
    subprocess.run(["runc", "spec"], cwd=tmp_path, check=True, capture_output=True)
    doc = json.loads((tmp_path / "config.json").read_text())
    problems = validate(doc)
    assert [p for p in problems if p.severity == "error"] == []
    # runc spec grants ambient capabilities without inheritable ones: the kernel
    # cannot raise those, and that is the only thing worth a word.
    assert {p.path for p in problems} <= {
        f"$.process.capabilities.ambient[{i}]" for i in range(len(CAPS))}
    check(doc)


def test_unknown_properties_are_ignored() -> None:
    doc = baseline()
    doc["x-vendor"] = {"anything": [1, None]}
    doc["process"]["x-extra"] = 5
    doc["linux"]["namespaces"][0]["x-flag"] = True
    doc["linux"]["netDevices"] = {"eth1": {"name": "eth1"}}  # v1.3
    assert validate(doc) == []


# --- the schema ------------------------------------------------------------------------


def test_schema_files_are_valid_draft_2020_12() -> None:
    for path in SCHEMA_DIR.glob("*.json"):
        schema = json.loads(path.read_text())
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(schema)


def _reference_validator() -> Any:
    """The schema files as written, $refs and all, with criolib's integer rule."""
    schemas = [json.loads(p.read_text()) for p in SCHEMA_DIR.glob("*.json")]
    registry: Registry[Any] = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in schemas)
    root = next(s for s in schemas if s["$id"].endswith("/config.schema.json"))
    return jsonschema.Draft202012Validator(root, registry=registry)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted(baseline(), max_edits=4))
def test_compiled_schema_agrees_with_the_files(doc: Any) -> None:
    # criolib inlines $refs and checks string arrays in one loop for speed; the
    # errors must be those of the schema files.
    def errors(validator: Any) -> set[tuple[Any, ...]]:
        return {(tuple(e.absolute_path), e.validator) for e in validator.iter_errors(doc)}

    if any(isinstance(v, float | tuple) or (isinstance(v, int) and abs(v) > 2**80)
           for v in _leaves(doc)):
        return  # where the two type checkers differ, or jsonschema cannot print
    assert errors(_validator()) == errors(_reference_validator())


def _leaves(doc: Any) -> list[Any]:
    nodes = [doc]
    for path in json_paths(doc):
        node = doc
        for key in path:
            node = node[key]
        nodes.append(node)
    return nodes


SCHEMA_CASES: list[tuple[str, Callable[[dict[str, Any]], object], str, str]] = [
    ("ociVersion missing", lambda d: d.pop("ociVersion"), "$.ociVersion", "is required"),
    ("root missing", lambda d: d.pop("root"), "$.root", "is required"),
    ("cwd missing", lambda d: d["process"].pop("cwd"), "$.process.cwd", "is required"),
    ("gid missing", lambda d: d["process"]["user"].pop("gid"), "$.process.user.gid",
     "is required"),
    ("uid negative", lambda d: d["process"]["user"].update(uid=-1), "$.process.user.uid",
     "-1 is out of range for uint32 (0 to 4294967295)"),
    ("terminal a string", lambda d: d["process"].update(terminal="yes"),
     "$.process.terminal", "must be a boolean, not string"),
    ("hard a float", lambda d: d["process"]["rlimits"][0].update(hard=1024.0),
     "$.process.rlimits[0].hard", "must be an integer, not number"),
    ("hard a bool", lambda d: d["process"]["rlimits"][0].update(hard=True),
     "$.process.rlimits[0].hard", "must be an integer, not boolean"),
    ("hard past uint64", lambda d: d["process"]["rlimits"][0].update(hard=2**64),
     "$.process.rlimits[0].hard",
     "18446744073709551616 is out of range for uint64 (0 to 18446744073709551615)"),
    ("oomScoreAdj", lambda d: d["process"].update(oomScoreAdj=-1001), "$.process.oomScoreAdj",
     "-1001 is out of range for oom_score_adj (-1000 to 1000)"),
    ("ioPriority", lambda d: d["process"].update(
        ioPriority={"class": "IOPRIO_CLASS_BE", "priority": 8}),
     "$.process.ioPriority.priority", "8 is out of range for an I/O priority (0 to 7)"),
    ("namespace type", lambda d: d["linux"]["namespaces"][1].update(type="net"),
     "$.linux.namespaces[1].type",
     "'net' is not one of: pid, network, mount, ipc, uts, user, cgroup, time"),
    ("rootfsPropagation", lambda d: d["linux"].update(rootfsPropagation="bogus"),
     "$.linux.rootfsPropagation",
     "'bogus' is not one of: shared, slave, private, unbindable, rshared, rslave, rprivate"),
    ("device type", lambda d: d["linux"].update(devices=[{"type": "x", "path": "/dev/x"}]),
     "$.linux.devices[0].type", "'x' is not one of: c, b, u, p"),
    ("personality", lambda d: d["linux"].update(personality={"domain": "LINUX64"}),
     "$.linux.personality.domain", "'LINUX64' is not one of: LINUX, LINUX32"),
    ("seccomp action", lambda d: d["linux"].update(seccomp={"defaultAction": "ALLOW"}),
     "$.linux.seccomp.defaultAction", "'ALLOW' is not one of: SCMP_ACT_KILL, "
     "SCMP_ACT_KILL_PROCESS, SCMP_ACT_KILL_THREAD, SCMP_ACT_TRAP, SCMP_ACT_ERRNO, "
     "SCMP_ACT_TRACE, SCMP_ACT_ALLOW, SCMP_ACT_LOG, SCMP_ACT_NOTIFY"),
    ("seccomp names empty", lambda d: d["linux"].update(seccomp={
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]}),
     "$.linux.seccomp.syscalls[0].names", "must not be empty"),
    ("seccomp name empty", lambda d: d["linux"].update(seccomp={
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["read", ""], "action": "SCMP_ACT_ERRNO"}]}),
     "$.linux.seccomp.syscalls[0].names[1]", "must not be empty"),
    ("seccomp op", lambda d: d["linux"].update(seccomp={
        "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{
            "names": ["personality"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 8, "op": "EQ"}]}]}),
     "$.linux.seccomp.syscalls[0].args[0].op", "'EQ' is not one of: SCMP_CMP_NE, "
     "SCMP_CMP_LT, SCMP_CMP_LE, SCMP_CMP_EQ, SCMP_CMP_GE, SCMP_CMP_GT, SCMP_CMP_MASKED_EQ"),
    ("seccomp arch", lambda d: d["linux"].update(seccomp={
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}),
     "$.linux.seccomp.architectures[0]", "'SCMP_ARCH_Z80' is not one of: SCMP_ARCH_X86, "
     "SCMP_ARCH_X86_64, SCMP_ARCH_X32, SCMP_ARCH_ARM, SCMP_ARCH_AARCH64, SCMP_ARCH_MIPS, "
     "SCMP_ARCH_MIPS64, SCMP_ARCH_MIPS64N32, SCMP_ARCH_MIPSEL, SCMP_ARCH_MIPSEL64, "
     "SCMP_ARCH_MIPSEL64N32, SCMP_ARCH_PPC, SCMP_ARCH_PPC64, SCMP_ARCH_PPC64LE, "
     "SCMP_ARCH_S390, SCMP_ARCH_S390X, SCMP_ARCH_PARISC, SCMP_ARCH_PARISC64, "
     "SCMP_ARCH_RISCV64, SCMP_ARCH_LOONGARCH64, SCMP_ARCH_M68K, SCMP_ARCH_SH, SCMP_ARCH_SHEB"),
    ("annotation key empty", lambda d: d.update(annotations={"": "x"}), "$.annotations",
     "key '' is not allowed: keys must be non-empty strings"),
    ("annotation value", lambda d: d.update(annotations={"a.b": 1}), '$.annotations["a.b"]',
     "must be a string, not integer"),
    ("sysctl value", lambda d: d["linux"].update(sysctl={"net.core.somaxconn": 256}),
     '$.linux.sysctl["net.core.somaxconn"]', "must be a string, not integer"),
    ("env entry", lambda d: d["process"]["env"].append(None), "$.process.env[2]",
     "must be a string, not null"),
    ("pids limit missing", lambda d: d["linux"]["resources"].update(pids={}),
     "$.linux.resources.pids.limit", "is required"),
]


@pytest.mark.parametrize(("edit", "path", "message"), [c[1:] for c in SCHEMA_CASES],
                         ids=[c[0] for c in SCHEMA_CASES])
def test_schema_rule(edit: Callable[[dict[str, Any]], object], path: str,
                     message: str) -> None:
    assert found(changed(edit)) == [(path, "error", message)]


def test_a_document_must_be_an_object() -> None:
    assert found([baseline()]) == [("$", "error", "must be an object, not array")]
    assert found(None) == [("$", "error", "must be an object, not null")]


# --- semantic rules ----------------------------------------------------------------------

E, W = "error", "warning"


def _ns(doc: dict[str, Any], *types: str, **paths: str) -> None:
    doc["linux"]["namespaces"] = [{"type": t} for t in types] + [
        {"type": t, "path": p} for t, p in paths.items()]


def _seccomp(default: str = "SCMP_ACT_ALLOW", **more: Any) -> Callable[[Any], object]:
    return lambda d: d["linux"].update(seccomp={"defaultAction": default, **more})


def _rule(names: list[str], action: str = "SCMP_ACT_ERRNO", **more: Any) -> dict[str, Any]:
    return {"names": names, "action": action, **more}


def _resources(**parts: Any) -> Callable[[Any], object]:
    return lambda d: d["linux"]["resources"].update(parts)


MAP = [{"containerID": 0, "hostID": 100000, "size": 65536}]

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


# --- all at once, sorted; check() ------------------------------------------------------


def test_every_problem_is_reported_at_once_sorted_by_path() -> None:
    doc = baseline()
    doc["ociVersion"] = "one"
    doc["process"]["cwd"] = "relative"
    doc["process"]["user"]["uid"] = "0"
    doc["linux"]["namespaces"] = [{"type": t} for t in
                                  ("pid", "ipc", "uts", "mount", "cgroup", "time", "user",
                                   "pid", "ipc", "mount", "uts")]
    doc["linux"]["uidMappings"] = doc["linux"]["gidMappings"] = MAP
    doc["linux"]["sysctl"] = {"net.core.somaxconn": "1"}
    doc["mounts"][2]["destination"] = 7
    assert found(doc) == [
        ("$.linux.namespaces[7].type", E, "namespace pid is already at [0]"),
        ("$.linux.namespaces[8].type", E, "namespace ipc is already at [1]"),
        ("$.linux.namespaces[9].type", E, "namespace mount is already at [3]"),
        ("$.linux.namespaces[10].type", E, "namespace uts is already at [2]"),
        ('$.linux.sysctl["net.core.somaxconn"]', E, "needs a network namespace in "
         "linux.namespaces; without one it would change the host's value"),
        ("$.mounts[2].destination", E, "must be a string, not integer"),
        ("$.ociVersion", E, "'one' is not a SemVer 2.0.0 version"),
        ("$.process.cwd", E, "'relative' is not an absolute path"),
        ("$.process.user.uid", E, "must be an integer, not string"),
    ]


def test_problem_reads_as_path_and_message() -> None:
    assert str(Problem("$.a", "is wrong")) == "$.a: is wrong"
    assert str(Problem("$.a", "may be wrong", "warning")) == "$.a: may be wrong (warning)"


def test_check_raises_with_every_problem() -> None:
    doc = baseline()
    doc["process"]["cwd"] = "x"
    doc["hooks"] = {"prestart": [{"path": "y"}]}
    with pytest.raises(InvalidSpec) as info:
        check(doc)
    err = info.value
    assert isinstance(err, RuntimeSpecError) and isinstance(err, ValueError)
    assert [p.path for p in err.problems] == [
        "$.hooks.prestart", "$.hooks.prestart[0].path", "$.process.cwd"]
    assert str(err) == (
        "config.json is not valid: 2 error(s)\n"
        "  $.hooks.prestart: prestart hooks are deprecated in favour of createRuntime, "
        "createContainer and startContainer (warning)\n"
        "  $.hooks.prestart[0].path: 'y' is not an absolute path\n"
        "  $.process.cwd: 'x' is not an absolute path")
    copy_ = pickle.loads(pickle.dumps(err))
    assert copy_.problems == err.problems and str(copy_) == str(err)


def test_check_passes_warnings() -> None:
    doc = changed(lambda d: d["linux"].update(cgroupsPath="relative"))
    assert [p.severity for p in validate(doc)] == ["warning"]
    check(doc)


def test_validate_never_mutates_its_input() -> None:
    doc = changed(lambda d: d["process"]["rlimits"][0].update(hard=10**5000))
    before = copy.deepcopy(doc)
    assert found(doc) == [("$.process.rlimits[0].hard", E,
                           "<an integer of 16610 bits> is out of range for uint64 "
                           "(0 to 18446744073709551615)")]
    assert doc == before


def test_a_spec_object_is_validated_in_its_wire_form() -> None:
    from criolib.runtime_spec import spec_from_dict

    spec = spec_from_dict(baseline())
    assert validate(spec) == []
    broken = spec_from_dict(changed(lambda d: d["process"].update(cwd="rel")))
    assert found(broken) == [("$.process.cwd", E, "'rel' is not an absolute path")]


# --- rootfs ----------------------------------------------------------------------------


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """bin/sh and bin/busybox (executable), usr/bin -> ../bin, a data file, a loop."""
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "home" / "app").mkdir(parents=True)
    for name in ("busybox", "sh"):
        (root / "bin" / name).write_text("#!/bin/busybox sh\n")
        (root / "bin" / name).chmod(0o755)
    (root / "bin" / "data").write_text("not a program")
    (root / "bin" / "data").chmod(0o644)
    (root / "usr").mkdir()
    (root / "usr" / "bin").symlink_to("../bin")
    (root / "usr" / "bin" / "env").symlink_to("/bin/busybox")  # absolute: inside rootfs
    (root / "home" / "app" / "run.sh").write_text("#!/bin/sh\n")
    (root / "home" / "app" / "run.sh").chmod(0o755)
    (root / "etc-link").symlink_to("/etc")  # the host has /etc; this rootfs has none
    (root / "escape").symlink_to("../../../../../../../etc")
    (root / "loop").symlink_to("loop")
    (root / "file").write_text("")
    return root


def _process(doc: dict[str, Any], **fields: Any) -> dict[str, Any]:
    doc["process"].update(fields)
    return doc


def test_rootfs_valid(rootfs: Path) -> None:
    assert validate(baseline(), rootfs=rootfs) == []
    doc = _process(baseline(), cwd="/home/app", args=["./run.sh"])
    assert validate(doc, rootfs=rootfs) == []
    assert validate(_process(baseline(), args=["/usr/bin/env"]), rootfs=rootfs) == []
    assert validate(_process(baseline(), args=["env"]), rootfs=rootfs) == []


def test_rootfs_missing_or_not_a_directory(tmp_path: Path, rootfs: Path) -> None:
    missing = tmp_path / "nothing"
    assert found(baseline(), rootfs=missing) == [
        ("$.root.path", E, f"the root filesystem {missing} cannot be used: "
         "No such file or directory")]
    assert found(baseline(), rootfs=rootfs / "file") == [
        ("$.root.path", E, f"the root filesystem {rootfs / 'file'} is not a directory")]


def test_rootfs_cwd(rootfs: Path) -> None:
    assert found(_process(baseline(), cwd="/srv"), rootfs=rootfs) == [
        ("$.process.cwd", W, "/srv does not exist in the root filesystem; runc creates it")]
    assert found(_process(baseline(), cwd="/file"), rootfs=rootfs) == [
        ("$.process.cwd", E, "/file is not a directory in the root filesystem")]


@pytest.mark.parametrize("cwd", ["/etc-link", "/escape", "/escape/ssl"])
def test_rootfs_symlinks_never_leave_the_rootfs(rootfs: Path, cwd: str) -> None:
    # Both links lead to /etc, which exists on the host but not in this rootfs.
    assert Path("/etc").is_dir()
    assert found(_process(baseline(), cwd=cwd), rootfs=rootfs) == [
        ("$.process.cwd", W, f"{cwd} does not exist in the root filesystem; runc creates it")]


def test_rootfs_program(rootfs: Path) -> None:
    assert found(_process(baseline(), args=["nope"]), rootfs=rootfs) == [
        ("$.process.args[0]", E, f"'nope' was not found in the root filesystem "
         f"(searched {PATH})")]
    assert found(_process(baseline(), args=["/bin/data"]), rootfs=rootfs) == [
        ("$.process.args[0]", E, "/bin/data in the root filesystem is not an executable file")]
    assert found(_process(baseline(), args=["data"]), rootfs=rootfs) == [
        ("$.process.args[0]", E, "/usr/bin/data in the root filesystem is not an executable "
         "file")]
    assert found(_process(baseline(), args=["sh"], env=["TERM=xterm"]), rootfs=rootfs) == [
        ("$.process.args[0]", E, "'sh' is not a path and process.env sets no PATH to "
         "search")]
    assert found(_process(baseline(), args=["/etc-link/passwd"]), rootfs=rootfs) == [
        ("$.process.args[0]", E, "'/etc-link/passwd' was not found in the root filesystem")]
    assert found(_process(baseline(), args=["/loop"]), rootfs=rootfs) == [
        ("$.process.args[0]", E, "cannot look up /loop in the root filesystem: "
         "too many levels of symbolic links")]


def test_rootfs_program_from_a_mount(rootfs: Path) -> None:
    doc = _process(baseline(), args=["/opt/tool/bin/run"])
    doc["mounts"].append({"destination": "/opt/tool", "source": "/srv/tool",
                          "options": ["rbind", "ro"]})
    assert found(doc, rootfs=rootfs) == [
        ("$.process.args[0]", W, "'/opt/tool/bin/run' is not in the root filesystem; a mount "
         "may provide it")]


# --- host ------------------------------------------------------------------------------


def _lacks_cap_sys_resource() -> bool:
    status = Path("/proc/self/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("CapEff:"))
    return not int(line.split()[1], 16) & (1 << 24)


def test_host_rlimits_and_oom_score_adj() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    doc = baseline()
    doc["process"]["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1048576 + max(hard, 0)}]
    current = int(Path("/proc/self/oom_score_adj").read_text())
    doc["process"]["oomScoreAdj"] = max(current - 1, -1000)
    assert validate(doc) == []
    expected = []
    if _lacks_cap_sys_resource() and hard != resource.RLIM_INFINITY:
        expected.append(("$.process.rlimits[0].hard", W,
                         f"{1048576 + hard} is above this process's hard RLIMIT_NOFILE of "
                         f"{hard}; without CAP_SYS_RESOURCE the runtime cannot raise it and "
                         "fails"))
    if _lacks_cap_sys_resource() and current > -1000:
        expected.insert(0, ("$.process.oomScoreAdj", W,
                            f"{current - 1} is below this process's oom_score_adj of "
                            f"{current}; without CAP_SYS_RESOURCE the runtime cannot lower "
                            "it and fails"))
    assert found(doc, host=True) == expected


def test_host_paths(tmp_path: Path) -> None:
    script = tmp_path / "hook"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    doc = baseline()
    doc["linux"]["namespaces"][1]["path"] = "/proc/self/ns/net"
    doc["linux"]["namespaces"][2]["path"] = str(tmp_path / "no-ipc")
    doc["linux"]["sysctl"] = {"net.ipv4.ping_group_range": "0 0"}
    doc["hooks"] = {"createRuntime": [{"path": str(script)}, {"path": "/bin/true"}],
                    "poststop": [{"path": str(tmp_path / "gone")}],
                    "startContainer": [{"path": "/only/in/the/container"}]}
    assert validate(doc) == []
    assert found(doc, host=True) == [
        ("$.hooks.createRuntime[0].path", E, f"{script} is not executable"),
        ("$.hooks.poststop[0].path", E, f"{tmp_path / 'gone'} does not exist on this host"),
        ("$.linux.namespaces[2].path", E, f"{tmp_path / 'no-ipc'} does not exist on this "
         "host"),
        ('$.linux.sysctl["net.ipv4.ping_group_range"]', E, "the network namespace "
         "/proc/self/ns/net is this host's own: net.* sysctls there would change the host"),
    ]


# --- any input, however broken ---------------------------------------------------------


def _well_formed(problems: object) -> None:
    assert isinstance(problems, list)
    for problem in problems:
        assert isinstance(problem, Problem)
        assert problem.path.startswith("$") and problem.message
        assert problem.severity in ("error", "warning")
        str(problem)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted(baseline(), max_edits=5))
def test_corrupted_configs_are_reported_not_raised(doc: Any) -> None:
    _well_formed(validate(doc))


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(doc=corrupted(baseline(), max_edits=3))
def test_corrupted_configs_with_rootfs_and_host(doc: Any) -> None:
    _well_formed(validate(doc, rootfs="/nonexistent", host=True))
    _well_formed(validate(doc, rootfs=SCHEMA_DIR, host=True))


@settings(max_examples=200)
@given(non_objects())
def test_non_objects_are_reported_not_raised(value: Any) -> None:
    problems = validate(value)
    _well_formed(problems)
    assert [p.path for p in problems] == ["$"]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(list(baseline())), junk_values()))
def test_junk_members_are_reported_not_raised(doc: dict[str, Any]) -> None:
    _well_formed(validate(doc, host=True))


def test_deep_nesting_and_odd_keys() -> None:
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    doc = baseline()
    doc["annotations"] = {"a": deep}
    doc["linux"]["sysctl"] = {1: "x", None: "y"}
    doc["linux"]["timeOffsets"] = {(1, 2): {}}
    doc["x-huge"] = {"n": 10**20000}
    assert found(doc, host=True) == [
        ("$.annotations.a", E, "must be a string, not array"),
        ("$.linux.sysctl", E, "key 1 is not allowed: keys must be non-empty strings"),
        ("$.linux.sysctl", E, "key None is not allowed: keys must be non-empty strings"),
        ("$.linux.timeOffsets", E, "key <array> is not allowed: keys must be non-empty "
         "strings"),
        ("$.linux.timeOffsets", E, "time offsets need a new time namespace in "
         "linux.namespaces"),
    ]
    cyclic: dict[str, Any] = baseline()
    cyclic["linux"]["x-self"] = cyclic
    cyclic["process"]["env"].append(cyclic)
    assert found(cyclic) == [("$.process.env[2]", E, "must be a string, not object")]


# --- cost ------------------------------------------------------------------------------


def test_validate_costs_milliseconds() -> None:
    doc = baseline()
    validate(doc)  # compiles the schema once
    runs = 50
    start = time.perf_counter()
    for _ in range(runs):
        validate(doc)
    assert (time.perf_counter() - start) / runs < 0.02
