"""The drivers' filesystem helpers: the mount table, mounts in their own cwd, safe removal."""

from __future__ import annotations

import errno
import os
import subprocess
import threading
from pathlib import Path

import pytest

from criolib.storage._drivers import _fs, get_driver
from criolib.storage._errors import DriverError
from tests.storage.conftest import is_root, require_root


@pytest.fixture
def root_only() -> None:
    require_root("overlay mounts")


def test_layer_ids() -> None:
    assert _fs.validate_layer_id("a" * 64) == "a" * 64
    with pytest.raises(ValueError, match="'l'"):
        _fs.validate_layer_id("l", reserved=frozenset({"l"}))


def test_rename_noreplace_never_replaces(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()  # empty: plain rename(2) would replace it
    with pytest.raises(FileExistsError):
        _fs.rename_noreplace(tmp_path / "a", tmp_path / "b")
    _fs.rename_noreplace(tmp_path / "a", tmp_path / "c")
    assert (tmp_path / "c").is_dir() and not (tmp_path / "a").exists()


def test_staging_dirs_live_under_the_graphroot(tmp_path: Path) -> None:
    home = tmp_path / "vfs"
    with _fs.staged(home, "x") as d:
        assert d.parent == tmp_path / "staging" and d.is_dir()
    assert not d.exists()
    _fs.check_staging(home, _fs.new_staging_dir(home, "y"))
    with pytest.raises(DriverError, match="staging"):
        _fs.check_staging(home, tmp_path)


@pytest.mark.usefixtures("root_only")
def test_mount_table_unescapes_paths_and_finds_mounts_below(graphroot: Path) -> None:
    odd = graphroot / "with space\tand tab"
    odd.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(odd)], check=True)
    try:
        assert _fs.is_mountpoint(odd)
        found = _fs.mounts_under(graphroot)
        assert [m.mountpoint for m in found] == [str(odd)] and found[0].fstype == "tmpfs"
        assert _fs.fs_type(odd / "not-yet" / "there") == "tmpfs"
    finally:
        assert _fs.umount(odd) == 0
    assert not _fs.is_mountpoint(odd)
    assert _fs.umount(odd) == errno.EINVAL


@pytest.mark.usefixtures("root_only")
def test_mount_in_its_own_cwd_leaves_the_process_cwd_alone(graphroot: Path) -> None:
    (graphroot / "src").mkdir()
    (graphroot / "src" / "f").write_text("x")
    (graphroot / "dst").mkdir()
    before = os.getcwd()
    seen: list[str] = []

    def other_thread() -> None:
        seen.append(os.getcwd())

    err, what = _fs.mount("src", graphroot / "dst", "none", 4096, "", cwd=graphroot)  # MS_BIND
    try:
        assert (err, what) == (0, "")
        assert (graphroot / "dst" / "f").read_text() == "x"
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        assert os.getcwd() == before and seen == [before]
    finally:
        _fs.umount(graphroot / "dst")
    err, what = _fs.mount("src", graphroot / "dst", "none", 4096, "", cwd=graphroot / "gone")
    assert err == errno.ENOENT and "chdir" in what


@pytest.mark.usefixtures("root_only")
def test_removing_a_layer_never_deletes_through_a_mount(graphroot: Path) -> None:
    driver = get_driver("vfs", graphroot / "vfs")
    tree = driver.create("layer", None)
    keep = graphroot / "precious"
    keep.mkdir()
    (keep / "file").write_text("keep me")
    (tree / "bound").mkdir()
    subprocess.run(["mount", "--bind", str(keep), str(tree / "bound")], check=True)
    driver.remove("layer")
    assert (keep / "file").read_text() == "keep me"
    assert not driver.exists("layer") and not _fs.mounts_under(graphroot)


def test_cap_sys_admin_matches_root() -> None:
    assert _fs.has_cap_sys_admin() == is_root()
