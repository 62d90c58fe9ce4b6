"""hypothesis strategies for criolib's documents, for criolib's tests and for users' own.

This module imports hypothesis, a test-only dependency (``criolib[test]``); nothing
in criolib imports it but tests. It has one section per package; each document type
comes as a strategy of wire-form dicts (``spec_dicts``: what a tool would write as
JSON) and of model objects (``specs``).

The dicts of ``spec_dicts`` are *valid-shaped*: every property has the JSON type the
spec gives it, REQUIRED properties are present, enum-like strings are drawn from the
spec's lists, and objects at every depth may carry unknown vendor properties (``x-...``
keys with arbitrary JSON values) to exercise the round trip. They are not promised to
be semantically valid (a hook ``path`` may be relative, a quota smaller than a burst).
Those of ``valid_spec_dicts`` are: :func:`~criolib.runtime_spec.validate` finds no
error in them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

from criolib.runtime_spec import (
    ALL_CAPABILITIES,
    Features,
    Spec,
    State,
    load_features,
    load_state,
    spec_from_dict,
)

__all__ = [
    "features",
    "features_dicts",
    "json_values",
    "spec_dicts",
    "specs",
    "state_dicts",
    "states",
    "unknown_keys",
    "valid_spec_dicts",
]

Strategy = st.SearchStrategy

# -- JSON building blocks -------------------------------------------------------------


def unknown_keys() -> Strategy[str]:
    """Property names no runtime-spec object defines (``x-`` and a short word)."""
    return st.text("abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=8).map(
        lambda s: "x-" + s
    )


def json_values() -> Strategy[Any]:
    """Arbitrary JSON values: null, booleans, big integers, finite floats, text, nesting."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=12)
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=6,
    )


def _obj(
    required: Mapping[str, Strategy[Any]],
    optional: Mapping[str, Strategy[Any]] | None = None,
    *,
    nulls: bool = False,
) -> Strategy[dict[str, Any]]:
    """A JSON object with ``required`` and some of ``optional``, maybe with unknown keys.

    ``nulls`` lets optional properties be ``null`` (features.md allows it).
    """
    maybe = dict(optional or {})
    if nulls:
        maybe = {k: st.none() | v for k, v in maybe.items()}
    known = st.fixed_dictionaries(dict(required), optional=maybe)
    vendor = st.dictionaries(unknown_keys(), json_values(), max_size=2)
    return st.builds(lambda k, v: {**k, **v}, known, st.one_of(st.just({}), vendor))


def _ints(bits: int, *, signed: bool = False) -> Strategy[int]:
    if signed:
        return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return st.integers(0, 2**bits - 1)


_u16, _u32, _u64 = _ints(16), _ints(32), _ints(64)
_i32, _i64 = _ints(32, signed=True), _ints(64, signed=True)
_text = st.text(max_size=16)
_names = st.text("abcdefghijklmnopqrstuvwxyz_.0123456789", min_size=1, max_size=12)
_paths = st.lists(_names, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
_bools = st.booleans()


def _list(elements: Strategy[Any], *, min_size: int = 0) -> Strategy[list[Any]]:
    return st.lists(elements, min_size=min_size, max_size=3)


def _map(values: Strategy[Any]) -> Strategy[dict[str, Any]]:
    return st.dictionaries(_names, values, max_size=3)


_strings = _list(_text)
_annotations = st.dictionaries(
    st.text("abcdefghijklmnopqrstuvwxyz.-/", min_size=1, max_size=24), _text, max_size=3
)


# -- criolib.runtime_spec: config.json -----------------------------------------------

_CAPS = ("CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN", "CAP_AUDIT_WRITE")
_NAMESPACES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
_ACTIONS = ("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_NOTIFY",
            "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP")
_OPS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
        "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")
_ARCHES = ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64", "SCMP_ARCH_RISCV64")

_id_mapping = _obj({"containerID": _u32, "hostID": _u32, "size": _u32})
_capabilities = _obj({}, {k: _list(st.sampled_from(_CAPS)) for k in
                          ("bounding", "effective", "inheritable", "permitted", "ambient")})
