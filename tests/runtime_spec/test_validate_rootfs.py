"""validate(rootfs=..., host=True): the root filesystem and this host (runtime-spec v1.2)."""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import pytest

from criolib.runtime_spec import _validate_host
from criolib.runtime_spec._validate import validate
from tests.runtime_spec.test_validate import (
    PATH,
    E,
    W,
    baseline,
    found,
)


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




def test_host_security_modules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = baseline()
    doc["process"]["apparmorProfile"] = "runtime-default"
    doc["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0:c1,c2"
    doc["linux"]["mountLabel"] = "system_u:object_r:container_file_t:s0:c1,c2"
    assert validate(doc) == []
    monkeypatch.setattr(_validate_host, "APPARMOR_DIR", str(tmp_path / "apparmor"))
    monkeypatch.setattr(_validate_host, "SELINUX_DIR", str(tmp_path / "selinux"))
    absent = "is absent): the runtime cannot apply it, and fails or goes on without it"
    assert found(doc, host=True) == [
        ("$.linux.mountLabel", W, f"this host does not run SELinux ({tmp_path}/selinux "
         + absent),
        ("$.process.apparmorProfile", W, f"this host does not run AppArmor "
         f"({tmp_path}/apparmor " + absent),
        ("$.process.selinuxLabel", W, f"this host does not run SELinux ({tmp_path}/selinux "
         + absent),
    ]
    (tmp_path / "apparmor").mkdir()
    (tmp_path / "selinux").mkdir()
    assert found(doc, host=True) == []
    # Empty or absent labels ask for nothing.
    doc["process"].update(apparmorProfile="", selinuxLabel="")
    del doc["linux"]["mountLabel"]
    (tmp_path / "selinux").rmdir()
    assert found(doc, host=True) == []


def test_host_security_modules_on_this_machine() -> None:
    doc = baseline()
    doc["process"]["apparmorProfile"] = "runtime-default"
    doc["linux"]["mountLabel"] = "system_u:object_r:container_file_t:s0"
    paths = {p.path for p in validate(doc, host=True)}
    assert ("$.process.apparmorProfile" in paths) is not Path(
        "/sys/kernel/security/apparmor").is_dir()
    assert ("$.linux.mountLabel" in paths) is not Path("/sys/fs/selinux").is_dir()
