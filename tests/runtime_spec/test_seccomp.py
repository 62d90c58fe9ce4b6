"""The RuntimeDefault seccomp profile: its shape, its conditions, and real runtimes obeying it.

Unit tests check the resolved profile against containers/common's rules and CRI-O's
change; the integration tests run busybox under runc and crun with the profile and show
the kernel refusing what the profile refuses, while the container holds the capability.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from criolib._exec import Completed, run
from criolib.runtime_spec import (
    _defaults,
    _seccomp_data,
    load_seccomp_profile,
    resolve_seccomp_profile,
)
from criolib.runtime_spec._seccomp import (
    SeccompProfileError,
    default_seccomp_profile,
    normalize_capability,
    seccomp_arch,
)
from criolib.testing import (
    TestImages,
    require_binaries,
    require_root,
    unpack_test_image,
)

ACTIONS = {"SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
           "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG",
           "SCMP_ACT_NOTIFY"}
OPS = {"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
       "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"}
SPEC_ARCHES = {"SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM",
               "SCMP_ARCH_AARCH64", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64",
               "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64",
               "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
               "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X",
               "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64",
               "SCMP_ARCH_LOONGARCH64", "SCMP_ARCH_M68K", "SCMP_ARCH_SH", "SCMP_ARCH_SHEB"}
ENOSYS, EPERM = 38, 1


def verdict(profile: dict[str, Any], name: str) -> str | int:
    """What an argument-less call of ``name`` gets: "allow", an errno, or "default".

    Where a name is both allowed and denied without conditions (upstream's ``setns``),
    the first rule wins, as in libseccomp (checked against runc and crun below).
    """
    for rule in profile["syscalls"]:
        if name in rule["names"] and "args" not in rule:
            return "allow" if rule["action"] == "SCMP_ACT_ALLOW" else int(rule["errnoRet"])
    return "default"


# -- shape ---------------------------------------------------------------------------------

@pytest.mark.parametrize("caps", [(), _defaults.DEFAULT_CAPABILITIES, _defaults.ALL_CAPABILITIES])
@pytest.mark.parametrize("arch", ["amd64", "arm64", "s390x", "ppc64le", "riscv64", "386"])
def test_profile_is_well_formed(caps: Sequence[str], arch: str) -> None:
    profile = default_seccomp_profile(capabilities=caps, arch=arch)
    assert json.loads(json.dumps(profile)) == profile
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["defaultErrnoRet"] == ENOSYS  # containers/common, not moby's EPERM
    assert set(profile) <= {"defaultAction", "defaultErrnoRet", "architectures", "syscalls"}
    assert set(profile.get("architectures", ())) <= SPEC_ARCHES
    for rule in profile["syscalls"]:
        assert set(rule) <= {"names", "action", "errnoRet", "args"}
        assert rule["action"] in ACTIONS
        assert rule["names"] and len(set(rule["names"])) == len(rule["names"])
        assert all(isinstance(n, str) and n == n.strip() and n for n in rule["names"])
        assert ("errnoRet" in rule) == (rule["action"] == "SCMP_ACT_ERRNO")
        for arg in rule.get("args", ()):
            assert arg["op"] in OPS and 0 <= arg["index"] <= 5
            assert 0 <= arg["value"] < 2**64


def test_unconditional_allow_and_deny_lists_are_disjoint() -> None:
    denied, allowed = _seccomp_data.RULES[0], _seccomp_data.RULES[1]
    assert denied.action == "SCMP_ACT_ERRNO" and allowed.action == "SCMP_ACT_ALLOW"
    assert not set(denied.names) & set(allowed.names)
    assert list(allowed.names) == sorted(allowed.names)  # upstream keeps it sorted
    # With every capability no capability gate denies anything, so nothing is both
    # allowed and denied; without CAP_SYS_ADMIN upstream lists setns in both (a quirk
    # of containers/common: the allow comes first and wins).
    for caps, overlap in ((_defaults.ALL_CAPABILITIES, set()), ((), {"setns"})):
        profile = default_seccomp_profile(capabilities=caps, arch="amd64")
        plain = [r for r in profile["syscalls"] if "args" not in r]
        allow = {n for r in plain if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
        deny = {n for r in plain if r["action"] == "SCMP_ACT_ERRNO" for n in r["names"]}
        assert allow & deny == overlap


def test_architectures_follow_the_arch_map() -> None:
    x86_64 = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert default_seccomp_profile(arch="amd64")["architectures"] == x86_64
    assert default_seccomp_profile(arch="x86_64")["architectures"] == x86_64
    assert default_seccomp_profile(arch="arm64")["architectures"] == [
        "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert default_seccomp_profile(arch="s390x")["architectures"] == [
        "SCMP_ARCH_S390X", "SCMP_ARCH_S390"]
    # Arches outside containers/common's archMap get none: libseccomp uses the native one.
    for arch in ("ppc64le", "riscv64", "386", "arm"):
        assert "architectures" not in default_seccomp_profile(arch=arch)


def test_host_arch_is_the_default() -> None:
    host = seccomp_arch()
    assert default_seccomp_profile() == default_seccomp_profile(arch=host)


@pytest.mark.parametrize("arch", ["amd46", "", "sparc"])
def test_unknown_arch_is_refused(arch: str) -> None:
    with pytest.raises(SeccompProfileError, match="unknown architecture") as info:
        default_seccomp_profile(arch=arch)
    assert isinstance(info.value, ValueError)


# -- conditions ----------------------------------------------------------------------------

ARCH_ONLY = {
    "arch_prctl": {"amd64", "x32"},
    "modify_ldt": {"amd64", "x32", "x86"},
    "set_tls": {"arm", "arm64"},
    "arm_fadvise64_64": {"arm", "arm64"},
    "s390_runtime_instr": {"s390", "s390x"},
    "riscv_flush_icache": {"riscv64"},
    "swapcontext": {"ppc64le"},
    "sync_file_range2": {"ppc64le", "arm", "arm64"},
}


@pytest.mark.parametrize("name", sorted(ARCH_ONLY))
@pytest.mark.parametrize("arch", ["amd64", "x32", "386", "arm", "arm64", "s390x", "s390",
                                  "ppc64le", "riscv64", "mips64"])
def test_arch_specific_syscalls_only_on_their_arch(name: str, arch: str) -> None:
    expected = "allow" if seccomp_arch(arch) in ARCH_ONLY[name] else "default"
    assert verdict(default_seccomp_profile(arch=arch), name) == expected


CAP_GATED = [
    ("CAP_SYS_ADMIN", ["sethostname", "setdomainname", "setns", "quotactl", "quotactl_fd",
                       "lookup_dcookie", "bpf", "perf_event_open"]),
    ("CAP_SYS_CHROOT", ["chroot"]),
    ("CAP_SYS_MODULE", ["init_module", "finit_module", "delete_module", "query_module"]),
    ("CAP_SYS_PACCT", ["acct"]),
    ("CAP_SYS_PTRACE", ["kcmp", "process_madvise"]),
    ("CAP_SYS_RAWIO", ["iopl", "ioperm"]),
    ("CAP_SYS_TIME", ["settimeofday", "stime", "clock_settime", "clock_settime64"]),
    ("CAP_SYS_TTY_CONFIG", ["vhangup"]),
    ("CAP_DAC_READ_SEARCH", ["open_by_handle_at"]),
    ("CAP_BPF", ["bpf"]),
    ("CAP_PERFMON", ["perf_event_open"]),
]


@pytest.mark.parametrize(("cap", "names"), CAP_GATED, ids=[c for c, _ in CAP_GATED])
def test_capability_gated_syscalls(cap: str, names: list[str]) -> None:
    without = default_seccomp_profile(capabilities=_defaults.DEFAULT_CAPABILITIES, arch="amd64")
    with_cap = default_seccomp_profile(
        capabilities=[*_defaults.DEFAULT_CAPABILITIES, cap], arch="amd64")
    for name in names:
        assert verdict(with_cap, name) == "allow", name
        denied = [r for r in without["syscalls"] if name in r["names"]
                  and r["action"] == "SCMP_ACT_ERRNO"]
        assert [r["errnoRet"] for r in denied] == [EPERM], name
        assert not [r for r in with_cap["syscalls"] if name in r["names"]
                    and r["action"] == "SCMP_ACT_ERRNO"], name
    if cap != "CAP_SYS_ADMIN":  # setns is the one name upstream also lists unconditionally
        assert all(verdict(without, n) == EPERM for n in names)


def test_unshare_needs_cap_sys_admin_in_crio() -> None:
    # CRI-O takes unshare out of the library's allow list and gives it back only with
    # CAP_SYS_ADMIN; otherwise it falls to the default action, ENOSYS.
    assert "unshare" in _seccomp_data.RULES[1].names
    without = default_seccomp_profile(capabilities=_defaults.DEFAULT_CAPABILITIES)
    assert verdict(without, "unshare") == "default"
    assert verdict(default_seccomp_profile(capabilities=["CAP_SYS_ADMIN"]), "unshare") == "allow"


def test_syscalls_moby_gates_but_containers_common_allows() -> None:
    # moby gates reboot (CAP_SYS_BOOT), syslog (CAP_SYSLOG) and the NUMA calls
    # (CAP_SYS_NICE); containers/common allows them to everyone.
    profile = default_seccomp_profile(capabilities=())
    for name in ("reboot", "syslog", "mbind", "get_mempolicy", "set_mempolicy", "ptrace",
                 "process_vm_readv", "mount", "clone", "clone3"):
        assert verdict(profile, name) == "allow", name
    for name in ("swapon", "kexec_load", "userfaultfd", "syscall", "io_pgetevents"):
        assert verdict(profile, name) == EPERM, name
    for name in ("io_uring_setup", "add_key", "request_key", "readdir"):
        assert verdict(profile, name) == "default", name


def test_socket_rules() -> None:
    def socket_rules(caps: Sequence[str]) -> list[tuple[str, Any, list[tuple[int, int, str]]]]:
        profile = default_seccomp_profile(capabilities=caps, arch="amd64")
        return [(r["action"], r.get("errnoRet"),
                 [(a["index"], a["value"], a["op"]) for a in r.get("args", [])])
                for r in profile["syscalls"] if r["names"] == ["socket"]]

    vsock_denied = ("SCMP_ACT_ERRNO", EPERM, [(0, 40, "SCMP_CMP_EQ")])
    assert socket_rules([]) == [
        vsock_denied,
        ("SCMP_ACT_ERRNO", 22, [(0, 16, "SCMP_CMP_EQ"), (2, 9, "SCMP_CMP_EQ")]),
        ("SCMP_ACT_ALLOW", None, [(0, 16, "SCMP_CMP_EQ"), (2, 9, "SCMP_CMP_NE")]),
        ("SCMP_ACT_ALLOW", None, [(0, 16, "SCMP_CMP_NE")]),
    ]
    assert socket_rules(["CAP_AUDIT_WRITE"]) == [
        vsock_denied, ("SCMP_ACT_ALLOW", None, [(0, 40, "SCMP_CMP_NE")])]


def test_personality_is_allowed_only_for_known_personas() -> None:
    values = [r["args"][0]["value"] for r in default_seccomp_profile()["syscalls"]
              if r["names"] == ["personality"]]
    assert values == [0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF]


@pytest.mark.parametrize("spelling", ["SYS_ADMIN", "sys_admin", "CAP_SYS_ADMIN", " cap_sys_admin "])
def test_capability_spellings(spelling: str) -> None:
    assert normalize_capability(spelling) == "CAP_SYS_ADMIN"
    assert default_seccomp_profile(capabilities=[spelling]) == default_seccomp_profile(
        capabilities=["CAP_SYS_ADMIN"])


def test_counts() -> None:
    profile = default_seccomp_profile(capabilities=_defaults.DEFAULT_CAPABILITIES, arch="amd64")
    allow = next(r for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ALLOW")
    assert len(allow["names"]) == len(_seccomp_data.RULES[1].names) - 1  # CRI-O's unshare
    assert len(_seccomp_data.RULES[0].names) == 31


# -- the defaults beside it ----------------------------------------------------------------

def test_capability_facts() -> None:
    assert len(_defaults.ALL_CAPABILITIES) == 41
    assert _defaults.CAPABILITY_BITS["CAP_CHOWN"] == 0
    assert _defaults.CAPABILITY_BITS["CAP_SYS_ADMIN"] == 21
    assert _defaults.CAPABILITY_BITS["CAP_CHECKPOINT_RESTORE"] == 40
    assert set(_defaults.DEFAULT_CAPABILITIES) < set(_defaults.ALL_CAPABILITIES)
    assert len(_defaults.DEFAULT_CAPABILITIES) == 9
    header = Path("/usr/include/linux/capability.h")
    if header.exists():  # the kernel's own numbering, where the headers are installed
        found = {m[1]: int(m[2]) for m in re.finditer(
            r"^#define\s+(CAP_[A-Z_]+)\s+(\d+)\s*$", header.read_text(), re.MULTILINE)}
        assert found == dict(_defaults.CAPABILITY_BITS)


def test_default_mounts_are_fresh_wire_copies() -> None:
    first, second = _defaults.default_mounts(), _defaults.default_mounts()
    assert first == second and first[0] is not second[0]
    assert [m["destination"] for m in first] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
    assert all(isinstance(m["options"], list) for m in first)
    first[0]["options"].append("ro")
    assert "ro" not in _defaults.DEFAULT_MOUNTS[0]["options"]
    pts = next(m for m in first if m["destination"] == "/dev/pts")
    assert pts["options"] == ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                              "gid=5"]


# -- integration: runc and crun enforce it -------------------------------------------------

RUNTIMES = ["runc", "crun"]
DEFAULT_AND_ADMIN = [*_defaults.DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"]


COMMON_FORM: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "flags": ["SECCOMP_FILTER_FLAG_LOG"],
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "comment": "io"},
        {"name": "reboot", "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_BOOT"]}},
        {"names": ["chown"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["SYS_ADMIN"]}},
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW",
         "includes": {"arches": ["amd64"]}},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["arm64"]},
         "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
        {"names": [], "action": "SCMP_ACT_ALLOW"}]}


def test_resolve_containers_common_form() -> None:
    got = resolve_seccomp_profile(COMMON_FORM, arch="amd64")
    assert got == {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["chown"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]}
    # Capabilities in any spelling; arches in the Go or uname spelling.
    arm = resolve_seccomp_profile(COMMON_FORM, capabilities=["sys_boot", "CAP_SYS_ADMIN"],
                                  arch="aarch64")
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert [s["names"] for s in arm["syscalls"]] == [["read", "write"], ["reboot"]]
    # An arch the archMap does not list gets no architectures (libseccomp: native).
    assert "architectures" not in resolve_seccomp_profile(COMMON_FORM, arch="s390x")


def test_resolve_runtime_spec_form_is_kept() -> None:
    oci = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": [],
           "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
    assert resolve_seccomp_profile(oci) == oci


def test_resolve_agrees_with_the_built_in_profile() -> None:
    """The JSON rules of the built-in profile resolve as default_seccomp_profile does."""
    def to_json(rule: _seccomp_data.Rule) -> dict[str, Any]:
        entry: dict[str, Any] = {"names": list(rule.names), "action": rule.action}
        if rule.errno is not None:
            entry["errnoRet"] = rule.errno
        if rule.args:
            entry["args"] = [{"index": a.index, "value": a.value, "op": a.op}
                             | ({"valueTwo": a.value_two} if a.value_two else {})
                             for a in rule.args]
        entry["includes"] = {"caps": list(rule.include_caps),
                             "arches": list(rule.include_arches)}
        entry["excludes"] = {"caps": list(rule.exclude_caps),
                             "arches": list(rule.exclude_arches)}
        return entry

    from criolib.runtime_spec._seccomp import _RULES
    doc = {"defaultAction": _seccomp_data.DEFAULT_ACTION,
           "defaultErrnoRet": _seccomp_data.DEFAULT_ERRNO,
           "archMap": [{"architecture": v[0], "subArchitectures": list(v[1:])}
                       for v in _seccomp_data.ARCH_MAP.values()],
           "syscalls": [to_json(r) for r in _RULES if r.names]}
    for caps in ((), _defaults.DEFAULT_CAPABILITIES, _defaults.ALL_CAPABILITIES):
        for arch in ("amd64", "arm64", "s390x"):
            built = default_seccomp_profile(capabilities=caps, arch=arch)
            assert resolve_seccomp_profile(doc, capabilities=caps, arch=arch) == built


def test_load_seccomp_profile(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(COMMON_FORM))
    assert load_seccomp_profile(path, arch="amd64") == resolve_seccomp_profile(
        COMMON_FORM, arch="amd64")
    assert load_seccomp_profile(str(path), capabilities=["CAP_SYS_BOOT"], arch="amd64")[
        "syscalls"][1] == {"names": ["reboot"], "action": "SCMP_ACT_ALLOW"}
    (tmp_path / "text").write_text("not json")
    (tmp_path / "list.json").write_text("[1]")
    (tmp_path / "bad.json").write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW",
                                                   "syscalls": [{"names": ["x"], "includes": 3}]}))
    for bad, match in (("relative.json", "must be absolute"),
                       (tmp_path / "absent.json", "absent.json: cannot read it"),
                       (tmp_path / "text", "text: not JSON"),
                       (tmp_path / "list.json", "list.json: not a seccomp profile"),
                       (tmp_path / "bad.json", "bad.json: malformed")):
        with pytest.raises(SeccompProfileError, match=match):
            load_seccomp_profile(bad)


@pytest.fixture(scope="module")
def rootfs(criolib_test_images: TestImages, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """busybox unpacked once; every bundle points at it, read-only."""
    require_root()
    return unpack_test_image(criolib_test_images, "busybox",
                             tmp_path_factory.mktemp("seccomp") / "rootfs")


class Bundles:
    """Makes bundles from ``runc spec`` and runs them, deleting every container it made."""

    def __init__(self, runtime: str, rootfs: Path, tmp: Path) -> None:
        self.runtime, self.rootfs, self.tmp = runtime, rootfs, tmp
        self.ids: list[str] = []

    def run(self, script: str, *, capabilities: Sequence[str],
            seccomp: dict[str, Any] | None) -> Completed:
        cid = f"criolib-seccomp-{uuid.uuid4().hex[:12]}"
        bundle = self.tmp / cid
        bundle.mkdir()
        run(["runc", "spec", "--bundle", str(bundle)])
        config = json.loads((bundle / "config.json").read_text())
        config["root"] = {"path": str(self.rootfs), "readonly": True}
        config["process"]["args"] = ["sh", "-c", script]
        config["process"]["terminal"] = False
        config["process"]["capabilities"] = {
            s: list(capabilities) for s in ("bounding", "effective", "permitted")}
        if seccomp is None:
            config["linux"].pop("seccomp", None)
        else:
            config["linux"]["seccomp"] = seccomp
        (bundle / "config.json").write_text(json.dumps(config))
        self.ids.append(cid)
        return run([self.runtime, "run", "--bundle", str(bundle), cid], check=False,
                   timeout=60, what=f"container {cid}")

    def cleanup(self) -> None:
        for cid in self.ids:
            run([self.runtime, "delete", "-f", cid], check=False, timeout=30)


@pytest.fixture(params=RUNTIMES)
def bundles(request: pytest.FixtureRequest, rootfs: Path, tmp_path: Path) -> Iterator[Bundles]:
    runtime: str = request.param
    require_binaries("runc", runtime)
    b = Bundles(runtime, rootfs, tmp_path)
    try:
        yield b
    finally:
        b.cleanup()


@pytest.mark.integration
def test_container_runs_under_the_profile(bundles: Bundles) -> None:
    caps = _defaults.DEFAULT_CAPABILITIES
    done = bundles.run("echo ok; cat /proc/self/status", capabilities=caps,
                       seccomp=default_seccomp_profile(capabilities=caps))
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert out.startswith("ok\n")
    assert "\nSeccomp:\t2\n" in out  # SECCOMP_MODE_FILTER


PROBE = "hostname seccomp-probe; echo hostname=$?; unshare -m true; echo unshare=$?; hostname"


@pytest.mark.integration
def test_profile_without_the_capability_blocks_what_the_capability_allows(
    bundles: Bundles,
) -> None:
    # The container holds CAP_SYS_ADMIN in every set; only the profile differs. What fails
    # is therefore seccomp's doing, not a missing capability.
    blocked = bundles.run(PROBE, capabilities=DEFAULT_AND_ADMIN, seccomp=default_seccomp_profile(
        capabilities=_defaults.DEFAULT_CAPABILITIES))
    out, err = blocked.stdout.decode(), blocked.stderr.decode()
    assert "hostname=1" in out and "unshare=1" in out, (out, err)
    assert "sethostname: Operation not permitted" in err  # the rule's errnoRet, EPERM
    assert "Function not implemented" in err  # unshare: the default action, ENOSYS
    assert "seccomp-probe" not in out

    allowed = bundles.run(PROBE, capabilities=DEFAULT_AND_ADMIN,
                          seccomp=default_seccomp_profile(capabilities=DEFAULT_AND_ADMIN))
    out, err = allowed.stdout.decode(), allowed.stderr.decode()
    assert allowed.returncode == 0, err
    assert "hostname=0" in out and "unshare=0" in out, (out, err)
    assert out.rstrip().endswith("seccomp-probe")


@pytest.mark.integration
def test_capability_gate_for_chroot(bundles: Bundles) -> None:
    caps = [*_defaults.DEFAULT_CAPABILITIES, "CAP_SYS_CHROOT"]
    script = "chroot / true; echo chroot=$?"
    blocked = bundles.run(script, capabilities=caps, seccomp=default_seccomp_profile(
        capabilities=_defaults.DEFAULT_CAPABILITIES))
    assert "chroot=1" in blocked.stdout.decode()
    assert "Operation not permitted" in blocked.stderr.decode()
    allowed = bundles.run(script, capabilities=caps,
                          seccomp=default_seccomp_profile(capabilities=caps))
    assert "chroot=0" in allowed.stdout.decode(), allowed.stderr.decode()