_process = _obj(
    {
        "user": _obj({"uid": _u32, "gid": _u32},
                     {"umask": _u32, "additionalGids": _list(_u32), "username": _text}),
        "cwd": _paths,
    },
    {
        "terminal": _bools,
        "consoleSize": _obj({"height": _u32, "width": _u32}),
        "args": _list(_text, min_size=1),
        "commandLine": _text,
        "env": _list(st.builds("{}={}".format, _names, _text)),
        "capabilities": _capabilities,
        "rlimits": _list(_obj({"type": st.sampled_from(("RLIMIT_NOFILE", "RLIMIT_CORE")),
                               "hard": _u64, "soft": _u64})),
        "noNewPrivileges": _bools,
        "apparmorProfile": _text,
        "oomScoreAdj": st.integers(-1000, 1000),
        "scheduler": _obj(
            {"policy": st.sampled_from(("SCHED_OTHER", "SCHED_FIFO", "SCHED_DEADLINE"))},
            {"nice": _i32, "priority": _i32, "flags": _list(st.just("SCHED_FLAG_RECLAIM")),
             "runtime": _u64, "deadline": _u64, "period": _u64},
        ),
        "selinuxLabel": _text,
        "ioPriority": _obj({"class": st.sampled_from(("IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE",
                                                      "IOPRIO_CLASS_IDLE")),
                            "priority": st.integers(0, 7)}),
        "execCPUAffinity": _obj({}, {"initial": _text, "final": _text}),
    },
)
_mount = _obj(
    {"destination": _paths},
    {"type": _names, "source": _text, "options": _list(_names),
     "uidMappings": _list(_id_mapping), "gidMappings": _list(_id_mapping)},
)
_hook = _obj({"path": _paths},
             {"args": _strings, "env": _strings, "timeout": st.integers(1, 2**31 - 1)})
_hooks = _obj({}, {k: _list(_hook) for k in ("prestart", "createRuntime", "createContainer",
                                             "startContainer", "poststart", "poststop")})
_throttle = _obj({"major": _i64, "minor": _i64, "rate": _u64})
_resources = _obj({}, {
    "devices": _list(_obj({"allow": _bools}, {"type": st.sampled_from("acb"), "major": _i64,
                                              "minor": _i64, "access": st.just("rwm")})),
    "memory": _obj({}, {"limit": _i64, "reservation": _i64, "swap": _i64, "kernel": _i64,
                        "kernelTCP": _i64, "swappiness": _u64, "disableOOMKiller": _bools,
                        "useHierarchy": _bools, "checkBeforeUpdate": _bools}),
    "cpu": _obj({}, {"shares": _u64, "quota": _i64, "burst": _u64, "period": _u64,
                     "realtimeRuntime": _i64, "realtimePeriod": _u64, "cpus": _text,
                     "mems": _text, "idle": _i64}),
    "pids": _obj({}, {"limit": _i64}),
    "blockIO": _obj({}, {
        "weight": _u16, "leafWeight": _u16,
        "weightDevice": _list(_obj({"major": _i64, "minor": _i64},
                                   {"weight": _u16, "leafWeight": _u16})),
        "throttleReadBpsDevice": _list(_throttle), "throttleWriteBpsDevice": _list(_throttle),
        "throttleReadIOPSDevice": _list(_throttle), "throttleWriteIOPSDevice": _list(_throttle),
    }),
    "hugepageLimits": _list(_obj({"pageSize": st.sampled_from(("2MB", "1GB", "64KB")),
                                  "limit": _u64})),
    "network": _obj({}, {"classID": _u32,
                         "priorities": _list(_obj({"name": _names, "priority": _u32}))}),
    "rdma": _map(_obj({}, {"hcaHandles": _u32, "hcaObjects": _u32})),
    "unified": _map(_text),
})
_seccomp = _obj(
    {"defaultAction": st.sampled_from(_ACTIONS)},
    {
        "defaultErrnoRet": _u32,
        "architectures": _list(st.sampled_from(_ARCHES)),
        "flags": _list(st.just("SECCOMP_FILTER_FLAG_LOG")),
        "listenerPath": _paths,
        "listenerMetadata": _text,
        "syscalls": _list(_obj(
            {"names": _list(_names, min_size=1), "action": st.sampled_from(_ACTIONS)},
            {"errnoRet": _u32,
             "args": _list(_obj({"index": st.integers(0, 5), "value": _u64,
                                 "op": st.sampled_from(_OPS)}, {"valueTwo": _u64}))},
        )),
    },
)
_linux = _obj({}, {
    "namespaces": _list(_obj({"type": st.sampled_from(_NAMESPACES)}, {"path": _paths})),
    "uidMappings": _list(_id_mapping),
    "gidMappings": _list(_id_mapping),
    "timeOffsets": _map(_obj({}, {"secs": _i64, "nanosecs": _u32})),
    "devices": _list(_obj({"path": _paths, "type": st.sampled_from("cbup")},
                          {"major": _i64, "minor": _i64, "fileMode": _u32, "uid": _u32,
                           "gid": _u32})),
    "netDevices": _map(_obj({}, {"name": _names})),
    "cgroupsPath": _text,
    "resources": _resources,
    "intelRdt": _obj({}, {"closID": _names, "l3CacheSchema": _text, "memBwSchema": _text,
                          "schemata": _text | _list(_text), "enableCMT": _bools,
                          "enableMBM": _bools, "enableMonitoring": _bools}),
    "memoryPolicy": _obj({"mode": st.sampled_from(("MPOL_DEFAULT", "MPOL_BIND",
                                                   "MPOL_INTERLEAVE"))},
                         {"nodes": _text, "flags": _list(st.just("MPOL_F_STATIC_NODES"))}),
    "sysctl": _map(_text),
    "seccomp": _seccomp,
    "rootfsPropagation": st.sampled_from(("shared", "slave", "private", "unbindable")),
    "maskedPaths": _list(_paths),
    "readonlyPaths": _list(_paths),
    "mountLabel": _text,
    "personality": _obj({"domain": st.sampled_from(("LINUX", "LINUX32"))},
                        {"flags": _strings}),
})


