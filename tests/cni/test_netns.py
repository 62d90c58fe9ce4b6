"""criolib.cni._netns: pinned namespaces, cross-checked with iproute2 and nsenter."""

from __future__ import annotations

import errno
import os
import secrets
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from criolib.cni._errors import NetNSError
from criolib.cni._netns import NetNS, PodNamespaces
from criolib.testing import require_root

pytestmark = pytest.mark.integration


@pytest.fixture
def name() -> Iterator[str]:
    require_root()
    name = f"criolib-test-{secrets.token_hex(4)}"
    yield name
    for kind in ("net", "ipc", "uts"):
        p = Path(f"/var/run/{kind}ns/{name}")
        if p.exists():
            subprocess.run(["umount", "-l", str(p)], check=False, capture_output=True)
            p.unlink()


def own_ino() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def mounts_of(name: str) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if name in line]


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def test_create_has_only_lo_and_iproute2_sees_it(name: str) -> None:
    ns = NetNS.create(name)
    assert ns.path == Path("/var/run/netns") / name
    assert name in ip("netns", "list").split()
    links = ip("netns", "exec", name, "ip", "-o", "link").splitlines()
    assert len(links) == 1
    assert ": lo:" in links[0]
    assert os.stat(ns.path).st_ino != own_ino()
    ns.remove()
    assert name not in ip("netns", "list").split()


def test_enter_switches_thread_and_restores(name: str) -> None:
    ns = NetNS.create(name)
    before = own_ino()
    go, done = threading.Event(), threading.Event()
    seen: list[int] = []

    def other() -> None:
        go.wait(10)
        seen.append(own_ino())
        done.set()

    t = threading.Thread(target=other)
    t.start()  # before entering: a thread started inside would inherit the netns
    with ns.enter():
        inside = own_ino()
        assert inside != before
        assert inside == os.stat(ns.path).st_ino
        go.set()
        done.wait(10)
        assert seen == [before]  # only the calling thread moved
        assert len(ip("-o", "link").splitlines()) == 1  # a child inherits the thread's netns
    t.join()
    assert own_ino() == before
    with pytest.raises(RuntimeError, match="boom"), ns.enter():
        raise RuntimeError("boom")
    assert own_ino() == before
    ns.remove()


def test_remove_is_idempotent_and_leaves_nothing(name: str) -> None:
    ns = NetNS.create(name)
    assert mounts_of(name)
    ns.remove()
    ns.remove()
    assert not ns.path.exists()
    assert mounts_of(name) == []
    NetNS(Path("/var/run/netns") / "criolib-never-created").remove()


def test_open_checks_the_file(name: str, tmp_path: Path) -> None:
    ns = NetNS.create(name)
    assert NetNS.open(ns.path).path == ns.path
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(NetNSError) as info:
        NetNS.open(plain)
    assert info.value.filename == str(plain)
    assert info.value.errno is not None
    with pytest.raises(NetNSError) as missing:
        NetNS.open(tmp_path / "missing")
    assert missing.value.errno == errno.ENOENT
    with pytest.raises(NetNSError) as twice:
        NetNS.create(name)
    assert twice.value.errno == errno.EEXIST
    assert twice.value.filename == str(ns.path)
    ns.remove()


def test_random_name() -> None:
    require_root()
    ns = NetNS.create()
    try:
        assert ns.path.name.startswith("criolib-")
        assert ns.exists()
    finally:
        ns.remove()


@pytest.mark.slow
def test_cycles_leak_nothing(name: str) -> None:
    fds = len(os.listdir("/proc/self/fd"))
    threads = threading.active_count()
    # only this test's own mounts (named after it): others on the host may come and go
    assert mounts_of(name) == []
    before = own_ino()
    for i in range(50):
        ns = NetNS.create(f"{name}-{i}")
        assert mounts_of(f"{name}-{i}")  # the filter sees the test's own mounts
        with ns.enter():
            pass
        ns.remove()
    assert len(os.listdir("/proc/self/fd")) == fds
    assert threading.active_count() == threads
    assert mounts_of(name) == []
    assert own_ino() == before
    assert not [p for p in Path("/var/run/netns").iterdir() if p.name.startswith(name)]


def test_pod_namespaces(name: str) -> None:
    pod = PodNamespaces.create(name, hostname="pod-host")
    assert pod.net is not None
    assert pod.path("net") == Path("/var/run/netns") / name
    out = subprocess.run(
        ["nsenter", f"--uts={pod.path('uts')}", "hostname"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out.strip() == "pod-host"
    assert os.uname().nodename != "pod-host"
    for kind in ("net", "ipc", "uts"):
        assert os.stat(pod.path(kind)).st_ino != os.stat(f"/proc/self/ns/{kind}").st_ino
    pod.remove()
    pod.remove()
    assert mounts_of(name) == []
    assert not any(Path(f"/var/run/{k}ns/{name}").exists() for k in ("net", "ipc", "uts"))


def test_pod_namespaces_rejects_unknown_kind(name: str) -> None:
    with pytest.raises(NetNSError, match="unknown namespace kind"):
        PodNamespaces.create(name, kinds=("net", "pid"))
    assert not (Path("/var/run/netns") / name).exists()


def _mount_points() -> set[str]:
    return {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}


def test_release_pin_dirs_unmounts_only_empty_ones(tmp_path: Path) -> None:
    require_root()
    from criolib.cni import release_pin_dirs

    base = tmp_path / "run"
    first = PodNamespaces.create("criolib-rel-a", base=base)
    second = PodNamespaces.create("criolib-rel-b", kinds=("net",), base=base)
    try:
        shared = {str(base / f"{k}ns") for k in ("net", "ipc", "uts")}
        assert shared <= _mount_points()
        first.remove()
        # netns still holds pod b's pin: kept; ipcns and utsns are empty: released.
        released = release_pin_dirs(base)
        assert sorted(p.name for p in released) == ["ipcns", "utsns"]
        assert str(base / "netns") in _mount_points()
        assert second.net is not None and second.net.exists()
        second.remove()
        assert [p.name for p in release_pin_dirs(base)] == ["netns"]
        assert not shared & _mount_points()
        assert not any(base.iterdir())
        assert release_pin_dirs(base) == []  # idempotent
    finally:
        first.remove()
        second.remove()
        release_pin_dirs(base)
