"""criolib._mount: mountinfo parsing, and a real tmpfs mount and unmount."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from criolib import _mount
from criolib._mount import MountInfo, mountinfo, parse_mountinfo, unescape
from criolib.testing import require_root

SAMPLE = (
    # the proc(5) example
    "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
    # no optional fields
    "25 1 0:22 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n"
    # several optional fields; escaped space, tab, newline and backslash in paths
    "612 29 0:51 /a\\040dir /run/x\\011y\\012z\\134w rw,relatime shared:7 master:3 "
    "propagate_from:2 unbindable - tmpfs my\\040src rw,size=1024k,mode=755\n"
    # an empty source (overlay mounted with "none"-less source) and no super options
    "700 29 0:60 / /m rw - fuse.sshfs  \n"
)


def test_parse_mountinfo_fields_and_escapes() -> None:
    first, proc, tricky, empty = parse_mountinfo(SAMPLE)
    assert first == MountInfo(mount_id=36, parent_id=35, major=98, minor=0, root="/mnt1",
                              mount_point="/mnt2", options=("rw", "noatime"),
                              optional=("master:1",), fstype="ext3", source="/dev/root",
                              super_options=("rw", "errors=continue"))
    assert first.tag("master") == "1" and first.tag("shared") is None
    assert proc.optional == () and proc.fstype == "proc" and proc.mount_point == "/proc"
    assert tricky.root == "/a dir"
    assert tricky.mount_point == "/run/x\ty\nz\\w"
    assert tricky.optional == ("shared:7", "master:3", "propagate_from:2", "unbindable")
    assert (tricky.tag("shared"), tricky.tag("propagate_from"), tricky.tag("unbindable")) \
        == ("7", "2", "")
    assert tricky.source == "my src" and tricky.super_options == ("rw", "size=1024k",
                                                                  "mode=755")
    assert (empty.fstype, empty.source, empty.super_options) == ("fuse.sshfs", "", ())


@pytest.mark.parametrize("line", [
    "36 35 98:0 /mnt1 /mnt2 rw master:1 ext3 /dev/root rw",  # no separator
    "x 35 98:0 / / rw - ext3 /dev/root rw",  # not a number
    "36 35 98 / / rw - ext3 /dev/root rw",  # no minor
])
def test_malformed_lines_are_value_errors(line: str) -> None:
    with pytest.raises(ValueError, match="not a mountinfo line"):
        parse_mountinfo(line)


def test_unescape_leaves_what_is_not_an_escape() -> None:
    assert unescape("plain") == "plain"
    assert unescape("a\\040b\\") == "a b\\"
    assert unescape("\\12x\\999") == "\\12x\\999"


def test_mountinfo_of_this_process() -> None:
    mounts = mountinfo()
    assert any(m.mount_point == "/" for m in mounts)
    assert any(m.mount_point == "/proc" and m.fstype == "proc" for m in mounts)
    assert mountinfo(os.getpid()) == mounts


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Path]:
    require_root()
    path = tmp_path / "a dir"  # a space: escaped in mountinfo
    path.mkdir()
    try:
        yield path
    finally:
        while True:
            try:
                _mount.umount(path, _mount.MNT_DETACH)
            except OSError:
                break
        assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()


def test_a_real_tmpfs_mount_and_umount(target: Path) -> None:
    assert not _mount.is_mountpoint(target)
    _mount.mount("criolib-test", target, "tmpfs", _mount.MS_NOSUID | _mount.MS_NODEV,
                 "size=1m,mode=0700")
    (entry,) = [m for m in mountinfo() if m.mount_point == str(target)]
    assert entry.fstype == "tmpfs" and entry.source == "criolib-test"
    assert {"nosuid", "nodev"} <= set(entry.options)
    assert "size=1024k" in entry.super_options and "mode=700" in entry.super_options
    assert _mount.is_mountpoint(target)
    (target / "f").write_text("x")
    _mount.mount(None, target, None, _mount.MS_REMOUNT | _mount.MS_RDONLY | _mount.MS_NOSUID
                 | _mount.MS_NODEV)
    with pytest.raises(OSError) as info:
        (target / "g").write_text("x")
    assert info.value.errno == errno.EROFS
    _mount.umount(target)
    assert not _mount.is_mountpoint(target) and not (target / "f").exists()


def test_errors_name_the_target(target: Path) -> None:
    with pytest.raises(OSError) as info:
        _mount.umount(target)
    assert info.value.errno == errno.EINVAL and info.value.filename == str(target)
    assert str(target) in str(info.value)
    with pytest.raises(OSError) as info:
        _mount.mount("x", target / "missing", "tmpfs")
    assert info.value.errno == errno.ENOENT and "missing" in str(info.value)
    with pytest.raises(OSError) as info:
        _mount.mount("x", target, "no-such-fs-type")
    assert info.value.errno == errno.ENODEV and "no-such-fs-type" in str(info.value)