def spec_dicts() -> Strategy[dict[str, Any]]:
    """config.json documents as parsed JSON (runtime-spec v1.2, with v1.3 fields)."""
    return _obj(
        {"ociVersion": st.sampled_from(("1.0.2-dev", "1.1.0", "1.2.0", "1.2.1"))},
        {
            "process": _process,
            "root": _obj({"path": _text}, {"readonly": _bools}),
            "hostname": _names,
            "domainname": _names,
            "mounts": _list(_mount),
            "hooks": _hooks,
            "annotations": _annotations,
            "linux": _linux,
            # Platforms criolib keeps as opaque JSON objects.
            **{platform: st.dictionaries(_names, json_values(), max_size=2)
               for platform in ("solaris", "windows", "vm", "zos", "freebsd")},
        },
    )


def specs() -> Strategy[Spec]:
    """:class:`~criolib.runtime_spec.Spec` objects, loaded from :func:`spec_dicts`."""
    return spec_dicts().map(spec_from_dict)


# -- criolib.runtime_spec: config.json that validate() passes --------------------------

_ALL_CAPS = ALL_CAPABILITIES
_RLIMITS = ("RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE",
            "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS", "RLIMIT_NICE")
_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_word = st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=8)
_env_name = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=8)
_abs_paths = st.lists(_word, min_size=1, max_size=3).map(lambda p: "/" + "/".join(p))
_cpu_lists = st.lists(st.integers(0, 63), min_size=1, max_size=4, unique=True).map(
    lambda cpus: ",".join(map(str, sorted(cpus))))


