"""What only the vfs driver does: full copies, no mounts, and its copy's lifetime."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from criolib.storage._drivers import VFSDriver, get_driver
from criolib.storage._errors import MountError
from tests.storage.conftest import require_root


@pytest.fixture
def vfs(graphroot: Path) -> VFSDriver:
    require_root("vfs driver tests")
    driver = get_driver("vfs", graphroot / "vfs")
    assert isinstance(driver, VFSDriver)
    return driver


def test_a_child_is_a_full_independent_copy(vfs: VFSDriver) -> None:
    base = vfs.create("base", None)
    (base / "dir").mkdir()
    (base / "dir" / "file").write_text("one")
    os.link(base / "dir" / "file", base / "dir" / "link")
    os.mkfifo(base / "fifo")
    os.chown(base / "dir" / "file", 1000, 1000)
    os.setxattr(base / "dir" / "file", "user.criolib", b"v")
    child = vfs.create("child", "base")
    st = os.stat(child / "dir" / "file")
    assert (st.st_uid, st.st_nlink) == (1000, 2)
    assert st.st_ino == os.stat(child / "dir" / "link").st_ino != os.stat(base / "dir/file").st_ino
    assert os.getxattr(child / "dir" / "file", "user.criolib") == b"v"
    (child / "dir" / "file").write_text("two")
    assert (base / "dir" / "file").read_text() == "one"
    assert vfs.mount("child") == child and vfs.mount("child", options=["ro"]) == child
    assert not vfs.is_mounted("child")
    vfs.unmount("child")
    with pytest.raises(MountError, match="nodev"):
        vfs.mount("child", options=["nodev"])


def _cp_processes(path: Path) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0] == b"cp" and any(str(path).encode() in a for a in argv):
            found.append(int(pid))
    return found


def test_a_killed_writer_takes_its_copy_along(vfs: VFSDriver) -> None:
    base = vfs.create("base", None)
    for i in range(100):
        (base / f"d{i}").mkdir()
        for j in range(100):
            (base / f"d{i}" / f"f{j}").write_bytes(b"x" * 512)
    code = ("from criolib.storage._drivers import get_driver; "
            f"get_driver('vfs', {str(vfs.home)!r}).create('child', 'base')")
    child = subprocess.Popen([sys.executable, "-c", code])
    staging = vfs.home.parent / "staging"
    deadline = time.monotonic() + 30
    while not (copies := _cp_processes(staging)):
        assert child.poll() is None, "the copy finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    for pid in copies:  # a stopped cp cannot finish by itself; only a SIGKILL ends it
        os.kill(pid, signal.SIGSTOP)
    child.kill()
    child.wait()
    deadline = time.monotonic() + 5
    try:
        while _cp_processes(staging):  # SIGKILL from the kernel as its parent died
            assert time.monotonic() < deadline, "cp outlived the killed writer"
            time.sleep(0.01)
    finally:
        for pid in _cp_processes(staging):
            os.kill(pid, signal.SIGKILL)
    assert not vfs.exists("child")
