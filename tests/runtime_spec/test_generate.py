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
    host_capabilities,
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
