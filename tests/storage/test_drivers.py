"""One conformance suite for every graph driver (containers/storage ``graphtest`` style).

Each test runs on overlay and vfs through the ``driver`` fixture: the same layers
applied, the same root filesystem seen, the same diffs exported.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from criolib.storage._drivers import GraphDriver, _fs, get_driver
from criolib.storage._errors import (
    DigestMismatch,
    InvalidLayerID,
    LayerExists,
    LayerUnknown,
    MountError,
    StorageError,
    UnsafeArchive,
)
from criolib.testing import Entry, TestImages
from tests.storage.conftest import apply_image, chain_ids, layer_blob, make_layer, snapshot


def _staging(driver: GraphDriver) -> list[str]:
    root = driver.home.parent / "staging"
    return sorted(os.listdir(root)) if root.exists() else []


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name.removeprefix("./").rstrip("/"): m for m in tar.getmembers()}


# -- creating and finding layers -----------------------------------------------------


def test_create_empty_layers(driver: GraphDriver) -> None:
    base = driver.create("base", None)
    assert base == driver.diff_path("base") and base.is_dir() and os.listdir(base) == []
    child = driver.create("child", "base")
    assert child.is_dir()
    assert driver.exists("base") and driver.exists("child") and not driver.exists("other")
    assert driver.layer_ids() == ["base", "child"]
    with pytest.raises(LayerExists, match="base"):
        driver.create("base", None)
    with pytest.raises(LayerUnknown, match="nope"):
        driver.create("orphan", "nope")
    assert not driver.exists("orphan")
    assert _staging(driver) == []


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "-x", "a" * 300])
def test_layer_ids_must_name_one_directory(driver: GraphDriver, bad: str) -> None:
    with pytest.raises(InvalidLayerID):
        driver.create(bad, None)
    assert isinstance(InvalidLayerID("x"), ValueError)


def test_unknown_layers_are_key_errors(driver: GraphDriver) -> None:
    for call in (driver.diff_path, driver.mount, driver.unmount, driver.is_mounted,
                 driver.remove):
        with pytest.raises(LayerUnknown) as info:
            call("missing")
        assert isinstance(info.value, KeyError) and "missing" in str(info.value)


# -- applying an image ---------------------------------------------------------------


def test_apply_multilayer_and_see_the_merged_view(
    driver: GraphDriver, criolib_test_images: TestImages
) -> None:
    image = criolib_test_images["multilayer"]
    ids = apply_image(driver, criolib_test_images, image)
    assert driver.layer_ids() == sorted(ids)
    top = driver.mount(ids[-1], options=["ro"])
    try:
        data = top / "data"
        assert not (data / "delete-me.txt").exists()
        assert os.listdir(data / "replaced") == ["new.txt"]
        assert not (data / "removed-dir").exists()
        assert (data / "overwritten.txt").read_bytes() == b"layer 2 version\n"
        assert (data / "keep.txt").read_bytes() == b"kept from layer 1\n"
        assert (data / "layer3.txt").read_bytes() == b"added by layer 3\n"
        assert (top / "bin" / "busybox").is_file()
        src, dst = os.stat(data / "hardlink-src.txt"), os.stat(data / "hardlink-dst.txt")
        assert (src.st_ino, src.st_dev) == (dst.st_ino, dst.st_dev) and src.st_nlink == 2
        assert stat.S_IMODE(os.stat(data / "setuid-bin").st_mode) == 0o4755
        assert stat.S_IMODE(os.stat(data / "sticky-dir").st_mode) == 0o1777
        assert stat.S_ISFIFO(os.lstat(data / "fifo").st_mode)
        assert os.readlink(data / "abs-symlink") == "/data/keep.txt"
        owned = os.stat(data / "owned-by-tester.txt")
        assert (owned.st_uid, owned.st_gid) == (1000, 1000)
        assert os.getxattr(data / "xattr-file", "user.criolib.test") == b"layer2"
        # Nothing of the overlay format shows through the mount.
        assert not any(n.startswith(".wh.") for n in os.listdir(data))
    finally:
        driver.unmount(ids[-1])
    assert not driver.is_mounted(ids[-1])
    assert _staging(driver) == []


def test_hard_links_share_an_inode_within_a_layer(
    driver: GraphDriver, criolib_test_images: TestImages
) -> None:
    ids = apply_image(driver, criolib_test_images, criolib_test_images["multilayer"])
    diff = driver.diff_path(ids[1]) / "data"
    assert os.stat(diff / "hardlink-src.txt").st_ino == os.stat(diff / "hardlink-dst.txt").st_ino


def test_each_compression_gives_the_same_layers(
    driver: GraphDriver, criolib_test_images: TestImages
) -> None:
    trees = []
    for name in ("multilayer", "multilayer-zstd", "multilayer-uncompressed"):
        image = criolib_test_images[name]
        ids = apply_image(driver, criolib_test_images, image)  # same diff_ids: same ids
        assert ids == chain_ids(criolib_test_images["multilayer"].diff_ids)
        trees.append(snapshot(driver.diff_path(ids[-1])))
    assert trees[0] == trees[1] == trees[2]


def test_a_failed_apply_leaves_nothing(
    driver: GraphDriver, criolib_test_images: TestImages
) -> None:
    image = criolib_test_images["busybox"]
    wrong = "sha256:" + "0" * 64
    with open(layer_blob(criolib_test_images, image.layers[0].digest), "rb") as src, \
            pytest.raises(StorageError):
        driver.apply_diff("base", None, src, expected_diff_id=wrong)
    assert not driver.exists("base") and driver.layer_ids() == []
    assert _staging(driver) == []
    with pytest.raises(StorageError):
        driver.apply_diff("junk", None, io.BytesIO(b"not a tarball at all" * 100))
    assert not driver.exists("junk") and _staging(driver) == []
    if driver.name == "overlay":  # no short link is left behind either
        assert not (driver.home / "l").exists() or os.listdir(driver.home / "l") == []


def test_a_killed_apply_leaves_only_staging_debris(driver: GraphDriver) -> None:
    entries = [Entry(f"file{i}", data=os.urandom(4096)) for i in range(400)]
    blob, diff_id = make_layer(entries)
    code = ("import sys; from criolib.storage._drivers import get_driver; "
            f"d = get_driver({driver.name!r}, {str(driver.home)!r}); "
            "d.apply_diff('killed', None, sys.stdin.buffer)")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    assert child.stdin is not None
    child.stdin.write(blob[: len(blob) // 2])  # half the layer, then nothing more
    child.stdin.flush()
    staging = driver.home.parent / "staging"
    deadline = time.monotonic() + 30
    while not (staging.is_dir() and any(p.is_file() for p in staging.rglob("file1*"))):
        assert time.monotonic() < deadline, "the child never started extracting"
        time.sleep(0.01)
    child.kill()
    child.wait()
    child.stdin.close()
    assert not driver.exists("killed") and driver.layer_ids() == []
    assert len(_staging(driver)) == 1  # what check() reports and repair() removes
    if driver.name == "overlay":
        assert not (driver.home / "l").exists() or os.listdir(driver.home / "l") == []
    # The same layer applies cleanly afterwards.
    driver.apply_diff("killed", None, io.BytesIO(blob), expected_diff_id=diff_id)
    assert len(os.listdir(driver.diff_path("killed"))) == 400


def test_mount_a_three_layer_image(driver: GraphDriver) -> None:
    layers = [
        [Entry.directory("etc"), Entry("etc/one", data=b"1"), Entry("etc/shadowed", data=b"a")],
        [Entry.directory("etc"), Entry("etc/two", data=b"2"), Entry("etc/shadowed", data=b"b")],
        [Entry.directory("etc"), Entry("etc/three", data=b"3"), Entry.whiteout("etc/one")],
    ]
    parent = None
    for i, entries in enumerate(layers):
        blob, diff_id = make_layer(entries)
        driver.apply_diff(f"l{i}", parent, io.BytesIO(blob), expected_diff_id=diff_id)
        parent = f"l{i}"
    root = driver.mount("l2", options=["ro"])
    try:
        assert sorted(os.listdir(root / "etc")) == ["shadowed", "three", "two"]
        assert (root / "etc" / "shadowed").read_bytes() == b"b"
    finally:
        driver.unmount("l2")


# -- a container's writable layer ----------------------------------------------------


def test_container_layer_changes_land_in_its_diff_and_export(
    driver: GraphDriver, criolib_test_images: TestImages
) -> None:
    ids = apply_image(driver, criolib_test_images, criolib_test_images["multilayer"])
    driver.create("ctr", ids[-1])
    root = driver.mount("ctr")
    assert driver.mount("ctr") == root  # mounting again is the same mount
    (root / "data" / "written.txt").write_bytes(b"from the container\n")
    os.unlink(root / "data" / "keep.txt")
    driver.unmount("ctr")
    driver.unmount("ctr")  # not mounted any more: nothing to do
    assert not driver.is_mounted("ctr")
    diff = driver.diff_path("ctr")
    assert (diff / "data" / "written.txt").read_bytes() == b"from the container\n"
    for layer_id in ids:  # the image's layers are untouched
        assert not (driver.diff_path(layer_id) / "data" / "written.txt").exists()

    sink = io.BytesIO()
    result = driver.export_diff("ctr", ids[-1], sink)
    members = _members(sink.getvalue())
    files = {n for n, m in members.items() if not m.isdir()}
    assert files == {"data/written.txt", "data/.wh.keep.txt"}
    assert {n for n, m in members.items() if m.isdir()} <= {"data"}
    assert members["data/written.txt"].size == len(b"from the container\n")
    assert result.diff_id.startswith("sha256:") and result.compression == "none"

    # The export re-applied on the image gives the container's view.
    blob = sink.getvalue()
    driver.apply_diff("committed", ids[-1], io.BytesIO(blob), expected_diff_id=result.diff_id)
    view = driver.mount("committed", options=["ro"])
    try:
        assert (view / "data" / "written.txt").exists() and not (view / "data/keep.txt").exists()
    finally:
        driver.unmount("committed")


def test_export_then_apply_in_a_fresh_store_gives_the_same_layers(
    driver: GraphDriver, criolib_test_images: TestImages, graphroot: Path
) -> None:
    image = criolib_test_images["multilayer"]
    ids = apply_image(driver, criolib_test_images, image)
    fresh = get_driver(driver.name, graphroot / "fresh" / driver.name)
    parent = None
    for layer_id in ids:
        sink = io.BytesIO()
        exported = driver.export_diff(layer_id, parent, sink)
        sink.seek(0)
        fresh.apply_diff(layer_id, parent, sink, expected_diff_id=exported.diff_id)
        again, original = snapshot(fresh.diff_path(layer_id)), snapshot(driver.diff_path(layer_id))
        differ = {k for k in original.keys() | again.keys() if original.get(k) != again.get(k)}
        # vfs exports compare content when size and mtime match (containers/storage's
        # ChangesDirs stops at size and mtime): layer 2 rewrites overwritten.txt with
        # both unchanged, and the change must still come through.
        assert differ == set()
        if driver.name == "overlay":
            # overlay keeps exactly the image's changes: the export names what the tar did.
            desc = image.layers[ids.index(layer_id)]
            with layer_blob(criolib_test_images, desc.digest).open("rb") as blob, \
                    tarfile.open(fileobj=blob) as tar:
                names = {m.name.removeprefix("./").rstrip("/") for m in tar}
            assert set(_members(sink.getvalue())) - {"", "."} == names - {"", "."}
        parent = layer_id


# -- removing ------------------------------------------------------------------------


def test_remove_a_mounted_layer_unmounts_it_first(driver: GraphDriver) -> None:
    driver.create("base", None)
    (driver.diff_path("base") / "file").write_bytes(b"x")
    driver.create("ctr", "base")
    root = driver.mount("ctr")
    assert (root / "file").exists()
    driver.remove("ctr")
    assert not driver.exists("ctr") and driver.layer_ids() == ["base"]
    assert (driver.diff_path("base") / "file").read_bytes() == b"x"  # not deleted through it
    assert str(root) not in Path("/proc/self/mountinfo").read_text()
    driver.remove("base")
    assert driver.layer_ids() == [] and _staging(driver) == []
    if driver.name == "overlay":
        assert os.listdir(driver.home / "l") == []


def test_create_can_adopt_a_staged_directory(driver: GraphDriver) -> None:
    staging = driver.home.parent / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    prepared = staging / "prepared"
    prepared.mkdir()
    (prepared / "hello").write_bytes(b"hi")
    path = driver.create("adopted", None, staging=prepared)
    assert (path / "hello").read_bytes() == b"hi" and not prepared.exists()
    elsewhere = driver.home.parent / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(StorageError, match="staging"):
        driver.create("other", None, staging=elsewhere)
    assert elsewhere.exists() and not driver.exists("other")


def test_mount_options_the_driver_cannot_use(driver: GraphDriver) -> None:
    driver.create("base", None)
    bad = "upperdir=/tmp" if driver.name == "overlay" else "nodev"
    with pytest.raises((MountError, ValueError)):
        driver.mount("base", options=[bad])
    assert not driver.is_mounted("base")


# -- one rule for hard links, devices and digests (review item 12) -------------------


def test_a_hard_link_into_a_lower_layer_is_refused_on_every_driver(
    driver: GraphDriver,
) -> None:
    """overlay keeps each layer in its own directory, so a link cannot reach a parent's file.

    containers/storage's overlay driver fails such a layer too (its link(2) finds no
    target in the layer's directory); vfs could link into its copy of the parent,
    but then the same image would work on one driver and not the other.
    """
    blob, diff_id = make_layer([Entry.directory("etc"), Entry("etc/passwd", data=b"root\n")])
    driver.apply_diff("base", None, io.BytesIO(blob), expected_diff_id=diff_id)
    blob, _ = make_layer([Entry.directory("etc"), Entry.hardlink("etc/alias", "etc/passwd")])
    with pytest.raises(UnsafeArchive, match=r"etc/passwd.*lower layer"):
        driver.apply_diff("child", "base", io.BytesIO(blob))
    assert not driver.exists("child") and _staging(driver) == []
    # A link to a file the same layer brings is fine on both.
    blob, diff_id = make_layer([Entry("etc/passwd", data=b"root\nme\n"),
                                Entry.hardlink("etc/alias", "etc/passwd")])
    driver.apply_diff("child", "base", io.BytesIO(blob), expected_diff_id=diff_id)
    tree = driver.diff_path("child") / "etc"
    assert os.stat(tree / "alias").st_ino == os.stat(tree / "passwd").st_ino


def test_devices_are_refused_when_not_allowed(driver: GraphDriver) -> None:
    entries = [Entry.directory("dev"), Entry("dev/null", "char", 0o666, devmajor=1, devminor=3)]
    blob, diff_id = make_layer(entries)
    with pytest.raises(UnsafeArchive, match="device"):
        driver.apply_diff("nodev", None, io.BytesIO(blob), allow_devices=False)
    assert not driver.exists("nodev") and _staging(driver) == []
    driver.apply_diff("dev", None, io.BytesIO(blob), expected_diff_id=diff_id)
    assert stat.S_ISCHR(os.lstat(driver.diff_path("dev") / "dev" / "null").st_mode)
    # Whiteouts are not devices, whatever the driver makes of them.
    blob, _ = make_layer([Entry.whiteout("dev/null")])
    driver.apply_diff("wh", "dev", io.BytesIO(blob), allow_devices=False)
    assert driver.exists("wh")


def test_a_wrong_blob_digest_is_caught_before_the_layer_appears(
    driver: GraphDriver, criolib_test_images: TestImages, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = criolib_test_images["busybox"]
    renames: list[tuple[str, str]] = []
    real = _fs.rename_noreplace

    def rename(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
        renames.append((str(a), str(b)))
        real(a, b)

    monkeypatch.setattr(_fs, "rename_noreplace", rename)
    path = layer_blob(criolib_test_images, image.layers[0].digest)
    with path.open("rb") as src, pytest.raises(DigestMismatch) as info:
        driver.apply_diff("base", None, src, expected_diff_id=image.diff_ids[0],
                          expected_digest="sha256:" + "1" * 64)
    assert info.value.actual == image.layers[0].digest
    assert renames == [] and not driver.exists("base") and _staging(driver) == []
    with path.open("rb") as src:
        result = driver.apply_diff("base", None, src, expected_diff_id=image.diff_ids[0],
                                   expected_digest=image.layers[0].digest)
    assert result.digest == image.layers[0].digest and driver.exists("base")


# -- durability (review item 21) -----------------------------------------------------


@pytest.mark.parametrize("durable", [True, False])
def test_a_layer_is_synced_before_it_appears(
    driver: GraphDriver, monkeypatch: pytest.MonkeyPatch, durable: bool
) -> None:
    """syncfs of the staged layer, then the rename, then an fsync of the home directory."""
    events: list[str] = []
    target = ["layer"]
    real_sync, real_rename = _fs.sync_tree, _fs.rename_noreplace
    module = sys.modules[type(driver).__module__]

    def sync(path: str | os.PathLike[str]) -> None:
        assert os.path.isdir(path) and not driver.exists(target[0])
        events.append("syncfs staging" if "staging" in str(path) else f"syncfs {path}")
        real_sync(path)

    def rename(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
        events.append("rename")
        real_rename(a, b)

    monkeypatch.setattr(_fs, "sync_tree", sync)
    monkeypatch.setattr(_fs, "rename_noreplace", rename)
    monkeypatch.setattr(module, "fsync_dir", lambda p: events.append(f"fsync {Path(p).name}"))
    blob, diff_id = make_layer([Entry("file", data=b"x" * 10000)])
    driver.apply_diff("layer", None, io.BytesIO(blob), expected_diff_id=diff_id,
                      durable=durable)
    expected = ["syncfs staging", "rename", f"fsync {driver.name}"] if durable else ["rename"]
    assert events == expected
    events.clear()
    target[0] = "empty"
    driver.create("empty", "layer", durable=durable)
    assert events == expected


def test_sync_tree_is_the_real_syncfs(graphroot: Path) -> None:
    _fs.sync_tree(graphroot)
    with pytest.raises(OSError, match="nope"):
        _fs.sync_tree(graphroot / "nope")


# -- check and repair hooks (review item 13) -----------------------------------------


def test_verify_layer_reports_lost_files(driver: GraphDriver) -> None:
    driver.create("base", None)
    driver.create("child", "base")
    assert driver.verify_layer("base") == [] and driver.repair_layer("base") == []
    os.rename(driver.home / "base" / "diff", driver.home / "base" / "elsewhere")
    problems = driver.verify_layer("base")
    assert problems and "diff" in problems[0]
    assert driver.repair_layer("base") == [] and driver.verify_layer("base") == problems
    assert driver.verify_layer("absent") == [f"layer directory {driver.home / 'absent'} "
                                             "is missing"]
