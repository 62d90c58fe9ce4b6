"""The Generator: CRI-O's secure defaults, setters, privileged, saving."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest

from criolib.runtime_spec import (
    GENERATED_OCI_VERSION,
    OCI_RUNTIME_SPEC_VERSIONS,
    Generator,
    RuntimeSpecError,
    _defaults,
    clamp_oom_score_adj,
    clamp_rlimit,
    default_seccomp_profile,
    host_capabilities,
    spec_to_dict,
    validate,
)


def test_default_profile_is_crio_secure_profile() -> None:
    doc = Generator().config()
    assert doc["ociVersion"] == GENERATED_OCI_VERSION
    assert GENERATED_OCI_VERSION in OCI_RUNTIME_SPEC_VERSIONS
    assert Generator().set_oci_version("1.2.0").config()["ociVersion"] == "1.2.0"
    proc = doc["process"]
    assert proc["noNewPrivileges"] is True
    caps = proc["capabilities"]
    assert set(caps["bounding"]) == set(_defaults.DEFAULT_CAPABILITIES)
    assert caps["effective"] == caps["bounding"] == caps["permitted"]
    assert "CAP_SYS_ADMIN" not in caps["bounding"]
    assert "inheritable" not in caps and "ambient" not in caps
    assert doc["linux"]["maskedPaths"] == list(_defaults.MASKED_PATHS)
    assert "/proc/kcore" in doc["linux"]["maskedPaths"]
    assert "/proc/sys" in doc["linux"]["readonlyPaths"]
    assert doc["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    destinations = [m["destination"] for m in doc["mounts"]]
    for dest in ("/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys",
                 "/sys/fs/cgroup"):
        assert dest in destinations
    assert {ns["type"] for ns in doc["linux"]["namespaces"]} == {
        "pid", "network", "ipc", "uts", "mount"}
    assert doc["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]


def test_default_profile_validates_clean() -> None:
    problems = [p for p in validate(Generator().config()) if p.severity == "error"]
    assert problems == []


def test_default_rlimits_are_clamped_to_the_callers_hard_limit() -> None:
    doc = Generator().config()
    limits = {r["type"]: r for r in doc["process"]["rlimits"]}
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = limits["RLIMIT_NOFILE"]
    assert nofile["soft"] <= nofile["hard"]
    if hard != resource.RLIM_INFINITY:
        assert nofile["hard"] <= hard


def test_clamp_helpers() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft2, hard2 = clamp_rlimit("RLIMIT_NOFILE", 10**9, 10**9)
    assert hard2 == (10**9 if hard == resource.RLIM_INFINITY else hard)
    assert soft2 <= hard2
    assert clamp_rlimit("RLIMIT_NOT_A_THING", 5, 6) == (5, 6)
    current = int(Path("/proc/self/oom_score_adj").read_text())
    assert clamp_oom_score_adj(-998) == max(-998, current)
    assert clamp_oom_score_adj(500) == max(500, current)


def test_oom_score_adj_restricted_unless_asked() -> None:
    current = int(Path("/proc/self/oom_score_adj").read_text())
    g = Generator().set_oom_score_adj(-998)
    assert g.config()["process"]["oomScoreAdj"] == max(-998, current)
    g.set_oom_score_adj(-998, restrict=False)
    assert g.config()["process"]["oomScoreAdj"] == -998


def test_setters_chain_and_replace() -> None:
    g = (Generator()
         .set_args(["echo", "hi"]).set_cwd("/tmp").set_env("A", "1").set_env("A", "2")
         .set_user(1000, 1000, additional_gids=[10, 29, 10]).set_hostname("pod")
         .add_mount("/data", source="/srv", type="bind", options=["rbind", "ro"])
         .add_mount("/data", source="/other", type="bind", options=["rbind"])
         .set_memory_limit(64 << 20, swap=64 << 20).set_pids_limit(20)
         .set_cpu(shares=512, quota=50000, period=100000)
         .set_sysctl("net.ipv4.ip_forward", "0")
         .add_capability("NET_ADMIN").drop_capability("CAP_KILL")
         .set_rlimit("NOFILE", 256, 128)
         .add_namespace("network", "/var/run/netns/x")
         .add_annotation("io.example/a", "b")
         .add_hook("prestart", "/bin/true", args=["true"], timeout=5))
    doc = g.config()
    assert doc["process"]["args"] == ["echo", "hi"]
    assert [e for e in doc["process"]["env"] if e.startswith("A=")] == ["A=2"]
    assert doc["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [10, 29]}
    data = [m for m in doc["mounts"] if m["destination"] == "/data"]
    assert data == [{"destination": "/data", "type": "bind", "source": "/other",
                     "options": ["rbind"]}]
    assert doc["linux"]["resources"]["memory"] == {"limit": 64 << 20, "swap": 64 << 20}
    assert doc["linux"]["resources"]["pids"] == {"limit": 20}
    caps = doc["process"]["capabilities"]
    assert "CAP_NET_ADMIN" in caps["bounding"] and "CAP_KILL" not in caps["effective"]
    assert {"type": "RLIMIT_NOFILE", "hard": 256, "soft": 128} in doc["process"]["rlimits"]
    assert sum(1 for r in doc["process"]["rlimits"] if r["type"] == "RLIMIT_NOFILE") == 1
    net = [ns for ns in doc["linux"]["namespaces"] if ns["type"] == "network"]
    assert net == [{"type": "network", "path": "/var/run/netns/x"}]
    assert doc["hooks"]["prestart"] == [{"path": "/bin/true", "args": ["true"], "timeout": 5}]
    assert [p for p in validate(doc) if p.severity == "error"] == []


def test_bad_names_are_refused() -> None:
    with pytest.raises(RuntimeSpecError, match="unknown namespace type 'netw'"):
        Generator().add_namespace("netw")
    with pytest.raises(RuntimeSpecError, match="unknown hook stage"):
        Generator().add_hook("prestartt", "/bin/true")
    with pytest.raises(RuntimeSpecError, match="/nonexistent"):
        Generator().add_host_device("/nonexistent")


def test_privileged_opens_up_like_crio() -> None:
    doc = Generator(privileged=True).config()
    caps = set(doc["process"]["capabilities"]["bounding"])
    assert caps == set(host_capabilities())
    assert "CAP_SYS_ADMIN" in caps and "CAP_NET_ADMIN" in caps
    with open("/proc/self/status") as f:
        bnd = int(next(x for x in f if x.startswith("CapBnd:")).split()[1], 16)
    assert caps == {c for c in _defaults.ALL_CAPABILITIES
                    if bnd & (1 << _defaults.CAPABILITY_BITS[c])}
    assert "seccomp" not in doc["linux"]
    assert "maskedPaths" not in doc["linux"] and "readonlyPaths" not in doc["linux"]
    sysfs = next(m for m in doc["mounts"] if m["destination"] == "/sys")
    assert "ro" not in sysfs["options"]
    assert doc["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert any(d["path"] == "/dev/null" for d in doc["linux"]["devices"])
    assert not any(d["path"].startswith("/dev/pts") for d in doc["linux"]["devices"])


def test_host_device_and_template(tmp_path: Path) -> None:
    g = Generator().add_host_device("/dev/null", "/dev/mynull")
    doc = g.config()
    dev = next(d for d in doc["linux"]["devices"] if d["path"] == "/dev/mynull")
    assert (dev["type"], dev["major"], dev["minor"]) == ("c", 1, 3)
    again = Generator(template=doc).config()
    assert again == doc
    assert Generator(template=g.spec()).config() == doc


def test_save_writes_config_json(tmp_path: Path) -> None:
    path = Generator().set_args(["true"]).save(tmp_path)
    assert path == tmp_path / "config.json"
    assert json.loads(path.read_bytes())["process"]["args"] == ["true"]
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(RuntimeSpecError, match="cannot write"):
        Generator().save(tmp_path / "missing-dir")


# -- the default seccomp profile follows the capabilities ----------------------------


def _allows(profile: dict[str, object], syscall: str) -> bool:
    """Whether an argument-less ``syscall`` is allowed (the first unconditional rule wins)."""
    for rule in profile["syscalls"]:  # type: ignore[attr-defined]
        if syscall in rule["names"] and "args" not in rule:
            return bool(rule["action"] == "SCMP_ACT_ALLOW")
    return False


def test_default_seccomp_is_resolved_for_the_final_capabilities(tmp_path: Path) -> None:
    g = Generator()
    assert g.default_seccomp
    assert not _allows(g.config()["linux"]["seccomp"], "sethostname")
    g.add_capability("SYS_ADMIN").add_capability("CAP_SYS_CHROOT")
    caps = g.capabilities()
    expected = default_seccomp_profile(capabilities=caps)
    profile = g.config()["linux"]["seccomp"]
    assert profile == expected
    assert _allows(profile, "sethostname") and _allows(profile, "chroot")
    assert spec_to_dict(g.spec())["linux"]["seccomp"] == expected
    assert json.loads(g.save(tmp_path).read_bytes())["linux"]["seccomp"] == expected
    g.drop_capability("SYS_ADMIN")
    assert not _allows(g.config()["linux"]["seccomp"], "sethostname")
    g.set_capabilities(["CHOWN", "SYS_CHROOT"])
    assert g.config()["linux"]["seccomp"] == default_seccomp_profile(
        capabilities=["CAP_CHOWN", "CAP_SYS_CHROOT"])


def test_a_profile_set_by_hand_is_left_alone() -> None:
    mine = default_seccomp_profile(capabilities=_defaults.DEFAULT_CAPABILITIES)
    g = Generator().set_seccomp(mine).add_capability("SYS_ADMIN")
    assert not g.default_seccomp
    assert g.config()["linux"]["seccomp"] == mine
    assert not _allows(g.config()["linux"]["seccomp"], "sethostname")
    assert g.set_default_seccomp().default_seccomp
    assert _allows(g.config()["linux"]["seccomp"], "sethostname")
    unconfined = Generator().set_seccomp(None).add_capability("SYS_ADMIN").config()
    assert "seccomp" not in unconfined["linux"]


def test_a_template_keeps_following_its_capabilities() -> None:
    # A generator's own output as a template: its profile is still the default one.
    again = Generator(template=Generator().config()).add_capability("SYS_ADMIN")
    assert again.default_seccomp and _allows(again.config()["linux"]["seccomp"], "sethostname")
    from_spec = Generator(template=Generator().spec()).add_capability("SYS_ADMIN")
    assert _allows(from_spec.config()["linux"]["seccomp"], "sethostname")
    # A profile of the caller's own making, in a template, is theirs.
    doc = Generator().config()
    doc["linux"]["seccomp"]["syscalls"] = doc["linux"]["seccomp"]["syscalls"][:-1]
    own = Generator(template=doc).add_capability("SYS_ADMIN")
    assert not own.default_seccomp
    assert own.config()["linux"]["seccomp"] == doc["linux"]["seccomp"]


# -- privileged, terminal, rlimits ----------------------------------------------------


def test_privileged_allows_privilege_escalation_and_is_idempotent() -> None:
    once = Generator().set_privileged().config()
    assert once["process"]["noNewPrivileges"] is False
    twice = Generator().set_privileged().set_privileged().config()
    assert twice == once
    for mount in twice["mounts"]:
        if mount["type"] in ("sysfs", "cgroup"):
            assert mount["options"].count("rw") == 1 and "ro" not in mount["options"]


def test_term_only_with_a_terminal() -> None:
    assert "TERM" not in Generator().env()
    assert "TERM" not in Generator().set_terminal(False).env()
    assert Generator().set_terminal().env()["TERM"] == "xterm"
    assert Generator().set_env("TERM", "dumb").set_terminal().env()["TERM"] == "dumb"


def test_remove_rlimit_takes_the_names_set_rlimit_takes() -> None:
    for name in ("nofile", "NOFILE", "RLIMIT_NOFILE", "rlimit_nofile"):
        g = Generator().set_rlimit("NOFILE", 64, 32).remove_rlimit(name)
        assert [r["type"] for r in g.config()["process"]["rlimits"]] == ["RLIMIT_NPROC"]


# -- the v1.2 process and Linux settings ------------------------------------------------


def test_scheduler_io_priority_personality_console_and_time_offsets() -> None:
    g = (Generator()
         .set_scheduler("SCHED_FIFO", priority=10, flags=["SCHED_FLAG_RESET_ON_FORK"])
         .set_io_priority("IOPRIO_CLASS_BE", 4)
         .set_personality("LINUX32")
         .set_console_size(25, 80)
         .add_time_offset("monotonic", secs=100)
         .add_time_offset("boottime", secs=-5, nanosecs=500))
    doc = g.config()
    proc, linux = doc["process"], doc["linux"]
    assert proc["scheduler"] == {"policy": "SCHED_FIFO", "priority": 10,
                                 "flags": ["SCHED_FLAG_RESET_ON_FORK"]}
    assert proc["ioPriority"] == {"class": "IOPRIO_CLASS_BE", "priority": 4}
    assert proc["consoleSize"] == {"height": 25, "width": 80}
    assert linux["personality"] == {"domain": "LINUX32"}
    assert linux["timeOffsets"] == {"monotonic": {"secs": 100, "nanosecs": 0},
                                    "boottime": {"secs": -5, "nanosecs": 500}}
    assert [ns for ns in linux["namespaces"] if ns["type"] == "time"] == [{"type": "time"}]
    spec = g.spec()  # the typed model reads every wire name back
    assert spec.process is not None and spec.process.io_priority is not None
    assert spec.process.io_priority.class_ == "IOPRIO_CLASS_BE"
    assert spec.process.scheduler is not None and spec.process.scheduler.priority == 10
    assert spec.linux is not None and spec.linux.personality is not None
    assert [p for p in validate(doc) if p.severity == "error"] == []


def test_bad_v12_settings_are_refused() -> None:
    with pytest.raises(RuntimeSpecError, match="unknown scheduling policy 'FIFO'"):
        Generator().set_scheduler("FIFO")
    with pytest.raises(RuntimeSpecError, match="unknown I/O priority class"):
        Generator().set_io_priority("BE", 1)
    with pytest.raises(RuntimeSpecError, match="unknown personality domain"):
        Generator().set_personality("LINUX64")
    with pytest.raises(RuntimeSpecError, match="monotonic and boottime"):
        Generator().add_time_offset("realtime", 1)
    with pytest.raises(RuntimeSpecError, match="nanosecs"):
        Generator().add_time_offset("monotonic", 0, 1_000_000_000)