def _valid_base() -> dict[str, Any]:
    """A config every runtime runs, in the shape ``runc spec`` writes."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    return {
        "ociVersion": "1.2.0",
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["sh"],
                    "env": [_PATH_ENV, "TERM=xterm"], "cwd": "/",
                    "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                    "noNewPrivileges": True},
        "root": {"path": "rootfs", "readonly": True},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {"resources": {"devices": [{"allow": False, "access": "rwm"}]},
                  "maskedPaths": ["/proc/kcore", "/sys/firmware"],
                  "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]},
    }


def _maybe(draw: Any, value: Strategy[Any]) -> Any:
    return draw(value) if draw(st.booleans()) else None


@st.composite
def _valid_process(draw: Any) -> dict[str, Any]:
    proc: dict[str, Any] = _valid_base()["process"]
    user: dict[str, Any] = {"uid": draw(_u32), "gid": draw(_u32)}
    if draw(st.booleans()):
        user["additionalGids"] = draw(_list(_u32))
    if draw(st.booleans()):
        user["umask"] = draw(st.integers(0, 0o777))
    proc["user"] = user
    proc["args"] = [draw(_abs_paths | _word), *draw(_list(_text))]
    names = draw(st.lists(_env_name, max_size=4, unique=True).filter(lambda n: "PATH" not in n))
    proc["env"] = [_PATH_ENV] + [f"{n}={draw(_text.filter(lambda t: chr(0) not in t))}"
                                 for n in names]
    proc["cwd"] = draw(_abs_paths | st.just("/"))
    permitted = draw(st.lists(st.sampled_from(_ALL_CAPS), max_size=6, unique=True))
    inheritable = draw(st.lists(st.sampled_from(_ALL_CAPS), max_size=4, unique=True))
    both = [c for c in permitted if c in inheritable]
    proc["capabilities"] = {
        "bounding": draw(st.lists(st.sampled_from(_ALL_CAPS), max_size=6, unique=True)),
        "permitted": permitted,
        "effective": [c for c in permitted if draw(st.booleans())],
        "inheritable": inheritable,
        "ambient": [c for c in both if draw(st.booleans())],
    }
    kinds = draw(st.lists(st.sampled_from(_RLIMITS), max_size=3, unique=True))
    proc["rlimits"] = [{"type": kind, "hard": hard, "soft": draw(st.integers(0, hard))}
                       for kind in kinds for hard in [draw(_u64)]]
    optional = {
        "oomScoreAdj": st.integers(-1000, 1000), "apparmorProfile": _word,
        "selinuxLabel": st.just("system_u:system_r:container_t:s0:c1,c2"),
        "ioPriority": st.fixed_dictionaries({
            "class": st.sampled_from(("IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE",
                                      "IOPRIO_CLASS_IDLE")),
            "priority": st.integers(0, 7)}),
        "scheduler": st.sampled_from(("SCHED_FIFO", "SCHED_RR")).flatmap(
            lambda p: st.fixed_dictionaries({"policy": st.just(p),
                                             "priority": st.integers(1, 99)}))
        | st.fixed_dictionaries({"policy": st.sampled_from(("SCHED_OTHER", "SCHED_BATCH")),
                                 "nice": st.integers(-20, 19)}),
        "execCPUAffinity": st.fixed_dictionaries({}, optional={"initial": _cpu_lists,
                                                               "final": _cpu_lists}),
    }
    for key, strategy in optional.items():
        value = _maybe(draw, strategy)
        if value is not None:
            proc[key] = value
    return proc


@st.composite
def _valid_mounts(draw: Any) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = _valid_base()["mounts"]
    for dest in draw(st.lists(_word, max_size=3, unique=True)):
        mount: dict[str, Any] = {"destination": f"/data/{dest}"}
        if draw(st.booleans()):
            mount.update(type="none", source=draw(_abs_paths),
                         options=[draw(st.sampled_from(("bind", "rbind"))),
                                  draw(st.sampled_from(("ro", "rw")))])
        else:
            mount.update(type="tmpfs", source="tmpfs",
                         options=draw(st.lists(st.sampled_from(("nosuid", "nodev", "noexec")),
                                               unique=True)))
        mounts.append(mount)
    return mounts


@st.composite
def _valid_linux(draw: Any) -> tuple[dict[str, Any], set[str]]:
    linux: dict[str, Any] = _valid_base()["linux"]
    kinds = draw(st.lists(st.sampled_from(("pid", "network", "ipc", "uts", "mount", "cgroup",
                                           "user", "time")), unique=True))
    linux["namespaces"] = [{"type": kind} for kind in kinds]
    if "user" in kinds:
        size = draw(st.integers(1, 65536))
        for key in ("uidMappings", "gidMappings"):
            linux[key] = [{"containerID": 0, "hostID": draw(st.integers(1, 2**31)),
                           "size": size}]
    if "time" in kinds and draw(st.booleans()):
        linux["timeOffsets"] = draw(st.dictionaries(
            st.sampled_from(("boottime", "monotonic")),
            st.fixed_dictionaries({"secs": _i64}, optional={"nanosecs": st.integers(0, 10**9 - 1)}),
            min_size=1))
    sysctl = {}
    if "network" in kinds:
        sysctl.update(draw(st.dictionaries(st.sampled_from(
            ("net.ipv4.ip_forward", "net.core.somaxconn", "net.ipv4.ping_group_range")),
            _word, max_size=2)))
    if "ipc" in kinds:
        sysctl.update(draw(st.dictionaries(st.sampled_from(
            ("kernel.shmmax", "kernel.msgmax", "fs.mqueue.msg_max")), _word, max_size=2)))
    if sysctl:
        linux["sysctl"] = sysctl
    resources = linux["resources"]
    limit = draw(st.integers(1 << 20, 1 << 40))
    resources["memory"] = {"limit": limit, "reservation": draw(st.integers(0, limit)),
                           "swap": draw(st.just(-1) | st.integers(limit, 1 << 41)),
                           "swappiness": draw(st.integers(0, 100))}
    period = draw(st.integers(1000, 1000000))
    quota = draw(st.integers(1000, 10**7))
    resources["cpu"] = {"shares": draw(st.integers(2, 262144)), "quota": quota,
                        "period": period, "burst": draw(st.integers(0, quota)),
                        "cpus": draw(_cpu_lists), "mems": "0"}
    resources["pids"] = {"limit": draw(st.just(-1) | st.integers(1, 2**22))}
    sizes = draw(st.lists(st.sampled_from(("64KB", "2MB", "1GB")), unique=True))
    resources["hugepageLimits"] = [{"pageSize": s, "limit": draw(_u64)} for s in sizes]
    resources["blockIO"] = {"weight": draw(st.integers(10, 1000)),
                            "weightDevice": [{"major": 8, "minor": 0,
                                              "weight": draw(st.integers(10, 1000))}]}
    resources["unified"] = draw(st.dictionaries(st.sampled_from(
        ("memory.high", "io.max", "cpu.weight")), _word, max_size=2))
    if draw(st.booleans()):
        linux["cgroupsPath"] = draw(_abs_paths | _word.map(
            lambda w: f"kubepods-besteffort.slice:crio:{w}"))
    linux["devices"] = [
        {"path": f"/dev/x{index}", "type": "c", "major": 10, "minor": 200 + index,
         "fileMode": 0o666, "uid": 0, "gid": 0}
        for index in range(draw(st.integers(0, 2)))]
    if draw(st.booleans()):
        linux["seccomp"] = draw(_valid_seccomp())
    linux["rootfsPropagation"] = draw(st.sampled_from(("private", "rslave", "rshared")))
    return linux, set(kinds)


@st.composite
def _valid_seccomp(draw: Any) -> dict[str, Any]:
    seccomp: dict[str, Any] = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
                               "architectures": ["SCMP_ARCH_X86_64"]}
    names = st.lists(st.sampled_from(("read", "write", "openat", "close", "mmap", "clone",
                                      "personality", "ptrace")), min_size=1, unique=True)
    rules = [{"names": draw(names), "action": "SCMP_ACT_ALLOW"}]
    for _ in range(draw(st.integers(0, 2))):
        rule: dict[str, Any] = {"names": draw(names), "action": "SCMP_ACT_ERRNO",
                                "errnoRet": draw(st.integers(1, 4095))}
        if draw(st.booleans()):
            rule["args"] = [{"index": draw(st.integers(0, 5)), "value": draw(_u64),
                             "op": draw(st.sampled_from(_OPS))}]
        rules.append(rule)
    seccomp["syscalls"] = rules
    return seccomp


def _shuffled(doc: Any, rnd: Any) -> Any:
    """``doc`` with the members of every object in a random order."""
    if isinstance(doc, dict):
        members = list(doc.items())
        rnd.shuffle(members)
        return {key: _shuffled(value, rnd) for key, value in members}
    if isinstance(doc, list):
        return [_shuffled(value, rnd) for value in doc]
    return doc


@st.composite
def valid_spec_dicts(draw: Any) -> dict[str, Any]:
    """config.json documents that :func:`~criolib.runtime_spec.validate` passes without errors.

    runtime-spec v1.2 config.md and config-linux.md: a valid baseline (the shape
    ``runc spec`` writes) with random valid changes: namespace subsets (with id
    mappings for a user namespace, offsets for a time one, a hostname only with a
    uts one, sysctls only in their namespaces), mounts with absolute destinations,
    unique rlimits with soft <= hard, known capabilities (effective within
    permitted, ambient within both permitted and inheritable), NAME=value env
    entries, cgroup resources within the kernel's ranges, seccomp rules, hooks with
    absolute paths, annotations and vendor properties, every object's members in a
    random order. validate() may still warn, never about these choices.
    """
    doc = _valid_base()
    doc["ociVersion"] = draw(st.sampled_from(("1.0.2", "1.1.0", "1.2.0", "1.2.1")))
    doc["process"] = draw(_valid_process())
    doc["mounts"] = draw(_valid_mounts())
    linux, kinds = draw(_valid_linux())
    doc["linux"] = linux
    if "uts" in kinds and draw(st.booleans()):
        doc["hostname"] = draw(_word)
        doc["domainname"] = draw(st.none() | _word) or "example.test"
    hook = st.fixed_dictionaries(
        {"path": _abs_paths},
        optional={"args": _list(_text), "timeout": st.integers(1, 3600),
                  "env": st.lists(st.builds("{}={}".format, _env_name, _word), max_size=3,
                                  unique_by=lambda entry: entry.partition("=")[0])})
    if draw(st.booleans()):
        doc["hooks"] = draw(st.dictionaries(st.sampled_from(
            ("createRuntime", "createContainer", "startContainer", "poststart", "poststop")),
            _list(hook), max_size=3))
    if draw(st.booleans()):
        doc["annotations"] = draw(_annotations)
    for target in (doc, doc["process"], doc["linux"], doc["linux"]["resources"]):
        target.update(draw(st.dictionaries(unknown_keys(), json_values(), max_size=1)))
    shuffled: dict[str, Any] = _shuffled(doc, draw(st.randoms(use_true_random=False)))
    return shuffled


# -- criolib.runtime_spec: state and features ---------------------------------------


def state_dicts() -> Strategy[dict[str, Any]]:
    """Container states as a runtime prints them (runtime-spec v1.2 runtime.md)."""
    return _obj(
        {"ociVersion": st.sampled_from(("1.0.2", "1.2.0")), "id": _names,
         "status": st.sampled_from(("creating", "created", "running", "stopped")),
         "bundle": _paths},
        {"pid": st.integers(0, 2**22), "annotations": _annotations},
    )


def states() -> Strategy[State]:
    """:class:`~criolib.runtime_spec.State` objects, loaded from :func:`state_dicts`."""
    return state_dicts().map(load_state)


def _enabled() -> Strategy[dict[str, Any]]:
    return _obj({}, {"enabled": _bools}, nulls=True)


def features_dicts() -> Strategy[dict[str, Any]]:
    """Features documents (runtime-spec v1.2 features.md, with v1.3 fields).

    Optional properties may be ``null``, which features.md defines as "unknown".
    """
    linux = _obj({}, {
        "namespaces": _list(st.sampled_from(_NAMESPACES)),
        "capabilities": _list(st.sampled_from(_CAPS)),
        "cgroup": _obj({}, {k: _bools for k in ("v1", "v2", "systemd", "systemdUser", "rdma")},
                       nulls=True),
        "seccomp": _obj({}, {"enabled": _bools, "actions": _list(st.sampled_from(_ACTIONS)),
                             "operators": _list(st.sampled_from(_OPS)),
                             "archs": _list(st.sampled_from(_ARCHES)),
                             "knownFlags": _strings, "supportedFlags": _strings}, nulls=True),
        "apparmor": _enabled(),
        "selinux": _enabled(),
        "intelRdt": _obj({}, {"enabled": _bools, "schemata": _bools, "monitoring": _bools},
                         nulls=True),
        "memoryPolicy": _obj({}, {"modes": _strings, "flags": _strings}, nulls=True),
        "mountExtensions": _obj({}, {"idmap": _enabled()}, nulls=True),
        "netDevices": _enabled(),
    }, nulls=True)
    return _obj(
        {"ociVersionMin": st.just("1.0.0"),
         "ociVersionMax": st.sampled_from(("1.0.2-dev", "1.2.0", "1.3.0"))},
        {"hooks": _list(st.sampled_from(("prestart", "createRuntime", "poststop"))),
         "mountOptions": _list(_names), "linux": linux, "annotations": _annotations,
         "potentiallyUnsafeConfigAnnotations": _list(_names)},
        nulls=True,
    )


def features() -> Strategy[Features]:
    """:class:`~criolib.runtime_spec.Features` objects, loaded from :func:`features_dicts`."""
    return features_dicts().map(load_features)
